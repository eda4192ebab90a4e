"""The margin engine's side of the Redis contract: read a mark, and use it only when it is usable.

    MarkError              a mark that must not be used, for whichever reason below
     ├── MarkUnavailable   Redis did not answer (down, slow, refused the credentials)
     ├── MarkMissing       no mark for the market, or one that does not parse
     ├── MarkHeld          status `held`: a dispute or the jump guard holds the market
     ├── MarkStale         status `stale`: no tier has quorum
     ├── MarkTooOld        `ok`/`degraded`, but validated longer ago than the caller's max_age_ms
     └── MarkForged        with `verify_key`: no signature, a wrong one, an unknown key, or a validly
                           signed mark older (lower seq) than one already returned (a replay)

`MarkReader.get` returns a usable Mark or raises one of these. `MarkReader.subscribe` streams marks
from pub/sub and, after every (re)connect, re-reads the hashes, so a message missed while the
connection was down is never silently lost; it yields each market's seqs in rising order only.

With `verify_key` (and the `algorithm` markd signs with; never taken from the mark) every read is
checked against the signature (see oracle.signing); a subscription drops forged updates with a
warning, counted in `Subscription.forged`, and goes on. Several keys may be given while one is being
rotated: each mark's `kid` picks its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from oracle.backoff import Backoff
from oracle.clock import Clock, WallClock
from oracle.connection import RedisClient, connect, connect_node, primary_moved, redact
from oracle.display import decimals, price_text
from oracle.models import Mark, PerpMark, Status
from oracle.schema import Keys, decode_mark, decode_perp
from oracle.settings import RedisSettings
from oracle.signing import Verifier, mark_payload, parse_key, perp_payload

log = logging.getLogger(__name__)

__all__ = [
    "MarkError",
    "MarkForged",
    "MarkHeld",
    "MarkMissing",
    "MarkReader",
    "MarkStale",
    "MarkTooOld",
    "MarkUnavailable",
    "Subscription",
    "print_marks",
    "render_marks",
]


class MarkError(Exception):
    """A mark that must not be used. `mark` is the stored one, when there is one."""

    def __init__(self, market: str, message: str, mark: Mark | None = None) -> None:
        super().__init__(f"{market}: {message}")
        self.market = market
        self.mark = mark


class MarkUnavailable(MarkError):
    pass


class MarkMissing(MarkError):
    pass


class MarkHeld(MarkError):
    pass


class MarkStale(MarkError):
    pass


class MarkTooOld(MarkError):
    pass


class MarkForged(MarkError):
    pass


VerifyKey: TypeAlias = bytes | str  # the raw key, or its hex


def _verifiers(keys: VerifyKey | Sequence[VerifyKey] | None, algorithm: str) -> dict[str, Verifier]:
    if keys is None:
        return {}
    many = [keys] if isinstance(keys, bytes | str) else list(keys)
    verifiers = [Verifier(algorithm, parse_key(k) if isinstance(k, str) else k) for k in many]
    return {v.kid: v for v in verifiers}


class MarkReader:
    """`verify_key`: the HMAC key or Ed25519 public key (bytes, or hex), or several during a key
    rotation; `algorithm` is the one markd signs with (`hmac-sha256` or `ed25519`)."""

    def __init__(
        self,
        settings: RedisSettings,
        clock: Clock | None = None,
        *,
        timeout_s: float = 1.0,
        verify_key: VerifyKey | Sequence[VerifyKey] | None = None,
        algorithm: str = "hmac-sha256",
    ) -> None:
        self._settings = settings
        self._clock = clock or WallClock()
        self._timeout_s = timeout_s
        self._keys = Keys(settings.prefix)
        self._verifiers = _verifiers(verify_key, algorithm)
        self._returned: dict[str, int] = {}  # the highest seq returned per market (replay check)
        self._returned_perp: dict[str, int] = {}  # the same for the perp marks
        self._redis: RedisClient = connect(settings, timeout_s=timeout_s)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "markd",
        *,
        cluster: bool = False,
        clock: Clock | None = None,
        verify_key: VerifyKey | Sequence[VerifyKey] | None = None,
        algorithm: str = "hmac-sha256",
    ) -> MarkReader:
        settings = RedisSettings(url=url, prefix=prefix, cluster=cluster)
        return cls(settings, clock, verify_key=verify_key, algorithm=algorithm)

    def __repr__(self) -> str:
        return f"MarkReader({redact(self._settings.url)}, prefix={self._settings.prefix!r})"

    async def close(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> MarkReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(self, market: str, max_age_ms: int) -> Mark:
        """The market's mark if its status is ok or degraded and it is at most max_age_ms old."""
        mark = (await self.read_many([market]))[market]
        if mark is None:
            raise MarkMissing(market, "no mark")
        if mark.status is Status.HELD:
            raise MarkHeld(market, "held by a dispute or the jump guard", mark)
        if mark.status is Status.STALE:
            raise MarkStale(market, "stale: no tier has quorum", mark)
        age_ms = self._clock.now() * 1000 - mark.ts_ms
        if age_ms > max_age_ms:
            raise MarkTooOld(market, f"validated {age_ms:.0f} ms ago (limit {max_age_ms} ms)", mark)
        return mark

    async def read_many(self, markets: Sequence[str]) -> dict[str, Mark | None]:
        """The stored marks as they are (no status or age check), in one round trip. Raises
        MarkUnavailable, MarkMissing for a hash that does not parse, or MarkForged."""
        out: dict[str, Mark | None] = {}
        for market, mark in (await self.read_each(markets)).items():
            if isinstance(mark, MarkError):
                raise mark
            out[market] = mark
        return out

    async def read_each(self, markets: Sequence[str]) -> dict[str, Mark | MarkError | None]:
        """As read_many, but a market whose mark cannot be used gets its MarkMissing or MarkForged
        as its value instead of raising: one bad market does not hide the others."""
        rows = await self._read_rows(markets)
        out: dict[str, Mark | MarkError | None] = {}
        for market, row in zip(markets, rows, strict=True):
            try:
                out[market] = self._checked(market, row)
            except (MarkMissing, MarkForged) as exc:
                out[market] = exc
        return out

    def _checked(self, market: str, row: Mapping[str, Any]) -> Mark | None:
        """The parsed mark; with verify keys also its signature, and no replay of an older one."""
        mark = _parse(market, row)
        if mark is None or not self._verifiers:
            return mark
        _verify(self._verifiers, market, row, mark)
        seen = self._returned.get(market, 0)
        if mark.seq < seen:
            raise MarkForged(market, f"replayed: seq {mark.seq} is below seq {seen}, already read", mark)
        self._returned[market] = mark.seq
        return mark

    async def _read_rows(self, markets: Sequence[str]) -> list[dict[str, str]]:
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._redis.pipeline(transaction=False)
                async with pipe:
                    for market in markets:
                        pipe.hgetall(self._keys.market(market).mark)
                    return list(await pipe.execute())
        except Exception as exc:
            raise MarkUnavailable(",".join(markets), f"redis unavailable ({type(exc).__name__})") from exc

    async def read_perps(self, markets: Sequence[str]) -> dict[str, PerpMark | MarkError | None]:
        """Each market's perp mark from P:{M}:perp as stored (no status or age check), in one round
        trip: None where it has none, its MarkMissing (malformed) or, with verify keys, MarkForged
        (unsigned, a wrong signature, or a lower seq than one already returned) in its place.
        Raises MarkUnavailable when Redis does not answer."""
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._redis.pipeline(transaction=False)
                async with pipe:
                    for market in markets:
                        pipe.hgetall(self._keys.perp(market)[0])
                    rows = list(await pipe.execute())
        except Exception as exc:
            raise MarkUnavailable(",".join(markets), f"redis unavailable ({type(exc).__name__})") from exc
        out: dict[str, PerpMark | MarkError | None] = {}
        for market, row in zip(markets, rows, strict=True):
            try:
                out[market] = self._checked_perp(market, row)
            except (MarkMissing, MarkForged) as exc:
                out[market] = exc
        return out

    def _checked_perp(self, market: str, row: Mapping[str, Any]) -> PerpMark | None:
        if not row:
            return None
        try:
            perp = decode_perp(market, row)
        except (KeyError, ValueError) as exc:
            raise MarkMissing(market, f"malformed perp mark ({exc})") from exc
        if not self._verifiers:
            return perp
        _check_signature(self._verifiers, market, row, perp_payload(market, row))
        seen = self._returned_perp.get(market, 0)
        if perp.seq < seen:
            raise MarkForged(market, f"replayed: perp seq {perp.seq} is below seq {seen}, already read")
        self._returned_perp[market] = perp.seq
        return perp

    async def read_perp_prices(self, markets: Sequence[str]) -> dict[str, tuple[float, str] | None]:
        """Each market's perp mark as (price, status) from P:{M}:perp, None where it has none (a
        display helper for `markd marks`; a margin engine reads the whole hash and its signature)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                pipe = self._redis.pipeline(transaction=False)
                async with pipe:
                    for market in markets:
                        pipe.hmget(self._keys.perp(market)[0], ["price", "status"])
                    rows = list(await pipe.execute())
        except Exception as exc:
            raise MarkUnavailable(",".join(markets), f"redis unavailable ({type(exc).__name__})") from exc
        out: dict[str, tuple[float, str] | None] = {}
        for market, (price, status) in zip(markets, rows, strict=True):
            try:
                out[market] = (float(price), str(status)) if price else None
            except ValueError:
                out[market] = None
        return out

    async def markets(self) -> list[str]:
        """Every market with a mark hash under our prefix."""
        try:
            async with asyncio.timeout(self._timeout_s * 10):
                keys = {k async for k in self._redis.scan_iter(match=self._keys.mark_pattern, count=1000)}
        except Exception as exc:
            raise MarkUnavailable("*", f"redis unavailable ({type(exc).__name__})") from exc
        return sorted(self._keys.market_of(k) for k in keys)

    def subscribe(self, markets: Iterable[str], *, backoff_s: tuple[float, float] = (0.05, 1.0)) -> Subscription:
        return Subscription(self, list(markets), backoff_s)


def _verify(verifiers: Mapping[str, Verifier], market: str, row: Mapping[str, Any], mark: Mark) -> None:
    _check_signature(verifiers, market, row, mark_payload(market, row), mark)


def _check_signature(
    verifiers: Mapping[str, Verifier], market: str, row: Mapping[str, Any], payload: bytes, mark: Mark | None = None
) -> None:
    """MarkForged unless the row's `sig` is a good signature of `payload` by the key its `kid` names."""
    sig, kid = row.get("sig"), row.get("kid")
    if not sig:
        raise MarkForged(market, "unsigned", mark)
    verifier = verifiers.get(str(kid))
    if verifier is None:
        raise MarkForged(market, f"signed with key {kid!s:.16}, which is not ours", mark)
    if not verifier.verify(payload, str(sig)):
        raise MarkForged(market, "the signature does not match", mark)


