"""`markd run` writes the perp mark end to end (DESIGN.md "Perpetual mark price"): simulated venues,
the own book and the other venues' perpetuals > a signing daemon as a real subprocess > a private
Redis, read back as a perp venue's margin engine would: P:{M}:perp, its perp_history stream and its
perp_updates channel, seq rising strictly, every write signed, and its status following the index
when the exchanges are cut."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from oracle.client import MarkReader
from oracle.models import PerpMark
from oracle.schema import PERP_FIELDS, Keys
from oracle.settings import RedisSettings
from oracle.signing import Verifier, perp_payload
from oracle.sim.demo import PERP_MARKETS
from oracle.testing import RedisServer
from tests.e2e.stack import PREFIX, Daemon, VenueThread, get, get_json, wait_for

KEY = bytes(range(40, 72))  # an HMAC-SHA256 key
SIGNED = set(PERP_FIELDS) | {"kid", "sig"}
PERP, HISTORY, UPDATES = Keys(PREFIX).perp("BTC-USD")
MARK = Keys(PREFIX).market("BTC-USD").mark
# Every venue that feeds BTC-USD's index, both tiers: cut together, no tier has quorum.
INDEX_VENUES = ("coinbase", "kraken", "bitstamp", "binance", "okx", "bybit", "pyth", "chainlink")


@pytest.fixture(scope="module")
def signing_daemon(config: Path) -> Iterator[Daemon]:
    """The module's one daemon (the shared `daemon` fixture is not used here), signing its writes."""
    d = Daemon(config, MARKD_SIGNING_KEY=KEY.hex()).start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.fixture
def store(redis: RedisServer) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis.url, decode_responses=True, socket_timeout=2)
    yield client
    client.close()


def perp_and_mark(store: redis_py.Redis) -> tuple[dict[str, str], dict[str, str]]:
    """The perp hash and its index's mark hash, read in one MULTI (the daemon writes between reads)."""
    pipe = store.pipeline(transaction=True)
    pipe.hgetall(PERP)
    pipe.hgetall(MARK)
    perp, mark = pipe.execute()
    return perp, mark


def verifies(market: str, fields: dict[str, Any]) -> bool:
    return Verifier("hmac-sha256", KEY).verify(perp_payload(market, fields), str(fields["sig"]))


def usable(fields: dict[str, str], *statuses: str) -> bool:
    """A perp mark computed on a usable index (`statuses`: ok or degraded), with its three candidates."""
    return fields.get("status") in (statuses or ("ok", "degraded")) and all(fields.get(c) for c in ("c1", "c2", "c3"))


@pytest.mark.timeout(60)
def test_the_perp_hash_history_and_channel_hold_the_contract_fields_signed(
    signing_daemon: Daemon, store: redis_py.Redis
) -> None:
    wait_for("BTC-USD's perp mark ok with its three candidates", lambda: usable(store.hgetall(PERP), "ok"), 20)
    pubsub = store.pubsub()
    pubsub.subscribe(UPDATES)
    try:
        messages = [json.loads(m["data"]) for m in _messages(pubsub, 6)]
    finally:
        pubsub.close()
    perp, mark = perp_and_mark(store)
    assert set(perp) == SIGNED and verifies("BTC-USD", perp)
    assert perp["status"] == mark["status"] == "ok"
    price, index, c1, c2, c3 = (float(perp[f]) for f in ("price", "index", "c1", "c2", "c3"))
    # The median of the three candidates, here well inside the clamp (index +- 10 %).
    assert price == sorted([c1, c2, c3])[1] and abs(price / index - 1) < 25e-4
    assert index == pytest.approx(float(mark["price"]), rel=20e-4)

    history = [fields for _, fields in store.xrange(HISTORY)]
    assert len(history) >= 5 and all(set(h) == SIGNED and verifies("BTC-USD", h) for h in history)
    seqs = [int(h["seq"]) for h in history]
    assert seqs == sorted(set(seqs)) and seqs[-1] <= int(store.hget(PERP, "seq") or 0)

    # Each write goes out as JSON on the channel, with the stored strings (so the signature verifies)
    assert all(set(m) == SIGNED and verifies("BTC-USD", m) for m in messages)
    assert [m["seq"] for m in messages] == sorted({m["seq"] for m in messages})
    assert all(isinstance(m["seq"], int) and isinstance(m["ts_ms"], int) for m in messages)


@pytest.mark.timeout(60)
async def test_the_reader_verifies_every_perp_market_and_v1_marks_shows_them(
    signing_daemon: Daemon, redis: RedisServer
) -> None:
    settings = RedisSettings(url=redis.url, prefix=PREFIX)
    async with MarkReader(settings, verify_key=KEY) as reader:
        perps = await reader.read_perps([*PERP_MARKETS, "SOL-USD"])
    assert perps["SOL-USD"] is None  # no perp table
    for market in PERP_MARKETS:
        perp = perps[market]
        assert isinstance(perp, PerpMark) and perp.seq >= 1, perp
    async with MarkReader(settings, verify_key=bytes(32)) as wrong:  # another key: every one refused
        assert all("not ours" in str(p) for p in (await wrong.read_perps(list(PERP_MARKETS))).values())

    served = get_json(f"{signing_daemon.url}/v1/marks")
    assert {m for m, body in served.items() if "perp" in body} == set(PERP_MARKETS)
    assert set(served["BTC-USD"]["perp"]) == {"price", "index", "c1", "c2", "c3", "ts_ms", "status"}
    for family in ("markd_perp_price", "markd_perp_premium_bps"):
        samples = {s.labels["market"]: s.value for s in signing_daemon.metrics()[family].samples}
        assert set(samples) == set(PERP_MARKETS) and all(math.isfinite(v) for v in samples.values())


