"""Numbers for people: a price at its market's precision, shares and basis points to a tenth."""

from __future__ import annotations

import math

import pytest

from oracle.display import decimals, metric_text, percent_text, price_text


@pytest.mark.parametrize(
    ("price", "text"),
    [
        (29976.127500000002, "29976.13"),
        (60.123456789, "60.12346"),
        (1.0003120000000001, "1.000312"),
        (0.05, "0.05000000"),
    ],
)
def test_a_price_shows_about_seven_significant_digits(price: float, text: str) -> None:
    assert price_text(price) == text


def test_a_price_that_is_no_number_is_a_dash() -> None:
    assert (price_text(math.nan), price_text(math.inf, 2), decimals(-1.0)) == ("-", "-", 2)
    assert price_text(1234567.891, 2, grouped=True) == "1,234,567.89"


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [
        ("availability", 0.7738, "77.4 %"),
        ("max_error_bps", 1889.1438775592385, "1889.1 bps"),
        ("detection_latency_s", 2.25, "2.2 s"),
        ("disputes", 3, "3"),
        ("detection_latency_s", None, "-"),
    ],
)
def test_replay_metrics_read_as_on_the_terminal(metric: str, value: float | None, text: str) -> None:
    assert metric_text(metric, value) == text
    assert percent_text(None) == "-"