def _parse(market: str, row: Mapping[str, Any]) -> Mark | None:
    if not row:
        return None
    try:
        return decode_mark(market, row)
    except (KeyError, ValueError) as exc:
        raise MarkMissing(market, f"malformed mark ({exc})") from exc


class Subscription:
    """Marks as they are published: `async with reader.subscribe(markets) as marks: async for ...`.

    It first yields the stored mark of each market that has one, then each update. After a lost
    connection it reconnects with backoff, subscribes, and re-reads the hashes, yielding any mark
    newer than the last one it yielded for that market; older or repeated seqs are dropped.
    """

    def __init__(self, reader: MarkReader, markets: list[str], backoff_s: tuple[float, float]) -> None:
        self._reader = reader
        self._markets = markets
        self._channels = {reader._keys.market(m).updates: m for m in markets}
        self._backoff = Backoff(*backoff_s)
        self._last_seq: dict[str, int] = {}
        self.forged = 0  # forged or unsigned updates dropped (with verify keys)
        self._queue: deque[Mark] = deque()
        self._node: Redis | None = None
        self._pubsub: PubSub | None = None
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Mark:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration  # closed, maybe while a read waited: the iteration ends
            if self._pubsub is None:
                await self._connect()
            else:
                await self._receive()
        return self._queue.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()
        if self._node is not None:
            await self._node.aclose()
            self._node = None

    async def _connect(self) -> None:
        if self._node is None:
            self._node = connect_node(self._reader._settings, timeout_s=self._reader._timeout_s)
        pubsub = self._node.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*self._channels)
            self._pubsub = pubsub
            # Subscribed first, then read: an update between the two arrives by both ways and
            # the seq check drops the repeat, whereas the other order could lose it.
            rows = await self._reader._read_rows(self._markets)
        except Exception as exc:
            log.debug("subscribe failed (%s); retrying", type(exc).__name__)
            await self._drop()
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            await self._back_off()
            return
        self._backoff.reset()
        for market, row in zip(self._markets, rows, strict=True):
            self._resync(market, row)

    def _resync(self, market: str, row: dict[str, str]) -> None:
        try:
            mark = self._checked(market, row)
        except MarkMissing as exc:
            log.warning("%s", exc)  # one bad hash must not stop the other markets' updates
            return
        except MarkForged as exc:
            self._refuse(exc)
            return
        if mark is not None:
            self._offer(mark)

    def _checked(self, market: str, fields: Mapping[str, Any]) -> Mark | None:
        """Parsed and, with verify keys, verified (replays are dropped by _offer's seq check)."""
        mark = _parse(market, fields)
        if mark is not None and self._reader._verifiers:
            _verify(self._reader._verifiers, market, fields, mark)
        return mark

    def _refuse(self, exc: MarkForged) -> None:
        self.forged += 1
        log.warning("dropping a forged mark: %s", exc)

    async def _receive(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        try:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        except Exception as exc:
            log.info("subscription lost (%s); resubscribing", type(exc).__name__)
            await self._drop()
            await self._back_off()
            return
        if self._pubsub is not pubsub:
            return  # closed (or dropped) while this read waited: its message, if any, is not ours to act on
        if message is not None and message.get("type") == "message":
            self._on_message(message)
        elif message is None and self._node is not None and await primary_moved(self._node, pubsub.connection):
            # A quiet second on a primary that Sentinel replaced while it stayed up: follow the new one.
            log.info("the primary moved; resubscribing")
            await self._drop()

    def _on_message(self, message: dict[str, Any]) -> None:
        market = self._channels.get(message["channel"])
        if market is None:
            return
        try:
            fields = json.loads(message["data"])
            mark = self._checked(market, fields)
        except MarkForged as exc:
            self._refuse(exc)
        except (MarkMissing, KeyError, ValueError, TypeError, AttributeError) as exc:
            log.warning("%s: ignoring a malformed update (%s)", market, exc)
        else:
            if mark is not None:
                self._offer(mark)

    def _offer(self, mark: Mark) -> None:
        if mark.seq > self._last_seq.get(mark.market, 0):
            self._last_seq[mark.market] = mark.seq
            self._queue.append(mark)

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _back_off(self) -> None:
        await asyncio.sleep(self._backoff.next())  # real time: waiting for a network peer


_COLUMNS = ("market", "price", "confidence", "status", "tier", "sources", "age", "seq")


def render_marks(
    marks: Mapping[str, Mark | MarkError | None],
    now: float,
    perps: Mapping[str, tuple[float, str] | None] | None = None,
) -> str:
    """A plain-text table of marks, one row per market (a missing mark shows as `missing`, one that
    failed verification as `FORGED`, one that does not parse as `malformed`). With any perp mark in
    `perps`, a `perp` column after the price shows each market's perp price (with its status when
    it differs from the index's)."""
    with_perp = bool(perps) and any(perps.values()) if perps else False
    columns = list(_COLUMNS[:2]) + (["perp"] if with_perp else []) + list(_COLUMNS[2:])
    rows = [columns]
    for market, mark in marks.items():
        if mark is None or isinstance(mark, MarkError):
            shown = "missing" if mark is None else "FORGED" if isinstance(mark, MarkForged) else "malformed"
            row = [market, "-", "-", shown, "-", "-", "-", "-"]
        else:
            age = f"{max(0.0, now - mark.ts):.1f}s"
            places = decimals(mark.price)  # the market's precision, for the price and its band alike
            row = [market, price_text(mark.price, places), price_text(mark.confidence, places), mark.status.value,
                   str(mark.tier), ",".join(mark.sources), age, str(mark.seq)]  # fmt: skip
        if with_perp and perps is not None:
            row.insert(2, _perp_cell(mark, perps.get(market)))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _perp_cell(mark: Mark | MarkError | None, perp: tuple[float, str] | None) -> str:
    if perp is None:
        return "-"
    price, status = perp
    if not isinstance(mark, Mark):
        return f"{price_text(price, decimals(price))} ({status})"
    text = price_text(price, decimals(mark.price))
    return text if status == mark.status.value else f"{text} ({status})"


async def print_marks(
    url: str,
    prefix: str = "markd",
    markets: Sequence[str] | None = None,
    *,
    cluster: bool = False,
    clock: Clock | None = None,
    verify_key: VerifyKey | Sequence[VerifyKey] | None = None,
    algorithm: str = "hmac-sha256",
) -> str:
    """The `markd marks` table: the given markets, or every market found under the prefix; with
    `verify_key`, a market whose mark fails verification shows as FORGED.
    Raises MarkUnavailable when Redis cannot be read (its message never holds the password)."""
    clock = clock or WallClock()
    reader = MarkReader.from_url(url, prefix, cluster=cluster, clock=clock, verify_key=verify_key, algorithm=algorithm)
    async with reader:
        names = list(markets) if markets is not None else await reader.markets()
        marks = await reader.read_each(names) if names else {}
        perps = await reader.read_perp_prices(names) if names else {}
    if not marks:
        return f"no marks under prefix {prefix!r} at {redact(url)}"
    return render_marks(marks, clock.now(), perps)
