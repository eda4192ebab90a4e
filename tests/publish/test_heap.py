"""While the daemon ticks, what it built to run (the config, the pipeline, the book) is out of the
cyclic collector's scans (oracle.service.freeze_heap): a full collection of it stopped the event loop
for 90-150 ms every few seconds at 1,000 markets. A reload's new objects join it; stopping gives
everything back to the collector."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

from oracle.service import Service
from oracle.settings import Settings
from oracle.sim.demo import to_toml
from tests.publish.helpers import eventually
from tests.servers import RedisServer, free_port

SOURCES = ("a", "b", "c")


def config(url: str, markets: tuple[str, ...]) -> dict[str, object]:
    down = f"http://127.0.0.1:{free_port()}"  # nobody listens: the feeds fail, the ticks go on
    return {
        "service": {"tick_ms": 50, "http_host": "127.0.0.1", "http_port": 0, "log_level": "WARNING"},
        "redis": {"url": url, "prefix": "heap"},
        "sources": {s: {"kind": "http_json", "base_url": f"{down}/{s}"} for s in SOURCES},
        "markets": {m: {"sources": [{"source": s, "pair": m, "path": m} for s in SOURCES]} for m in markets},
    }


def tracked(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (the frozen ones are in none of them)."""
    return any(o is obj for o in gc.get_objects())


async def test_the_running_daemons_own_objects_are_frozen_and_thawed_at_stop(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "markd.toml"
    path.write_text(to_toml(config(redis_server.url, ("BTC-USD", "ETH-USD"))))
    service = Service(Settings.model_validate(config(redis_server.url, ("BTC-USD", "ETH-USD"))), config_path=str(path))
    assert tracked(service.pipeline)
    task = asyncio.create_task(service.run())
    try:
        await eventually(lambda: _ticked(service), within_s=10)
        assert not tracked(service.pipeline) and not tracked(service.settings) and gc.get_freeze_count() > 0
        old = weakref.ref(service.pipeline), weakref.ref(service.book), weakref.ref(service.settings)
        path.write_text(to_toml(config(redis_server.url, ("BTC-USD", "SOL-USD"))))
        assert await service.reload()
        assert "SOL-USD" in service.settings.markets and not tracked(service.pipeline)
        # Frozen, yet freed: nothing of them was in a cycle (a frozen cycle is never collected, so this
        # would time out). A task of the old config still winding down may hold them a moment longer.
        await eventually(lambda: _freed(old), within_s=5)
    finally:
        service.stop()
        await asyncio.wait_for(task, 10)
    assert gc.get_freeze_count() == 0 and tracked(service.pipeline)


async def _freed(refs: tuple[weakref.ref[object], ...]) -> bool:
    return all(ref() is None for ref in refs)


async def _ticked(service: Service) -> bool:
    return service._last_tick != 0.0
