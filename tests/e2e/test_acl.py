"""Least privilege in Redis: deploy/redis/users.acl, loaded by a real redis-server, gives markd a user
limited to its key prefix (and no admin or dangerous command) and the margin engine a read-only one.
`markd run` works as its user; the read-only user cannot write a mark by any path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from oracle.client import MarkReader
from oracle.clock import WallClock
from oracle.connection import Script, connect
from oracle.metrics import Metrics
from oracle.models import Mark, Status
from oracle.publish import PUBLISH_LUA, RedisPublisher
from oracle.settings import RedisSettings
from oracle.testing import RedisServer
from tests.e2e.stack import PREFIX, TOKEN, Daemon, VenueThread, get_json, request, write_config
from tests.servers import needs_redis_7

ACL = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "users.acl"
WRITER = ("markd", "markd-demo-writer")  # the demo passwords whose SHA-256 users.acl holds
READER = ("margin", "markd-demo-reader")


def url(server: RedisServer, user: tuple[str, str]) -> str:
    return f"redis://{user[0]}:{user[1]}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def acl_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra=("--aclfile", str(ACL))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, venues: VenueThread, acl_redis: RedisServer) -> Iterator[Daemon]:
    config = write_config(tmp_path_factory.mktemp("acl"), venues.urls, url(acl_redis, WRITER), http_port=0)
    d = Daemon(config, MARKD_DISPUTE_TOKEN=TOKEN).start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.mark.timeout(60)
async def test_markd_publishes_leads_and_keeps_disputes_as_its_restricted_user(
    daemon: Daemon, acl_redis: RedisServer
) -> None:
    assert daemon.sample("markd_leader") == 1.0
    body = b'{"market": "ETH-USD", "reason": "acl drill"}'
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, answer = request("POST", f"{daemon.url}/v1/disputes", body, headers)
    assert status == 201, answer
    assert get_json(f"{daemon.url}/v1/disputes")  # read back through the store
    async with MarkReader(RedisSettings(url=url(acl_redis, READER), prefix=PREFIX)) as reader:
        assert (await reader.get("BTC-USD", max_age_ms=5000)).seq > 0  # the margin engine reads
        async with reader.subscribe(["BTC-USD"]) as updates:
            assert (await anext(updates)).market == "BTC-USD"
    assert "NOPERM" not in daemon.stderr() and "NoPermission" not in daemon.stderr()


@needs_redis_7("EVAL_RO")
async def test_the_read_only_user_cannot_write_a_mark(daemon: Daemon, acl_redis: RedisServer) -> None:
    reader = redis_py.Redis.from_url(url(acl_redis, READER), decode_responses=True)
    key = f"{PREFIX}:{{BTC-USD}}:mark"
    before = reader.hgetall(key)
    attempts = [
        lambda: reader.hset(key, "price", "1.0"),
        lambda: reader.delete(key),
        lambda: reader.xadd(f"{PREFIX}:{{BTC-USD}}:history", {"price": "1.0"}),
        lambda: reader.publish(f"{PREFIX}:{{BTC-USD}}:updates", '{"price":"1.0"}'),
        lambda: reader.eval("return redis.call('HSET', KEYS[1], 'price', '1.0')", 1, key),
        lambda: reader.execute_command("EVAL_RO", "return 1", 0),
    ]
    for attempt in attempts:
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            attempt()
    reader.close()

    # markd's own write path, run with the margin engine's credentials: refused and counted.
    metrics = Metrics()
    settings = RedisSettings(url=url(acl_redis, READER), prefix=PREFIX)
    publisher = RedisPublisher(settings, metrics, WallClock(), timeout_s=1.0)
    forged = Mark("BTC-USD", 1.0, 0.1, WallClock().now(), 0, Status.OK, 1, ("x", "y", "z"), candidate=1.0)
    assert await publisher.publish([forged]) == []
    await publisher.close()
    assert metrics.registry.get_sample_value("markd_publish_errors_total") == 1.0
    client = connect(settings, timeout_s=1.0)
    try:
        with pytest.raises(redis_py.exceptions.NoPermissionError):  # the reason: its script is refused
            await Script(PUBLISH_LUA).run(client, [key], [])
    finally:
        await client.aclose()
    writer = redis_py.Redis.from_url(url(acl_redis, WRITER), decode_responses=True)
    now = writer.hgetall(key)
    writer.close()
    assert now["price"] != "1.0" and int(now["seq"]) >= int(before["seq"])


def test_markd_s_user_is_confined_to_its_prefix_and_has_no_admin_commands(acl_redis: RedisServer) -> None:
    writer = redis_py.Redis.from_url(url(acl_redis, WRITER), decode_responses=True)
    attempts = [
        lambda: writer.set("other:key", "1"),  # another application's key
        lambda: writer.hset("margin:{BTC-USD}:positions", "x", "1"),
        lambda: writer.publish("other:channel", "x"),
        lambda: writer.flushall(),
        lambda: writer.config_set("appendonly", "no"),
        lambda: writer.keys("*"),
        lambda: writer.execute_command("ACL", "LIST"),
    ]
    for attempt in attempts:
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            attempt()
    writer.close()
    anonymous = redis_py.Redis(port=acl_redis.port, decode_responses=True)
    assert anonymous.ping()  # the default user may only ping (the compose healthcheck)
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        anonymous.get(f"{PREFIX}:{{BTC-USD}}:mark")
    anonymous.close()
