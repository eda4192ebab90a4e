"""`markd demo` shows a live perp mark: BTC-USD and ETH-USD over the simulated own book and the other
venues' perpetuals, in Redis (P:{M}:perp, its history), on /v1/marks and in the view's perp rows."""

from __future__ import annotations

import asyncio
import io
import math
import re

import aiohttp
import pytest
from redis.asyncio import Redis
from rich.console import Console

from oracle.demo import Options, run_demo
from oracle.demo_view import Frame, market_table
from oracle.models import Status
from oracle.schema import Keys
from oracle.sim.demo import PERP_MARKETS
from tests.servers import RedisServer

PERP, HISTORY, _ = Keys("markd").perp("BTC-USD")


@pytest.mark.timeout(60)
async def test_the_demo_publishes_and_shows_a_live_perp_mark(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    monkeypatch.setenv("MARKD_REDIS_URL", redis_server.url)
    frames: list[Frame] = []
    out = io.StringIO()
    options = Options(seconds=7.0, seed=5, calm=True, on_frame=frames.append)
    demo = asyncio.create_task(run_demo(options, out=out, err=io.StringIO()))
    served = await _marks_over_http(frames)
    assert await demo == 0

    # Redis: the perp hash, and its history with seq rising strictly at a premium of a few bps
    raw = Redis.from_url(redis_server.url, decode_responses=True)
    stored, history = await raw.hgetall(PERP), [f for _, f in await raw.xrange(HISTORY)]
    await raw.aclose()
    assert stored["status"] == "ok" and stored["c1"] and stored["c2"] and stored["c3"]
    seqs = [int(f["seq"]) for f in history]
    assert len(seqs) >= 10 and seqs == sorted(set(seqs)), seqs
    premiums = [(float(f["price"]) / float(f["index"]) - 1) * 1e4 for f in history if f["status"] == "ok"]
    # Every simulated perp trades 2.5-4 bps over spot: the mark's premium is that, not zero, not wild.
    assert all(-15 < p < 25 for p in premiums), premiums
    assert 0 < sum(premiums) / len(premiums) < 10, premiums

    # /v1/marks: each perp market's perp mark beside its index
    assert {m for m, body in served.items() if "perp" in body} == set(PERP_MARKETS)
    btc = served["BTC-USD"]["perp"]
    assert btc["status"] == "ok" and abs(btc["price"] / btc["index"] - 1) < 25e-4
    assert all(btc[c] is not None for c in ("c1", "c2", "c3"))

    # the view: the perp rows, read back from Redis as the margin engine reads them
    last = frames[-1]
    assert set(m for m, p in last.perps.items() if p) == set(PERP_MARKETS)
    for market in PERP_MARKETS:
        perp = last.perps[market]
        assert perp is not None and perp.status is Status.OK
        assert all(math.isfinite(c) for c in (perp.c1, perp.c2, perp.c3))
        assert abs(perp.price / last.truth[market] - 1) < 50e-4
    drawn = {line.split("  ")[0].strip(): line for line in _text(last).splitlines() if line.strip()}
    assert {"perp mark", "premium", "c1 index+basis", "c2 own book", "c3 other perps"} <= set(drawn)
    btc_premium = f"{last.perps['BTC-USD'].premium_bps:+.1f} bps"  # type: ignore[union-attr]
    assert btc_premium in drawn["premium"], drawn["premium"]

    # the pipe's final table: a perp column after the price
    header, *lines = [line.split() for line in out.getvalue().split("\n\n")[0].splitlines()]
    assert header[:3] == ["market", "price", "perp"], header
    by_market = {line[0]: line for line in lines}
    assert float(by_market["BTC-USD"][2]) > 0 and by_market["SOL-USD"][2] == "-"


def _text(frame: Frame) -> str:
    console = Console(width=160, file=io.StringIO(), color_system=None)
    console.print(market_table(frame))
    return console.file.getvalue()  # type: ignore[attr-defined]


async def _marks_over_http(frames: list[Frame]) -> dict[str, dict]:
    """/v1/marks of the demo's daemon once both perp markets have one (its port is in the header)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for _ in range(300):
            await asyncio.sleep(0.05)
            port = re.search(r"http://127\.0\.0\.1:(\d+)", frames[-1].header) if frames else None
            if port is None or port.group(1) == "None":
                continue
            async with http.get(f"http://127.0.0.1:{port.group(1)}/v1/marks") as resp:
                body = await resp.json()
            if all(body.get(m, {}).get("perp", {}).get("status") == "ok" for m in PERP_MARKETS):
                return dict(body)
    raise AssertionError("no perp mark on /v1/marks within 15 s")
