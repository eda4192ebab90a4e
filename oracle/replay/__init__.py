"""`markd replay`: the real pipeline on virtual time over recorded ticks, attacked and not.

load the scenario > its ticks (a file, [synth] or [import_ohlc]) > the reference run (no attacks)
> the attacked run > marks.csv, disputes.csv, report.json, report.html
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oracle.replay.attacks import Attack, apply_and_check, apply_attacks
from oracle.replay.report import (
    build_report,
    write_disputes_csv,
    write_marks_csv,
    write_perp_csv,
    write_report_html,
    write_report_json,
)
from oracle.replay.run import RunResult, replay
from oracle.replay.scenario import ImportOhlc, LoadedScenario, Synth, load_scenario
from oracle.settings import ConfigError, Settings
from oracle.sim.synth import Model, SynthError, synth_columns
from oracle.ticks import Ticks, TicksError, read_ticks

__all__ = ["ReplayOutcome", "load_scenario", "load_ticks", "replay_loaded", "run_scenario", "scenario_ticks"]


@dataclass
class ReplayOutcome:
    report: dict[str, Any]
    run: RunResult
    reference: RunResult

    @property
    def passed(self) -> bool:
        return all(c["ok"] for c in self.report["expectations"])


def load_ticks(loaded: LoadedScenario) -> Ticks:
    sc = loaded.scenario
    try:
        if sc.synth is not None:
            return _synth(sc.synth)
        if sc.import_ohlc is not None:
            return import_ohlc(loaded.resolve(sc.import_ohlc.dir), sc.import_ohlc)
        assert sc.ticks is not None
        return read_ticks(loaded.resolve(sc.ticks))
    except TicksError as exc:
        raise ConfigError([str(exc)]) from None
    except SynthError as exc:
        raise ConfigError([f"{loaded.path}: [synth]: {exc}"]) from None


def _synth(spec: Synth) -> Ticks:

    rounds = {name: (r.deviation_bps * 1e-4, r.heartbeat_s) for name, r in spec.rounds.items()}
    model = Model(vol=spec.vol, rounds=rounds, perps=spec.perps)
    if spec.noise_bps is not None:
        model = Model(vol=spec.vol, noise_bps=spec.noise_bps, rounds=rounds, perps=spec.perps)
    return synth_columns(spec.markets, spec.sources, spec.seconds, spec.interval_s, spec.seed, spec.start_ts, model)


def import_ohlc(folder: Path, spec: ImportOhlc) -> Ticks:
    """One quote per minute and file: the close, received at the end of its minute."""
    keys: list[tuple[str, str]] = []
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for label, name in spec.files.items():
        source, _, pair = label.partition(":")
        if not pair:
            raise TicksError(f"import_ohlc.files: '{label}' must read source:PAIR")
        path = folder / name
        try:
            with gzip.open(path, "rt") if name.endswith(".gz") else path.open() as fh:
                rows = list(csv.DictReader(fh))
            ts = np.array([float(r["open_time_ms"]) / 1000 + 60 for r in rows])
            close = np.array([float(r["close"]) for r in rows])
        except (OSError, KeyError, ValueError) as exc:
            raise TicksError(f"{path}: cannot import ({exc})") from None
        keys.append((source, pair))
        parts.append((ts, close))
    feed = np.concatenate([np.full(len(ts), i, dtype=np.intp) for i, (ts, _) in enumerate(parts)])
    ts = np.concatenate([p[0] for p in parts])
    price = np.concatenate([p[1] for p in parts])
    nan = np.full(len(ts), np.nan)
    return Ticks(tuple(keys), feed, ts, price, nan, nan.copy(), nan.copy()).sorted()


def read_keys(settings: Settings) -> set[tuple[str, str]]:
    """The (source, pair) quotes some tier or perp table of some market reads."""
    return {(r.source, r.pair) for m in settings.markets.values() for r in m.feed_refs}


def check_matches(loaded: LoadedScenario, ticks: Ticks, missed_attacks: list[int]) -> None:
    """ConfigError when the scenario would measure nothing: no tick is a quote the config reads, an
    [[expect]]'s market gets no quote, or an attack hits no quote the config reads. Else such a
    replay reports "availability 0.0 %" or no error at all, and `--check` may pass on nothing."""
    where = loaded.path
    settings = loaded.settings
    present = {ticks.keys[f] for f in np.unique(ticks.feed).tolist()}
    read = read_keys(settings)
    if not present & read:
        raise ConfigError(
            [f"{where}: no tick is a quote that {loaded.scenario.config} reads: the ticks have {_few(present)}, "
             f"the config reads {_few(read)}"]
        )  # fmt: skip
    problems = []
    for i, e in enumerate(loaded.scenario.expect):
        market = settings.markets[e.market]
        if not {(r.source, r.pair) for tier in market.tiers for r in tier} & present:
            problems.append(f"{where}: expect[{i}]: no tick is a quote of market {e.market}")
    for i in missed_attacks:
        problems.append(
            f"{where}: attack[{i}]: {_describe(loaded.scenario.attack[i])} matches no quote the config reads"
        )
    if problems:
        raise ConfigError(problems)


def _few(keys: set[tuple[str, str]], n: int = 6) -> str:
    names = [f"{s} {p}" for s, p in sorted(keys)]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _describe(a: Attack) -> str:
    window = f"{a.start_s:g}-{a.start_s + a.duration_s:g} s"
    return f"{a.kind} of {','.join(a.sources)} {a.pair} at {window}"


def run_scenario(
    path: str | Path,
    out_dir: str | Path,
    progress: Callable[[float], None] | None = None,
    html: bool = True,
    chunk: int | None = None,
) -> ReplayOutcome:
    """`chunk`: ticks aggregated per pass (None: by the plan's size; 1: the daemon's tick path, tick by
    tick; the same outputs)."""
    loaded = load_scenario(path)
    ticks = scenario_ticks(loaded)
    outcome, attacked = replay_loaded(loaded, ticks, progress, chunk)
    outcome.report["scenario"] = {"path": str(path), "description": loaded.scenario.description}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_marks_csv(out / "marks.csv", outcome.run)
    write_disputes_csv(out / "disputes.csv", outcome.run)
    if any(m.perp for m in loaded.settings.markets.values()):
        write_perp_csv(out / "perp.csv", outcome.run)
    write_report_json(out / "report.json", outcome.report)
    if html:
        title = f"markd replay: {Path(path).stem}"
        report, run, reference = outcome.report, outcome.run, outcome.reference
        write_report_html(out / "report.html", title, report, run, reference, attacked, loaded.settings)
    return outcome


def scenario_ticks(loaded: LoadedScenario) -> Ticks:
    """The scenario's ticks within its window; ConfigError when none are left."""
    ticks = load_ticks(loaded)
    if loaded.scenario.window is not None:
        start, end = loaded.scenario.window.bounds()
        ticks = ticks.take((ticks.ts >= start) & (ticks.ts < end))
    if not len(ticks):
        raise ConfigError([f"{loaded.path}: the ticks are empty"])
    return ticks


