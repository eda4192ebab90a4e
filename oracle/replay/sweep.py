"""`markd sweep`: one scenario replayed under every combination of some config values.

    markd sweep SCENARIO.toml --set policy.max_deviation_bps=50,100,200 --set policy.min_sources=2,3 --out DIR

parse the --set options > build and validate every combination's config (exit 2 before anything runs)
> replay each combination as `markd replay` would, in a process pool > DIR/sweep.csv, DIR/sweep.html

The ticks are read once, before the pool starts: its workers are forked from this process and share
them (and the plan) copy-on-write; a combination travels as its index, so nothing big is pickled. A
ticks file over SHARED_READ_MAX_BYTES streams through each combination instead (oracle.replay.pieces).
"""

from __future__ import annotations

import csv
import html
import itertools
import json
import math
import multiprocessing
import os
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oracle.replay import replay_loaded, replay_scenario, scenario_ticks
from oracle.replay.report import png_base64
from oracle.replay.run import DISCARD
from oracle.replay.scenario import LoadedScenario, load_scenario
from oracle.settings import ConfigError, Settings, load_settings, parse_settings, read_toml
from oracle.ticks import Ticks

# The figures of sweep.csv after the swept keys: the same names and values as report.json's markets.
FIGURES = ("max_error_bps", "p99_error_bps", "seconds_over_50bps", "availability", "disputes", "detection_latency_s")
_NAMED = ("markets", "sources")  # sections whose first key is a name from the config

Override = tuple[str, Any]  # (key path, value)


@dataclass(frozen=True)
class Axis:
    key: str  # as written: policy.max_deviation_bps
    values: tuple[Any, ...]


def parse_value(text: str) -> Any:
    """A TOML value (`0.5`, `3`, `true`, `"median"`, `["a", "b"]`); a bare word that is not TOML is a string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, dict):
        raise ConfigError([f"--set: {text!r} is a table; give a number, true/false, a string or an array"])
    return value


def split_values(text: str) -> list[str]:
    """`V1,V2,...` split at the commas outside quotes and brackets: `"a,b",c` is two values and
    `[1,2],[3]` two arrays, so a string or an array holding a comma can be one value."""
    values: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append("".join(current))
            current = []
            continue
        current.append(ch)
    values.append("".join(current))
    return [v.strip() for v in values]


def parse_axis(option: str) -> Axis:
    key, sep, values = option.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError([f"--set {option}: write KEY=V1,V2,... (e.g. policy.min_sources=2,3)"])
    if any(not part for part in key.split(".")):
        raise ConfigError([f"--set {option}: '{key}' is not a key path (dotted, e.g. policy.min_sources)"])
    parsed = tuple(parse_value(v) for v in split_values(values))
    return Axis(key, parsed)


def combinations(axes: Sequence[Axis]) -> list[tuple[Override, ...]]:
    """The cartesian product, the first --set varying slowest."""
    return [
        tuple(zip((a.key for a in axes), values, strict=True))
        for values in itertools.product(*(a.values for a in axes))
    ]


def apply(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """The config document with each key path set (copied along the path, the original untouched)."""
    out = dict(raw)
    for key, value in overrides:
        parts = key.split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            if depth == 1 and parts[0] in _NAMED and part not in node:
                raise ConfigError([f"--set {key}: no {parts[0][:-1]} '{part}' in the config"])
            child = node.get(part, {})
            if not isinstance(child, dict):
                raise ConfigError([f"--set {key}: '{'.'.join(parts[: depth + 1])}' is not a table"])
            node[part] = dict(child)
            node = node[part]
        node[parts[-1]] = value
    return out


def settings_for(loaded: LoadedScenario, raw: dict[str, Any], overrides: Sequence[Override]) -> Settings:
    """The combination's config, validated; a ConfigError names the --set values it came from."""
    try:
        return parse_settings(apply(raw, overrides))
    except ConfigError as exc:
        given = " ".join(f"{k}={format_value(v)}" for k, v in overrides)
        raise ConfigError([f"--set {given}: {p}" for p in exc.problems]) from None


def with_settings(loaded: LoadedScenario, settings: Settings, reference: Settings | None) -> LoadedScenario:
    """The scenario under a swept config; the reference run keeps the scenario's reference_config."""
    return LoadedScenario(loaded.path, loaded.scenario, settings, reference)


@dataclass
class Plan:
    loaded: LoadedScenario
    raw: dict[str, Any]  # the scenario's config document, before the overrides
    reference: Settings | None  # the scenario's reference_config, if it names one
    axes: list[Axis]
    combos: list[tuple[Override, ...]]
    ticks: Ticks | None  # the scenario's, read once for every combination; None: each streams its file


# A ticks file up to this size is read once, before the pool forks, and its columns are shared by the
# workers. A larger one streams through each combination as through `markd replay`: read whole, a
# month (a 13.7 GB CSV, 155 million rows) would take ~17 GB at the reader's peak, and each worker
# streams it in ~2 GB.
SHARED_READ_MAX_BYTES = 1 << 30


def plan(scenario: str | Path, options: Sequence[str]) -> Plan:
    """Everything checked before anything runs: the scenario, every --set and every combination."""
    loaded = load_scenario(scenario)
    axes = [parse_axis(o) for o in options]
    if not axes:
        raise ConfigError(["give at least one --set KEY=V1,V2,..."])
    seen = [a.key for a in axes]
    if len(set(seen)) != len(seen):
        raise ConfigError([f"--set: {k} is given twice" for k in sorted({k for k in seen if seen.count(k) > 1})])
    raw = read_toml(loaded.path.parent / loaded.scenario.config)
    sc = loaded.scenario
    reference = load_settings(loaded.path.parent / sc.reference_config) if sc.reference_config else None
    combos = combinations(axes)
    problems: list[str] = []
    for combo in combos:
        try:
            settings_for(loaded, raw, combo)
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise ConfigError(problems)
    return Plan(loaded, raw, reference, axes, combos, _shared_ticks(loaded))


