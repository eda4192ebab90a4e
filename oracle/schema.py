"""The Redis schema of DESIGN.md in one place: key names, and a Mark to and from its fields.

Per market M (P = redis.prefix; the braces are a Redis Cluster hash tag, so one market's keys share
a slot and one Lua script may touch them all):

    P:{M}:mark         hash    price, confidence, ts_ms, seq, status, tier, sources
    P:{M}:history      stream  the same fields, one entry per write, capped at history_maxlen
    P:{M}:updates      channel the same fields as JSON
    P:{M}:provisional  hash    the latest candidate: price, ts_ms, seq (display only)
    P:{M}:fence        string  the highest leader token that wrote M (internal, see oracle.leader)
    P:{M}:perp         hash    the perp mark (oracle.perp): price, index, c1, c2, c3, ts_ms, seq, status
    P:{M}:perp_history stream  the same fields, one entry per write, capped at history_maxlen
    P:{M}:perp_updates channel the same fields as JSON

and for the leader lease (one slot, so acquiring is one atomic script even in a Cluster):

    P:{leader}         string  "<replica_id>:<token>" with a TTL
    P:{leader}:epoch   integer the last token handed out

and for disputes (see disputes.store; the hash tag puts them all in the stream's slot):

    P:disputes               stream  the audit log of dispute events (the contract's name)
    {P:disputes}:records     hash    dispute id -> the dispute as JSON
    {P:disputes}:open        set     the ids of the open disputes
    {P:disputes}:index       zset    every stored id, scored by its opened_ts (listing, trimming)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from oracle.models import Mark, PerpMark, Status

MARK_FIELDS = ("price", "confidence", "ts_ms", "seq", "status", "tier", "sources")
PERP_FIELDS = ("price", "index", "c1", "c2", "c3", "ts_ms", "seq", "status")  # the signed order too

__all__ = ["MARK_FIELDS", "PERP_FIELDS", "Keys", "MarketKeys", "decode_mark", "decode_perp"]


@dataclass(frozen=True, slots=True)
class MarketKeys:
    mark: str
    history: str
    updates: str
    provisional: str
    fence: str


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def market(self, market: str) -> MarketKeys:
        if "{" in market or "}" in market:
            raise ValueError(f"market name {market!r} must not contain braces (they are the hash tag)")
        base = f"{self.prefix}:{{{market}}}"
        return MarketKeys(f"{base}:mark", f"{base}:history", f"{base}:updates", f"{base}:provisional", f"{base}:fence")

    def perp(self, market: str) -> tuple[str, str, str]:
        """The market's perp hash, perp history stream and perp updates channel."""
        base = self.market(market).mark.removesuffix(":mark")
        return f"{base}:perp", f"{base}:perp_history", f"{base}:perp_updates"

    @property
    def lease(self) -> str:
        return f"{self.prefix}:{{leader}}"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:{{leader}}:epoch"

    @property
    def mark_pattern(self) -> str:
        """SCAN pattern of every market's mark hash."""
        return f"{self.prefix}:{{*}}:mark"

    @property
    def disputes(self) -> str:
        return f"{self.prefix}:disputes"

    @property
    def dispute_records(self) -> str:
        return f"{{{self.disputes}}}:records"

    @property
    def open_disputes(self) -> str:
        return f"{{{self.disputes}}}:open"

    @property
    def dispute_index(self) -> str:
        return f"{{{self.disputes}}}:index"

    def market_of(self, mark_key: str) -> str:
        return mark_key[len(self.prefix) + 2 : -len("}:mark")]


def decode_mark(market: str, fields: Mapping[str, str | int]) -> Mark:
    """A Mark from a hash, stream entry or JSON message; ValueError (or KeyError) when malformed."""
    missing = [f for f in MARK_FIELDS if f not in fields]
    if missing:
        raise KeyError(f"{market}: mark lacks {', '.join(missing)}")
    sources = str(fields["sources"])
    return Mark(
        market=market,
        price=float(fields["price"]),
        confidence=float(fields["confidence"]),
        ts=int(fields["ts_ms"]) / 1000.0,
        seq=int(fields["seq"]),
        status=Status(str(fields["status"])),
        tier=int(fields["tier"]),
        sources=tuple(sources.split(",")) if sources else (),
    )


def decode_perp(market: str, fields: Mapping[str, str | int]) -> PerpMark:
    """A PerpMark from its hash, stream entry or JSON message; an empty component (the index was
    not usable) is NaN. ValueError (or KeyError) when malformed."""
    missing = [f for f in PERP_FIELDS if f not in fields]
    if missing:
        raise KeyError(f"{market}: perp mark lacks {', '.join(missing)}")

    def num(name: str) -> float:
        text = str(fields[name])
        return float(text) if text else float("nan")

    return PerpMark(
        market=market,
        price=float(fields["price"]),
        index=num("index"),
        c1=num("c1"),
        c2=num("c2"),
        c3=num("c3"),
        ts=int(fields["ts_ms"]) / 1000.0,
        seq=int(fields["seq"]),
        status=Status(str(fields["status"])),
    )
