"""The operator's own matching engine as a perp book over http_json (bid_path, ask_path, last_path),
polled from a real HTTP server on loopback through the daemon's feed runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from feeds.runner import source_signatures
from oracle.settings import ConfigError, Settings, parse_settings
from tests.feeds.conftest import Feed

pytestmark = pytest.mark.timeout(30)

DOC: dict[str, Any] = {"book": {"bids": [["29999.5", "2"]], "asks": [["30000.5", "1"]]}, "last": {"px": 30000.1}}
BOOK = {"source": "venue", "pair": "BTC-PERP", "bid_path": "book.bids.0.0", "ask_path": "book.asks.0.0"}


def settings(url: str, book: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": {
            "venue": {"kind": "http_json", "base_url": url, "poll_ms": 20},
            "a": {"kind": "coinbase", "base_url": "http://127.0.0.1:1"},
        },
        "markets": {
            "BTC-USD": {"sources": [{"source": "a", "pair": "BTC-USD"}], "min_sources": 1, "perp": {"book": book}}
        },
    }


@pytest.fixture
async def engine() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(DOC)

    app = web.Application()
    app.router.add_get("/book.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/book.json"
    await runner.cleanup()


async def test_a_book_document_gives_bid_ask_and_last(engine: str) -> None:
    conf = Settings.model_validate(settings(engine, {**BOOK, "last_path": "last.px"}))
    async with Feed(conf) as feed:
        q = await feed.next_quote("BTC-PERP")
    assert (q.source, q.bid, q.ask, q.last, q.price) == ("venue", 29999.5, 30000.5, 30000.1, 30000.0)


async def test_a_book_without_a_last_trade_is_a_book(engine: str) -> None:
    async with Feed(Settings.model_validate(settings(engine, BOOK))) as feed:
        q = await feed.next_quote("BTC-PERP")
    assert (q.bid, q.ask, q.last) == (29999.5, 30000.5, None)


def test_a_book_needs_both_sides_or_a_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(settings("http://x.test/b", {"source": "venue", "pair": "BTC-PERP", "bid_path": "b"}))
    assert exc.value.problems == [
        "markets.BTC-USD.perp.book.path: required for a http_json source (or last_path, or bid_path with ask_path)",
        "markets.BTC-USD.perp.book.ask_path: a book needs both sides",
    ]


def test_changing_a_book_path_restarts_the_source() -> None:
    """A reload that moves the book's sides must rebuild the adapter, not keep reading the old paths."""
    before = source_signatures(Settings.model_validate(settings("http://x.test/b", BOOK)))
    moved = {**BOOK, "ask_path": "book.asks.1.0"}
    after = source_signatures(Settings.model_validate(settings("http://x.test/b", moved)))
    with_last = source_signatures(
        Settings.model_validate(settings("http://x.test/b", {**BOOK, "last_path": "last.px"}))
    )
    assert before["venue"] != after["venue"] and before["venue"] != with_last["venue"]
    assert before["a"] == after["a"]