def replay_loaded(
    loaded: LoadedScenario, ticks: Ticks, progress: Callable[[float], None] | None = None, chunk: int | None = None
) -> tuple[ReplayOutcome, Ticks]:
    """The reference and attacked runs and their report (the outcome), and the attacked ticks."""
    attacks = loaded.scenario.attack
    attacked, missed = apply_and_check(ticks, attacks, read_keys(loaded.settings))
    check_matches(loaded, ticks, missed)
    # Same config, same ticks: the reference run would be this run again (replay is deterministic).
    one_run = not attacks and loaded.reference_settings == loaded.settings
    share = 1.0 if one_run else 0.5  # the progress bar covers every run, each its share of the bar
    run = replay(loaded.settings, attacked, _part(progress, 0.0, share), chunk=chunk)
    if one_run:
        reference = run
    else:
        genuine = [a for a in attacks if a.genuine]
        reference_ticks = apply_attacks(ticks, genuine) if genuine else ticks
        reference = replay(loaded.reference_settings, reference_ticks, _part(progress, share, share), chunk=chunk)
    t0 = float(ticks.ts.min())
    report = build_report(run, reference, loaded.settings, attacks, t0, loaded.scenario.expect)
    return ReplayOutcome(report, run, reference), attacked


def _part(progress: Callable[[float], None] | None, start: float, share: float) -> Callable[[float], None] | None:
    """The progress of one run as its share of the whole bar: its 0..1 is start..start+share."""
    if progress is None:
        return None
    return lambda fraction: progress(start + share * fraction)