@pytest.mark.timeout(90)
def test_the_perp_status_follows_the_index_when_the_exchanges_are_cut(
    signing_daemon: Daemon, venues: VenueThread, store: redis_py.Redis
) -> None:
    wait_for("BTC-USD's perp mark ok", lambda: usable(store.hgetall(PERP)), 20)
    seq_before = int(store.hget(PERP, "seq") or 0)
    for venue in INDEX_VENUES:  # the perps and the own book stay up: only the index is lost
        venues.outage(venue, "refuse", 12.0)

    def index_lost() -> tuple[dict[str, str], dict[str, str]] | None:
        perp, mark = perp_and_mark(store)
        return (perp, mark) if mark.get("status") not in ("ok", "degraded") else None

    perp, mark = wait_for("BTC-USD's index not usable", index_lost, 15, every_s=0.1)
    perp, mark = wait_for("its perp mark to follow", lambda: _follows(store), 5, every_s=0.1)
    assert perp["status"] == mark["status"] and perp["status"] in ("stale", "held")
    assert (perp["c1"], perp["c2"], perp["c3"]) == ("", "", "")  # nothing computed without an index
    kept = perp["price"]  # the last price computed on a usable index, kept while it is not
    before = [h for _, h in store.xrange(HISTORY) if int(h["seq"]) <= int(perp["seq"])]
    last_usable = next(h for h in reversed(before) if h["c1"])
    assert kept == last_usable["price"] and verifies("BTC-USD", perp)

    wait_for("BTC-USD's perp mark usable again after the outage", lambda: usable(store.hgetall(PERP)), 40, every_s=0.2)
    history = [h for _, h in store.xrange(HISTORY) if int(h["seq"]) > seq_before]
    seqs = [int(h["seq"]) for h in history]
    assert seqs == sorted(set(seqs))  # strictly rising through the outage
    statuses = [h["status"] for h in history]
    # back to usable: `degraded` while only the fallback tier has come back, then `ok`
    assert statuses[0] == "ok" and perp["status"] in statuses and statuses[-1] in ("ok", "degraded")


def _follows(store: redis_py.Redis) -> tuple[dict[str, str], dict[str, str]] | None:
    perp, mark = perp_and_mark(store)
    return (perp, mark) if perp.get("status") == mark.get("status") not in ("ok", "degraded") else None


def _messages(pubsub: Any, n: int) -> list[dict[str, Any]]:
    """The next `n` messages on a subscribed channel (its subscribe confirmation skipped)."""
    out: list[dict[str, Any]] = []

    def one_more() -> bool:
        m = pubsub.get_message(timeout=0.5)
        if m is not None and m["type"] == "message":
            out.append(m)
        return len(out) >= n

    wait_for(f"{n} messages on {UPDATES}", one_more, 20, every_s=0.0)
    return out


@pytest.mark.timeout(60)
def test_a_broken_perp_key_stops_that_perp_only_and_says_so_on_readyz(
    signing_daemon: Daemon, store: redis_py.Redis
) -> None:
    # Ready first: every market back from the outage test's cut, so the perp is the only reason below.
    wait_for("/readyz to answer 200", lambda: get(f"{signing_daemon.url}/readyz")[0] == 200, 40, every_s=0.2)
    wait_for("BTC-USD's perp mark ok", lambda: usable(store.hgetall(PERP)), 20)
    eth_perp = Keys(PREFIX).perp("ETH-USD")[0]
    pipe = store.pipeline(transaction=True)  # the last seq written and the break, atomically
    pipe.hget(PERP, "seq")
    pipe.set(PERP, "not a hash")  # someone else's write, of the wrong type
    before = int(pipe.execute()[0])
    try:
        _, body = wait_for(
            "/readyz to answer 503", lambda: (r := get(f"{signing_daemon.url}/readyz"))[0] == 503 and r, 10
        )
        assert json.loads(body)["reasons"] == [
            f"BTC-USD: perp mark not published: key {PERP} holds the wrong type or a non-number"
        ]
        eth_seq = int(store.hget(eth_perp, "seq") or 0)
        wait_for("ETH-USD's perp mark going on", lambda: int(store.hget(eth_perp, "seq") or 0) > eth_seq, 5)
        assert store.hget(MARK, "status") in ("ok", "degraded")  # BTC-USD's index too
    finally:
        store.delete(PERP)
    wait_for("/readyz to answer 200 again", lambda: get(f"{signing_daemon.url}/readyz")[0] == 200, 10)
    wait_for("BTC-USD's perp mark back", lambda: usable(store.hgetall(PERP)), 5)
    assert int(store.hget(PERP, "seq") or 0) == before + 1  # Redis lost it: ours goes on, gapless
