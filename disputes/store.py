"""Disputes in Redis: they survive a restart and are shared by the replicas.

Keys (`P` is `redis.prefix`; the names are oracle.schema.Keys'):
- `P:disputes`: stream, the audit log of every dispute event (the contract's name), capped at
  `history_maxlen`.
- `{P:disputes}:records`: hash, dispute id -> the dispute as JSON (open and closed alike).
- `{P:disputes}:open`: set, the ids of the open disputes.

The hash tag puts all three in the stream's Redis Cluster slot, so the scripts below may touch
them together. Opening and closing are server-side scripts: closing checks the record is still
open and closes it in one step, so of two concurrent resolves of the same dispute, from one replica
or two, exactly one wins.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, cast

from disputes.model import Dispute, Event
from oracle.connection import RedisClient, Script, connect
from oracle.schema import Keys
from oracle.settings import RedisSettings

# KEYS: records hash, open set. ARGV: id, record. 1 = stored, 0 = that id exists already.
_OPEN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: records hash, open set. ARGV: id, closed record. 1 = closed by us, 0 = already closed.
# A record Redis lost (or never got) is closed as given: nobody else can have closed it.
_CLOSE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur)['status'] ~= 'open' then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[1])
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
        keys = [self.records_key, self.open_key]
        return bool(await _OPEN_SCRIPT.run(self.client, keys, [dispute.id, dispute.to_json()]))

    async def close_dispute(self, dispute: Dispute) -> bool:
        """Store the closed `dispute` if its record is still open. True for the one caller that wins."""
        if dispute.is_open:
            raise ValueError(f"dispute {dispute.id} is not closed")
        keys = [self.records_key, self.open_key]
        return bool(await _CLOSE_SCRIPT.run(self.client, keys, [dispute.id, dispute.to_json()]))

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
