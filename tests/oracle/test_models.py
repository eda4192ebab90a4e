"""Domain values: a Quote's price from a book, a Candidate's tier, URL redaction for output."""

from __future__ import annotations

import dataclasses
import math

import pytest

from oracle.connection import redact
from oracle.models import Candidate, Excluded, Exclusion, Mark, Quote, Status, TierResult

from .helpers import NOW


def test_quote_price_is_the_mid_where_both_sides_exist() -> None:
    quote = Quote.from_book("a", "BTC-USD", NOW, bid=99.5, ask=100.5, last=120.0, venue_ts=NOW - 1)
    # the price is the mid; the last trade is kept beside it for the perp mark (oracle.perp)
    assert quote == Quote("a", "BTC-USD", 100.0, NOW, 99.5, 100.5, NOW - 1, last=120.0)


@pytest.mark.parametrize(("bid", "ask"), [(None, None), (99.5, None), (None, 100.5)])
def test_quote_price_is_the_last_trade_without_a_two_sided_book(bid: float | None, ask: float | None) -> None:
    assert Quote.from_book("a", "BTC-USD", NOW, bid=bid, ask=ask, last=120.0).price == 120.0


def test_quote_without_book_or_last_is_refused() -> None:
    with pytest.raises(ValueError, match="neither a two-sided book nor a last price"):
        Quote.from_book("a", "BTC-USD", NOW, bid=99.5, ask=None, last=None)


def test_candidate_tier_is_the_first_with_quorum() -> None:
    t1 = TierResult(1, math.nan, math.nan, ("a",), False)
    t2 = TierResult(2, 99.5, 0.25, ("p",), True)
    t3 = TierResult(3, 98.0, 0.5, ("z",), True)
    c = Candidate("BTC-USD", NOW, (t1, t2, t3))
    assert (c.tier, c.price, c.result(2), c.result(4)) == (2, 99.5, t2, None)
    none = Candidate("BTC-USD", NOW, (t1,))
    assert none.tier == 0 and none.result(0) is None and math.isnan(none.price)


def test_mark_ts_ms_is_its_validation_time_in_milliseconds() -> None:
    # The consumer's rule (ok/degraded and young enough) is MarkReader.get's, tested in tests/publish.
    assert Mark("BTC-USD", 100.0, 0.5, NOW, 7, Status.OK, 1, ("a",)).ts_ms == 1_700_000_000_000


def test_mark_with_seq_is_replace_with_that_seq_every_field_kept() -> None:
    excluded = (Excluded("b", "BTC-USD", Exclusion.DEVIATION, 90.0),)
    mark = Mark("BTC-USD", 100.0, 0.5, NOW, 7, Status.HELD, 2, ("a",), excluded, 101.5)
    got, want = mark.with_seq(8), dataclasses.replace(mark, seq=8)
    assert [getattr(got, f.name) for f in dataclasses.fields(Mark)] == [
        getattr(want, f.name) for f in dataclasses.fields(Mark)
    ]  # the compare=False fields (excluded, candidate) too


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://secret@host:6379/0", "redis://***@host:6379/0"),  # a lone userinfo may be a password
        ("redis://user:pa55@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:pa55@host/3", "rediss://:***@host/3"),
        (
            "redis://user:p%40ss@host:6379/0?ssl_cert_reqs=none",
            "redis://user:***@host:6379/0?ssl_cert_reqs=none",
        ),
    ],
)
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown
