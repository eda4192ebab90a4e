"""Scenario files for `markd replay` (TOML, validated strictly like the config).

    ticks = "ticks.csv"            # relative to the scenario file (.csv or .csv.gz)
    config = "markd.toml"          # the daemon's config format
    [[attack]] ...                 # zero or more, see oracle/replay/attacks.py

Additions to the contract, all optional:
    description = "..."            # what the scenario models
    [synth]                        # generate the ticks instead of reading them (seeded, in memory)
    [import_ohlc]                  # or build them from 1-minute OHLC files (the SVB de-peg data)
    [[expect]]                     # the outcome the scenario expects, checked by `markd replay --check`
                                   # (a perp market's figures too: metric = "perp_max_premium_bps", ...)
    reference_config = "usd.toml"  # the reference run's config (default: `config`), e.g. only the
                                   # USD-quoted venues, to measure a market against them
    [window]                       # replay only the ticks received in [start, end) (TOML datetimes)
    [[attack]] genuine = true      # a real market move: the reference run sees it as well
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AwareDatetime, Field, ValidationError, model_validator

from oracle.replay.attacks import Attack
from oracle.settings import ConfigError, Settings, Strict, load_settings, read_toml, validation_problems

Metric = Literal[
    "max_error_bps",
    "p99_error_bps",
    "seconds_over_50bps",
    "availability",
    "disputes",
    "detection_latency_s",
    "held_before_s",
]
# The report's per-market figures an [[expect]] may name, in the order report.html shows them: the
# one list of them (oracle/replay/report.py computes and draws these).
METRICS: tuple[Metric, ...] = get_args(Metric)
# A perp market's figures (report.json's `perp` entry), named in an [[expect]] as `perp_` + the name.
PerpMetric = Literal[
    "perp_max_error_bps",
    "perp_p99_error_bps",
    "perp_seconds_over_50bps",
    "perp_max_premium_bps",
    "perp_final_premium_bps",
    "perp_final_basis_bps",
    "perp_clamped_s",
    "perp_c3_fallback_s",
]
PERP_PREFIX = "perp_"
PERP_METRICS: tuple[PerpMetric, ...] = get_args(PerpMetric)
PERP_FIGURES = tuple(m.removeprefix(PERP_PREFIX) for m in PERP_METRICS)  # the `perp` entry's keys


class Rounds(Strict):
    """A source that answers like a Chainlink aggregator: a new round only this far from its last
    answer, or at its heartbeat; polled every interval, each quote repeats the round in force."""

    deviation_bps: Annotated[float, Field(gt=0)] = 50.0
    heartbeat_s: Annotated[float, Field(gt=0)] = 3600.0


class Synth(Strict):
    """Simulated venues: a seeded random walk per market with cross-venue noise."""

    markets: dict[str, Annotated[float, Field(gt=0)]]  # market -> start price
    sources: list[str] = Field(min_length=1)  # `venue` or `venue:QUOTE` (quoted in QUOTE, e.g. USDT)
    seconds: Annotated[float, Field(gt=0)]
    interval_s: Annotated[float, Field(gt=0)] = 1.0
    seed: int = 1
    start_ts: float = 1_700_000_000.0
    vol: Annotated[float, Field(ge=0)] | None = None  # annualised; None = the model's default per market
    noise_bps: Annotated[float, Field(ge=0)] | None = None
    rounds: dict[str, Rounds] = Field(default_factory=dict)  # source -> how it writes rounds (chainlink)
    # source -> basis over spot (0.003: +0.3 %): a perp venue, each row a book with its last trade
    perps: dict[str, Annotated[float, Field(gt=-1, allow_inf_nan=False)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rounds_and_perps_of_known_sources(self) -> Synth:
        names = {token.partition(":")[0] for token in self.sources}
        for key in ("rounds", "perps"):
            unknown = sorted(set(getattr(self, key)) - names)
            if unknown:
                raise ValueError(f"{key} names {unknown}, which are not among the sources {sorted(names)}")
        return self


class ImportOhlc(Strict):
    """1-minute OHLC files (open_time_ms, ..., close) turned into one quote per minute at its close."""

    dir: str  # relative to the scenario file
    files: dict[str, str]  # "source:PAIR" -> file name in dir


class Window(Strict):
    start: AwareDatetime | None = None  # e.g. 2023-03-10T00:00:00Z
    end: AwareDatetime | None = None

    def bounds(self) -> tuple[float, float]:
        return (
            self.start.timestamp() if self.start else -math.inf,
            self.end.timestamp() if self.end else math.inf,
        )


class Expect(Strict):
    market: str
    metric: Metric | PerpMetric
    op: Literal["<=", ">=", "==", "<", ">"]
    value: float
    why: str = ""


class Scenario(Strict):
    ticks: str | None = None
    config: str
    description: str = ""
    synth: Synth | None = None
    import_ohlc: ImportOhlc | None = None
    attack: list[Attack] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    reference_config: str | None = None
    window: Window | None = None

    @model_validator(mode="after")
    def _one_input(self) -> Scenario:
        given = [k for k in ("ticks", "synth", "import_ohlc") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of ticks, [synth], [import_ohlc] (got {given or 'none'})")
        return self


class LoadedScenario:
    def __init__(self, path: Path, scenario: Scenario, settings: Settings, reference: Settings | None = None) -> None:
        self.path = path
        self.scenario = scenario
        self.settings = settings
        self.reference_settings = reference or settings

    def resolve(self, name: str) -> Path:
        return (self.path.parent / name).resolve()


def load_scenario(path: str | Path) -> LoadedScenario:
    """The scenario and its config, or ConfigError listing every problem (exit 2 at the CLI)."""
    p = Path(path)
    try:
        scenario = Scenario.model_validate(read_toml(p))
    except ValidationError as exc:
        raise ConfigError([f"{p}: {e}" for e in validation_problems(exc)]) from exc
    settings = load_settings(p.parent / scenario.config)
    reference = load_settings(p.parent / scenario.reference_config) if scenario.reference_config else None
    problems = [
        f"{p}: expect[{i}].market: '{e.market}' is not a market of the config"
        for i, e in enumerate(scenario.expect)
        if e.market not in settings.markets
    ]
    problems += [
        f"{p}: expect[{i}].metric: '{e.metric}' needs a perp mark, and market '{e.market}' has no "
        f"[markets.{e.market}.perp] table"
        for i, e in enumerate(scenario.expect)
        if e.metric.startswith(PERP_PREFIX) and e.market in settings.markets and not settings.markets[e.market].perp
    ]
    if problems:
        raise ConfigError(problems)
    return LoadedScenario(p, scenario, settings, reference)
