"""The pure parts of a config reload: what needs a restart, what changed, the book carried over, and
the gauges of what is gone (the daemon end to end: tests/e2e/test_reload.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from oracle.metrics import Metrics
from oracle.models import Mark, Status
from oracle.quotebook import QuoteBook
from oracle.reload import ConfigChange, load_for_reload, restart_needed
from oracle.settings import ConfigError, Settings, parse_settings

from .helpers import NOW, q, refs


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
