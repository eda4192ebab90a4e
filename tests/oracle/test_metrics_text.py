"""Metrics.render() writes the per-market gauges itself (the scrape at 5,000 markets): the text must
be what prometheus_client would write, series for series, and valid for Prometheus' own parser."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from oracle.metrics import Metrics
from oracle.models import Mark, Status

ODD = 'we"ird\\market\nname'  # label escaping: quote, backslash, newline


def _metrics() -> Metrics:
    metrics = Metrics()
    for i, market in enumerate(("BTC-USD", "ETH-USD", ODD)):
        status = (Status.OK, Status.HELD, Status.STALE)[i]
        mark = Mark(market, 100.5 + i, 0.25, 1_000.0, 7 + i, status, 1, ("a", "b", "c"))
        metrics.mark_published(mark, now=1_002.5)
        metrics.set_max_age(market, 5.0)
        metrics.set_quote_age("a", market, float("inf") if i == 2 else 0.125)
    metrics.mark_published(Mark("BTC-USD", 101.0, 0.5, 1_001.0, 9, Status.DEGRADED, 2, ("a",)), now=1_002.0)
    return metrics


def _samples(text: str, prefix: tuple[str, ...]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def test_the_per_market_gauges_parse_back_to_every_value_set() -> None:
    metrics = _metrics()
    ours = _samples(metrics.render().decode(), ("markd_mark_", "markd_quote_age"))
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for i, market in enumerate(("BTC-USD", "ETH-USD", ODD)):
        m = (("market", market),)
        last = (101.0, 0.5, 1.0, 1.0, 9.0, Status.DEGRADED) if i == 0 else (100.5 + i, 0.25, 2.5, 3.0, 7.0 + i, None)
        expected[("markd_mark_price", m)] = last[0]
        expected[("markd_mark_confidence", m)] = last[1]
        expected[("markd_mark_age_seconds", m)] = last[2]
        expected[("markd_mark_sources", m)] = last[3]
        expected[("markd_mark_seq", m)] = last[4]
        expected[("markd_mark_max_age_seconds", m)] = 5.0
        current = last[5] or (Status.OK, Status.HELD, Status.STALE)[i]
        for s in Status:
            expected[("markd_mark_status", (*m, ("status", s.value)))] = 1.0 if s is current else 0.0
        expected[("markd_quote_age_seconds", (("pair", market), ("source", "a")))] = float("inf") if i == 2 else 0.125
    assert ours == expected
    for (name, labels), value in expected.items():  # the registry answers for them too (tests read it)
        assert metrics.registry.get_sample_value(name, dict(labels)) == value


def test_the_text_keeps_the_other_metrics_and_prometheus_client_s_format() -> None:
    metrics = _metrics()
    metrics.publish_failed(2)
    text = metrics.render().decode()
    assert "markd_publish_errors_total 2.0\n" in text and 'markd_build_info{version="' in text
    assert '# TYPE markd_mark_price gauge\nmarkd_mark_price{market="BTC-USD"} 101.0\n' in text
    assert 'markd_quote_age_seconds{pair="we\\"ird\\\\market\\nname",source="a"} +Inf\n' in text
    reference = CollectorRegistry()
    Gauge("markd_quote_age_seconds", "x", ["source", "pair"], registry=reference).labels("a", ODD).set(float("inf"))
    line = generate_latest(reference).decode().splitlines()[-1]
    assert line + "\n" in text  # byte for byte the line prometheus_client writes


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_text() -> None:
    text = _metrics().render()
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
