"""A hostile venue against the real feed runner: how long does the event loop stall?

A loopback server answers every poll with a valid JSON document just under the 4 MiB default
`max_body_bytes` (the largest thing markd still parses); a probe task measures how late the loop
wakes it (every 1 ms). Run once with big documents parsed in the worker process (markd's way) and
once with everything parsed on the loop (the old way). Then a 50 MB answer: how much is read and
what is counted.

    python bench/hostile_venue.py [--seconds 5]

Prints one JSON line per run: {"run", "max_stall_ms", "p99_stall_ms", "quotes", "errors"}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feeds.runner import FeedRunner
from oracle.clock import WallClock
from oracle.metrics import Metrics
from oracle.settings import Settings
from oracle.testing import free_port

MB = 1024 * 1024


def settings(url: str) -> Settings:
    source = {"kind": "http_json", "base_url": url, "poll_ms": 100, "timeout_ms": 5000}
    market = {"sources": [{"source": "doc", "pair": "ETH-BTC", "path": "price"}], "min_sources": 1}
    return Settings.model_validate({"sources": {"doc": source}, "markets": {"ETH-BTC": market}})


def _serve_forever(body: bytes, port: int) -> None:
    """The venue, in a process of its own: its sending must not count as the daemon's stall."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/doc.json", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


@contextlib.contextmanager
def venue(body: bytes) -> Iterator[str]:
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=_serve_forever, args=(body, port), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/doc.json"
    finally:
        proc.terminate()
        proc.join(10)


async def measure(name: str, url: str, seconds: float, inline_bytes: int | None) -> dict[str, object]:
    quotes: list[object] = []
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        runner = FeedRunner(settings(url), session, WallClock(), metrics, quotes.append)
        if inline_bytes is not None:
            runner.parser.inline_bytes = inline_bytes
        task = asyncio.create_task(runner.run())
        stalls: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stalls.append((time.perf_counter() - before - 0.001) * 1000)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    stalls.sort()
    errors = {
        code: n
        for code in ("too_large", "decode", "timeout", "connect")
        if (n := metrics.registry.get_sample_value("markd_source_errors_total", {"source": "doc", "code": code}))
    }
    return {
        "run": name,
        "max_stall_ms": round(stalls[-1], 1),
        "p99_stall_ms": round(stalls[int(len(stalls) * 0.99)], 1),
        "quotes": len(quotes),
        "errors": errors,
    }


async def main(seconds: float) -> None:
    # An all-tickers dump, as venues serve them: small objects of decimal strings (the slow kind of
    # JSON to parse), just under the cap, with our pair's price at the end.
    row = {"symbol": "SYM000000", "bidPrice": "12345.678", "askPrice": "12345.679", "bidQty": "1.5", "n": 7}
    rows = [dict(row, symbol=f"SYM{i:06d}") for i in range((4 * MB - 4096) // (len(json.dumps(row)) + 2))]
    big = json.dumps({"tickers": rows, "price": "123.5"}).encode()
    assert len(big) < 4 * MB
    with venue(b'{"price": "123.5"}') as url:
        print(json.dumps(await measure("small_doc_baseline", url, seconds, None)))
    with venue(big) as url:
        print(json.dumps(await measure(f"{len(big)}_byte_doc_parsed_off_loop", url, seconds, None)))
        print(json.dumps(await measure(f"{len(big)}_byte_doc_parsed_on_loop", url, seconds, 1 << 40)))
    with venue(b'{"price": "1", "padding": "' + b"x" * (50 * MB) + b'"}') as url:
        print(json.dumps(await measure("50mb_answer", url, seconds, None)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    logging.basicConfig(level=logging.ERROR)  # the feed's warnings would flood the figures
    asyncio.run(main(parser.parse_args().seconds))
