"""`markd replay`: the real pipeline on virtual time over recorded ticks, attacked and not.

load the scenario > its ticks (a file, [synth] or [import_ohlc]) > the reference run (no attacks)
> the attacked run > marks.csv, disputes.csv, report.json, report.html
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oracle.replay.attacks import Attack, PieceAttacks
from oracle.replay.pieces import PIECE_ROWS, NotInTimeOrder, Source, TableSource, in_time, windowed
from oracle.replay.report import (
    MarksCsv,
    QuoteTrace,
    build_report,
    write_disputes_csv,
    write_perp_csv,
    write_report_html,
    write_report_json,
)
from oracle.replay.run import DISCARD, MarksOut, Run, RunResult
from oracle.replay.scenario import ImportOhlc, LoadedScenario, Synth, load_scenario
from oracle.settings import ConfigError, Settings
from oracle.sim.synth import Model, SynthError, synth_columns
from oracle.ticks import NotStreamable, Ticks, TicksError, TickStream, read_ticks

__all__ = [
    "ReplayOutcome",
    "load_scenario",
    "load_ticks",
    "replay_loaded",
    "replay_scenario",
    "run_scenario",
    "scenario_ticks",
]


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


def check_matches(loaded: LoadedScenario, present: set[tuple[str, str]], missed_attacks: list[int]) -> None:
    """ConfigError when the scenario would measure nothing: no tick is a quote the config reads, an
    [[expect]]'s market gets no quote, or an attack hits no quote the config reads. Else such a
    replay reports "availability 0.0 %" or no error at all, and `--check` may pass on nothing."""
    where = loaded.path
    settings = loaded.settings
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
    problems += _missed(loaded, missed_attacks)
    if problems:
        raise ConfigError(problems)


def check_attacks_read(loaded: LoadedScenario) -> None:
    """ConfigError, before a tick is read, for an attack on no (source, pair) the config reads: it
    can hit nothing, and a stream would learn it only at the end of the file (minutes, for a month)."""
    read = read_keys(loaded.settings)
    never = [i for i, a in enumerate(loaded.scenario.attack) if not any((s, a.pair) in read for s in a.sources)]
    if never:
        raise ConfigError(_missed(loaded, never))


def _missed(loaded: LoadedScenario, attacks: list[int]) -> list[str]:
    return [
        f"{loaded.path}: attack[{i}]: {_describe(loaded.scenario.attack[i])} matches no quote the config reads"
        for i in attacks
    ]


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
    tick; the same outputs).

    A ticks file streams through both runs at once (oracle.replay.pieces), and marks.csv is written
    as the attacked run publishes, into a file beside DIR that becomes DIR/marks.csv at the end: a
    month of ticks and marks is never held. The outcome's run then keeps no published marks (they
    are in marks.csv). A file that cannot stream (rows out of time order, a line only the line reader
    can judge, a `delay` attack) is read whole, as before."""
    loaded = load_scenario(path)
    check_attacks_read(loaded)
    out = Path(out_dir)
    quotes = QuoteTrace(read_keys(loaded.settings)) if html else None
    with _PartialFile(out / "marks.csv") as partial:

        def fresh_marks() -> MarksOut:  # marks.csv from its header (again, if the file must be read whole)
            partial.restart()
            return MarksCsv(partial.file)

        outcome = replay_scenario(loaded, progress, chunk, fresh_marks, quotes)
        outcome.report["scenario"] = {"path": str(path), "description": loaded.scenario.description}
        out.mkdir(parents=True, exist_ok=True)
        partial.keep()
    write_disputes_csv(out / "disputes.csv", outcome.run)
    if any(m.perp for m in loaded.settings.markets.values()):
        write_perp_csv(out / "perp.csv", outcome.run)
    write_report_json(out / "report.json", outcome.report)
    if quotes is not None:
        title = f"markd replay: {Path(path).stem}"
        report, run, reference = outcome.report, outcome.run, outcome.reference
        write_report_html(out / "report.html", title, report, run, reference, quotes, loaded.settings)
    return outcome


class _PartialFile:
    """A file written beside its place (in the nearest folder that exists, so a failed replay
    creates no DIR) and moved there by `keep`; removed if the block ends without `keep`."""

    def __init__(self, target: Path) -> None:
        self.target = target
        folder = next(p for p in target.parents if p.is_dir())
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=folder)
        self.path = Path(name)
        self.file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self.kept = False

    def restart(self) -> None:
        self.file.seek(0)
        self.file.truncate()

    def keep(self) -> None:
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        self.path.chmod(0o666 & ~umask)  # as open() would have made it (mkstemp makes 0600)
        shutil.move(self.path, self.target)
        self.kept = True

    def __enter__(self) -> _PartialFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.kept:
            self.file.close()
            self.path.unlink(missing_ok=True)


def replay_scenario(
    loaded: LoadedScenario,
    progress: Callable[[float], None] | None = None,
    chunk: int | None = None,
    marks: Callable[[], MarksOut] | None = None,
    quotes: QuoteTrace | None = None,
) -> ReplayOutcome:
    """`replay_loaded` over the scenario's own ticks: a file as it streams, or read whole where it
    cannot stream (`ticks_source`). `marks` makes the attacked run's sink, afresh for a second try
    (None: the outcome keeps the marks)."""
    try:
        return replay_loaded(loaded, ticks_source(loaded), progress, chunk, marks and marks(), quotes)
    except (NotStreamable, NotInTimeOrder):
        if quotes is not None:
            quotes.clear()
        return replay_loaded(loaded, scenario_ticks(loaded), progress, chunk, marks and marks(), quotes)
    except TicksError as exc:  # a bad row of a Parquet file, met as it streams
        raise ConfigError([str(exc)]) from None