def _shared_ticks(loaded: LoadedScenario) -> Ticks | None:
    """The ticks every combination shares, read now; None for a file over SHARED_READ_MAX_BYTES."""
    sc = loaded.scenario
    if sc.ticks is not None and _size(loaded.resolve(sc.ticks)) > SHARED_READ_MAX_BYTES:
        return None
    return scenario_ticks(loaded)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # scenario_ticks reads it and says what is wrong


# --- the workers ---------------------------------------------------------------------------------

_WORKER: dict[str, Plan] = {}  # the plan being run, set before the pool forks its workers


def _run_combo(index: int) -> tuple[int, dict[str, dict[str, Any]]]:
    p = _WORKER["plan"]
    settings = settings_for(p.loaded, p.raw, p.combos[index])
    loaded = with_settings(p.loaded, settings, p.reference)
    if p.ticks is None:
        outcome = replay_scenario(loaded, marks=lambda: DISCARD)  # report only
    else:
        outcome = replay_loaded(loaded, p.ticks, marks=DISCARD)
    return index, outcome.report["markets"]


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(p: Plan, jobs: int, progress: Callable[[float], None] | None = None) -> list[dict[str, dict[str, Any]]]:
    """Each combination's per-market figures (report.json's `markets`), in combination order."""
    results: list[dict[str, dict[str, Any]] | None] = [None] * len(p.combos)
    jobs = max(1, min(jobs, len(p.combos)))
    done = 0
    _WORKER["plan"] = p
    if jobs == 1:  # no pool: nothing to gain, and tracebacks stay readable
        for i in range(len(p.combos)):
            results[i] = _run_combo(i)[1]
            done += 1
            if progress is not None:
                progress(done / len(p.combos))
    else:
        fork = multiprocessing.get_context("fork")  # the workers inherit the plan and its ticks
        with ProcessPoolExecutor(max_workers=jobs, mp_context=fork) as pool:
            for future in as_completed([pool.submit(_run_combo, i) for i in range(len(p.combos))]):
                i, markets = future.result()
                results[i] = markets
                done += 1
                if progress is not None:
                    progress(done / len(p.combos))
    return [r for r in results if r is not None]


# --- the outputs ---------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A cell: floats as repr (they read back to the same float), true/false, None as empty, an array
    as TOML (the JSON of numbers, strings and booleans is TOML too)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def rows(p: Plan, results: Sequence[dict[str, dict[str, Any]]]) -> list[list[str]]:
    out = []
    for combo, markets in zip(p.combos, results, strict=True):
        for market, figures in markets.items():
            out.append([format_value(v) for _, v in combo] + [market] + [format_value(figures[f]) for f in FIGURES])
    return out


def write_csv(path: Path, p: Plan, results: Sequence[dict[str, dict[str, Any]]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([a.key for a in p.axes] + ["market", *FIGURES])
        w.writerows(rows(p, results))


def write_html(path: Path, p: Plan, results: Sequence[dict[str, dict[str, Any]]]) -> None:
    """The trade-off: per market, max error against availability, one labelled point per combination."""
    markets = list(results[0]) if results else []
    labels = [", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in combo) for combo in p.combos]
    figures = "".join(
        f"<h2>{html.escape(m)}</h2><img alt='{html.escape(m)}' src='data:image/png;base64,"
        f"{_tradeoff_png(m, labels, [r[m] for r in results])}'>"
        for m in markets
    )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in [a.key for a in p.axes] + ["market", *FIGURES])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows(p, results))
    title = f"markd sweep: {p.loaded.path.stem}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(p.combos)} combinations. Error is the usable mark's distance from the reference run, in basis
points; availability is the share of ticks with a usable (ok or degraded) mark. Up and to the left is
worse on both.</p>{figures}<table><tr>{header}</tr>{body}</table></body></html>"""
    path.write_text(page, encoding="utf-8")


def _tradeoff_png(market: str, labels: list[str], figures: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=90)
    points: dict[tuple[float, float], list[str]] = {}  # combinations that land on one point share its label
    for label, f in zip(labels, figures, strict=True):
        err = f["max_error_bps"]
        points.setdefault((f["availability"] * 100, math.nan if err is None else err), []).append(label)
    for (x, y), names in points.items():
        ax.scatter([x], [y], s=36)
        ax.annotate("\n".join(names), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.margins(0.25)  # room for the labels of the points at the edges
    ax.set_xlabel("availability (%)")
    ax.set_ylabel("max error (bps)")
    ax.set_title(market)
    ax.grid(alpha=0.3)
    return png_base64(fig)


def sweep(
    scenario: str | Path,
    options: Sequence[str],
    out_dir: str | Path,
    jobs: int | None = None,
    html_report: bool = True,
    progress: Callable[[float], None] | None = None,
) -> tuple[Plan, list[dict[str, dict[str, Any]]]]:
    p = plan(scenario, options)
    results = run(p, jobs or default_jobs(), progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sweep.csv", p, results)
    if html_report:
        write_html(out / "sweep.html", p, results)
    return p, results
