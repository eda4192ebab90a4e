"""Signed marks (DESIGN.md, "Signed marks"): what is signed, where `kid` and `sig` go, and the reader
that refuses a tampered, unsigned, foreign-key or replayed mark."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import pytest
import redis as redis_py
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from oracle.client import MarkForged, MarkReader, Subscription
from oracle.metrics import Metrics
from oracle.models import Status
from oracle.settings import RedisSettings
from oracle.signing import Signer, SigningKeyError, Verifier, key_id, mark_payload
from tests.publish.helpers import mark, publisher
from tests.servers import RedisServer

KEY = bytes(range(32))
SEED = bytes(range(100, 132))
MARKET = "BTC-USD"


def fields_of(client: redis_py.Redis, key: str) -> dict[str, str]:
    return client.hgetall(key)


def sync_client(server: RedisServer) -> redis_py.Redis:
    return redis_py.Redis.from_url(server.url, decode_responses=True)


def mark_key(settings: RedisSettings, market: str = MARKET) -> str:
    return f"{settings.prefix}:{{{market}}}:mark"


async def publish(settings: RedisSettings, signer: Signer | None, *marks_: object) -> None:
    pub = publisher(settings, signer=signer)
    try:
        for m in marks_:
            assert await pub.publish([m])  # type: ignore[list-item]
    finally:
        await pub.close()


def test_the_signed_bytes_are_the_stored_strings_joined_by_newlines() -> None:
    fields = {"price": "65000.5", "confidence": "1.25", "ts_ms": 1700000000123, "seq": 7, "status": "ok",
              "tier": 1, "sources": "coinbase,kraken"}  # fmt: skip
    assert mark_payload(MARKET, fields) == b"BTC-USD\n65000.5\n1.25\n1700000000123\n7\nok\n1\ncoinbase,kraken"


def test_kid_is_sha256_of_the_verifying_key_and_the_signatures_are_standard() -> None:
    payload = b"BTC-USD\n1.0\n0.1\n1\n1\nok\n1\na"
    h = Signer("hmac-sha256", KEY)
    assert h.kid == hashlib.sha256(KEY).hexdigest()[:16] == key_id(KEY)
    assert h.sign(payload) == hmac.new(KEY, payload, hashlib.sha256).hexdigest()
    e = Signer("ed25519", SEED)
    assert e.kid == hashlib.sha256(e.verifying_key).hexdigest()[:16]
    Ed25519PublicKey.from_public_bytes(e.verifying_key).verify(bytes.fromhex(e.sign(payload)), payload)  # no raise
    assert Verifier("ed25519", e.verifying_key).verify(payload, e.sign(payload))
    assert not Verifier("ed25519", e.verifying_key).verify(payload + b"x", e.sign(payload))
    assert not Verifier("hmac-sha256", KEY).verify(payload, "not hex")


def test_a_key_never_shows_in_a_repr_and_a_bad_key_is_refused_without_echoing_it() -> None:
    for signer in (Signer("hmac-sha256", KEY), Signer("ed25519", SEED)):
        assert KEY.hex() not in repr(signer) and SEED.hex() not in repr(signer)
        assert signer.kid in repr(signer)
    with pytest.raises(SigningKeyError, match="32 bytes") as err:
        Signer("hmac-sha256", KEY[:16])
    assert KEY[:16].hex() not in str(err.value)


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "ed25519"])
async def test_hash_history_and_updates_carry_kid_and_a_sig_over_the_stored_strings(
    settings: RedisSettings, redis_server: RedisServer, algorithm: str
) -> None:
    signer = Signer(algorithm, KEY if algorithm == "hmac-sha256" else SEED)
    verifier = Verifier(algorithm, signer.verifying_key)
    client = sync_client(redis_server)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"{settings.prefix}:{{{MARKET}}}:updates")
    try:
        await publish(settings, signer, mark(price=65000.5), mark(price=0.1 + 0.2, status=Status.DEGRADED, tier=2))
        stored = fields_of(client, mark_key(settings))
        assert stored["kid"] == signer.kid
        assert verifier.verify(mark_payload(MARKET, stored), stored["sig"])
        assert stored["price"] == "0.30000000000000004"  # the exact string that was signed
        history = [f for _, f in client.xrange(f"{settings.prefix}:{{{MARKET}}}:history")]
        assert len(history) == 2
        assert all(f["kid"] == signer.kid and verifier.verify(mark_payload(MARKET, f), f["sig"]) for f in history)
        messages = [json.loads(m["data"]) for m in _drain(pubsub, 2)]
        assert [m["seq"] for m in messages] == [1, 2]
        for message in messages:
            assert isinstance(message["price"], str) and isinstance(message["ts_ms"], int)
            assert verifier.verify(mark_payload(MARKET, message), message["sig"])
    finally:
        pubsub.close()
        client.close()


def _drain(pubsub: redis_py.client.PubSub, n: int) -> list[dict[str, object]]:
    out = []
    for _ in range(200):
        message = pubsub.get_message(timeout=0.05)
        if message is not None:
            out.append(message)
        if len(out) == n:
            return out
    raise AssertionError(f"only {len(out)} of {n} messages")


async def test_without_a_key_marks_have_no_kid_or_sig_and_turning_signing_off_drops_them(
    settings: RedisSettings, redis_server: RedisServer
) -> None:
    await publish(settings, Signer("hmac-sha256", KEY), mark())
    await publish(settings, None, mark(price=1.5))
    client = sync_client(redis_server)
    stored = fields_of(client, mark_key(settings))
    assert "kid" not in stored and "sig" not in stored and stored["seq"] == "2"
    last = client.xrevrange(f"{settings.prefix}:{{{MARKET}}}:history", count=1)[0][1]
    assert "sig" not in last
    client.close()


@pytest.fixture
async def signed(settings: RedisSettings) -> RedisSettings:
    """Two signed marks of BTC-USD (seq 1, 2) and one of ETH-USD."""
    signer = Signer("hmac-sha256", KEY)
    await publish(settings, signer, mark(price=100.0), mark(price=101.0), mark("ETH-USD", price=3000.0))
    return settings


async def test_the_reader_returns_a_genuine_signed_mark(signed: RedisSettings) -> None:
    async with MarkReader(signed, verify_key=KEY) as reader:
        assert (await reader.get(MARKET, 60_000)).price == 101.0
    async with MarkReader(signed, verify_key=KEY.hex(), algorithm="hmac-sha256") as reader:  # hex works too
        assert (await reader.read_many([MARKET, "ETH-USD"]))["ETH-USD"] is not None


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ({"price": "1.0"}, "does not match"),  # a tampered price
        ({"seq": "99"}, "does not match"),
        ({"status": "ok", "tier": "2"}, "does not match"),
        ({"kid": "0123456789abcdef"}, "not ours"),
    ],
)
async def test_the_reader_raises_markforged_for_a_tampered_mark(
    signed: RedisSettings, redis_server: RedisServer, tamper: dict[str, str], says: str
) -> None:
    client = sync_client(redis_server)
    client.hset(mark_key(signed), mapping=tamper)
    client.close()
    async with MarkReader(signed, verify_key=KEY) as reader:
        with pytest.raises(MarkForged, match=says) as err:
            await reader.get(MARKET, 60_000)
        assert err.value.market == MARKET
        assert (await reader.read_each([MARKET, "ETH-USD"]))["ETH-USD"] is not None  # the others still read


async def test_the_reader_raises_markforged_for_a_missing_sig(signed: RedisSettings, redis_server: RedisServer) -> None:
    client = sync_client(redis_server)
    client.hdel(mark_key(signed), "sig")
    client.close()
    async with MarkReader(signed, verify_key=KEY) as reader:
        with pytest.raises(MarkForged, match="unsigned"):
            await reader.read_many([MARKET])


async def test_the_reader_refuses_a_replayed_older_signed_mark(
    signed: RedisSettings, redis_server: RedisServer
) -> None:
    client = sync_client(redis_server)
    older = client.xrange(f"{signed.prefix}:{{{MARKET}}}:history")[0][1]  # seq 1: validly signed
    async with MarkReader(signed, verify_key=KEY) as reader:
        assert (await reader.get(MARKET, 60_000)).seq == 2
        client.hset(mark_key(signed), mapping=older)  # someone with write access puts the old mark back
        with pytest.raises(MarkForged, match="replayed: seq 1 is below seq 2"):
            await reader.get(MARKET, 60_000)
    client.close()


async def test_the_algorithm_comes_from_the_reader_never_from_the_mark(
    settings: RedisSettings, redis_server: RedisServer
) -> None:
    """An Ed25519 public key is no secret: had the reader taken the algorithm from the mark, anyone
    could HMAC a forged mark with it. Configured for ed25519, the reader refuses the HMAC one."""
    public = Signer("ed25519", SEED).verifying_key
    await publish(settings, Signer("hmac-sha256", public), mark())  # HMAC keyed with the public key
    async with MarkReader(settings, verify_key=public, algorithm="ed25519") as reader:
        with pytest.raises(MarkForged, match="does not match"):
            await reader.get(MARKET, 60_000)


async def test_ed25519_marks_verify_with_the_public_key_and_a_rotation_accepts_both_kids(
    settings: RedisSettings,
) -> None:
    old, new = Signer("ed25519", SEED), Signer("ed25519", bytes(32))
    await publish(settings, old, mark("ETH-USD"))
    await publish(settings, new, mark())
    async with MarkReader(settings, verify_key=[old.verifying_key, new.verifying_key], algorithm="ed25519") as reader:
        marks = await reader.read_many([MARKET, "ETH-USD"])
        assert all(m is not None for m in marks.values())
    async with MarkReader(settings, verify_key=new.verifying_key.hex(), algorithm="ed25519") as reader:
        assert isinstance((await reader.read_each(["ETH-USD"]))["ETH-USD"], MarkForged)  # old key retired


async def test_a_subscription_drops_forged_updates_and_goes_on(
    signed: RedisSettings, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    reader = MarkReader(signed, verify_key=KEY)
    subscription: Subscription = reader.subscribe([MARKET])
    client = sync_client(redis_server)
    try:
        assert (await anext(subscription)).seq == 2
        channel = f"{signed.prefix}:{{{MARKET}}}:updates"
        genuine = fields_of(client, mark_key(signed))
        forged = {**genuine, "price": "1.0", "seq": 50, "ts_ms": int(genuine["ts_ms"]), "tier": 1}
        client.publish(channel, json.dumps(forged))
        client.publish(channel, json.dumps({k: v for k, v in forged.items() if k != "sig"}))
        with caplog.at_level(logging.WARNING, logger="oracle.client"):
            await publish(signed, Signer("hmac-sha256", KEY), mark(price=102.0))
            nxt = await asyncio.wait_for(anext(subscription), 5)
        assert (nxt.price, nxt.seq) == (102.0, 3)
        assert subscription.forged == 2
        assert "forged" in caplog.text and KEY.hex() not in caplog.text
    finally:
        client.close()
        await subscription.aclose()
        await reader.close()


async def test_the_key_never_reaches_logs_or_metrics(settings: RedisSettings, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    pub = publisher(settings, metrics, signer=Signer("hmac-sha256", KEY))
    with caplog.at_level(logging.DEBUG):
        await pub.publish([mark()])
        await pub.close()
        assert await pub.publish([mark()]) == []  # closed: counted and logged as a failure
    from prometheus_client import generate_latest

    exposed = generate_latest(metrics.registry).decode()
    for text in (caplog.text, exposed, repr(pub)):
        assert KEY.hex() not in text and KEY.hex().upper() not in text
