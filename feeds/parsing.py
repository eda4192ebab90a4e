"""Parsing that never holds the event loop for long: small frames inline, big ones in a worker process.

json.loads of a 4 MiB document takes ~100 ms of one core, and C code holds the GIL throughout, so a
thread would not free the loop: a big frame goes to a worker process instead, which sends back only
the ParseResult (the quotes of our pairs, a few hundred bytes). Frames up to `INLINE_BYTES` (~1 ms
to decode) are parsed on the loop as before: nearly every real venue message is far smaller, so the
worker is rarely started at all.

    parser = FrameParser()
    result = await parser.parse(adapter, frame)
    parser.close()

The worker is one process ('spawn', not 'fork': the daemon has threads and open sockets), started
at the first big frame and restarted if it dies; its cache keeps each adapter it was sent, so a
frame costs the copy of its bytes and nothing else.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from feeds.adapter import Adapter, PairError, ParseResult
from feeds.transport import Frame

__all__ = ["INLINE_BYTES", "FrameParser"]

INLINE_BYTES = 64 * 1024

_WORKER_ADAPTERS: dict[str, Adapter] = {}  # in the worker: adapters by key, unpickled once


def _worker_ignores_interrupts() -> None:
    """A terminal's Ctrl-C reaches the whole process group: the daemon stops the worker itself, so
    the worker must not die on it first with a KeyboardInterrupt traceback on stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parse_in_worker(
    key: str, blob: bytes, body: str | bytes, received_ts: float, pairs: tuple[str, ...]
) -> ParseResult:
    adapter = _WORKER_ADAPTERS.get(key)
    if adapter is None:
        adapter = _WORKER_ADAPTERS[key] = pickle.loads(blob)
    return adapter.parse(body, received_ts, pairs)


class FrameParser:
    def __init__(self, inline_bytes: int = INLINE_BYTES) -> None:
        self.inline_bytes = inline_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._blobs: dict[int, tuple[str, bytes]] = {}  # id(adapter) -> (its key, its pickle)

    async def parse(self, adapter: Adapter, frame: Frame) -> ParseResult:
        if len(frame.body) <= self.inline_bytes:
            return adapter.parse(frame.body, frame.received_ts, frame.pairs)
        key, blob = self._blob(adapter)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._worker(), _parse_in_worker, key, blob, frame.body, frame.received_ts, frame.pairs
            )
        except BrokenProcessPool:  # the worker died (killed, out of memory): this frame is lost, not the feed
            self.close()
            detail = "the parsing worker died on this frame"
            return ParseResult(errors=(PairError("decode", None, detail),))

    def _blob(self, adapter: Adapter) -> tuple[str, bytes]:
        known = self._blobs.get(id(adapter))
        if known is None:
            key = f"{adapter.source}:{id(adapter)}:{len(self._blobs)}"
            known = self._blobs[id(adapter)] = (key, pickle.dumps(adapter))
        return known

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_ignores_interrupts
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker, if one was started (a parse in flight is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
