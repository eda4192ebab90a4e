"""The configuration contract: what loads, what is refused (each problem naming its key), overrides."""

from __future__ import annotations

import pytest

from oracle.settings import ConfigError

from .helpers import config, refs


def test_problems_in_valid_keys_are_not_invented_by_an_invalid_policy_key() -> None:
    # [policy] min_sources = 2 is valid; an invalid trim beside it must not revert it to the default 3
    with pytest.raises(ConfigError) as err:
        config({"A-USD": {"sources": refs("ab", "A-USD")}}, min_sources=2, trim=0.7)
    assert err.value.problems == ["policy.trim: Input should be less than 0.5"]


def test_convert_into_an_invalid_market_reports_only_that_market() -> None:
    with pytest.raises(ConfigError) as err:
        config(
            {
                "A-USD": {"sources": refs(["a"], "A-B", convert="B-USD")},
                "B-USD": {"sources": refs(["a"], "B-USD"), "max_agge_ms": 5},
            },
            min_sources=1,
        )
    assert err.value.problems == ["markets.B-USD.max_agge_ms: unknown key (typo?)"]


def test_every_convert_cycle_is_reported() -> None:
    def m(conv: str) -> dict[str, object]:
        return {"sources": refs(["a"], "X-Y", convert=conv)}

    with pytest.raises(ConfigError) as err:
        config(
            {"A-USD": m("B-USD"), "B-USD": m("A-USD"), "C-USD": m("D-USD"), "D-USD": m("C-USD")},
            min_sources=1,
        )
    assert err.value.problems == [
        "markets.A-USD: convert cycle A-USD -> B-USD -> A-USD",
        "markets.C-USD: convert cycle C-USD -> D-USD -> C-USD",
    ]
