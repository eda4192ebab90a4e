"""The batched Binance answer's fast path (typed msgspec decode straight to columns) parses every
frame exactly as the general path does: the same batch, the same errors, on real and broken payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.adapter import Adapter, ParseResult
from tests.feeds.fakes import load
from tests.feeds.test_fuzz import _mutate
from tests.feeds.test_parsers import adapter

PAIRS = ("LTC-BTC", "ETH-BTC")


def _multi(shared: Path) -> list[dict[str, Any]]:
    return load(shared, "binance_api_v3_ticker_bookTicker.json")["multi_symbol"]


def _same(fast: ParseResult, slow: ParseResult) -> None:
    assert fast.errors == slow.errors
    assert (fast.batch is None) == (slow.batch is None)
    if fast.batch is not None and slow.batch is not None:
        a, b = fast.batch, slow.batch
        assert (a.source, a.received_ts, a.pair) == (b.source, b.received_ts, b.pair)
        for name in ("price", "bid", "ask", "venue_ts", "confidence", "last"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _both(body: str, pairs: tuple[str, ...] = PAIRS) -> tuple[ParseResult, ParseResult]:
    a = adapter("binance", *PAIRS)
    return a.parse(body, 7.0, pairs), Adapter.parse(a, body, 7.0, pairs)


def test_a_clean_batched_answer_takes_the_fast_path(shared_dir: Path):
    a = adapter("binance", *PAIRS)
    body = json.dumps(_multi(shared_dir))
    fast = a._parse_book_list(body, 7.0, PAIRS)  # type: ignore[attr-defined]
    assert fast is not None
    _same(fast, Adapter.parse(a, body, 7.0, PAIRS))
    assert fast.batch is not None and fast.batch.bid.tolist() == [4.0, 0.079467]


@pytest.mark.parametrize(
    "field, value",
    [
        ("bidPrice", " 4.0"),  # float() takes spaces and underscores; msgspec does not: the general path judges
        ("bidPrice", "4_0"),
        ("bidPrice", ""),  # an empty side
        ("bidPrice", None),
        ("bidPrice", "-0"),
        ("bidPrice", "0"),
        ("askPrice", "nan"),
        ("askPrice", "Infinity"),
        ("askPrice", "1e400"),
        ("askPrice", 1e300),
        ("askPrice", True),
        ("askPrice", "3.9"),  # crossed
        ("symbol", "DOGEBTC"),  # unknown pair
        ("symbol", 5),
        ("s", "LTCBTC"),  # the stream's form
        ("price", "4.1"),  # the price ticker's form
        ("time", 1700000000000),  # the futures' form
    ],
)
def test_a_row_the_fast_path_refuses_is_judged_by_the_general_path(shared_dir: Path, field: str, value: Any):
    rows = _multi(shared_dir)
    rows[0][field] = value
    fast, slow = _both(json.dumps(rows))
    _same(fast, slow)


def test_a_pair_missing_from_the_answer_is_reported(shared_dir: Path):
    fast, slow = _both(json.dumps(_multi(shared_dir)[:1]))
    _same(fast, slow)
    assert [e.pair for e in fast.errors] == ["ETH-BTC"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_batched_answers_parse_as_the_general_path(shared_dir: Path, data: st.DataObject):
    fast, slow = _both(json.dumps(_mutate(data, _multi(shared_dir))))
    _same(fast, slow)
