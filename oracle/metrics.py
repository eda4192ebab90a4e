"""Every Prometheus metric of markd, in one place (names are part of the public contract).

Each `Metrics` owns a private CollectorRegistry, so two daemons, a replay and the tests never share
state. Code records through intent-named methods (`quote_received`, `source_error`, ...) rather than
touching collectors, and label values only ever come from the config or from fixed code sets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.utils import floatToGoString

from oracle import __version__
from oracle.models import Mark, PerpMark, Status

# The error codes of a feed (label `code` of markd_source_errors_total).
SOURCE_ERROR_CODES = (
    "timeout",
    "connect",
    "too_large",  # a REST answer or WebSocket message over the source's max_body_bytes
    "http_4xx",
    "rate_limited",
    "http_5xx",
    "decode",
    "schema",
    "bad_price",
    "unknown_pair",
    "stale_venue_time",
    "future_venue_time",  # redis_hash: the engine's ts_ms further ahead than the ref's heartbeat_s
    "wrong_type",  # redis_hash: the key holds another type than a hash (WRONGTYPE)
    "internal",  # a bug, not the venue: an unexpected exception caught by the feed's supervisor
)

# Why one market's mark was not stored (label `code` of markd_publish_market_errors_total).
PUBLISH_ERROR_CODES = ("wrong_type", "redis_error")

RELOAD_RESULTS = ("ok", "error")  # label `result` of markd_config_reloads_total

# Fine below 10 ms: what a tick of the pipeline costs at a thousand markets (bench/latency.py).
_TICK_CPU_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self._standard = CollectorRegistry(auto_describe=True)  # all but the _Gauges
        # The per-market and per-slot gauges: 7 x 5,000 + 20,000 series at 5,000 markets x 4 sources,
        # kept as plain values and written as text by _Gauges (see there), not as prometheus_client
        # children: setting and rendering those took seconds a scrape.
        per_market = self._per_market = _Gauges()
        self.source_up = Gauge("markd_source_up", "1 while the source delivers quotes", ["source"], registry=r)
        self.quotes_total = Counter("markd_quotes_total", "Quotes received", ["source"], registry=r)
        self.source_errors_total = Counter(
            "markd_source_errors_total", "Feed failures by code", ["source", "code"], registry=r
        )
        self.quote_age_seconds = per_market.family(
            "markd_quote_age_seconds", "Age of the latest quote by receive time", ("source", "pair")
        )
        self.quote_excluded_total = Counter(
            "markd_quote_excluded_total",
            "Quotes left out of a mark, by reason",
            ["market", "source", "reason"],
            registry=r,
        )
        self.mark_price = per_market.family("markd_mark_price", "Latest validated price", ("market",))
        self.mark_confidence = per_market.family("markd_mark_confidence", "Half-width of the price band", ("market",))
        self.mark_age_seconds = per_market.family(
            "markd_mark_age_seconds", "Seconds since the price was validated", ("market",)
        )
        # The consumer's limit beside the age, so an alert compares the two per market
        # (deploy/prometheus/alerts.yml MarkdMarkStale) instead of one fixed number for every market.
        self.mark_max_age_seconds = per_market.family(
            "markd_mark_max_age_seconds",
            "The market's max_age_ms in seconds: consumers refuse a mark older than this",
            ("market",),
        )
        self.mark_sources = per_market.family("markd_mark_sources", "Sources in the latest mark", ("market",))
        self.perp_price = per_market.family("markd_perp_price", "Latest perpetual mark price", ("market",))
        self.perp_premium_bps = per_market.family(
            "markd_perp_premium_bps", "The perp mark's premium over the index it was computed against", ("market",)
        )
        self.mark_status = per_market.family(
            "markd_mark_status", "1 for the market's current status", ("market", "status")
        )
        self.mark_seq = per_market.family("markd_mark_seq", "Sequence number of the latest mark", ("market",))
        self.aggregation_seconds = Histogram(
            "markd_aggregation_seconds", "Time to aggregate one tick", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tick_cpu_seconds = Histogram(
            "markd_tick_cpu_seconds",
            "CPU time of one tick of the pipeline (aggregation and validation), this thread only",
            buckets=_TICK_CPU_BUCKETS,
            registry=r,
        )
        self.publish_seconds = Histogram(
            "markd_publish_seconds", "Time to publish one tick", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.publish_errors_total = Counter("markd_publish_errors_total", "Failed or refused publishes", registry=r)
        self.publish_market_errors_total = Counter(
            "markd_publish_market_errors_total",
            "Marks Redis did not store through a fault of their market's (wrong_type: one of its keys holds"
            " another type) or of the call (redis_error: e.g. out of memory)",
            ["market", "code"],
            registry=r,
        )
        self.disputes_open = Gauge("markd_disputes_open", "Open disputes", ["market"], registry=r)
        self.disputes_total = Counter(
            "markd_disputes_total", "Disputes opened, by reason", ["market", "reason"], registry=r
        )
        self.events_total = Counter(
            "markd_events_total",
            "Dispute-stage events (tier changes, held jumps, frozen sources...), by kind",
            ["market", "kind"],
            registry=r,
        )
        self.leader = Gauge("markd_leader", "1 on the replica that publishes", registry=r)
        self.config_reloads_total = Counter(
            "markd_config_reloads_total", "Config reloads (SIGHUP), by result: ok or error", ["result"], registry=r
        )
        for result in RELOAD_RESULTS:  # both series from the start, so an alert's rate() sees the first error
            self.config_reloads_total.labels(result=result)
        self.build_info = Gauge("markd_build_info", "Build information", ["version"], registry=r)
        self.build_info.labels(version=__version__).set(1)
        # Label children of the hot metrics, cached: prometheus_client's label lookup dominated
        # counting every frame and setting 1,000 markets' and 8,000 slots' gauges.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._mark_status_of: dict[str, Status] = {}
        self.registry = CollectorRegistry(auto_describe=True)  # every metric, for get_sample_value
        self.registry.register(self._standard)
        self.registry.register(self._per_market)

    # --- feeds ---
    def quote_received(self, source: str, n: int = 1) -> None:
        """`n` quotes from `source` (a feed counts a frame's quotes at once: one call per frame)."""
        self._child(self.quotes_total, source).inc(n)

    def source_error(self, source: str, code: str) -> None:
        if code not in SOURCE_ERROR_CODES:
            raise ValueError(f"unknown source error code {code!r}")
        self.source_errors_total.labels(source=source, code=code).inc()

    def set_source_up(self, source: str, up: bool) -> None:
        self._child(self.source_up, source).set(1 if up else 0)  # every frame of every source

    def set_quote_age(self, source: str, pair: str, age_s: float) -> None:
        self.quote_age_seconds[source, pair] = age_s

    # --- aggregation and marks ---
    def quote_excluded(self, market: str, source: str, reason: str) -> None:
        self.quote_excluded_total.labels(market=market, source=source, reason=reason).inc()

    def set_max_age(self, market: str, max_age_s: float) -> None:
        self.mark_max_age_seconds[(market,)] = max_age_s

    def mark_published(self, mark: Mark, now: float) -> None:
        m = mark
        self.marks_published([m.market], [m.price], [m.confidence], [m.ts], [len(m.sources)], [m.seq], [m.status], now)

    def marks_published(
        self,
        markets: Sequence[str],
        price: Sequence[float],
        confidence: Sequence[float],
        ts: Sequence[float],
        sources: Sequence[int],
        seq: Sequence[int],
        status: Sequence[Status],
        now: float,
    ) -> None:
        """The mark gauges of many marks at once, a gauge at a time (`sources`: how many each has): a
        publisher that sets them sets 1,000 a tick, and needs no Mark object for it."""
        keys = [(market,) for market in markets]
        self.mark_price.update(zip(keys, price, strict=True))
        self.mark_confidence.update(zip(keys, confidence, strict=True))
        self.mark_age_seconds.update(zip(keys, [max(0.0, now - t) for t in ts], strict=True))
        self.mark_sources.update(zip(keys, sources, strict=True))
        self.mark_seq.update(zip(keys, seq, strict=True))
        was = self._mark_status_of
        for market, now_status in zip(markets, status, strict=True):
            if was.get(market) is not now_status:
                was[market] = now_status
                for s in Status:
                    self.mark_status[market, s.value] = 1 if s is now_status else 0

    def perp_mark(self, perp: PerpMark) -> None:
        self.perp_price[(perp.market,)] = perp.price
        self.perp_premium_bps[(perp.market,)] = perp.premium_bps

    def publish_failed(self, n: int = 1) -> None:
        self.publish_errors_total.inc(n)

    def market_publish_failed(self, market: str, code: str) -> None:
        """One mark of `market` not stored; `code` is one of PUBLISH_ERROR_CODES."""
        if code not in PUBLISH_ERROR_CODES:
            raise ValueError(f"unknown publish error code {code!r}")
        self._child(self.publish_market_errors_total, market, code).inc()

    # --- disputes and HA ---
    def dispute_opened(self, market: str, reason: str) -> None:
        self.disputes_total.labels(market=market, reason=reason).inc()

    def stage_event(self, market: str, kind: str) -> None:
        self.events_total.labels(market=market, kind=kind).inc()

    def set_disputes_open(self, market: str, n: int) -> None:
        self.disputes_open.labels(market=market).set(n)

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    # --- config reloads ---
    def config_reloaded(self, result: str) -> None:
        if result not in RELOAD_RESULTS:
            raise ValueError(f"unknown reload result {result!r}")
        self.config_reloads_total.labels(result=result).inc()

    def forget(self, markets: set[str], slots: set[tuple[str, str]]) -> None:
        """Drop the gauges of markets and (source, pair) slots a reloaded config no longer has: a
        removed market's last price must not sit in /metrics as if it were still current."""
        for family in self._per_market._families:
            by_market = family.labelnames[0] == "market"  # else ("source", "pair")
            for labels in [k for k in family if (k[0] in markets if by_market else k[:2] in slots)]:
                del family[labels]
        for market in markets:
            self._mark_status_of.pop(market, None)
            with contextlib.suppress(KeyError):
                self.disputes_open.remove(market)

    def _child(self, collector: Any, *labels: str) -> Any:
        key = (id(collector), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = collector.labels(*labels)
        return child

    def render(self) -> bytes:
        return generate_latest(self._standard) + self._per_market.text()


class _Gauges:
    """Gauge families with one series per market or per (source, pair), as plain dicts, written as
    Prometheus text directly: each series' line prefix (`name{labels} `) is built once, so a scrape
    costs one float format per series. prometheus_client's own path (a locked child per series,
    Sample tuples, label escaping at every scrape) took seconds at 5,000 markets; this takes a tenth
    of that. Registered in Metrics.registry too, so `get_sample_value` sees them (slowly: tests)."""

    def __init__(self) -> None:
        self._families: list[_Family] = []

    def family(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> _Family:
        family = _Family(name, documentation, labelnames)
        self._families.append(family)
        return family

    def text(self) -> bytes:
        return "".join(f.text() for f in self._families).encode()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for f in self._families:
            metric = GaugeMetricFamily(f.name, f.documentation, labels=f.labelnames)
            for labels, value in list(f.items()):
                metric.add_metric(labels, value)
            yield metric


class _Family(dict[tuple[str, ...], float]):
    """One gauge family: label values -> value."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        super().__init__()
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._prefix: dict[tuple[str, ...], str] = {}
        doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self._header = f"# HELP {name} {doc}\n# TYPE {name} gauge\n"

    def text(self) -> str:
        prefix = self._prefix
        lines = [self._header]
        for labels, value in list(self.items()):  # a copy: the loop may add a series meanwhile
            line = prefix.get(labels)
            if line is None:
                line = prefix[labels] = self._line(labels)
            lines.append(line + floatToGoString(value) + "\n")
        return "".join(lines)

    def _line(self, labels: tuple[str, ...]) -> str:
        pairs = sorted(zip(self.labelnames, labels, strict=True))
        return self.name + "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "} "


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
