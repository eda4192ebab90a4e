"""Replay outputs: marks.csv, disputes.csv, report.json and report.html.

Error is measured where it hurts: at each tick where the attacked run offers the margin engine a
usable mark (status ok or degraded), its price against the reference run's (the same pipeline on
the same ticks without the attacks) at the same tick. A held or stale mark is not an error, it is
unavailability, and `availability` counts it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from oracle.display import metric_text, percent_text
from oracle.models import PerpMark, Status
from oracle.replay.attacks import Attack
from oracle.replay.run import STATUS_CODES, RunResult, Series
from oracle.replay.runs import ChunkMarks, PublishedFields
from oracle.replay.scenario import METRICS, PERP_FIGURES, PERP_PREFIX, Expect
from oracle.settings import Settings
from oracle.ticks import Ticks
from oracle.validation.state import STATUSES

USABLE = np.array([STATUS_CODES[Status.OK], STATUS_CODES[Status.DEGRADED]])
HELD = STATUS_CODES[Status.HELD]
STALE = STATUS_CODES[Status.STALE]


def _num(x: float | None) -> str:
    """A CSV cell: the float as repr (round-trips exactly), empty for None or NaN."""
    return "" if x is None or math.isnan(x) else repr(float(x))


MARKS_HEADER = ("ts", "market", "price", "confidence", "status", "tier", "sources", "seq")


class MarksCsv:
    """marks.csv, written as a run publishes (`Run(marks=...)`): a month of marks is never held.

    A chunk's marks are formatted a column at a time (a month is 26 million rows): each tick's time
    once for all its markets, each list of sources once, a price as repr (exact) or empty for NaN."""

    def __init__(self, fh: IO[str]) -> None:
        self._w = csv.writer(fh, lineterminator="\n")
        self._w.writerow(MARKS_HEADER)
        self._joined: dict[tuple[str, ...], str] = {}

    def rows(self, publish_ts: Iterable[float], fields: Iterable[PublishedFields]) -> None:
        self._w.writerows(
            [repr(ts), market, _num(price), _num(confidence), status.value, tier, ",".join(sources), seq]
            for ts, (market, price, confidence, _, seq, status, tier, sources, *_) in zip(
                publish_ts, fields, strict=True
            )
        )

    def chunk(self, out: ChunkMarks, first_seq: list[int]) -> None:
        c = out.published_columns(first_seq)
        times = [repr(t) for t in out.nows.tolist()]
        joined = self._joined
        for sources in set(c.sources) - joined.keys():
            joined[sources] = ",".join(sources)
        self._w.writerows(
            zip([times[t] for t in c.tick], c.market, _texts(c.price), _texts(c.confidence),
                [STATUS_TEXT[s] for s in c.status], c.tier, [joined[s] for s in c.sources], c.seq, strict=True)
        )  # fmt: skip


STATUS_TEXT = [s.value for s in STATUSES]


def _texts(xs: list[float]) -> list[str]:
    """`_num` of each: repr, or empty for NaN."""
    return [repr(x) if x == x else "" for x in xs]


def write_marks_csv(path: Path, run: RunResult) -> None:
    """marks.csv of a run that kept its published marks."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        MarksCsv(fh).rows(run.publish_ts, run.published.fields())


def write_perp_csv(path: Path, run: RunResult) -> None:
    """perp.csv: one row per tick and perp market with a perp price; c1..c3 empty where the index
    was not usable (the perp then keeps its last price and takes the index's status)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ts", "market", "price", "index", "c1", "c2", "c3", "status"])
        for ts, p in run.perps:
            w.writerow([repr(ts), p.market, _num(p.price), _num(p.index), _num(p.c1), _num(p.c2), _num(p.c3), p.status])


def write_disputes_csv(path: Path, run: RunResult) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["opened_ts", "closed_ts", "market", "reason", "outcome"])
        for d in run.disputes:
            w.writerow(
                [
                    repr(d.opened_ts),
                    _num(d.closed_ts),
                    d.market,
                    d.reason.value,
                    d.outcome.value if d.outcome else "",
                ]
            )


def affected_markets(settings: Settings, attack: Attack) -> list[str]:
    """The markets with the attacked (source, pair) in any tier."""
    return [
        name
        for name, m in settings.markets.items()
        if any(r.source in attack.sources and r.pair == attack.pair for t in m.tiers for r in t)
    ]


def market_report(
    market: str, run: RunResult, ref: RunResult, settings: Settings, attacks: list[Attack], t0: float
) -> dict[str, Any]:
    tick_s = settings.service.tick_ms / 1000
    a = run.series[market]
    r = ref.series.get(market)  # None: the reference config lacks the market; no error to measure
    usable = np.isin(a.status, USABLE)
    if r is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(a.price / r.price - 1.0) * 1e4
        err = err[usable & np.isfinite(err)]
    disputes = [d for d in run.disputes if d.market == market]
    starts = [t0 + at.start_s for at in attacks if not at.genuine and market in affected_markets(settings, at)]
    attack_start = min(starts) if starts else None
    latency = None
    if attack_start is not None:
        after = [d.opened_ts - attack_start for d in disputes if d.opened_ts >= attack_start]
        latency = min(after) if after else None
    held = np.flatnonzero(a.status == HELD)
    errors: dict[str, float | None] = {"max_error_bps": None, "p99_error_bps": None, "seconds_over_50bps": None}
    if r is not None:
        errors = {
            "max_error_bps": float(err.max()) if err.size else 0.0,
            "p99_error_bps": float(np.percentile(err, 99)) if err.size else 0.0,
            "seconds_over_50bps": float((err > 50).sum() * tick_s),
        }
    return {
        **errors,
        "availability": float(usable.mean()) if usable.size else 0.0,
        "reference_availability": (
            float(np.isin(r.status, USABLE).mean()) if r is not None and r.status.size else None
        ),
        "disputes": len(disputes),
        "disputes_by_reason": _count(d.reason.value for d in disputes),
        "detection_latency_s": latency,
        "held_before_s": (
            float(run.grid[held[0]] - attack_start)
            if held.size and attack_start is not None and run.grid[held[0]] >= attack_start
            else None
        ),
        "ticks": len(run.grid),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out


def check(
    expect: list[Expect], markets: dict[str, dict[str, Any]], perp: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each [[expect]] against the report: a `perp_NAME` metric reads the market's `perp` entry."""
    ops = {"<=": float.__le__, ">=": float.__ge__, "==": float.__eq__, "<": float.__lt__, ">": float.__gt__}
    out = []
    for e in expect:
        if e.metric.startswith(PERP_PREFIX):
            got = (perp or {}).get(e.market, {}).get(e.metric.removeprefix(PERP_PREFIX))
        else:
            got = markets[e.market][e.metric]
        ok = got is not None and ops[e.op](float(got), e.value)
        out.append(
            {
                "market": e.market,
                "metric": e.metric,
                "op": e.op,
                "value": e.value,
                "got": got,
                "ok": bool(ok),
                "why": e.why,
            }
        )
    return out


def build_report(
    run: RunResult, ref: RunResult, settings: Settings, attacks: list[Attack], t0: float, expect: list[Expect]
) -> dict[str, Any]:
    markets = {m: market_report(m, run, ref, settings, attacks, t0) for m in run.series}
    perp = perp_report(run, ref, settings) if run.perps else {}
    return {
        **({"perp": perp} if perp else {}),
        "markets": markets,
        "expectations": check(expect, markets, perp),
        "run": {
            "ticks": len(run.grid),
            "seconds": run.seconds,
            "ticks_per_s": run.ticks_per_s,
            "tick_ms": settings.service.tick_ms,
        },
        "reference": {"ticks": len(ref.grid), "seconds": ref.seconds, "ticks_per_s": ref.ticks_per_s},
    }


