"""Any JSON document: base_url is its full URL, SourceRef.path the dotted path to the price.

`data.0.last` reads doc["data"][0]["last"]; an integer segment indexes a list. The price may be a
JSON number or a decimal string. There is no book and no venue time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feeds.adapter import Adapter, ParseResult, Request, Row, about, get, number


def walk(doc: Any, segments: Sequence[str]) -> Any:
    """The node at the path's segments (split once, when the adapter is built)."""
    node = doc
    for segment in segments:
        is_index = isinstance(node, list) and segment.lstrip("-").isdigit()
        node = get(node, int(segment) if is_index else segment)
    return node


class HttpJson(Adapter):
    kind = "http_json"
    rest_url = ""  # no default: base_url must name the document

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paths = {pair: (ref.path or "", tuple((ref.path or "").split("."))) for pair, ref in self.refs.items()}

    def requests(self) -> list[Request]:
        return [Request(self.base_url, pairs=tuple(self.refs))]

    def parse_doc(self, doc: Any, received_ts: float, pairs: tuple[str, ...]) -> ParseResult:
        return self.resolve(self.refs, lambda pair: self._quote(pair, doc))

    def _quote(self, pair: str, doc: Any) -> Row:
        with about(pair):
            path, segments = self._paths[pair]
            return self.book(pair, last=number(walk(doc, segments), path))
