"""Every setting of markd, in one typed model.

A config comes from a TOML file, then environment overrides (`MARKD_REDIS_URL`, `MARKD_HTTP_PORT`,
and generally `MARKD_<SECTION>__<KEY>`, nested further with `__`). Unknown keys are errors, not
silently ignored values: a typo in an oracle's config must never turn a guard off.

`load_settings(path)` returns `Settings` or raises `ConfigError` carrying every problem found, each
naming its key path (`markets.BTC-USD.sources[2].convert: ...`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

Method = Literal["median", "weighted_median", "trimmed_mean"]
SourceKind = Literal[
    "binance", "coinbase", "kraken", "okx", "bybit", "bitstamp", "pyth", "chainlink", "http_json", "redis_hash"
]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]


class ConfigError(Exception):
    """A config that cannot be used. `problems` lists each one as `key.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class EnvText(str):
    """A value from an environment variable: text that may stand for a number or a boolean, so it
    is parsed as one. The same text written in quotes in a TOML file is a string, and refused."""


class Strict(BaseModel):
    """The base of every model read from a file markd is given (config, scenario): unknown keys and
    booleans or quoted numbers where a number belongs are errors, and a validated value never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _types_as_written(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic would read `min_sources = true` as 1 and turn a guard off: only a bool field takes one.
        annotation = cls.model_fields[str(info.field_name)].annotation
        if isinstance(value, bool) and annotation is not bool:
            raise ValueError("true/false is not a valid value here")
        # Nor `http_port = "9108"` as 9108: a quoted value in TOML is a string (strict, as for unknown keys).
        kinds = _scalar_kinds(annotation)
        if type(value) is str and kinds and str not in kinds and _reads_as(value, kinds):
            wanted = "true/false" if bool in kinds else "a number"
            raise ValueError(f"expected {wanted}, got the string {value!r} (drop the quotes)")
        return value  # other text fails pydantic's own check, with its own message


def _reads_as(text: str, kinds: set[type]) -> bool:
    """Whether pydantic's lax mode would turn `text` into one of `kinds` (what strictness refuses)."""
    if bool in kinds and text.strip().lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return bool(kinds & {int, float})


def _scalar_kinds(annotation: Any) -> set[type]:
    """The scalar types of a field (`int | None` -> {int}); empty for anything else (lists, models)."""
    args = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    args = tuple(get_args(a)[0] if get_origin(a) is Annotated else a for a in args)
    kinds = {a for a in args if a in (int, float, bool, str)}
    return kinds if all(a in (int, float, bool, str, type(None)) for a in args) else set()


class ServiceSettings(Strict):
    tick_ms: PosInt = 250
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9108
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The HTTP server's defences against clients (see oracle.serving): open connections at most (the
    # oldest idle one makes room for a new one), and how long a client may take to send its first
    # request's headers, to stay idle between requests, and to have one request answered.
    http_max_connections: PosInt = 256
    http_header_timeout_ms: PosInt = 5000
    http_idle_timeout_ms: PosInt = 30_000
    http_request_timeout_ms: PosInt = 10_000


class RedisSettings(Strict):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: Annotated[str, Field(min_length=1, pattern=r"^[^{}\s]+$")] = "markd"
    history_maxlen: PosInt = 100_000
    cluster: bool = False  # url names one node of a Redis Cluster (keys are hash-tagged per market)
    # "host:port" of each Sentinel; with any, the primary is the one they name for `sentinel_service`
    # and `url` only supplies the password, database and TLS settings.
    sentinels: list[Annotated[str, Field(pattern=r"^\S+:\d{1,5}$")]] = []
    sentinel_service: Annotated[str, Field(min_length=1)] = "markd"

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url

    @field_validator("sentinels", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # MARKD_REDIS__SENTINELS=a:26379,b:26379 arrives as one string
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _topology(self) -> RedisSettings:
        if self.sentinels and self.cluster:
            raise ValueError("sentinels and cluster exclude each other (a Cluster fails over by itself)")
        if self.sentinels and self.url.startswith("unix://"):
            raise ValueError("sentinels need a redis:// or rediss:// url (it names no host, only settings)")
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(host, int(port)) for host, _, port in (s.rpartition(":") for s in self.sentinels)]


SigningAlgorithm = Literal["hmac-sha256", "ed25519"]


class SigningSettings(Strict):
    algorithm: SigningAlgorithm = "hmac-sha256"
    # A file holding the hex of the 32-byte key (ed25519: the private seed); "" with no
    # $MARKD_SIGNING_KEY means marks are not signed. The key itself never sits in this config.
    key_file: str = ""


class Policy(Strict):
    """The rules a market is aggregated and guarded by; any market may override any key."""

    method: Method = "median"
    trim: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.2
    max_age_ms: NonNegInt = 5000
    max_deviation_bps: NonNegFloat = 150
    min_sources: PosInt = 3
    max_jump_bps: NonNegFloat = 1000
    dispute_window_ms: NonNegInt = 10_000
    heartbeat_ms: NonNegInt = 1000
    min_price: NonNegFloat = 0.0
    max_price: NonNegFloat = 0.0
    recover_ticks: NonNegInt = 5
    anchor_window_s: NonNegFloat = 3600
    anchor_deviation_bps: NonNegFloat = 2000
    freeze_ticks: NonNegInt = 20

    @model_validator(mode="after")
    def _ranges(self) -> Policy:
        if self.max_price and self.min_price >= self.max_price:
            raise ValueError(f"min_price ({self.min_price}) must be below max_price ({self.max_price})")
        return self


POLICY_KEYS = frozenset(Policy.model_fields)


class NotifySettings(Strict):
    url: str = ""
    timeout_ms: PosInt = 2000
    max_retries: NonNegInt = 5


# The freeze rule's default threshold by kind (oracle/freeze.py): a Chainlink feed legitimately sits
# still until the market is 0.5 % from its answer, so it is frozen only beyond twice that; a venue
# or Pyth moves with every quote, so 25 bps of the peers' move without it is already a stuck feed.
FREEZE_BPS_DEFAULT = 25.0
FREEZE_BPS_BY_KIND: dict[str, float] = {"chainlink": 100.0}


class DisputeSettings(Strict):
    """Bounds on what the dispute API keeps and hands out (disputes.api, disputes.store)."""

    max_open_per_market: PosInt = 16  # one more manual dispute on a market with this many open: 429
    keep_closed_days: Annotated[float, Field(gt=0)] = 30.0  # closed records older are trimmed (not the audit stream)
    list_limit: Annotated[int, Field(ge=1, le=1000)] = 100  # GET /v1/disputes page size without ?limit=


class SourceSettings(Strict):
    kind: SourceKind
    base_url: str | None = None  # None: the venue's real endpoint for this transport
    transport: Literal["rest", "ws"] = "rest"
    product: Literal["spot", "perp"] = "spot"  # perp: the venue's perpetual (binance, okx, bybit)
    poll_ms: PosInt = 500
    timeout_ms: PosInt = 2000
    weight: Annotated[float, Field(gt=0)] = 1.0
    # The largest REST answer or WebSocket message read from this source; more is error `too_large`.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    # Frozen once its price stays put while its peers' median moves this far; None: by kind.
    freeze_bps: NonNegFloat | None = None

    @property
    def resolved_freeze_bps(self) -> float:
        if self.freeze_bps is not None:
            return self.freeze_bps
        return FREEZE_BPS_BY_KIND.get(self.kind, FREEZE_BPS_DEFAULT)


class SourceRef(Strict):
    """One entry of a market's tier: a source's pair, optionally converted through another market."""

    source: str
    pair: Annotated[str, Field(pattern=r"^[A-Za-z0-9]+-[A-Za-z0-9]+$")]
    convert: str | None = None
    id: str | None = None  # pyth feed id
    address: str | None = None  # chainlink aggregator
    decimals: Annotated[int, Field(ge=0, le=36)] | None = None
    heartbeat_s: Annotated[float, Field(gt=0)] | None = None
    path: str | None = None  # http_json: dotted path to the price
    # http_json, for a book (the perp mark's own book): dotted paths to best bid, best ask, last trade
    bid_path: str | None = None
    ask_path: str | None = None
    last_path: str | None = None
    key: Annotated[str, Field(min_length=1)] | None = None  # redis_hash: the key of the pair's hash


class ExternalRef(SourceRef):
    """Another venue's perp price for `[markets.M.perp].external`; `weight` overrides the source's."""

    weight: Annotated[float, Field(gt=0)] | None = None


class PerpSettings(Strict):
    """`[markets.M.perp]`: the perpetual mark on top of the market's index (oracle.perp)."""

    book: SourceRef  # the venue's own book: bid, ask and last trade
    external: list[ExternalRef] = []  # other venues' perps; their weighted median is c3
    ema_s: Annotated[float, Field(gt=0)] = 150.0  # the basis EMA's time constant, seconds
    max_premium_bps: NonNegFloat = 1000.0  # the perp price is clamped to index +- this


def _overridable(policy: type[Policy]) -> dict[str, Any]:
    """Every field of `policy` as an optional override: same type and bounds, None = inherit."""
    fields: dict[str, Any] = {}
    for name, info in policy.model_fields.items():
        constrained: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[name] = (constrained | None, None)
    return fields


class _MarketTiers(Strict):
    sources: Annotated[list[SourceRef], Field(min_length=1)]
    fallback: list[SourceRef] | list[list[SourceRef]] = Field(default_factory=list)


# A market may override any key of [policy]. Derived from Policy, so a new policy key is overridable
# per market, with the same bounds, the moment it exists. After the tiers, so problems are reported
# in the order a market's table usually lists them.
_MarketFields = create_model("MarketFields", __base__=_MarketTiers, **_overridable(Policy))


class MarketSettings(_MarketFields):  # type: ignore[misc, valid-type]  # a model built at import
    if TYPE_CHECKING:  # what mypy cannot see through create_model (pydantic reads the real fields)
        sources: list[SourceRef]
        fallback: list[SourceRef] | list[list[SourceRef]]
    perp: PerpSettings | None = None

    @property
    def tiers(self) -> list[list[SourceRef]]:
        """Tier 1 is `sources`; `fallback` is one tier, or a list of tiers in order."""
        fb = self.fallback
        if not fb:
            return [self.sources]
        if isinstance(fb[0], list):
            return [self.sources, *[t for t in fb if isinstance(t, list)]]
        return [self.sources, [r for r in fb if isinstance(r, SourceRef)]]

    @property
    def feed_refs(self) -> list[SourceRef]:
        """Every entry some source must quote for this market: its tiers, then its perp's book and externals."""
        refs = [r for tier in self.tiers for r in tier]
        if self.perp:
            refs += [self.perp.book, *self.perp.external]
        return refs

    def overrides(self) -> dict[str, Any]:
        return {k: v for k in POLICY_KEYS if (v := getattr(self, k)) is not None}


class Settings(Strict):
    service: ServiceSettings = ServiceSettings()
    redis: RedisSettings = RedisSettings()
    policy: Policy = Policy()
    notify: NotifySettings = NotifySettings()
    disputes: DisputeSettings = DisputeSettings()
    signing: SigningSettings = SigningSettings()
    sources: dict[str, SourceSettings] = {}
    markets: Annotated[dict[str, MarketSettings], Field(min_length=1)]
    # Never from the file: only MARKD_DISPUTE_TOKEN sets it (see load_settings).
    dispute_token: SecretStr | None = None
    # Never from the file either: only MARKD_SIGNING_KEY (the key's hex) sets it, and then it wins
    # over signing.key_file. oracle.signing turns either into the signer.
    signing_key: SecretStr | None = None
    # market -> (base policy, market settings, resolved policy). Resolving re-validates a Policy
    # (~60 us), which made a 1,000-market reload or start spend 60 ms+ here. Entries are checked by
    # identity, so a `model_copy` that shares this dict but swaps `policy` or a market recomputes.
    _policies: dict[str, tuple[Policy, MarketSettings, Policy]] = PrivateAttr(default_factory=dict)

    def policy_for(self, market: str) -> Policy:
        settings = self.markets[market]
        private = self.__pydantic_private__  # direct: pydantic's private-attribute lookup costs ~8 us a call
        assert private is not None  # set by pydantic on every model that declares a PrivateAttr
        cache = private["_policies"]
        cached = cache.get(market)
        if cached is not None and cached[0] is self.policy and cached[1] is settings:
            return cached[2]
        policy = _resolved_policy(self.policy, settings)
        cache[market] = (self.policy, settings, policy)
        return policy

    def freeze_bps(self, source: str) -> float:
        """The source's freeze threshold: its `freeze_bps`, else its kind's default."""
        return self.sources[source].resolved_freeze_bps

    def market_order(self) -> list[str]:
        """Markets in dependency order: each after every market its `convert`s name."""
        return _topological(self.markets)[0]

    def market_levels(self) -> list[list[str]]:
        """Markets grouped so each group depends only on earlier groups (one vector pass each)."""
        order, level = _topological(self.markets)
        groups: dict[int, list[str]] = {}
        for m in order:
            groups.setdefault(level[m], []).append(m)
        return [groups[i] for i in sorted(groups)]


def _resolved_policy(base: Policy, market: MarketSettings) -> Policy:
    return Policy.model_validate({**base.model_dump(), **market.overrides()})


class _EnvSettings(BaseSettings):
    """The flat environment variables of the contract (nested MARKD_X__Y ones are overlaid below)."""

    model_config = SettingsConfigDict(env_prefix="MARKD_", extra="ignore")
    config: str | None = None
    redis_url: str | None = None
    http_port: str | None = None
    dispute_token: SecretStr | None = None
    signing_key: SecretStr | None = None


@dataclass
class _Parts:
    """The pieces the cross-checks look at; built from a valid Settings or, after field errors,
    from whatever sections did validate, so that one run reports every problem."""

    policy: Policy
    sources: Mapping[str, SourceSettings | None]  # None: defined, but invalid itself
    markets: Mapping[str, MarketSettings]
    market_names: frozenset[str] | None = None  # every market defined, valid or not (None: `markets`)

    @classmethod
    def salvage(cls, data: Mapping[str, Any]) -> _Parts:
        def valid(model: type[BaseModel], raw: Any) -> Any:
            """The model, else the model without its invalid keys (already reported), else None."""
            try:
                return model.model_validate(raw)
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
                if not isinstance(raw, dict) or not bad:
                    return None
            try:
                return model.model_validate({k: v for k, v in raw.items() if k not in bad})
            except ValidationError:
                return None

        raw_sources: dict[str, Any] = data["sources"] if isinstance(data.get("sources"), dict) else {}
        raw_markets: dict[str, Any] = data["markets"] if isinstance(data.get("markets"), dict) else {}
        markets = {n: m for n, v in raw_markets.items() if (m := valid(MarketSettings, v)) is not None}
        return cls(
            valid(Policy, data.get("policy", {})) or Policy(),
            {n: valid(SourceSettings, v) for n, v in raw_sources.items()},
            markets,
            frozenset(raw_markets or {}),
        )


def _cross_problems(s: _Parts) -> list[str]:
    problems: list[str] = []
    for name, source in s.sources.items():
        if source is not None:  # an invalid source was reported already
            problems += _source_problems(name, source)
    for name, market in s.markets.items():
        try:
            policy = _resolved_policy(s.policy, market)
        except ValidationError as exc:
            problems += [f"markets.{name}: {error_message(e)}" for e in exc.errors()]
            continue
        for t, tier in enumerate(market.tiers):
            nested = isinstance(market.fallback[0], list) if market.fallback else False
            key = "sources" if t == 0 else f"fallback[{t - 1}]" if nested else "fallback"
            seen: set[tuple[str, str]] = set()
            for i, ref in enumerate(tier):
                at = f"markets.{name}.{key}[{i}]"
                problems += _ref_problems(s, name, ref, at)
                if (ref.source, ref.pair) in seen:
                    problems.append(f"{at}: {ref.source} {ref.pair} appears twice in one tier")
                seen.add((ref.source, ref.pair))
        if market.perp:
            problems += _perp_problems(s, name, market.perp)
        if policy.min_sources > len(market.sources):
            problems.append(
                f"markets.{name}.min_sources: {policy.min_sources} exceeds the {len(market.sources)} "
                "sources of tier 1, so it could never reach quorum"
            )
    try:
        _topological(s.markets)
    except ConfigError as exc:
        problems += exc.problems
    return problems


def _source_problems(name: str, source: SourceSettings) -> list[str]:
    """What the source's venue adapter cannot serve (a `ws` transport on a REST-only venue, no
    endpoint): asked here so it comes in the same run as the schema's errors."""
    from feeds.registry import ADAPTERS  # imported here: feeds imports this module

    adapter = ADAPTERS.get(source.kind)
    if adapter is None:
        return []
    return [
        f"sources.{name}.{key}: {problem}"
        for key, problem in adapter.settings_problems(source.transport, source.base_url, source.product)
    ]


def _perp_problems(s: _Parts, name: str, perp: PerpSettings) -> list[str]:
    at = f"markets.{name}.perp"
    problems = _ref_problems(s, name, perp.book, f"{at}.book")
    index_sources = {r.source for m in s.markets.values() for tier in m.tiers for r in tier}
    if perp.book.source in index_sources:
        # The own book must never feed an index: the perp mark's median is what keeps the book from
        # carrying a liquidation, and that needs the index independent of it.
        problems.append(f"{at}.book.source: '{perp.book.source}' also feeds an index tier; a perp book cannot")
    if perp.book.convert is not None:
        problems.append(f"{at}.book.convert: the book is quoted in the market's own currency; no conversion")
    seen: set[tuple[str, str]] = {(perp.book.source, perp.book.pair)}
    for i, ref in enumerate(perp.external):
        problems += _ref_problems(s, name, ref, f"{at}.external[{i}]")
        if (ref.source, ref.pair) in seen:
            problems.append(f"{at}.external[{i}]: {ref.source} {ref.pair} appears twice")
        seen.add((ref.source, ref.pair))
    return problems


def _ref_problems(s: _Parts, market: str, ref: SourceRef, at: str) -> list[str]:
    if ref.source not in s.sources:
        return [f"{at}.source: '{ref.source}' is not defined under [sources]"]
    source = s.sources[ref.source]
    out: list[str] = []
    if ref.convert is not None:
        if ref.convert not in (s.markets if s.market_names is None else s.market_names):
            out.append(f"{at}.convert: '{ref.convert}' is not a market")
        elif ref.convert == market:
            out.append(f"{at}.convert: a market cannot convert through itself")
    # redis_hash: a hash that is re-read each poll looks fresh forever, so its own ts_ms must be
    # checked against a heartbeat (the engine rewrites ts_ms at least that often).
    required = {
        "pyth": ["id"],
        "chainlink": ["address", "decimals", "heartbeat_s"],
        "redis_hash": ["key", "heartbeat_s"],
    }
    kind = source.kind if source else None  # an invalid source was reported already
    for key in required.get(kind or "", []):
        if getattr(ref, key) is None:
            out.append(f"{at}.{key}: required for a {kind} source")
    if kind == "http_json":
        if ref.path is None and ref.last_path is None and (ref.bid_path is None or ref.ask_path is None):
            out.append(f"{at}.path: required for a http_json source (or last_path, or bid_path with ask_path)")
        if (ref.bid_path is None) != (ref.ask_path is None):
            out.append(f"{at}.{'ask_path' if ref.ask_path is None else 'bid_path'}: a book needs both sides")
    if ref.key is not None and kind not in ("redis_hash", None):
        out.append(f"{at}.key: only a redis_hash source reads a key (this source is {kind})")
    return out


def _topological(markets: Mapping[str, MarketSettings]) -> tuple[list[str], dict[str, int]]:
    deps = {
        m: sorted({r.convert for tier in ms.tiers for r in tier if r.convert and r.convert in markets} - {m})
        for m, ms in markets.items()
    }
    level: dict[str, int] = {}
    order: list[str] = []
    visiting: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> int:
        if m in level:
            return level[m]
        if m in visiting:
            cycle = [*visiting[visiting.index(m) :], m]
            cycles.append(f"markets.{m}: convert cycle {' -> '.join(cycle)}")
            return 0  # carry on, to report every cycle
        visiting.append(m)
        lv = 1 + max((visit(d) for d in deps[m]), default=-1)
        visiting.pop()
        level[m] = lv
        order.append(m)
        return lv

    for m in markets:
        visit(m)
    if cycles:
        raise ConfigError(cycles)
    return order, level


def error_message(err: Mapping[str, Any]) -> str:
    """One pydantic error's message without pydantic's "Value error, " prefix."""
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


_TIER_BRANCHES = ("list[SourceRef]", "list[list[SourceRef]]")  # `fallback`: one tier | a list of tiers


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TIER_BRANCHES or part == "function-after[_ranges(), Policy]":
            continue  # pydantic's union/validator branch names are noise in a key path
        else:
            out += f".{part}" if out else str(part)
    return out


_SHAPE_ERRORS = ("list_type", "model_type")


def _union_noise(errors: list[Any]) -> list[Any]:
    """Drop `fallback`'s "Input should be a valid list/dictionary" from the union branch the value
    does not have the shape of, when the other branch reports the real problem."""

    def branch(err: Any) -> tuple[tuple[Any, ...], str] | None:
        loc = tuple(err["loc"])
        i = next((i for i, part in enumerate(loc) if part in _TIER_BRANCHES), None)
        return None if i is None else (loc[:i], loc[i])

    speaking: dict[tuple[Any, ...], set[str]] = {}
    for err in errors:
        if (b := branch(err)) and err["type"] not in _SHAPE_ERRORS:
            speaking.setdefault(b[0], set()).add(b[1])
    return [
        err
        for err in errors
        if not ((b := branch(err)) and err["type"] in _SHAPE_ERRORS and speaking.get(b[0], set()) - {b[1]})
    ]


def validation_problems(exc: ValidationError) -> list[str]:
    """A pydantic error as `key.path: message` lines (also used for scenario files)."""
    problems: list[str] = []
    for err in _union_noise(exc.errors()):
        loc = _path(tuple(err["loc"]))
        msg = "unknown key (typo?)" if err["type"] == "extra_forbidden" else error_message(err)
        problems.append(f"{loc}: {msg}" if loc else msg)
    return list(dict.fromkeys(problems))


_NAMED_SECTIONS = ("markets", "sources")  # their first key is a name, kept as written


def _overlay_env(raw: dict[str, Any], env: _EnvSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply MARKD_REDIS_URL, MARKD_HTTP_PORT and MARKD_<SECTION>__<KEY>[__<KEY>...] over the file.
    Returns the data and, per key path an override set, the variable that set it."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    overrides: list[tuple[str, list[str], Any]] = []
    if env.redis_url:
        overrides.append(("MARKD_REDIS_URL", ["redis", "url"], env.redis_url))
    if env.http_port:
        overrides.append(("MARKD_HTTP_PORT", ["service", "http_port"], env.http_port))
    problems: list[str] = []
    for name, value in sorted(os.environ.items()):
        if not name.startswith("MARKD_") or "__" not in name:
            continue
        section, *keys = name[len("MARKD_") :].split("__")
        section = section.lower()
        if section in _NAMED_SECTIONS and len(keys) > 1:
            found = _named(out.get(section), keys[0])
            if found is None:
                problems.append(f"{name}: no {section[:-1]} '{keys[0]}' in the config file")
                continue
            keys = [found, *(k.lower() for k in keys[1:])]
        else:
            keys = [k.lower() for k in keys]
        overrides.append((name, [section, *keys], value))
    origins: dict[str, str] = {}
    for name, keys, value in overrides:
        node: dict[str, Any] = out
        path: list[str] = []
        for key in keys[:-1]:
            path.append(key)
            child = node.get(key, {})
            if not isinstance(child, dict):  # a value (or list) cannot take a key below it
                problems.append(f"{'.'.join(path)}: not a table, so {name} cannot set a key in it")
                break
            node[key] = dict(child)
            node = node[key]
        else:
            node[keys[-1]] = EnvText(value)
            origins[".".join(keys)] = name
    if problems:
        raise ConfigError(problems)
    return out, origins


def _named(table: Any, written: str) -> str | None:
    """The market or source an environment variable names: as written in the file, else the one
    name that matches ignoring case with `_` for `-` (a shell variable's name cannot hold a hyphen,
    so MARKD_MARKETS__BTC_USD__MIN_SOURCES reaches BTC-USD)."""
    names = list(table) if isinstance(table, dict) else []
    if written in names:
        return written
    spelt = written.lower().replace("_", "-")
    matches = [n for n in names if n.lower().replace("_", "-") == spelt]
    return matches[0] if len(matches) == 1 else None


def _with_origins(problems: list[str], origins: Mapping[str, str]) -> list[str]:
    """Each problem at (or below) a key an environment variable set names that variable."""
    out = []
    for problem in problems:
        path = problem.split(": ", 1)[0]
        var = next((v for p, v in origins.items() if path == p or path.startswith((f"{p}.", f"{p}["))), None)
        out.append(f"{problem} (from {var})" if var else problem)
    return out


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate a parsed TOML document with the environment's overrides applied."""
    if "dispute_token" in raw:
        raise ConfigError(["dispute_token: set it with the MARKD_DISPUTE_TOKEN environment variable"])
    if "signing_key" in raw:
        raise ConfigError(["signing_key: set it with the MARKD_SIGNING_KEY environment variable, or signing.key_file"])
    env = _EnvSettings()
    data, origins = _overlay_env(dict(raw), env)
    secrets = {"dispute_token": env.dispute_token, "signing_key": env.signing_key}
    try:
        settings = Settings.model_validate({**data, **secrets})
    except ValidationError as exc:
        problems = validation_problems(exc) + _cross_problems(_Parts.salvage(data))
        raise ConfigError(_with_origins(list(dict.fromkeys(problems)), origins)) from exc
    problems = _cross_problems(_Parts(settings.policy, settings.sources, settings.markets))
    if problems:
        raise ConfigError(_with_origins(problems, origins))
    return settings


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict, or ConfigError with one line naming the file and what is wrong."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from None


def load_settings(path: str | Path) -> Settings:
    return parse_settings(read_toml(path))


def default_config_path() -> str:
    return _EnvSettings().config or "config/markd.toml"
