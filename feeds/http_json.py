"""Any JSON document: base_url is its full URL, SourceRef.path the dotted path to the price.

`data.0.last` reads doc["data"][0]["last"]; an integer segment indexes a list. The price may be a
JSON number or a decimal string. There is no venue time. A ref may instead name a book, for the
operator's own matching engine as a perp mark's book: `bid_path` and `ask_path` (both or neither)
and `last_path` (else `path`) read best bid, best ask and last trade from the same document.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from feeds.adapter import Adapter, PairError, ParseError, ParseResult, Request, Row, about, get, number


def walk(doc: Any, segments: Sequence[str]) -> Any:
    """The node at the path's segments (split once, when the adapter is built)."""
    node = doc
    for segment in segments:
        is_index = isinstance(node, list) and segment.lstrip("-").isdigit()
        node = get(node, int(segment) if is_index else segment)
    return node


_UNSEEN = object()


def _node_or_none(doc: Any, segments: Sequence[str]) -> Any:
    try:
        return walk(doc, segments)
    except ParseError:
        return None  # each pair under it then reports the error itself


class HttpJson(Adapter):
    kind = "http_json"
    rest_url = ""  # no default: base_url must name the document

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paths = {pair: (ref.path or "", tuple((ref.path or "").split("."))) for pair, ref in self.refs.items()}
        # pair -> (bid, ask, last) paths, for the refs that read a book
        self._books = {
            pair: (ref.bid_path, ref.ask_path, ref.last_path or ref.path)
            for pair, ref in self.refs.items()
            if ref.bid_path or ref.last_path
        }

    def requests(self) -> list[Request]:
        return [Request(self.base_url, pairs=tuple(self.refs))]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        """One document often holds every pair under one parent object (`{"BTC-USD": 1.0, ...}`):
        each parent is walked once, and a plain positive float there is taken as it is. Anything
        else (a string, an integer, a missing key, a list index) goes through `_quote`, which names
        the error exactly; the result is the same either way, only cheaper."""
        rows: list[Row] = []
        errors: list[PairError] = []
        parents: dict[tuple[str, ...], Any] = {}
        for pair, (_, segments) in self._paths.items():
            if pair in self._books:
                try:
                    rows.append(self._book_row(pair, doc))
                except ParseError as exc:
                    errors.append(PairError(exc.code, exc.pair, str(exc)))
                continue
            parent = segments[:-1]
            node = parents.get(parent, _UNSEEN)
            if node is _UNSEEN:
                node = parents[parent] = _node_or_none(doc, parent)
            value = node.get(segments[-1]) if type(node) is dict else None
            if type(value) is float and 0.0 < value < math.inf:
                rows.append((pair, None, None, value, None, None))
                continue
            try:
                rows.append(self._quote(pair, doc))
            except ParseError as exc:
                errors.append(PairError(exc.code, exc.pair, str(exc)))
        return ParseResult(tuple(rows), tuple(errors))

    def _quote(self, pair: str, doc: Any) -> Row:
        with about(pair):
            path, segments = self._paths[pair]
            return self.book(pair, last=number(walk(doc, segments), path))

    def _book_row(self, pair: str, doc: Any) -> Row:
        """Bid, ask and last from their own paths; a side whose path is not set is absent."""
        with about(pair):
            bid, ask, last = (
                None if path is None else number(walk(doc, path.split(".")), path) for path in self._books[pair]
            )
            return self.book(pair, bid=bid, ask=ask, last=last)
