"""The pure parts of a config reload: what needs a restart, what changed, the book carried over, and
the gauges of what is gone (the daemon end to end: tests/e2e/test_reload.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from oracle.aggregate import Aggregator
from oracle.metrics import Metrics
from oracle.models import Candidate, Exclusion, Mark, Status
from oracle.quotebook import QuoteBook
from oracle.reload import ConfigChange, load_for_reload, restart_needed
from oracle.settings import ConfigError, Settings, parse_settings

from .helpers import NOW, accept, one_market, q, refs


def settings(**changes: Any) -> Settings:
    raw: dict[str, Any] = {
        "service": {"tick_ms": 250},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "policy": {"min_sources": 2},
        "sources": {n: {"kind": "coinbase"} for n in "abc"},
        "markets": {"BTC-USD": {"sources": refs("ab")}, "ETH-USD": {"sources": refs("ab", "ETH-USD")}},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        table = raw
        for p in parents:
            table = table.setdefault(p, {})
        if value is None:
            table.pop(last, None)
        else:
            table[last] = value
    return parse_settings(raw)


def test_redis_signing_and_http_changes_need_a_restart_each_named_by_key() -> None:
    running = settings()
    new = settings(redis__prefix="other", service__http_port=1234, signing__key_file="/k", policy__min_sources=1)
    problems = restart_needed(running, new)
    assert [p.split(":")[0] for p in problems] == ["redis.prefix", "signing.key_file", "service.http_port"]
    assert all("restart markd" in p for p in problems)
    assert restart_needed(running, settings(service__tick_ms=100, policy__min_sources=1)) == []


def test_the_change_names_markets_added_removed_and_retuned() -> None:
    old = settings()
    new = settings(
        **{"markets__ETH-USD": None, "markets__SOL-USD": {"sources": refs("ab", "SOL-USD")}},
        **{"markets__BTC-USD": {"sources": refs("ab"), "max_deviation_bps": 10}},
    )
    change = ConfigChange.between(old, new)
    assert (change.added, change.removed, change.retuned) == (("SOL-USD",), ("ETH-USD",), ("BTC-USD",))
    assert ConfigChange.between(old, settings(policy__min_sources=1)).retuned == ("BTC-USD", "ETH-USD")
    assert ConfigChange.between(old, settings()) == ConfigChange((), (), ())


def test_a_file_needing_a_restart_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "markd.toml"
    path.write_text(
        '[redis]\nprefix = "moved"\n[policy]\nmin_sources = 2\n[sources.a]\nkind = "coinbase"\n'
        '[sources.b]\nkind = "coinbase"\n[markets.BTC-USD]\nsources = [{source = "a", pair = "BTC-USD"},'
        ' {source = "b", pair = "BTC-USD"}]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_for_reload(path, settings())
    assert [p.split(":")[0] for p in err.value.problems] == ["redis.prefix"]
    path.write_text("[markets.BTC-USD]\nsources = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_for_reload(path, settings())
    assert any(p.startswith("markets.BTC-USD.sources") for p in err.value.problems), err.value.problems


def test_the_new_book_keeps_the_quotes_of_the_pairs_it_still_has() -> None:
    old = QuoteBook.for_settings(settings())
    assert old.update(q("a", 100.0))
    assert old.update(q("b", 2000.0, pair="ETH-USD"))
    new = QuoteBook.for_settings(
        settings(**{"markets__ETH-USD": None, "markets__SOL-USD": {"sources": refs("bc", "SOL-USD")}})
    )
    new.carry(old)
    kept = new.latest("a", "BTC-USD")
    assert kept is not None and kept.price == 100.0 and kept.received_ts == NOW
    assert new.latest("b", "ETH-USD") is None and new.latest("b", "SOL-USD") is None


def test_the_gauges_of_a_removed_market_and_its_pairs_leave_metrics() -> None:
    metrics = Metrics()
    for market in ("BTC-USD", "ETH-USD"):
        metrics.mark_published(Mark(market, 1.0, 0.1, NOW, 1, Status.OK, 1, ("a",)), NOW)
        metrics.set_max_age(market, 5.0)
        metrics.set_quote_age("a", market, 0.5)
        metrics.set_disputes_open(market, 0)
    metrics.forget({"ETH-USD"}, {("a", "ETH-USD")})
    text = metrics.render().decode()
    assert "ETH-USD" not in text
    assert 'markd_mark_price{market="BTC-USD"}' in text and 'pair="BTC-USD"' in text
    metrics.config_reloaded("ok")
    metrics.config_reloaded("error")
    assert metrics.registry.get_sample_value("markd_config_reloads_total", {"result": "error"}) == 1
    with pytest.raises(ValueError):
        metrics.config_reloaded("maybe")


def frozen_sources(agg: Aggregator, book: QuoteBook, now: float) -> set[str]:
    seen: list[Candidate] = []

    def spy(cands: list[Candidate]) -> list[Mark]:
        seen.extend(cands)
        return accept(cands)

    agg.run(book.snapshot(), now, spy)
    return {e.source for c in seen for e in c.excluded if e.reason is Exclusion.FROZEN}


def test_a_frozen_source_stays_frozen_through_a_reload_of_the_pipeline() -> None:
    old_settings = one_market(["a", "b", "c", "d"], freeze_ticks=3, max_deviation_bps=5000)
    book = QuoteBook.for_settings(old_settings)
    agg = Aggregator(old_settings, book)
    frozen: set[str] = set()
    for t in range(8):  # d sits at 100 while its peers climb 1 % a tick
        for s in "abc":
            book.update(q(s, 100.0 * 1.01**t, age=-t))
        book.update(q("d", 100.0, age=-t))
        frozen = frozen_sources(agg, book, NOW + t)
    assert frozen == {"d"}
    new_settings = one_market(["a", "b", "c", "d"], freeze_ticks=3, max_deviation_bps=4000)
    new_book = QuoteBook.for_settings(new_settings)
    new_book.carry(book)
    fresh = Aggregator(new_settings, new_book)
    fresh.carry(agg)
    for s in "abc":
        new_book.update(q(s, 100.0 * 1.01**8, age=-8))
    new_book.update(q("d", 100.0, age=-8))
    assert frozen_sources(fresh, new_book, NOW + 8) == {"d"}, "a new plan without the old memory would let d back in"


def test_the_perp_basis_ema_goes_on_through_a_reload_of_the_pipeline() -> None:
    from oracle.models import Quote
    from oracle.pipeline import Pipeline
    from oracle.validation.stage import DisputeStage
    from tests.oracle.test_perp import settings as perp_settings

    def quotes(book: QuoteBook, now: float, mid: float) -> None:
        for src in ("a", "b", "c"):
            book.update(Quote(src, "BTC-USD", 100.0, now))
        for src in ("a", "b"):
            book.update(Quote(src, "USDT-USD", 1.0, now))
        book.update(Quote("venue", "BTC-PERP", mid, now, mid - 0.1, mid + 0.1))

    old = perp_settings({"external": []})
    book = QuoteBook.for_settings(old)
    stage = DisputeStage(old)
    pipeline = Pipeline(old, book, Metrics(), stage)
    quotes(book, NOW, 100.5)
    assert pipeline.tick(NOW).perps[0].c1 == pytest.approx(100.5)  # the basis EMA starts at +0.5
    new = perp_settings({"external": [], "ema_s": 150}, max_deviation_bps=300)
    new_book = QuoteBook.for_settings(new)
    new_book.carry(book)
    stage.reconfigure(new)
    reloaded = Pipeline(new, new_book, Metrics(), stage)
    reloaded.carry(pipeline)
    quotes(new_book, NOW + 30, 103.0)
    (perp,) = reloaded.tick(NOW + 30).perps
    assert perp.c1 == pytest.approx(100 + 0.5 + (1 - math.exp(-30 / 150)) * 2.5), "a fresh EMA would start at +3"
