"""`markd synth`: a ticks file of simulated venues (seeded random walk with cross-venue noise).

Each market walks once (walk.gbm_path); every source observes that same walk with its own constant
bias, fresh noise per quote, its own phase on the tick grid and a gamma-distributed delivery
latency, so `ts` (receive time) trails `venue_ts` as it does live. A source may quote a market in
another currency (`binance:USDT`, or `binance:BTC-USDT` for one market only): its price is the
market's price divided by that currency's rate, taken from the market of that name when it is
simulated too (USDT-USD walks like any market), else from a constant `--quote-rates` entry, else,
for a USD stablecoin against USD, its peg (1.0): the README's `binance:USDT` example needs no rate.

Perpetuals (`--perps venue=0,binance_perp=0.003`): a perp source quotes the market's walk times
(1 + its basis) and each of its rows is a book with its last trade, at the bid or the ask (a trade
hits one side). `venue:BTC-PERP` names the pair a perp source quotes: a `PERP` quote currency is the
market's own (an exchange's BTC-PERP is priced in USD).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oracle.sim import walk
from oracle.sim.market import default_vol
from oracle.ticks import Ticks, TicksError, write_ticks

DEFAULT_START_TS = 1_700_000_000.0  # a fixed default keeps a seed's output identical across days
# Quote currencies worth their peg unless simulated or given: a synthetic session rarely wants a de-peg.
PEGGED = {f"{coin}-USD": 1.0 for coin in ("USDT", "USDC", "DAI", "FDUSD", "TUSD", "USDP", "PYUSD")}
PERP = "PERP"  # `venue:BTC-PERP`: the market's perpetual, priced in the market's own quote currency


class SynthError(ValueError):
    """Inputs that cannot produce a ticks file (the CLI turns it into exit code 2)."""


@dataclass(frozen=True, slots=True)
class Feed:
    """One source quoting one market under one pair (the market's own, or re-quoted)."""

    source: str
    market: str
    pair: str


def parse_source(token: str) -> tuple[str, dict[str, str]]:
    """`binance` → no override; `binance:USDT` → every market in USDT; `binance:BTC-USDT` → BTC only."""
    name, _, override = token.partition(":")
    if not name:
        raise SynthError(f"source '{token}': empty name")
    if not override:
        return name, {}
    base, dash, quote = override.rpartition("-")
    if (dash and not base.isalnum()) or not quote.isalnum():
        raise SynthError(f"source '{token}': expected NAME, NAME:QUOTE or NAME:BASE-QUOTE")
    return name, {base or "*": quote}


def plan_feeds(markets: Sequence[str], sources: Sequence[str]) -> list[Feed]:
    """Every (source, market) pair with the pair that source quotes it in."""
    overrides: dict[str, dict[str, str]] = {}
    for token in sources:
        name, over = parse_source(token)
        overrides.setdefault(name, {}).update(over)
    feeds = []
    for name, over in overrides.items():
        for market in markets:
            base, quote = market.split("-")
            quote = over.get(base, over.get("*", quote))
            if quote != base:  # binance:USDT quotes USDT-USD as nothing, not as USDT-USDT
                feeds.append(Feed(name, market, f"{base}-{quote}"))
    return feeds


@dataclass(frozen=True, slots=True)
class Model:
    """How the venues see the walk. `vol` is annualised (one value, or per market; default by market).
    `bias_bps` is the spread of the venues' constant biases (each draws its own from N(0, bias_bps));
    `latency_ms` the mean delivery delay, which each venue scales by its own factor in [0.5, 1.5)."""

    vol: float | Mapping[str, float] | None = None
    noise_bps: float = 1.0
    bias_bps: float = 2.0
    spread_bps: float = 2.0
    latency_ms: float = 50.0
    quote_rates: Mapping[str, float] = field(default_factory=dict)
    # Sources that answer like a Chainlink aggregator: source -> (deviation, heartbeat_s), see rounds().
    rounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Perp sources: source -> basis, its premium over spot (0.003: +0.3 %); their rows carry `last`.
    perps: Mapping[str, float] = field(default_factory=dict)

    def vol_of(self, market: str) -> float:
        if isinstance(self.vol, Mapping):
            return self.vol.get(market, default_vol(market))
        return default_vol(market) if self.vol is None else self.vol


def synth_columns(
    markets: Mapping[str, float],
    sources: Sequence[str],
    seconds: float,
    interval_s: float,
    seed: int,
    start_ts: float = DEFAULT_START_TS,
    model: Model = Model(),
) -> Ticks:
    """The pure core of synth_ticks: every quote as numpy columns, sorted by receive time."""
    _check_inputs(markets, seconds, interval_s)
    feeds = plan_feeds(list(markets), sources)
    if not feeds:
        raise SynthError("no sources given")
    _check_perps(model.perps, {f.source for f in feeds})
    n = int(seconds / interval_s + 1e-9)
    grid = start_ts + interval_s * np.arange(n)
    paths = {
        m: walk.gbm_path(p, model.vol_of(m), n, interval_s, walk.rng_for(seed, "walk", m)) for m, p in markets.items()
    }
    chunks = [_feed_chunk(f, paths, grid, interval_s, seed, model) for f in feeds]
    ts, venue_ts, price, bid, ask, last = (np.concatenate(col) for col in zip(*chunks, strict=True))
    feed = np.repeat(np.arange(len(feeds)), n)
    order = np.argsort(ts, kind="stable")
    keys = tuple((f.source, f.pair) for f in feeds)
    ts, price, bid, ask, venue_ts = (c[order] for c in (ts, price, bid, ask, venue_ts))
    last = last[order] if model.perps else np.empty(0)  # empty: no row has a last (the file has no column)
    return Ticks(keys, feed[order], ts, price, bid, ask, venue_ts, last=last)


def _check_inputs(markets: Mapping[str, float], seconds: float, interval_s: float) -> None:
    if not markets:
        raise SynthError("no markets given")
    for m, p in markets.items():
        if len(m.split("-")) != 2 or not all(m.split("-")):
            raise SynthError(f"market '{m}': expected BASE-QUOTE")
        if not p > 0:
            raise SynthError(f"market '{m}': start price must be positive, got {p}")
    if not interval_s > 0:
        raise SynthError(f"interval must be positive, got {interval_s}")
    if not seconds >= interval_s:
        raise SynthError(f"seconds ({seconds}) must be at least one interval ({interval_s})")


def _check_perps(perps: Mapping[str, float], sources: set[str]) -> None:
    unknown = sorted(set(perps) - sources)
    if unknown:
        raise SynthError(f"perps names {unknown}, which are not among the sources {sorted(sources)}")
    for name, basis in perps.items():
        if not (math.isfinite(basis) and basis > -1.0):
            raise SynthError(f"perp source '{name}': basis must be a finite number above -1, got {basis}")


def _rate(feed: Feed, paths: Mapping[str, np.ndarray], quote_rates: Mapping[str, float]) -> np.ndarray | float:
    """What one unit of the feed's quote currency is worth in the market's quote currency."""
    quote = feed.pair.split("-")[1]
    market_quote = feed.market.split("-")[1]
    if quote in (market_quote, PERP):
        return 1.0
    name = f"{quote}-{market_quote}"
    if name in paths:
        return paths[name]
    if name in quote_rates:
        return quote_rates[name]
    if name in PEGGED:
        return PEGGED[name]
    raise SynthError(f"source {feed.source} quotes {feed.pair}: give --quote-rates {name}=RATE or simulate {name}")


def _feed_chunk(
    feed: Feed, paths: Mapping[str, np.ndarray], grid: np.ndarray, interval_s: float, seed: int, model: Model
) -> tuple[np.ndarray, ...]:
    venue = walk.rng_for(seed, "venue", feed.source)  # the venue's character: same for all its pairs
    bias = venue.normal(0.0, model.bias_bps)
    phase = venue.uniform(0.0, interval_s)
    lat_scale = venue.uniform(0.5, 1.5)
    rng = walk.rng_for(seed, "quotes", feed.source, feed.pair)
    true = paths[feed.market] / _rate(feed, paths, model.quote_rates) * (1.0 + model.perps.get(feed.source, 0.0))
    if feed.source in model.rounds:  # polled every interval, answering the round in force
        deviation, heartbeat_s = model.rounds[feed.source]
        nodes = true * (1.0 + bias * walk.BPS)  # a median of many nodes: no per-quote noise
        current = rounds(nodes, deviation, heartbeat_s / interval_s)
        price, venue_ts = nodes[current], grid[current] + phase  # venue time: the round's updatedAt
        bid = ask = np.full(len(grid), np.nan)  # an answer, not a book
    else:
        price = walk.observe(true, bias, model.noise_bps, rng)
        bid, ask = walk.book(price, model.spread_bps)
        venue_ts = grid + phase
    ts = grid + phase + walk.latencies(len(grid), model.latency_ms * lat_scale, rng)
    last = np.full(len(grid), np.nan)
    if feed.source in model.perps:  # a trade at the bid or the ask, from a stream of its own
        at_ask = walk.rng_for(seed, "trades", feed.source, feed.pair).random(len(grid)) < 0.5
        last = np.where(at_ask, ask, bid)
    return ts, venue_ts, price, bid, ask, last


def rounds(answers: np.ndarray, deviation: float, heartbeat_steps: float) -> np.ndarray:
    """For each step, the index of the round in force, as a Chainlink aggregator writes them: a new
    round when the answer is `deviation` (relative) from the last round's, or `heartbeat_steps`
    after it. The first step is a round."""
    out = np.empty(len(answers), dtype=np.intp)
    last = 0
    for i, answer in enumerate(answers.tolist()):
        if abs(answer / answers[last] - 1.0) >= deviation or i - last >= heartbeat_steps:
            last = i
        out[i] = last
    return out


def synth_ticks(
    path: str | Path,
    markets: Mapping[str, float],
    sources: Sequence[str],
    seconds: float,
    interval_s: float,
    seed: int,
    start_ts: float = DEFAULT_START_TS,
    *,
    vol: float | Mapping[str, float] | None = None,
    noise_bps: float = 1.0,
    bias_bps: float = 2.0,
    spread_bps: float = 2.0,
    latency_ms: float = 50.0,
    quote_rates: Mapping[str, float] | None = None,
    perps: Mapping[str, float] | None = None,
) -> int:
    """Simulate and write a ticks file; returns the number of rows. The keywords are Model's."""
    model = Model(vol, noise_bps, bias_bps, spread_bps, latency_ms, quote_rates or {}, perps=perps or {})
    ticks = synth_columns(markets, sources, seconds, interval_s, seed, start_ts, model)
    write_ticks(path, ticks)
    return len(ticks)


# --- command line -------------------------------------------------------------------------------


def _assignments(text: str) -> dict[str, float]:
    """`A=1,B=2.5` → {"A": 1.0, "B": 2.5} (argparse turns the ValueError into a usage error)."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"'{item}' is not NAME=NUMBER")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{item}': '{value}' is not a number") from None
    if not out:
        raise argparse.ArgumentTypeError("expected NAME=NUMBER[,NAME=NUMBER...]")
    return out


def _vol_arg(text: str) -> float | dict[str, float]:
    try:
        return float(text)
    except ValueError:
        return _assignments(text)


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="markd synth",
        description="Write a ticks file of simulated venues: one seeded random walk per market, "
        "observed by each source with its own bias, noise and latency.",
    )
    p.add_argument("--out", required=True, help="ticks file to write (.csv, .csv.gz, or .parquet: the parquet extra)")
    p.add_argument("--markets", required=True, type=_assignments, help="MARKET=START_PRICE,... e.g. BTC-USD=30000")
    p.add_argument(
        "--sources",
        required=True,
        type=_csv_list,
        help="NAME[:QUOTE|:BASE-QUOTE],... e.g. coinbase,kraken,binance:USDT",
    )
    p.add_argument("--seconds", type=float, default=3600.0, help="simulated duration (default 3600)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between a source's quotes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=float, default=DEFAULT_START_TS, help="Unix time of the first tick")
    p.add_argument("--vol", type=_vol_arg, default=None, help="annualised volatility: one number or MARKET=VOL,...")
    p.add_argument("--noise-bps", type=float, default=1.0, help="per-quote noise std dev (default 1)")
    p.add_argument("--bias-bps", type=float, default=2.0, help="std dev of the venues' constant biases (default 2)")
    p.add_argument("--spread-bps", type=float, default=2.0, help="bid/ask spread (default 2)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="mean delivery latency (default 50)")
    p.add_argument(
        "--quote-rates",
        type=_assignments,
        default={},
        help="constant rates of quote currencies not simulated, e.g. EUR-USD=1.08,USDT-USD=1.0005 "
        "(USD stablecoins default to 1)",
    )
    p.add_argument(
        "--perps",
        type=_assignments,
        default={},
        help="perp sources and their basis over spot, e.g. venue=0,binance_perp=0.003: each quotes the "
        "walk x (1 + basis) as a book with its last trade (name the own book's pair venue:BTC-PERP)",
    )
    return p


def run_synth(argv: list[str]) -> int:
    """`markd synth ...`: 0 on success, 2 on bad usage (one message, no traceback), 1 on I/O failure."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message already
        return int(exc.code or 0)
    try:
        rows = synth_ticks(
            args.out,
            args.markets,
            args.sources,
            args.seconds,
            args.interval,
            args.seed,
            args.start,
            vol=args.vol,
            noise_bps=args.noise_bps,
            bias_bps=args.bias_bps,
            spread_bps=args.spread_bps,
            latency_ms=args.latency_ms,
            quote_rates=args.quote_rates,
            perps=args.perps,
        )
    except (SynthError, TicksError) as exc:
        print(f"markd synth: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"markd synth: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows} ticks to {args.out}")
    return 0