def ticks_source(loaded: LoadedScenario) -> Source:
    """The scenario's ticks as a replay reads them: a file as it streams, [synth] and [import_ohlc]
    from memory. TickStream raises NotStreamable where the file must be read whole (scenario_ticks)."""
    sc = loaded.scenario
    if sc.ticks is None:
        return TableSource(load_ticks(loaded))
    try:
        return TickStream(loaded.resolve(sc.ticks), PIECE_ROWS)
    except TicksError as exc:
        raise ConfigError([str(exc)]) from None


def scenario_ticks(loaded: LoadedScenario) -> Ticks:
    """The scenario's ticks within its window, read whole; ConfigError when none are left."""
    ticks = load_ticks(loaded)
    if loaded.scenario.window is not None:
        start, end = loaded.scenario.window.bounds()
        ticks = ticks.take((ticks.ts >= start) & (ticks.ts < end))
    if not len(ticks):
        raise ConfigError([f"{loaded.path}: the ticks are empty"])
    return ticks


def replay_loaded(
    loaded: LoadedScenario,
    ticks: Ticks | Source,
    progress: Callable[[float], None] | None = None,
    chunk: int | None = None,
    marks: MarksOut | None = None,
    quotes: QuoteTrace | None = None,
) -> ReplayOutcome:
    """The reference and attacked runs and their report. Both runs take each piece of the ticks in
    turn (the ticks are read once); `marks`: where the attacked run's marks go (None: kept in the
    outcome); `quotes`: collects the attacked quotes report.html draws."""
    source = TableSource(ticks) if isinstance(ticks, Ticks) else ticks
    attacks = loaded.scenario.attack
    bounds = loaded.scenario.window.bounds() if loaded.scenario.window is not None else None
    pieces: Iterable[Ticks] = in_time(windowed(source, bounds))
    if not PieceAttacks.streams(attacks):
        if not isinstance(ticks, Ticks):
            raise NotStreamable  # a delay moves rows from one piece into another: the caller reads them whole
        pieces = windowed([ticks], bounds)  # one piece
    times = source.times if isinstance(source, TableSource) else None
    # Same config, same ticks: the reference run would be this run again (replay is deterministic).
    one_run = not attacks and loaded.reference_settings == loaded.settings
    run = Run(loaded.settings, chunk=chunk, marks=marks, times=times)
    # Nothing reads the reference run's published marks (the report compares the two runs' series).
    reference = run if one_run else Run(loaded.reference_settings, chunk=chunk, marks=DISCARD, times=times)
    feeds = _Feeds(loaded, attacks)
    if progress is not None:
        _Progress(progress, source, times, [run] if reference is run else [run, reference])
    for piece in pieces:
        attacked, genuine = feeds.take(piece)
        if quotes is not None:
            quotes.add(attacked)
        run.feed(attacked)
        if reference is not run:
            reference.feed(genuine)
    if feeds.t0 is None:
        raise ConfigError([f"{loaded.path}: the ticks are empty"])
    check_matches(loaded, feeds.present, feeds.missed)
    result = run.finish()
    ref = result if reference is run else reference.finish()
    if progress is not None:
        progress(1.0)
    report = build_report(result, ref, loaded.settings, attacks, feeds.t0, loaded.scenario.expect)
    return ReplayOutcome(report, result, ref)


class _Progress:
    """The bar's fraction after each pass of either run: of a table in memory, how far both runs are
    through its time (the mean of the two); of a file, how much of it has been read. Never 1.0
    before the end (the caller sends that, once)."""

    def __init__(
        self, show: Callable[[float], None], source: Source, times: tuple[float, float] | None, runs: list[Run]
    ) -> None:
        self.show, self.source, self.times, self.runs = show, source, times, runs
        for r in runs:
            r.on_pass = self

    def __call__(self) -> None:
        if self.times is None:
            fraction = self.source.fraction
        else:
            first, last = self.times
            done = [(r.now - first) / (last - first) if last > first and r.now == r.now else 0.0 for r in self.runs]
            fraction = sum(done) / len(done)
        if 0.0 <= fraction < 1.0:
            self.show(fraction)


class _Feeds:
    """Each piece as each run sees it: attacked, and with the genuine attacks only (the reference)."""

    def __init__(self, loaded: LoadedScenario, attacks: list[Attack]) -> None:
        self.attacks, self.read = attacks, read_keys(loaded.settings)
        self.genuine = [a for a in attacks if a.genuine]
        self.t0: float | None = None  # the first tick's instant, from which attacks are timed
        self.present: set[tuple[str, str]] = set()
        self._attacked = self._reference = PieceAttacks([], 0.0, None)

    def take(self, piece: Ticks) -> tuple[Ticks, Ticks]:
        if self.t0 is None:
            self.t0 = float(piece.ts.min())
            self._attacked = PieceAttacks(self.attacks, self.t0, self.read)
            self._reference = PieceAttacks(self.genuine, self.t0, None)
        self.present.update(piece.keys[f] for f in np.unique(piece.feed).tolist())
        attacked = self._attacked.apply(piece)
        return attacked, (self._reference.apply(piece) if self.genuine else piece)

    @property
    def missed(self) -> list[int]:
        return self._attacked.missed
