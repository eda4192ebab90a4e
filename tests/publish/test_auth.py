"""Passwords in the URL and rediss:// work, and the password never shows in logs, errors or metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from oracle.client import MarkReader, MarkUnavailable, print_marks
from oracle.clock import WallClock
from oracle.connection import redact
from oracle.leader import LeaderLease
from oracle.metrics import Metrics
from oracle.settings import RedisSettings
from tests.publish.helpers import errors, mark, publisher
from tests.servers import MissingBinary, RedisServer

SECRET = "pa55-w0rd-xyzzy"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h:6380/1", "rediss://user:***@h:6380/1"),
        ("redis://pw@h:6379", "redis://***@h:6379"),
        ("redis://h:6379/0?password=pw&db=2", "redis://h:6379/0?password=***&db=2"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    server = RedisServer(password=SECRET).start()
    yield server
    server.stop()


async def test_password_in_the_url_works(auth_server: RedisServer) -> None:
    settings = RedisSettings(url=auth_server.url, prefix="auth")
    lease = LeaderLease(settings, "a", 1000, WallClock())
    pub = publisher(settings)
    assert await lease.tick()
    [written] = await pub.publish([mark(price=5.0)], fence=lease.token)
    async with MarkReader(settings) as reader:
        got = await reader.get("BTC-USD", max_age_ms=5000)
    table = await print_marks(auth_server.url, "auth")
    await asyncio.gather(pub.close(), lease.close())
    assert got.seq == written.seq == 1 and got.price == 5.0
    assert "BTC-USD" in table and SECRET not in table


async def test_a_wrong_password_never_leaks(auth_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-s3cret-plugh"
    settings = RedisSettings(url=auth_server.url.replace(SECRET, wrong), prefix="auth")
    metrics = Metrics()
    pub = publisher(settings, metrics)
    assert await pub.publish([mark()]) == []
    lease = LeaderLease(settings, "a", 1000, WallClock(), metrics=metrics)
    assert not await lease.tick()
    with pytest.raises(MarkUnavailable) as caught:
        async with MarkReader(settings) as reader:
            await reader.get("BTC-USD", max_age_ms=5000)
    shown = [caplog.text, metrics.render().decode(), repr(pub), repr(lease), repr(reader)]
    shown += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
    await asyncio.gather(pub.close(), lease.close())
    assert errors(metrics) == 1
    for text in shown:
        assert wrong not in text and SECRET not in text


async def test_rediss_with_a_password_works() -> None:
    try:
        server = RedisServer(password=SECRET, tls=True).start()
    except MissingBinary as exc:  # only the embedded redis-server, which has no TLS
        pytest.skip(str(exc))
    try:
        settings = RedisSettings(url=server.url, prefix="tls")
        pub = publisher(settings, timeout_s=2.0)
        [written] = await pub.publish([mark(price=9.5)])
        await pub.close()
        async with MarkReader(settings) as reader:
            got = await reader.get("BTC-USD", max_age_ms=5000)
        assert got.price == 9.5 and got.seq == written.seq
        assert SECRET not in repr(reader) and "***" in repr(reader)
    finally:
        server.stop()
