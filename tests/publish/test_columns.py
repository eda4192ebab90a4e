"""The daemon publishes a tick's marks as columns (MarkTable.columns, RedisPublisher.publish_columns):
the very script calls, so the very Redis writes, as publishing the same marks one Mark at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from oracle.clock import VirtualClock
from oracle.metrics import Metrics
from oracle.models import Excluded, Exclusion, Mark, Status
from oracle.publish import _PUBLISH, LastWritten, RedisPublisher
from oracle.schema import Keys
from oracle.settings import RedisSettings
from oracle.signing import Signer
from oracle.validation.state import STATUS_CODE, MarkList, MarkTable
from tests.publish.helpers import mark

NOW = 1_700_000_100.25
MARKETS = [f"M{i}-USD" for i in range(9)]
EXCLUDED = (Excluded("kraken", "M1-USD", Exclusion.DEVIATION, 10.5),)
QUIET = [  # price, confidence, ts, tier, status, sources, candidate
    (0.1 + 0.2, 1 / 3, 1_700_000_000.0005, 1, Status.OK, ("coinbase", "kraken", "okx"), 0.1 + 0.2),
    (1e-7, 0.0, 1_700_000_000.123, 2, Status.DEGRADED, ("pyth",), 1e-7),
    (1.5e22, 2.5e19, 1_699_999_999.9995, 1, Status.OK, ("a", "b"), 1.5e22),
    (65000.5, 12.75, 1_700_000_099.0, 1, Status.OK, (), math.nan),
    (0.0, 0.5, 1_700_000_099.0, 1, Status.OK, ("a",), -0.0),  # equal to its price, not bit for bit
]


def tick(one_ts: float | None = None) -> MarkList:
    """One tick's table, as the pipeline leaves it: most marks in its columns (the quiet path), some
    made by the per-market path, one quiet mark with a quote left out; most of them due, out of order.
    `one_ts`: every mark's time (a quiet tick's marks share it)."""
    table = MarkTable(MARKETS)
    for k, (price, conf, ts, tier, status, sources, cand) in enumerate(QUIET):
        table.price[k], table.confidence[k], table.ts[k], table.tier[k] = price, conf, ts, tier
        table.status[k], table.sources[k], table.candidate[k] = STATUS_CODE[status], sources, cand
    table.exclude(1, EXCLUDED)
    made = [
        mark("M5-USD", 123456789.12345679, 1_700_000_050.5, status=Status.HELD, candidate=130.5),
        mark("M6-USD", 2.0, 1_700_000_000.0, status=Status.STALE, tier=0, sources=(), candidate=math.nan),
        Mark("M7-USD", 7.25, math.nan, NOW, 0, Status.OK, 1, ('a"b', "c\\d"), EXCLUDED, 7.5),
        mark("M8-USD", 3.0, 1_700_000_000.0, status=Status.HELD, candidate=3.0),
    ]
    if one_ts is not None:
        table.ts[:] = one_ts
        made = [replace(m, ts=one_ts) for m in made]
    for k, m in enumerate(made, start=len(QUIET)):
        table.put(k, m)
    return MarkList(table, [6, 0, 5, 1, 3, 7, 8, 4])  # M2 is not due


def expected_call(marks: Sequence[Mark], seq: int, signer: Signer | None, token: str) -> tuple[list[str], list[Any]]:
    """PUBLISH_LUA's call for `marks`, field by field from each Mark: the strings the publisher wrote
    before it took columns (repr of the floats, Mark.ts_ms...), signed over the same strings."""
    keys: list[str] = []
    args: list[Any] = [token, 50, round(NOW * 1000)]
    for m in marks:
        k = Keys("t").market(m.market)
        keys += [k.mark, k.history, k.provisional, k.fence]
        fields = [repr(float(m.price)), repr(float(m.confidence)), str(m.ts_ms), str(seq), m.status.value,
                  str(m.tier), ",".join(m.sources)]  # fmt: skip
        kid, sig = ("", "") if signer is None else (signer.kid, signer.sign("\n".join([m.market, *fields]).encode()))
        args += [str(seq), k.updates, repr(float(m.candidate)), *fields[:3], *fields[4:], kid, sig]
    if token:
        keys.append(Keys("t").epoch)
    return keys, args


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], list[Any]]]:
    """Every PUBLISH_LUA call the publishers send, exactly as sent."""
    sent: list[tuple[list[str], list[Any]]] = []
    run_many = _PUBLISH.run_many

    async def recording(client: Any, made: Any) -> list[Any]:
        made = list(made)
        sent.extend((list(keys), list(args)) for keys, args in made)
        return await run_many(client, made)

    monkeypatch.setattr(_PUBLISH, "run_many", recording)
    return sent


@pytest.mark.parametrize("signer", [None, Signer("hmac-sha256", bytes(range(32)))], ids=["unsigned", "signed"])
@pytest.mark.parametrize("fence", [None, 3])
@pytest.mark.parametrize("one_ts", [None, 1_700_000_000.0005], ids=["times", "one_time"])
async def test_columns_send_the_calls_the_marks_send(
    settings: RedisSettings,
    calls: list[tuple[list[str], list[Any]]],
    signer: Signer | None,
    fence: int | None,
    one_ts: float | None,
) -> None:
    due = tick(one_ts)
    raw = Redis.from_url(settings.url, decode_responses=True)
    if fence is not None:
        await raw.set(Keys("t").epoch, fence)
    sent = []
    for publish in ("publish_columns", "publish"):
        pub = RedisPublisher(settings, Metrics(), VirtualClock(NOW), timeout_s=2.0, batch=4, signer=signer)
        marks = due.columns() if publish == "publish_columns" else list(due)
        written = await getattr(pub, publish)(marks, fence=fence)
        await pub.close()
        assert [(w.market, w.seq) for w in written] == [(m.market, 1) for m in due]
        sent.append(list(calls))
        calls.clear()
        for m in MARKETS:  # the second publisher starts from the same empty Redis
            await raw.delete(*[getattr(Keys("t").market(m), k) for k in ("mark", "history", "provisional")])
    await raw.aclose()
    token = "" if fence is None else str(fence)
    expected = [expected_call(due[:4], 1, signer, token), expected_call(due[4:], 1, signer, token)]
    assert sent[0] == sent[1] == expected


async def test_written_marks_are_the_due_marks_with_their_seq(settings: RedisSettings) -> None:
    due = tick()
    pub = RedisPublisher(settings, Metrics(), VirtualClock(NOW), timeout_s=2.0)
    await pub.publish_columns(due.columns())
    written = await pub.publish_columns(due.columns())
    await pub.close()
    # repr: every field, excluded and candidate too, and NaN (confidence of M6) equal to NaN
    assert repr(list(written)) == repr([m.with_seq(2) for m in due])
    last = LastWritten()
    last.record(written)
    copy = last.copy()
    last.forget("M0-USD")
    assert copy["M0-USD"] == due[1].with_seq(2) and "M0-USD" not in last and last["M7-USD"] is written[5]


async def test_a_mark_refused_during_the_catch_up_stays_kept(settings: RedisSettings) -> None:
    """After an outage the reconnect writes the kept marks; one its market refuses (a key of the wrong
    type) stays kept for the next publish, as a refused mark of an ordinary publish does."""
    raw = Redis.from_url(settings.url, decode_responses=True)
    pub = RedisPublisher(settings, Metrics(), VirtualClock(NOW), timeout_s=2.0)
    await pub.publish([mark("A-USD"), mark("B-USD")])
    await raw.delete(Keys("t").market("B-USD").history)
    await raw.set(Keys("t").market("B-USD").history, "not a stream")
    pub._keep([mark("A-USD", 1.0), mark("B-USD", 2.0)])  # what an outage leaves
    await pub._flush()
    assert list(pub._pending) == ["B-USD"] and pub.market_errors.keys() == {"B-USD"}
    assert (await raw.hgetall(Keys("t").market("A-USD").mark))["price"] == "1.0"
    await pub.close()
    await raw.aclose()


async def test_the_gauges_of_the_written_marks_are_set_as_one_by_one(settings: RedisSettings) -> None:
    metrics = Metrics()
    pub = RedisPublisher(settings, metrics, VirtualClock(NOW), timeout_s=2.0)
    written = await pub.publish_columns(tick().columns())
    await pub.close()
    one_by_one = Metrics()
    for w in written:
        one_by_one.mark_published(w, NOW)
    text = metrics._per_market.text().decode()
    assert text == one_by_one._per_market.text().decode()
    assert 'markd_mark_status{market="M6-USD",status="stale"} 1' in text and "markd_mark_seq" in text
