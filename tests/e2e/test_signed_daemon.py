"""`markd run` with a signing key: every mark it writes verifies, and the key shows nowhere it
writes to (its logs, /metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from oracle.client import MarkReader
from oracle.settings import RedisSettings
from oracle.signing import Signer, Verifier, mark_payload
from oracle.sim.demo import DEMO_MARKETS
from oracle.testing import RedisServer
from tests.e2e.stack import PREFIX, Daemon, get

SEED = bytes(range(7, 39))


@pytest.fixture
def signed_daemon(config: Path, redis: RedisServer) -> Iterator[Daemon]:
    redis.flush()
    d = Daemon(config, MARKD_SIGNING_KEY=SEED.hex(), MARKD_SIGNING__ALGORITHM="ed25519").start()
    try:
        yield d.wait_ready()
    finally:
        d.stop()


@pytest.mark.timeout(60)
async def test_a_signing_daemon_writes_marks_that_verify_and_never_shows_its_key(
    signed_daemon: Daemon, redis: RedisServer
) -> None:
    public = Signer("ed25519", SEED).verifying_key
    settings = RedisSettings(url=redis.url, prefix=PREFIX)
    async with MarkReader(settings, verify_key=public, algorithm="ed25519") as reader:
        marks = await reader.read_many(list(DEMO_MARKETS))
    assert all(m is not None for m in marks.values())
    store = redis_py.Redis.from_url(redis.url, decode_responses=True)
    verifier = Verifier("ed25519", public)
    entries = [f for _, f in store.xrange(f"{PREFIX}:{{BTC-USD}}:history")]
    store.close()
    assert entries and all(verifier.verify(mark_payload("BTC-USD", f), f["sig"]) for f in entries)

    status, metrics = get(f"{signed_daemon.url}/metrics")
    assert status == 200
    signed_daemon.stop()  # its logs are complete once it has exited
    for text in (metrics.decode(), signed_daemon.stderr()):
        assert SEED.hex() not in text.lower()
