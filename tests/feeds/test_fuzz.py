"""Mutated real payloads thrown at every parser: errors come back as codes, never as exceptions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.adapter import Adapter, ParseResult
from oracle.metrics import SOURCE_ERROR_CODES
from tests.feeds.fakes import ETH_FEED, load, rest_cases, ws_cases
from tests.feeds.test_parsers import adapter

JsonPath = tuple[str | int, ...]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "NaN", "-1", "0", "1e400", "-inf", "0x1f", "XBT/USD", "ticker", "2021-13-01T00:00:00Z"]),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(doc: Any, at: JsonPath = ()) -> list[JsonPath]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


def _mutate(data: st.DataObject, doc: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = data.draw(VALUES)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(VALUES)
    return doc


def _cases(shared: Path) -> dict[str, tuple[Adapter, Any, tuple[str, ...]]]:
    """name → (adapter, a real payload, the request's pairs), for every payload an adapter reads."""
    out = {}
    for case in rest_cases(shared):
        a = adapter(case.kind, *case.refs, base_url="http://venue.test/doc", product=case.product)
        out[f"{case.name}-rest"] = (a, case.render(case.docs[0], {"id": 0}), tuple(a.refs))
    for case in ws_cases(shared):
        a = adapter(case.kind, *case.refs, transport="ws", product=case.product)
        out |= {f"{case.name}-ws-{i}": (a, doc, ()) for i, doc in enumerate(case.docs[:2])}
    extra: dict[str, tuple[str, str | dict[str, Any], Any]] = {
        "binance-price": (
            "binance",
            "LTC-BTC",
            load(shared, "binance_api_v3_ticker_price.json")["single_symbol"],
        ),
        "bitstamp-usdc": ("bitstamp", "USDC-USD", load(shared, "bitstamp_api_v2_ticker_usdcusd.json")),
        "pyth-legacy": (
            "pyth",
            {"pair": "ETH-USD", "id": ETH_FEED},
            load(shared, "pyth_hermes_legacy_api_latest_price_feeds.json")["response"],
        ),
    }
    for name, (kind, ref, doc) in extra.items():
        a = adapter(kind, ref)
        out[name] = (a, doc, tuple(a.refs))
    return out


PERP = ["binance_perp", "okx_perp", "bybit_perp"]
REST = ["binance", "coinbase", "kraken", "okx", "bybit", "bitstamp", "pyth", "chainlink", "http_json", *PERP]
NAMES = [f"{k}-rest" for k in REST] + [f"{k}-ws-{i}" for k in ("binance", "coinbase", "kraken", "okx") for i in (0, 1)]
NAMES += ["binance_perp-ws-0", "okx_perp-ws-0"]  # one documented message each
NAMES += ["binance-price", "bitstamp-usdc", "pyth-legacy"]


@pytest.fixture(scope="module")
def cases(shared_dir: Path) -> dict[str, tuple[Adapter, Any, tuple[str, ...]]]:
    out = _cases(shared_dir)
    assert sorted(out) == sorted(NAMES)
    return out


def _check(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    assert all(e.code in SOURCE_ERROR_CODES for e in result.errors)
    for q in result.quotes:
        assert math.isfinite(q.price) and q.price > 0
        assert q.bid is None or q.ask is None or q.bid <= q.ask


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_payloads_yield_codes_not_exceptions(cases, name, data):
    a, doc, pairs = cases[name]
    mutated = _mutate(data, doc)
    _check(a.parse(json.dumps(mutated), 1.7e9, pairs))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0), noise=st.binary(max_size=8))
def test_truncated_and_noisy_bytes_yield_codes_not_exceptions(cases, name, cut, noise):
    a, doc, pairs = cases[name]
    body = json.dumps(doc).encode()
    body = body[: cut % max(1, len(body))] + noise
    _check(a.parse(body, 1.7e9, pairs))
