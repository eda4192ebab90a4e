"""The daemon's event loop: uvloop's when it is installed (the `fast` extra; the image has it), else
asyncio's own.

uvloop runs the same asyncio code on libuv, with its sockets, timers and callbacks in C: less CPU
per request, poll and publish (README, Benchmarks: `bench/latency.py --loop both`). Nothing in markd
depends on which loop runs it. `MARKD_LOOP` chooses: `auto` (the default: uvloop if importable),
`asyncio`, or `uvloop` (an error if it is not installed, rather than a quiet fallback).
"""

from __future__ import annotations

import asyncio
import os

KINDS = ("auto", "asyncio", "uvloop")


class LoopError(ValueError):
    """MARKD_LOOP names no loop, or one that is not installed."""


def choice() -> str:
    kind = os.environ.get("MARKD_LOOP", "auto").strip().lower() or "auto"
    if kind not in KINDS:
        raise LoopError(f"MARKD_LOOP={kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind MARKD_LOOP asks for (see the module's docstring)."""
    kind = choice()
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise LoopError("MARKD_LOOP=uvloop, but uvloop is not installed (pip install 'markd[fast]')") from None
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def name(loop: asyncio.AbstractEventLoop) -> str:
    """'uvloop' or 'asyncio': which kind `loop` is, for the start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
