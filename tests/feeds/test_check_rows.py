"""check_rows takes a field the venue never gives (all None) as NaNs at once: the very batch, bit for
bit, that converting each None gives."""

from __future__ import annotations

import numpy as np

from feeds.adapter import Row, check_rows

ROWS: list[Row] = [
    ("A-USD", None, None, 100.5, None, None),  # an http_json price: only the last trade
    ("B-USD", None, None, 0.1 + 0.2, None, None),
    ("C-USD", 9.0, 11.0, None, None, None),  # a book on one row only: that column is converted
    ("D-USD", 12.0, 11.0, 11.5, None, None),  # crossed: an error, left out of the batch
]


def by_conversion(rows: list[Row]) -> dict[str, np.ndarray]:
    """The columns of the good rows, each None converted by numpy (what check_rows did for every
    column), with the mid where the book is two-sided."""
    cols = [np.array(c, dtype=float) for c in list(zip(*rows, strict=True))[1:]]
    bid, ask, last, venue_ts, confidence = cols
    two = ~(np.isnan(bid) | np.isnan(ask))
    price = np.where(two, (bid + ask) / 2.0, last)
    return {
        "price": price,
        "bid": np.where(two, bid, np.nan),
        "ask": np.where(two, ask, np.nan),
        "venue_ts": venue_ts,
        "confidence": confidence,
        "last": last,
    }


def test_columns_of_none_are_the_nans_numpy_makes_of_each_none() -> None:
    for rows in (ROWS[:2], ROWS[:3]):  # every book field None; then one row with a book
        batch, errors = check_rows("s", 1_700_000_000.0, rows)
        assert errors == () and batch.pair == tuple(r[0] for r in rows)
        for name, want in by_conversion(rows).items():
            got = getattr(batch, name)
            assert got.dtype == want.dtype and got.view(np.uint64).tolist() == want.view(np.uint64).tolist(), name
    batch, errors = check_rows("s", 1_700_000_000.0, ROWS)
    assert batch.pair == ("A-USD", "B-USD", "C-USD") and [e.pair for e in errors] == ["D-USD"]