def perp_report(run: RunResult, ref: RunResult, settings: Settings) -> dict[str, dict[str, float]]:
    """Per perp market, the perp mark's error against the reference run's at the same ticks (both
    priced): max and p99 in bps, and seconds over 50 bps, as for the index; and what the mark did at
    the ticks where its index was usable (the perp scenarios' [[expect]]s read these, as perp_NAME):

    - max_premium_bps: the largest |price / index - 1|;
    - final_premium_bps, final_basis_bps: price / index - 1 and c1 / index - 1 (the basis EMA E / I)
      at the run's last usable tick, signed;
    - clamped_s: seconds the mark sat on the clamp, index x (1 +- max_premium_bps / 1e4);
    - c3_fallback_s: seconds c3 was the index, no external perp counting."""
    tick_s = settings.service.tick_ms / 1000
    theirs = {(t, p.market): p.price for t, p in ref.perps}
    errors: dict[str, list[float]] = {}
    usable: dict[str, list[PerpMark]] = {}
    for t, p in run.perps:
        other = theirs.get((t, p.market))
        errors.setdefault(p.market, [])
        if other is not None and other > 0:
            errors[p.market].append(abs(p.price / other - 1.0) * 1e4)
        if p.status in (Status.OK, Status.DEGRADED):
            usable.setdefault(p.market, []).append(p)
    out = {}
    for market, errs in sorted(errors.items()):
        e = np.array(errs) if errs else np.zeros(1)
        perp = settings.markets[market].perp
        assert perp is not None  # only a perp market has perp marks
        out[market] = {
            "max_error_bps": float(e.max()),
            "p99_error_bps": float(np.percentile(e, 99)),
            "seconds_over_50bps": float((e > 50).sum() * tick_s),
            **_premiums(usable[market], perp.max_premium_bps, tick_s),
        }
    return out


def _premiums(marks: list[PerpMark], max_premium_bps: float, tick_s: float) -> dict[str, float]:
    """The premium figures of perp_report over the perp marks of the usable ticks: there is one, as
    a perp mark has a price only once its index was usable."""
    price, index, c1, fallback = (
        np.array([getattr(p, f) for p in marks]) for f in ("price", "index", "c1", "c3_fallback")
    )
    premium = (price / index - 1.0) * 1e4
    return {
        "max_premium_bps": float(np.abs(premium).max()),
        "final_premium_bps": float(premium[-1]),
        "final_basis_bps": float((c1[-1] / index[-1] - 1.0) * 1e4),
        "clamped_s": float((np.abs(premium) >= max_premium_bps * (1 - 1e-9)).sum() * tick_s),
        "c3_fallback_s": float(fallback.sum() * tick_s),
    }


def write_report_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


# --- report.html ------------------------------------------------------------------------------


