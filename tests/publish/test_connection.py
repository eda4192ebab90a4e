"""oracle.connection.Script: EVALSHA with the EVAL fallback its docstring promises, one by one and
pipelined, and a script's own error returned (not raised) by run_many."""

from __future__ import annotations

import socket
import time

import pytest
from redis.exceptions import ResponseError

from oracle.connection import Script, connect
from oracle.settings import RedisSettings
from tests.servers import RedisServer

ECHO = Script("return ARGV[1] .. redis.call('GET', KEYS[1])")
FAIL = Script("return redis.error_reply('boom ' .. ARGV[1])")


async def test_a_script_runs_again_after_the_server_forgot_it(
    settings: RedisSettings, redis_server: RedisServer
) -> None:
    client = connect(settings, timeout_s=1.0)
    try:
        await client.set("k", "v")
        for _ in range(2):  # the first run loads it by EVAL; the second, after a flush, again
            redis_server.command("SCRIPT FLUSH")
            assert await ECHO.run(client, ["k"], ["a"]) == "av"
            redis_server.command("SCRIPT FLUSH")
            calls = [(["k"], [str(i)]) for i in range(5)]
            assert await ECHO.run_many(client, iter(calls)) == [f"{i}v" for i in range(5)]
    finally:
        await client.aclose()


async def test_run_many_returns_a_script_error_in_its_place(settings: RedisSettings) -> None:
    client = connect(settings, timeout_s=1.0)
    try:
        [error] = await FAIL.run_many(client, [([], ["x"])])
        assert isinstance(error, ResponseError) and "boom x" in str(error)
    finally:
        await client.aclose()


def test_a_server_that_cannot_start_fails_fast() -> None:
    # redis-server exits at once when its port is taken; start() says so instead of polling 10 s.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = RedisServer(port=taken.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="did not start"):
            server.start()
        assert time.monotonic() - started < 5.0
        assert server.proc is None
