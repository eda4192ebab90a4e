"""The demo's scripted incidents, on a short timeline: what the oracle does, not how it looks.

A +30 % print of one venue is excluded as deviation and does not move the mark; a pump of every
exchange that the fallback tier does not follow holds the mark and a detector opens a dispute
(divergence, or anchor), which reverts by itself once the pump ends. `--calm` plays none of it.
"""

from __future__ import annotations

import io
import re

import pytest

from oracle.demo import Options, run_demo
from oracle.demo_script import PUMP_COIN, SPIKE_COIN, SPIKE_VENUE, EventLog, Timing
from oracle.demo_view import Frame
from oracle.models import Status
from tests.servers import RedisServer

FAST = Timing(spike_at=4.0, spike_end=8.0, pump_at=10.0, pump_end=17.0, cycle=1000.0)
SPIKED, PUMPED = f"{SPIKE_COIN}-USD", f"{PUMP_COIN}-USD"


async def play(
    monkeypatch: pytest.MonkeyPatch, redis: RedisServer, seconds: float, calm: bool
) -> tuple[EventLog, list[Frame]]:
    monkeypatch.setenv("MARKD_REDIS_URL", redis.url)
    log, frames = EventLog(), []
    options = Options(seconds=seconds, seed=3, calm=calm, timing=FAST, log=log, on_frame=frames.append)
    out = io.StringIO()
    assert await run_demo(options, out=out, err=io.StringIO()) == 0
    assert "events:" in out.getvalue()  # the pipe's final table and event log
    return log, frames


def of(log: EventLog, kind: str, market: str) -> list[str]:
    return [e.text for e in log.events if e.kind == kind and e.market == market]


@pytest.mark.timeout(90)
async def test_the_scripted_incidents_play_out_as_announced(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    log, frames = await play(monkeypatch, redis_server, 21.0, calm=False)
    announced = [e.text for e in log.events if e.kind == "incident"]
    assert len(announced) == 4 and announced[0].startswith("INCIDENT") and announced[2].startswith("INCIDENT")

    # 1. the spike: that venue's quote excluded as deviation, the mark neither held nor moved
    assert any(
        f"{SPIKE_VENUE} {SPIKED}" in t and t.endswith("excluded: deviation") for t in of(log, "excluded", SPIKED)
    )
    assert not of(log, "held", SPIKED)
    spiking = [f for f in frames if f.banner.startswith(f"INCIDENT: {SPIKE_VENUE}")]
    assert spiking, "no frame drawn during the spike"
    for frame in spiking:
        mark, truth = frame.marks[SPIKED], frame.truth[SPIKED]
        assert mark is not None and mark.status is Status.OK
        assert abs(mark.price / truth - 1) < 0.002, (mark.price, truth)  # 20 bps, against a 3,000 bps print
    assert any(f.venues[SPIKED][SPIKE_VENUE].reason == "deviation" for f in spiking)

    # 2. the pump: held, a dispute opened by a detector (divergence: the fallback tier disagrees)
    assert of(log, "held", PUMPED), log.events
    opened = of(log, "dispute_opened", PUMPED)
    assert opened and all(re.search(r"\((divergence|anchor), by a detector\)", t) for t in opened), opened
    held = [f.marks[PUMPED] for f in frames if f.marks.get(PUMPED) and f.marks[PUMPED].status is Status.HELD]
    assert held and all(abs(m.price / f.truth[PUMPED] - 1) < 0.02 for m, f in zip(held, frames, strict=False))

    # 3. the pump ends: every one of those disputes reverted by itself, and the mark is ok again
    closed = of(log, "dispute_closed", PUMPED)
    for text in opened:
        dispute_id = text.split("dispute ")[1].split()[0]
        assert f"{PUMPED}: dispute {dispute_id} closed: reverted" in closed, (dispute_id, closed)
    assert of(log, "released", PUMPED)
    last = frames[-1].marks[PUMPED]
    assert last is not None and last.status is Status.OK


@pytest.mark.timeout(60)
async def test_calm_plays_no_incident_and_no_outage(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    log, frames = await play(monkeypatch, redis_server, 8.0, calm=True)
    assert not [e for e in log.events if e.kind in ("incident", "outage", "held", "dispute_opened")], log.events
    assert not [e for e in log.events if e.kind == "excluded" and "deviation" in e.text], log.events
    assert frames and all(m is not None and m.status is Status.OK for m in frames[-1].marks.values())