def write_report_html(
    path: Path,
    title: str,
    report: dict[str, Any],
    run: RunResult,
    ref: RunResult,
    quotes: QuoteTrace,
    settings: Settings,
) -> None:
    figures = [(m, _plot_market(m, run, ref, quotes, settings)) for m in run.series]
    header = "".join(f"<th>{name.replace('_', ' ')}</th>" for name in METRICS)
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{metric_text(k, r[k])}</td>" for k in METRICS) + "</tr>"
        for m, r in report["markets"].items()
    )
    checks = "".join(
        f"<li class={'ok' if c['ok'] else 'bad'}>{html.escape(c['market'])} {c['metric']} {html.escape(c['op'])} "
        f"{metric_text(c['metric'], c['value'])}: got {metric_text(c['metric'], c['got'])} "
        f"{'✔' if c['ok'] else '✘'} {html.escape(c['why'])}</li>"
        for c in report["expectations"]
    )
    body = "".join(
        f"<h2>{html.escape(m)}</h2><img alt='{html.escape(m)}' src='data:image/png;base64,{png}'>"
        + _exclusion_table(run.excluded.get(m, []))
        for m, png in figures
    )
    description = str(report.get("scenario", {}).get("description", ""))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.ok{{color:#176c2e}}.bad{{color:#b00020;font-weight:bold}}img{{max-width:100%}}
.desc{{background:#f4f4f4;padding:8px 12px;border-left:4px solid #888}}</style></head><body>
<h1>{html.escape(title)}</h1>
{f'<p class="desc">{html.escape(description)}</p>' if description else ""}
<p>{report["run"]["ticks"]} ticks of {report["run"]["tick_ms"]} ms, replayed at
{report["run"]["ticks_per_s"]:.0f} ticks/s. Error is the usable mark's distance from the reference run
(the same ticks without the attacks, under the scenario's reference_config if it names one), in basis points.</p>
<table><tr><th>market</th>{header}</tr>{rows}</table>{_perp_table(report.get("perp", {}))}
<h2>Expectations</h2><ul>{checks or "<li>none stated</li>"}</ul>{body}</body></html>"""
    path.write_text(page, encoding="utf-8")


def _perp_table(perp: dict[str, dict[str, Any]]) -> str:
    """The perp marks' figures (report.json's `perp` entry), one row per perp market."""
    if not perp:
        return ""
    header = "".join(f"<th>{name.replace('_', ' ')}</th>" for name in PERP_FIGURES)
    rows = "".join(
        f"<tr><td>{html.escape(m)} perp</td>" + "".join(f"<td>{metric_text(k, r[k])}</td>" for k in PERP_FIGURES)
        + "</tr>"
        for m, r in perp.items()
    )  # fmt: skip
    return f"<h2>Perp mark</h2><table><tr><th>market</th>{header}</tr>{rows}</table>"


def _exclusion_table(excluded: list[tuple[float, str, str, float, str]]) -> str:
    """How many quotes of each source and pair were left out of the mark, and why."""
    if not excluded:
        return "<p>No quote was excluded.</p>"
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for _, source, pair, _, reason in excluded:
        by_reason = counts.setdefault((source, pair), {})
        by_reason[reason] = by_reason.get(reason, 0) + 1
    reasons = sorted({r for by in counts.values() for r in by})
    head = "".join(f"<th>{html.escape(r)}</th>" for r in reasons)
    body = "".join(
        f"<tr><td>{html.escape(f'{s} {p}')}</td>" + "".join(f"<td>{by.get(r, 0)}</td>" for r in reasons) + "</tr>"
        for (s, p), by in sorted(counts.items())
    )
    return f"<table><tr><th>excluded quotes by reason</th>{head}</tr>{body}</table>"


class QuoteTrace:
    """The time and price of every quote of the (source, pair) keys a config reads, gathered piece by
    piece as a replay streams (report.html draws them: 16 bytes a row, which `--no-html` saves)."""

    def __init__(self, keys: set[tuple[str, str]]) -> None:
        self.keys = keys
        self._parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, ticks: Ticks) -> None:
        for f in np.unique(ticks.feed).tolist():
            if ticks.keys[f] in self.keys:
                rows = ticks.feed == f
                self._parts.setdefault(ticks.keys[f], []).append((ticks.ts[rows], ticks.price[rows]))

    def clear(self) -> None:
        self._parts.clear()

    def of(self, key: tuple[str, str]) -> tuple[np.ndarray, np.ndarray] | None:
        """The key's receive times and prices, in time order; None when no row had it."""
        parts = self._parts.get(key)
        if not parts:
            return None
        if len(parts) > 1:
            parts[:] = [(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))]
        return parts[0]

    @classmethod
    def of_ticks(cls, ticks: Ticks) -> QuoteTrace:
        trace = cls(set(ticks.keys))
        trace.add(ticks)
        return trace


def quote_lines(
    market: str, run: RunResult, quotes: QuoteTrace, settings: Settings
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, receive times, prices in the market's currency) of each quote the market reads. A
    converted pair (BTC-USDT through USDT-USD) is multiplied by its convert market's mark as the run
    had it at that moment, so a de-pegged stablecoin's quotes sit where markd saw them."""
    out = []
    seen = set()
    for ref in [r for tier in settings.markets[market].tiers for r in tier]:
        line = quotes.of((ref.source, ref.pair))
        if line is None or (ref.source, ref.pair) in seen:
            continue
        seen.add((ref.source, ref.pair))
        ts, price = line
        label = f"{ref.source} {ref.pair}"
        if ref.convert is not None:
            price = price * mark_at(run, ref.convert, ts)
            label += f" × {ref.convert}"
        out.append((label, ts, price))
    return out


def mark_at(run: RunResult, market: str, ts: np.ndarray) -> np.ndarray:
    """The run's mark of `market` at each instant (the latest tick at or before it; NaN before any)."""
    if market not in run.series or not len(run.grid):
        return np.full(len(ts), np.nan)
    k = np.searchsorted(run.grid, ts, side="right") - 1
    price = run.series[market].price
    return np.where(k >= 0, price[np.clip(k, 0, len(price) - 1)], np.nan)


def mark_segments(series: Series) -> dict[str, np.ndarray]:
    """The mark split by what a consumer may do with it: `usable` (ok, degraded), `held` and `stale`
    (the last validated price, not usable); NaN elsewhere, so each draws as its own line."""
    usable = np.isin(series.status, USABLE)
    return {
        "usable": np.where(usable, series.price, np.nan),
        "held": np.where(series.status == HELD, series.price, np.nan),
        "stale": np.where(series.status == STALE, series.price, np.nan),
    }


EXCLUSION_MARKERS = {"deviation": "x", "stale": ".", "frozen": "s", "sanity": "^", "conversion": "v", "future": ">"}


# Source lines take muted colours, none of them the mark's blue or the exclusions' red.
SOURCE_COLOURS = ("#8c8c8c", "#e6a817", "#4daf4a", "#984ea3", "#a65628", "#f781bf", "#17becf", "#bcbd22")


def png_base64(fig: Any) -> str:
    """A matplotlib figure as base64 PNG for an <img> inside a self-contained page; closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plot_market(market: str, run: RunResult, ref: RunResult, quotes: QuoteTrace, settings: Settings) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt

    epoch_s = (np.datetime64(mdates.get_epoch()) - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "s")

    def day(ts: Any) -> Any:  # Unix seconds -> matplotlib's date numbers (UTC)
        return (np.asarray(ts, dtype=float) - epoch_s) / 86400.0

    fig, ax = plt.subplots(figsize=(12, 5), dpi=90)
    mark = run.series[market].price
    shown = [mark[np.isfinite(mark)]]
    if market in ref.series:
        shown.append(ref.series[market].price[np.isfinite(ref.series[market].price)])
    finite = np.concatenate(shown)
    lo, hi = np.percentile(finite, [0, 100]) if finite.size else (0.0, 1.0)
    pad = (hi - lo) * 0.5 or hi * 0.01
    ylim = (lo - pad, hi + pad)  # from the marks: wild quotes (x1000) must not flatten the plot
    off_scale = 0
    for i, (label, ts, price) in enumerate(quote_lines(market, run, quotes, settings)):
        off_scale += int(((price < ylim[0]) | (price > ylim[1])).sum())
        ts, price = _thin(ts, price)
        ax.plot(day(ts), price, lw=0.6, alpha=0.7, color=SOURCE_COLOURS[i % len(SOURCE_COLOURS)], label=label)
    segments = mark_segments(run.series[market])
    ax.plot(day(run.grid), segments["usable"], color="tab:blue", lw=1.4, label="mark (ok, degraded)")
    for status, colour in (("held", "darkorange"), ("stale", "dimgray")):
        if np.isfinite(segments[status]).any():
            label = f"{status}: last price, not usable"
            ax.plot(day(run.grid), segments[status], color=colour, lw=2.0, ls=":", label=label)
    if market in ref.series:
        ax.plot(day(ref.grid), ref.series[market].price, color="black", lw=1.0, ls="--", label="reference mark")
    _plot_exclusions(ax, day, market, run, settings)
    _shade(ax, day(run.grid), run.series[market].status == HELD, "orange", "held")
    for i, d in enumerate(x for x in run.disputes if x.market == market):
        end = d.closed_ts if d.closed_ts is not None else float(run.grid[-1])
        ax.axvspan(day(d.opened_ts), day(end), color="red", alpha=0.12, label="dispute" if i == 0 else None)
    ax.set_ylim(*ylim)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("price")
    if off_scale:
        ax.set_title(f"{off_scale} quotes lie off this scale (the scale follows the marks)", fontsize=9, loc="right")
    ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.9)
    ax.grid(alpha=0.3)
    return png_base64(fig)


def _plot_exclusions(ax: Any, day: Any, market: str, run: RunResult, settings: Settings) -> None:
    """Each excluded quote where it was (converted like its line), one marker per reason."""
    converts = {(r.source, r.pair): r.convert for t in settings.markets[market].tiers for r in t}
    by_reason: dict[str, tuple[list[float], list[float]]] = {}
    for t, source, pair, price, reason in run.excluded.get(market, []):
        convert = converts.get((source, pair))
        rate = float(mark_at(run, convert, np.array([t]))[0]) if convert else 1.0
        ts, prices = by_reason.setdefault(reason, ([], []))
        ts.append(t)
        prices.append(price * rate)
    for reason, (ts, prices) in sorted(by_reason.items()):
        marker = EXCLUSION_MARKERS.get(reason, "x")
        ax.scatter(day(ts), prices, marker=marker, s=14, color="red", label=f"excluded: {reason}")


def _thin(ts: np.ndarray, price: np.ndarray, limit: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, len(ts) // limit)
    return ts[::step], price[::step]


def _shade(ax: Any, grid: np.ndarray, mask: np.ndarray, color: str, label: str) -> None:
    if not mask.any():
        return
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    for j, (a, b) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        ax.axvspan(grid[a], grid[min(b, len(grid) - 1)], color=color, alpha=0.2, label=label if j == 0 else None)


def summary(report: dict[str, Any]) -> str:
    """The few lines `markd replay` prints: per market the report's figures, then each expectation."""
    lines = []
    for market, r in report["markets"].items():
        latency = r["detection_latency_s"]
        error = (
            "no reference"
            if r["max_error_bps"] is None
            else f"max error {r['max_error_bps']:.1f} bps, p99 {r['p99_error_bps']:.1f} bps, "
            f"{r['seconds_over_50bps']:.0f} s over 50 bps"
        )
        lines.append(
            f"{market}: {error}, availability {percent_text(r['availability'])}, "
            f"{r['disputes']} dispute(s)" + (f", detected after {latency:.1f} s" if latency is not None else "")
        )
    for market, r in report.get("perp", {}).items():
        lines.append(
            f"{market} perp: max error {metric_text('max_error_bps', r['max_error_bps'])}, "
            f"max premium {metric_text('max_premium_bps', r['max_premium_bps'])}, "
            f"final {metric_text('final_premium_bps', r['final_premium_bps'])}, "
            f"{metric_text('clamped_s', r['clamped_s'])} on the clamp, "
            f"{metric_text('c3_fallback_s', r['c3_fallback_s'])} with c3 on the index"
        )
    for c in report["expectations"]:
        value, got = metric_text(c["metric"], c["value"]), metric_text(c["metric"], c["got"])
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'} {c['market']} {c['metric']} {c['op']} {value} (got {got})")
    run = report["run"]
    lines.append(f"{run['ticks']} ticks in {run['seconds']:.2f} s ({run['ticks_per_s']:.0f} ticks/s)")
    return "\n".join(lines)
