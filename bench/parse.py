"""Parse + QuoteBook write per quote, on batched venue documents of 1,000 pairs: the daemon's quote path.

    .venv/bin/python bench/parse.py [--pairs 1000] [--rounds 7]

Two documents, each one venue answer that quotes every pair (how a thousand markets are fed):
- `http_json`: `{"M0000-USD": 100.01, ...}`, bench/latency.py's document;
- `binance`: the real /api/v3/ticker/bookTicker list of {symbol, bidPrice, bidQty, askPrice, askQty},
  prices as decimal strings.
Each is decoded, parsed (`Adapter.parse`: rows, the whole-row checks over arrays, the QuoteBatch)
and written into a QuoteBook (`write_frame`, one vectorised write), exactly as the FeedRunner and
the Service do per frame. Figures are the best of `rounds` (the machine is shared), per quote; the
decode alone is timed with the standard library's json and with msgspec (the decoder in use) for
scale. Prints a final JSON line: {"http_json_us", "binance_us", ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feeds.adapter import Adapter, decode
from feeds.registry import adapter_class
from oracle.quotebook import QuoteBook
from oracle.settings import SourceRef

NOW = 1_700_000_000.0


def documents(pairs: int, seed: int = 1) -> dict[str, tuple[Adapter, bytes]]:
    rng = np.random.default_rng(seed)
    mids = 100 * np.exp(rng.normal(size=pairs))
    usd = [f"M{i:04d}-USD" for i in range(pairs)]
    usdt = [f"M{i:04d}-USDT" for i in range(pairs)]
    http = adapter_class("http_json")("s0", [SourceRef(source="s0", pair=p, path=p) for p in usd], "http://x/s0")
    binance = adapter_class("binance")("b0", [SourceRef(source="b0", pair=p) for p in usdt])
    http_doc = json.dumps({p: round(float(m), 6) for p, m in zip(usd, mids, strict=True)})
    rows = [
        {"symbol": p.replace("-", ""), "bidPrice": f"{m * 0.9999:.8f}", "bidQty": "1.00000000",
         "askPrice": f"{m * 1.0001:.8f}", "askQty": "2.00000000"}
        for p, m in zip(usdt, mids, strict=True)
    ]  # fmt: skip
    return {"http_json": (http, http_doc.encode()), "binance": (binance, json.dumps(rows).encode())}


def best_us(fn: Callable[[], Any], rounds: int, per: int) -> float:
    """Best of `rounds` timings of fn (repeated to ~50 ms), in microseconds per one of `per` quotes."""
    start = time.process_time()
    fn()
    reps = max(1, int(0.05 / max(time.process_time() - start, 1e-6)))
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.process_time() - start) / reps)
    return best / per * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    out: dict[str, Any] = {"pairs": args.pairs}
    for name, (adapter, body) in documents(args.pairs).items():
        book = QuoteBook((adapter.source, p) for p in adapter.refs)
        pairs = tuple(adapter.refs) if name == "binance" else ()
        result = adapter.parse(body, NOW, pairs)
        assert result.batch is not None and len(result.batch) == args.pairs and not result.errors, result.errors

        def path(
            adapter: Adapter = adapter, body: bytes = body, pairs: tuple[str, ...] = pairs, bk: QuoteBook = book
        ) -> None:
            b = adapter.parse(body, NOW, pairs).batch
            assert b is not None
            bk.write_frame(b.source, b.pair, b.received_ts, b.price, b.bid, b.ask, b.venue_ts, b.confidence, b.last)

        total = best_us(path, args.rounds, args.pairs)
        std = best_us(lambda body=body: json.loads(body), args.rounds, args.pairs)
        fast = best_us(lambda body=body: decode(body), args.rounds, args.pairs)
        print(
            f"{name:10s} {len(body):7d} B  parse+write {total:5.2f} us/quote  "
            f"(decode: json {std:4.2f}, msgspec {fast:4.2f} us/quote)"
        )
        out[f"{name}_us"] = round(total, 3)
        out[f"{name}_decode_json_us"], out[f"{name}_decode_msgspec_us"] = round(std, 3), round(fast, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
