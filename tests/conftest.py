from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.servers import SHARED, RedisServer


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"../shared is missing (expected at {SHARED})")
    return SHARED


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """A private redis-server, flushed before each test (it is ours alone, never the shared 6379)."""
    redis_session.flush()
    return redis_session


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _signal_state_is_restored() -> Iterator[None]:
    """`markd run` in-process (tests of the CLI) blocks SIGTERM and SIGINT in this thread at its end
    and ignores them, as the daemon must. A blocked mask is inherited by every child started after
    it: redis-servers of later tests then ignored their SIGTERM and each stop timed out (a CI run
    lost 27 tests that way). Each test gets the process's signal state back as it found it."""
    handlers = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
