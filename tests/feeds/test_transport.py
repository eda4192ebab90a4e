"""The shared transport's own promises: backoff, Retry-After, error mapping, WebSocket keep-alive."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest

from feeds.adapter import Request
from feeds.errors import ConnectError, FeedTimeout, HttpError, RateLimited
from feeds.transport import Backoff, RestPoller, WsClient, parse_retry_after
from tests.feeds.fakes import FastClock
from tests.servers import free_port


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets():
    b = Backoff(0.1, 1.0, random.Random(7))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        step = min(1.0, 0.1 * 2**n)
        assert step / 2 <= d <= step
    assert len(set(delays[-3:])) == 3  # jittered, not lock-step
    b.reset()
    assert b.next() <= 0.1


def test_backoff_never_retries_before_retry_after():
    assert Backoff(0.1, 1.0).next(retry_after=7.0) == 7.0


def test_retry_after_as_seconds_or_http_date():
    assert parse_retry_after("3", now=0) == 3.0
    when = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), now=when.timestamp() - 30) == 30.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_error_codes_follow_the_status():
    assert HttpError(404).code == "http_4xx"
    assert HttpError(502).code == "http_5xx"
    assert RateLimited(418, 5.0).code == "rate_limited"


async def _poll_once(url: str, timeout_s: float = 0.5):
    async with aiohttp.ClientSession() as session:
        poller = RestPoller(session, [Request(url, pairs=("BTC-USD",))], FastClock(), poll_s=0.01, timeout_s=timeout_s)
        return await poller.fetch(poller.requests[0])


async def test_refused_connection_is_a_connect_error():
    with pytest.raises(ConnectError):
        await _poll_once(f"http://127.0.0.1:{free_port()}/x")


async def test_rate_limit_carries_retry_after(venues, rest_case):
    venue = await venues(rest_case("bitstamp"))
    venue.fault, venue.retry_after = "429", "2"
    with pytest.raises(RateLimited) as caught:
        await _poll_once(venue.url + "/api/v2/ticker/btcusd/")
    assert caught.value.retry_after == 2.0


async def test_a_refused_request_is_an_error_frame_not_a_failure(venues, rest_case):
    venue = await venues(rest_case("bitstamp"))
    venue.fault = "404"
    frame = await _poll_once(venue.url + "/api/v2/ticker/nosuch/")
    assert frame.error is not None and frame.error.code == "http_4xx" and frame.pairs == ("BTC-USD",)


async def test_no_answer_within_timeout_is_a_timeout(venues, rest_case):
    venue = await venues(rest_case("bitstamp"))
    venue.fault = "timeout"
    with pytest.raises(FeedTimeout):
        await _poll_once(venue.url + "/api/v2/ticker/btcusd/", timeout_s=0.05)


async def test_websocket_frames_carry_the_clock_receive_time_and_no_request_pairs(venues, ws_case):
    venue = await venues(ws_case("coinbase"))
    clock = FastClock()
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, venue.url, clock, subscriptions=['{"type": "subscribe"}'], timeout_s=1, silence_s=1)
        frames = client.frames()
        before = clock.now()
        frame = await anext(frames)
        await frames.aclose()
    assert before <= frame.received_ts <= clock.now()
    assert frame.pairs == () and b"ticker" in (frame.body if isinstance(frame.body, bytes) else frame.body.encode())
    assert venue.received == ['{"type": "subscribe"}']


async def test_a_venue_handshake_refusal_maps_to_its_status(venues, rest_case):
    venue = await venues(rest_case("bitstamp"))  # a plain HTTP server: the upgrade is refused
    venue.fault = "503"
    async with aiohttp.ClientSession() as session:
        client = WsClient(session, f"ws://127.0.0.1:{venue.port}/", FastClock(), timeout_s=1, silence_s=1)
        with pytest.raises(HttpError) as caught:
            await anext(client.frames())
    assert caught.value.code == "http_5xx"
