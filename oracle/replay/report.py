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
from pathlib import Path
from typing import Any

import numpy as np

from oracle.display import metric_text, percent_text
from oracle.models import Status
from oracle.replay.attacks import Attack
from oracle.replay.run import STATUS_CODES, RunResult
from oracle.replay.scenario import METRICS, Expect
from oracle.settings import Settings
from oracle.ticks import Ticks

USABLE = np.array([STATUS_CODES[Status.OK], STATUS_CODES[Status.DEGRADED]])
HELD = STATUS_CODES[Status.HELD]


def _num(x: float | None) -> str:
    """A CSV cell: the float as repr (round-trips exactly), empty for None or NaN."""
    return "" if x is None or math.isnan(x) else repr(float(x))


def write_marks_csv(path: Path, run: RunResult) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ts", "market", "price", "confidence", "status", "tier", "sources", "seq"])
        for ts, m in zip(run.publish_ts, run.published, strict=True):
            w.writerow(
                [
                    repr(ts),
                    m.market,
                    _num(m.price),
                    _num(m.confidence),
                    m.status.value,
                    m.tier,
                    ",".join(m.sources),
                    m.seq,
                ]
            )


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


def check(expect: list[Expect], markets: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ops = {"<=": float.__le__, ">=": float.__ge__, "==": float.__eq__, "<": float.__lt__, ">": float.__gt__}
    out = []
    for e in expect:
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
    return {
        "markets": markets,
        "expectations": check(expect, markets),
        "run": {
            "ticks": len(run.grid),
            "seconds": run.seconds,
            "ticks_per_s": run.ticks_per_s,
            "tick_ms": settings.service.tick_ms,
        },
        "reference": {"ticks": len(ref.grid), "seconds": ref.seconds, "ticks_per_s": ref.ticks_per_s},
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
    ticks: Ticks,
    settings: Settings,
) -> None:
    figures = [(m, _plot_market(m, run, ref, ticks, settings)) for m in run.series]
    header = "".join(f"<th>{name.replace('_', ' ')}</th>" for name in METRICS)
    rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{_fmt(r[k])}</td>" for k in METRICS) + "</tr>"
        for m, r in report["markets"].items()
    )
    checks = "".join(
        f"<li class={'ok' if c['ok'] else 'bad'}>{html.escape(c['market'])} {c['metric']} {html.escape(c['op'])} "
        f"{c['value']}: got {_fmt(c['got'])} {'✔' if c['ok'] else '✘'} {html.escape(c['why'])}</li>"
        for c in report["expectations"]
    )
    body = "".join(
        f"<h2>{html.escape(m)}</h2><img alt='{html.escape(m)}' src='data:image/png;base64,{png}'>" for m, png in figures
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.ok{{color:#176c2e}}.bad{{color:#b00020;font-weight:bold}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{report["run"]["ticks"]} ticks of {report["run"]["tick_ms"]} ms, replayed at
{report["run"]["ticks_per_s"]:.0f} ticks/s. Error is the usable mark's distance from the reference run
(the same ticks without the attacks, under the scenario's reference_config if it names one), in basis points.</p>
<table><tr><th>market</th>{header}</tr>{rows}</table>
<h2>Expectations</h2><ul>{checks or "<li>none stated</li>"}</ul>{body}</body></html>"""
    path.write_text(page, encoding="utf-8")


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


# Source lines take muted colours, none of them the mark's blue or the exclusions' red.
SOURCE_COLOURS = ("#8c8c8c", "#e6a817", "#4daf4a", "#984ea3", "#a65628", "#f781bf", "#17becf", "#bcbd22")


def _plot_market(market: str, run: RunResult, ref: RunResult, ticks: Ticks, settings: Settings) -> str:
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
    pairs = {(r.source, r.pair) for t in settings.markets[market].tiers for r in t}
    off_scale = 0
    for f, key in enumerate(ticks.keys):
        if key in pairs:
            rows = ticks.feed == f
            off_scale += int(((ticks.price[rows] < ylim[0]) | (ticks.price[rows] > ylim[1])).sum())
            ts, price = _thin(ticks.ts[rows], ticks.price[rows])
            colour = SOURCE_COLOURS[len(ax.lines) % len(SOURCE_COLOURS)]
            ax.plot(day(ts), price, lw=0.6, alpha=0.7, color=colour, label=f"{key[0]} {key[1]}")
    ax.plot(day(run.grid), mark, color="tab:blue", lw=1.4, label="mark")
    if market in ref.series:
        ax.plot(day(ref.grid), ref.series[market].price, color="black", lw=1.0, ls="--", label="reference mark")
    ex = run.excluded.get(market, [])
    if ex:
        ax.scatter(day([e[0] for e in ex]), [e[2] for e in ex], marker="x", s=12, color="red", label="excluded quote")
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
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


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
    for c in report["expectations"]:
        value, got = metric_text(c["metric"], c["value"]), metric_text(c["metric"], c["got"])
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'} {c['market']} {c['metric']} {c['op']} {value} (got {got})")
    run = report["run"]
    lines.append(f"{run['ticks']} ticks in {run['seconds']:.2f} s ({run['ticks_per_s']:.0f} ticks/s)")
    return "\n".join(lines)
