"""`markd record`: run the feeds and write every quote to a ticks file (DESIGN.md, "Ticks file").

CSV with the header `ts,source,pair,price,bid,ask,venue_ts,confidence,last` (every column a quote
has: Pyth's conf, a book's last trade), gzip-compressed when the name ends in .gz. Floats are
written with repr, the shortest text that reads back to the same number. Rows are flushed at least
once a second, so a killed recorder loses at most that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp

from feeds.adapter import QuoteBatch
from feeds.runner import FeedRunner
from oracle.clock import Clock, WallClock
from oracle.metrics import Metrics
from oracle.settings import ConfigError, Settings, load_settings
from oracle.ticks import TicksError, TicksWriter

__all__ = ["record", "run_record"]

log = logging.getLogger(__name__)


async def record(
    settings: Settings,
    out_path: str | Path,
    seconds: float | None,
    clock: Clock | None = None,
    *,
    metrics: Metrics | None = None,
    **runner_options: Any,
) -> int:
    """Record for `seconds` (None: until cancelled); returns the number of rows written."""
    clock = clock or WallClock()
    async with aiohttp.ClientSession() as session:
        with TicksWriter(out_path, clock) as writer:

            def write(batch: QuoteBatch) -> None:
                for quote in batch.quotes():  # a person reads the ticks file: Quote objects here
                    writer.write(quote)

            runner = FeedRunner(settings, session, clock, metrics or Metrics(), write, **runner_options)
            task = asyncio.create_task(runner.run(), name="record")
            try:
                if seconds is None:
                    await task
                else:
                    await clock.sleep(seconds)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return writer.rows


def run_record(config_path: str, out: str, seconds: float | None) -> int:
    """The CLI's `markd record`: 0 done, 2 bad config, 1 anything else (one message, no traceback)."""
    try:
        settings = load_settings(config_path)
        rows = asyncio.run(record(settings, out, seconds))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except TicksError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stopped; ticks are in {out}", file=sys.stderr)
        return 0
    except OSError as exc:
        print(f"cannot record to {out}: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {rows} quotes to {out}", file=sys.stderr)
    return 0
