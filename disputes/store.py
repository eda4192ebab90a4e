"""Disputes in Redis: they survive a restart and are shared by the replicas.

Keys (`P` is `redis.prefix`; the names are oracle.schema.Keys'):
- `P:disputes`: stream, the audit log of every dispute event (the contract's name), capped at
  `history_maxlen`. Never trimmed by age: it is the audit trail.
- `{P:disputes}:records`: hash, dispute id -> the dispute as JSON (open and closed alike); closed
  records older than `disputes.keep_closed_days` are trimmed (`trim_closed`).
- `{P:disputes}:open`: set, the ids of the open disputes.
- `{P:disputes}:index`: sorted set, every stored id scored by its opened_ts: the listing's order,
  so a page costs its own size, not the whole history (`page`).

The hash tag puts all four in the stream's Redis Cluster slot, so the scripts below may touch
them together. Opening and closing are server-side scripts: closing checks the record is still
open and closes it in one step, so of two concurrent resolves of the same dispute, from one replica
or two, exactly one wins.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, cast

from disputes.model import Cursor, Dispute, Event, page_of, wanted
from oracle.connection import RedisClient, Script, connect
from oracle.schema import Keys
from oracle.settings import RedisSettings

# KEYS: records hash, open set, index. ARGV: id, record, opened_ts. 1 = stored, 0 = id exists already.
_OPEN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# KEYS: records hash, open set, index. ARGV: id, closed record, opened_ts. 1 = closed by us, 0 =
# already closed. A record Redis lost (or never got) is closed as given: nobody else can have closed it.
_CLOSE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur)['status'] ~= 'open' then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

_OPEN_SCRIPT = Script(_OPEN)
_CLOSE_SCRIPT = Script(_CLOSE)


class DisputeStore:
    """`client` must decode responses (`decode_responses=True`), as `from_settings` makes it."""

    def __init__(self, client: RedisClient, prefix: str = "markd", stream_maxlen: int = 100_000) -> None:
        self.client = client
        keys = Keys(prefix)
        self.stream_key = keys.disputes
        self.records_key = keys.dispute_records
        self.open_key = keys.open_disputes
        self.index_key = keys.dispute_index
        self.stream_maxlen = stream_maxlen

    @staticmethod
    def from_settings(settings: RedisSettings, *, timeout_s: float = 1.0) -> DisputeStore:
        """A store on `oracle.connection.connect`'s client: a Cluster when `settings.cluster` says so,
        and no call waits longer than `timeout_s` (the tick loop records events through it)."""
        return DisputeStore(connect(settings, timeout_s=timeout_s), settings.prefix, settings.history_maxlen)

    async def save(self, dispute: Dispute) -> bool:
        """Record a newly opened dispute; False if that id is already stored (never overwritten)."""
        if not dispute.is_open:
            raise ValueError(f"dispute {dispute.id} is not open")
        keys = [self.records_key, self.open_key, self.index_key]
        return bool(await _OPEN_SCRIPT.run(self.client, keys, [dispute.id, dispute.to_json(), repr(dispute.opened_ts)]))

    async def close_dispute(self, dispute: Dispute) -> bool:
        """Store the closed `dispute` if its record is still open. True for the one caller that wins."""
        if dispute.is_open:
            raise ValueError(f"dispute {dispute.id} is not closed")
        keys = [self.records_key, self.open_key, self.index_key]
        args = [dispute.id, dispute.to_json(), repr(dispute.opened_ts)]
        return bool(await _CLOSE_SCRIPT.run(self.client, keys, args))

    async def get(self, dispute_id: str) -> Dispute | None:
        raw = await cast(Awaitable[str | None], self.client.hget(self.records_key, dispute_id))
        return None if raw is None else _dispute(raw)

    async def load(self) -> list[Dispute]:
        """Every stored dispute, oldest first (pass them to `DisputeStage.restore`)."""
        raw = await cast(Awaitable[dict[str, str]], self.client.hgetall(self.records_key))
        return sorted((_dispute(v) for v in raw.values()), key=lambda d: (d.opened_ts, d.id))

    async def load_open(self) -> list[Dispute]:
        """The open disputes only, oldest first (cheap enough to poll: see DisputeService.sync)."""
        ids = sorted(await cast(Awaitable[set[str]], self.client.smembers(self.open_key)))
        if not ids:
            return []
        raw = await cast(Awaitable[list[str | None]], self.client.hmget(self.records_key, ids))
        return sorted((_dispute(v) for v in raw if v is not None), key=lambda d: (d.opened_ts, d.id))

    async def page(
        self, *, status: str | None, market: str | None, limit: int, after: Cursor | None
    ) -> tuple[list[Dispute], bool]:
        """One page of the listing, oldest first, after the cursor; True when more follow.

        Open disputes come from the open set (small: capped per market). Otherwise the index is
        walked from the cursor in batches until the page is full, so a page costs about its own size
        when no filter is given, and at worst one pass over the records it skips."""
        if status == "open":
            return page_of(await self.load_open(), status, market, limit, after)
        await self._ensure_index()
        found: list[Dispute] = []
        offset, batch = 0, max(2 * limit, 100)
        low = repr(after[0]) if after is not None else "-inf"
        while len(found) <= limit:
            ids = await self._ids(low, "+inf", offset, batch)
            if not ids:
                break
            offset += len(ids)
            raw = await cast(Awaitable[list[str | None]], self.client.hmget(self.records_key, ids))
            found += (d for v in raw if v is not None and wanted(d := _dispute(v), status, market, after))
        return found[:limit], len(found) > limit

    async def trim_closed(self, before_ts: float, batch: int = 500) -> int:
        """Delete the records of disputes closed before `before_ts`; returns how many. Open ones stay
        whatever their age, and so does the audit stream."""
        await self._ensure_index()
        removed, offset = 0, 0
        while True:  # a dispute closed before `before_ts` was opened before it too
            ids = await self._ids("-inf", repr(before_ts), offset, batch)
            if not ids:
                return removed
            raw = await cast(Awaitable[list[str | None]], self.client.hmget(self.records_key, ids))
            closed = [
                i for i, v in zip(ids, raw, strict=True) if v is not None and _closed_before(_dispute(v), before_ts)
            ]
            gone = closed + [i for i, v in zip(ids, raw, strict=True) if v is None]  # index entries of lost records
            if gone:
                if closed:
                    await cast(Awaitable[int], self.client.hdel(self.records_key, *closed))
                await self.client.zrem(self.index_key, *gone)
                removed += len(closed)
            offset += len(ids) - len(gone)

    async def _ids(self, low: str, high: str, offset: int, count: int) -> list[str]:
        """Ids in listing order with opened_ts in [low, high], from the `offset`-th on."""
        return list(await self.client.zrangebyscore(self.index_key, low, high, start=offset, num=count))

    async def _ensure_index(self) -> None:
        """Records stored before the index existed (an upgrade) are indexed once."""
        if await self.client.zcard(self.index_key) >= await cast(Awaitable[int], self.client.hlen(self.records_key)):
            return
        raw = await cast(Awaitable[dict[str, str]], self.client.hgetall(self.records_key))
        if raw:
            await self.client.zadd(self.index_key, {i: _dispute(v).opened_ts for i, v in raw.items()})

    async def append(self, event: Event) -> str:
        """XADD the event to the audit stream; returns the entry id."""
        fields: dict[str, str] = {"kind": event.kind.value, "market": event.market, "ts": repr(event.ts)}
        if event.dispute is not None:
            fields["id"] = event.dispute.id
            fields["reason"] = event.dispute.reason.value
            fields["outcome"] = event.dispute.outcome.value if event.dispute.outcome else ""
        fields["json"] = event.to_json()
        entry = await self.client.xadd(self.stream_key, cast(Any, fields), maxlen=self.stream_maxlen, approximate=True)
        return str(entry)

    async def events(self, count: int = 1000) -> list[dict[str, Any]]:
        """The latest `count` audit events, oldest first, as their JSON documents."""
        entries = await self.client.xrevrange(self.stream_key, count=count)
        return [json.loads(fields["json"]) for _, fields in reversed(entries)]

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _dispute(raw: str) -> Dispute:
    return Dispute.from_dict(json.loads(raw))


def _closed_before(d: Dispute, ts: float) -> bool:
    return d.closed_ts is not None and d.closed_ts < ts
