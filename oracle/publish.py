"""Where validated marks go: the MarkSink seam, with Redis (RedisPublisher) and memory (MemorySink).

The sink assigns `seq` (the marks it is given carry seq=0): strictly rising per market, continued
across restarts and replicas by reading the stored seq back before a market's first write after
start, reconnect or a change of leader token, and never below its own last one.

One server-side Lua script (see oracle.schema for the keys) does, atomically for each mark: refuse
the write if `seq` is not above the stored one or the leader fence says the writer lost its lease;
else update the mark hash, append to the history stream, publish the JSON message and set the
provisional hash. One script call takes a chunk of marks (`batch`; in a Cluster one market, since a
call may only touch one slot), and the calls of one tick go out in one pipeline round trip. With a
signer (oracle.signing) each mark carries `kid` and `sig`, signed over the very strings stored.

Fencing: with a token (from oracle.leader.LeaderLease) the script refuses the write unless
- standalone: `P:{leader}:epoch` equals the token, so a deposed leader is refused at once;
- always: the market's `P:{M}:fence` (the highest token that wrote or claimed the market) is not
  above it. In a Cluster the epoch key lives in another slot, so this per-market fence is the only
  check: a new leader claims every market's fence when it reads the seqs back, before its first
  write, and from then on the old leader's writes to that market are refused.

Failure model: `publish` never raises and never waits longer than its budget (`timeout_s` plus a
little per mark, see `budget_s`). When Redis is down or slow the marks are counted as failed
(markd_publish_errors_total) and kept, newest per market only; a background task reconnects with
backoff and then writes those newest marks (their `ts_ms` says how old they are) and never a backlog.
Refused writes are counted the same way, not raised.

Isolation: one market's fault is that market's alone. A key of the market holding the wrong type (a
`mark` SET to a plain string, a `fence` that is not a number) refuses that mark only, before any of
its keys is written; a call that Redis refuses as a whole (out of memory with `noeviction`) fails the
marks of that call, on a connection that stays up. Both are counted per market
(markd_publish_market_errors_total), logged once per fault with the key or Redis' message, kept as
`market_errors` / `refused` for /readyz, and the newest such mark is tried again with the next
publish: the other markets keep publishing and every seq keeps rising.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain, repeat
from typing import Any, Protocol, TypeAlias, TypeVar

import numpy as np
from redis.exceptions import ReadOnlyError, ResponseError

from oracle.backoff import Backoff
from oracle.clock import Clock
from oracle.connection import RedisClient, Script, connect, redact
from oracle.metrics import Metrics
from oracle.models import Mark, PerpMark
from oracle.schema import Keys, MarketKeys
from oracle.settings import RedisSettings
from oracle.signing import Signer
from oracle.validation.state import STATUSES, LazyMarks, MarkColumns

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_V = TypeVar("_V")
_Call: TypeAlias = tuple[list[str], list[str | int]]  # one script call: keys, args

__all__ = ["MarkSink", "MemorySink", "RedisPerpPublisher", "RedisPublisher"]

# A publish's time budget grows with its size: at 5,000 markets one tick's marks took 0.45-0.75 s to
# write on a loaded 2-core machine (0.1 ms a mark), and a fixed one-tick timeout failed every such
# publish while Redis was healthy, then the reconnect's catch-up (2 s for everything) as well.
PER_MARK_S = 0.0002

# What PUBLISH_LUA's and CLAIM_LUA's negative codes below -1 name: the market's key at fault.
_BAD_KEY = {-2: "mark", -3: "history", -4: "provisional", -5: "fence"}

# The key checks both publish scripts (marks, perp marks) run before they write anything of a market.
_KEY_CHECKS = """
local function number_at(reply)  -- the number a read returned; nil for an error or a non-number
  if type(reply) == 'table' then return nil end
  return tonumber(reply or '0')
end
local function of_type(key, want)
  local t = redis.call('TYPE', key).ok
  return t == 'none' or t == want
end
"""

# One call writes a chunk of marks (in a Cluster: one market's, so every key shares its slot).
# KEYS: per mark: mark, history, provisional, fence; then, standalone with a token, the epoch.
# ARGV: token ('' = unfenced), history maxlen, now_ms, then per mark: seq, channel, candidate price,
#       price, confidence, ts_ms, status, tier, sources, kid, sig (kid '' = unsigned).
# Returns one integer per mark (cheap to parse): 0 written, -1 refused by the fence, -2 - j when the
# mark's j-th key (0 mark, 1 history, 2 provisional, 3 fence) holds the wrong type or a non-number,
# else refused by the seq check, and then it is the stored seq (>= 1, since seq >= 1 is not above it).
# A bad key is checked for before anything of that mark is written, with pcall and TYPE: a plain
# redis.call error would abort the whole call, every other market of the chunk with it.
# The field names are oracle.schema.MARK_FIELDS (+ kid, sig); every value arrives as the exact
# string to store, so what oracle.signing signed is what a reader finds.
PUBLISH_LUA = (
    _KEY_CHECKS
    + """
local token = tonumber(ARGV[1])
local deposed = token and #KEYS % 4 == 1 and tonumber(redis.call('GET', KEYS[#KEYS]) or '0') ~= token
local out = {}
for i = 0, math.floor(#KEYS / 4) - 1 do
  local k, a = i * 4, 3 + i * 11
  local seq = tonumber(ARGV[a + 1])
  local stored = number_at(redis.pcall('HGET', KEYS[k + 1], 'seq'))
  local seen = number_at(redis.pcall('GET', KEYS[k + 4]))
  local verdict = 0
  if not stored then verdict = -2
  elseif not of_type(KEYS[k + 2], 'stream') then verdict = -3
  elseif not of_type(KEYS[k + 3], 'hash') then verdict = -4
  elseif not seen then verdict = -5
  elseif deposed then verdict = -1
  elseif token then
    if seen > token then verdict = -1
    elseif seen < token then redis.call('SET', KEYS[k + 4], ARGV[1]) end
  end
  if verdict == 0 and seq <= stored then verdict = stored end
  if verdict == 0 then
    local price, conf, ts = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
    local st, tier, src, kid, sig = ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11]
    local json = '{"price":"' .. price .. '","confidence":"' .. conf .. '","ts_ms":' .. ts .. ',"seq":' ..
      ARGV[a + 1] .. ',"status":"' .. st .. '","tier":' .. tier .. ',"sources":' ..
      (string.find(src, '[%c"\\\\]') and cjson.encode(src) or '"' .. src .. '"')
    if kid == '' then
      redis.call('HSET', KEYS[k + 1], 'price', price, 'confidence', conf, 'ts_ms', ts, 'seq', ARGV[a + 1],
                 'status', st, 'tier', tier, 'sources', src)
      redis.call('HDEL', KEYS[k + 1], 'kid', 'sig')  -- signing turned off: no stale signature stays
      redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', ARGV[2], '*', 'price', price, 'confidence', conf,
                 'ts_ms', ts, 'seq', ARGV[a + 1], 'status', st, 'tier', tier, 'sources', src)
      json = json .. '}'
    else
      redis.call('HSET', KEYS[k + 1], 'price', price, 'confidence', conf, 'ts_ms', ts, 'seq', ARGV[a + 1],
                 'status', st, 'tier', tier, 'sources', src, 'kid', kid, 'sig', sig)
      redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', ARGV[2], '*', 'price', price, 'confidence', conf,
                 'ts_ms', ts, 'seq', ARGV[a + 1], 'status', st, 'tier', tier, 'sources', src, 'kid', kid,
                 'sig', sig)
      json = json .. ',"kid":"' .. kid .. '","sig":"' .. sig .. '"}'
    end
    redis.call('PUBLISH', ARGV[a + 2], json)
    redis.call('HSET', KEYS[k + 3], 'price', ARGV[a + 3], 'ts_ms', ARGV[3], 'seq', ARGV[a + 1])
  end
  out[i + 1] = verdict
end
return out
"""
)

# Read markets' stored seqs back and, with a token, claim their fences (a new leader does this before
# its first write). KEYS: per market: mark, fence. ARGV: token. Returns each market's stored seq, or
# -2 when its mark key is not a hash with a numeric seq, -5 when its fence is not a number (the same
# codes as PUBLISH_LUA's; such a market is left alone and stays unclaimed).
CLAIM_LUA = """
local token = tonumber(ARGV[1])
local function number_at(reply)
  if type(reply) == 'table' then return nil end
  return tonumber(reply or '0')
end
local out = {}
for i = 1, #KEYS, 2 do
  local stored = number_at(redis.pcall('HGET', KEYS[i], 'seq'))
  local seen = number_at(redis.pcall('GET', KEYS[i + 1]))
  if not stored then stored = -2
  elseif not seen then stored = -5
  elseif token and seen < token then redis.call('SET', KEYS[i + 1], ARGV[1]) end
  out[#out + 1] = stored
end
return out
"""

_PUBLISH = Script(PUBLISH_LUA)
_CLAIM = Script(CLAIM_LUA)


class MarkSink(Protocol):
    async def publish(self, marks: Sequence[Mark], *, fence: int | None = None) -> list[Mark]:
        """Write the marks of one tick; returns those written, with their assigned `seq`."""
        ...

    async def publish_columns(self, marks: MarkColumns, *, fence: int | None = None) -> Written:
        """The same for marks given as columns (the daemon's call: it builds no Mark to publish)."""
        ...

    async def close(self) -> None: ...


class MemorySink:
    """The replay harness's sink: the same seq rules as Redis, kept in memory. There is one writer,
    so `fence` is accepted (the same call as RedisPublisher) and ignored."""

    def __init__(self, history: bool = True) -> None:
        """`history`: keep every mark written in `history` (a replay, which keeps its own, does not)."""
        self.latest: dict[str, Mark] = {}
        self.history: list[Mark] = []
        self._keep_history = history
        self._seq: dict[str, int] = {}  # each market's last seq

    async def publish(self, marks: Sequence[Mark], *, fence: int | None = None) -> list[Mark]:
        return self.write(marks)

    def write(self, marks: Sequence[Mark]) -> list[Mark]:
        """`publish` without the event loop: a replay has nothing to wait for."""
        out = []
        for mark in marks:
            seq = self._seq[mark.market] = self._seq.get(mark.market, 0) + 1
            written = mark.with_seq(seq)
            self.latest[mark.market] = written
            out.append(written)
        if self._keep_history:
            self.history.extend(out)
        return out

    async def publish_columns(self, marks: MarkColumns, *, fence: int | None = None) -> Written:
        written = await self.publish(marks.marks(), fence=fence)
        return Written(marks, [m.seq for m in written])

    def next_seq(self, market: str) -> int:
        return self._seq.get(market, 0) + 1

    def skip(self, market: str, n: int) -> None:
        """`n` marks of `market` numbered by the caller from `next_seq` on and kept by it (a replay
        builds a chunk's marks only when they are read: `latest` and `history` leave them out)."""
        self._seq[market] = self._seq.get(market, 0) + n

    async def close(self) -> None:
        return None


class Written(LazyMarks):
    """The marks one publish wrote, with their seqs (`seqs[j]` is row j's): the columns they were
    written from, each Mark built only when read (and then once). At 1,000 markets a tick the daemon
    reads almost none of them: /v1/marks, /readyz and a scrape read the last one per market."""

    def __init__(self, cols: MarkColumns, seqs: Sequence[int]) -> None:
        super().__init__(len(seqs))
        self.cols, self.seqs = cols, seqs

    @property
    def markets(self) -> list[str]:
        return self.cols.markets

    def _build(self, k: int) -> Mark:
        return self.cols.mark(k, self.seqs[k])


_NOTHING_WRITTEN = Written(MarkColumns.of([]), [])


class LastWritten(Mapping[str, Mark]):
    """The last mark written per market, as `Written` holds it: recording a publish of 1,000 marks is
    one dict update, and a Mark is built only for the markets read."""

    def __init__(self, at: dict[str, tuple[Written, int]] | None = None) -> None:
        self._at = at if at is not None else {}

    def record(self, written: Written) -> None:
        self._at.update(zip(written.markets, zip(repeat(written), range(len(written)), strict=False), strict=True))

    def forget(self, market: str) -> None:
        self._at.pop(market, None)

    def copy(self) -> LastWritten:
        """A copy that later records leave alone (what the metrics thread reads)."""
        return LastWritten(dict(self._at))

    def __getitem__(self, market: str) -> Mark:
        written, k = self._at[market]
        return written[k]

    def __len__(self) -> int:
        return len(self._at)

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)


_STATUS_TEXT = [s.value for s in STATUSES]


@dataclass(frozen=True, slots=True)
class _Text:
    """The exact strings stored for each row of some MarkColumns, built a column at a time (C loops,
    not one Python call per field of each mark): repr is the shortest string that round-trips."""

    price: list[str]
    confidence: list[str]
    ts_ms: list[str]
    status: list[str]
    tier: list[str]
    sources: list[str]
    candidate: list[str]

    @staticmethod
    def of(cols: MarkColumns, rows: slice) -> _Text:
        """The strings of `cols`' rows in `rows`."""
        price = list(map(repr, cols.price[rows].tolist()))
        return _Text(
            price,
            list(map(repr, cols.confidence[rows].tolist())),
            _ts_ms_text(cols.ts[rows]),
            list(map(_STATUS_TEXT.__getitem__, cols.status[rows].tolist())),
            list(map(str, cols.tier[rows].tolist())),
            list(map(",".join, cols.sources[rows].tolist())),
            _repr_like(cols.candidate[rows], cols.price[rows], price),  # a quiet mark's candidate is its price
        )


def _ts_ms_text(ts: np.ndarray) -> list[str]:
    """str(Mark.ts_ms) of each time (the same product, rounded); once when all are one (a tick's
    quiet marks are all validated at its time)."""
    ms = (ts * 1000).tolist()
    if len(ms) and bool((ts == ts[0]).all()):
        return [str(round(ms[0]))] * len(ms)
    return list(map(str, map(round, ms)))


def _repr_like(values: np.ndarray, known: np.ndarray, known_text: list[str]) -> list[str]:
    """repr of each value, taken from `known_text` where the value is `known`'s bit for bit (so its
    repr too), computed for the others only."""
    text = list(known_text)
    differ = np.flatnonzero(values.view(np.int64) != known.view(np.int64))
    for j, value in zip(differ.tolist(), values[differ].tolist(), strict=True):
        text[j] = repr(value)
    return text


class _PerMarket(dict[str, _V]):
    """What a market's name alone determines (its keys), made on first use: looking up a tick's
    markets with `map(cache.__getitem__, markets)` then runs in C."""

    def __init__(self, make: Callable[[str], _V]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, market: str) -> _V:
        value = self[market] = self._make(market)
        return value


class RedisPublisher:
    """The live sink. `timeout_s` bounds each publish (default: one default tick); `backoff_s` is the
    first and the longest wait between reconnect attempts; `batch` is how many marks one script
    call writes (Redis runs nothing else meanwhile: 100 take about a millisecond). `mark_gauges=False`
    leaves the markd_mark_* gauges to the caller (the daemon sets them when /metrics is scraped)."""

    def __init__(
        self,
        settings: RedisSettings,
        metrics: Metrics,
        clock: Clock,
        *,
        timeout_s: float = 0.25,
        backoff_s: tuple[float, float] = (0.05, 0.5),
        batch: int = 100,
        mark_gauges: bool = True,
        signer: Signer | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._batch = batch
        self._mark_gauges = mark_gauges
        self._signer = signer
        self._keys = Keys(settings.prefix)
        self._market_keys = _PerMarket(self._keys.market)
        self._script_keys = _PerMarket(lambda m: _script_keys(self._keys_of(m)))
        self._channels = _PerMarket(lambda m: self._keys_of(m).updates)
        # The socket's own timeouts are only a backstop, as long as the longest budget (a publish of
        # 5,000 marks reads its last reply well after a tick): asyncio.timeout bounds each call.
        self._redis: RedisClient = connect(settings, timeout_s=max(timeout_s, 2.0))
        self._last_seq: dict[str, int] = {}
        self._synced: set[str] = set()  # markets whose stored seq was read since (re)connect/new token
        self._fence: int | None = None
        self._pending: dict[str, Mark] = {}  # newest unwritten mark per market, written next time
        self._market_errors: dict[str, str] = {}  # why a market's last write failed (bad key, Redis)
        self._refused: str | None = None  # Redis' message while it refuses our calls (OOM...)
        self._lock = asyncio.Lock()
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisPublisher({redact(self._settings.url)}, prefix={self._settings.prefix!r})"

    @property
    def connected(self) -> bool:
        """False from a failed publish until the background reconnect has caught up."""
        return self._reconnect is None

    @property
    def market_errors(self) -> dict[str, str]:
        """The markets whose last write failed through a fault of their own (a key of the wrong type),
        and why; a failure of the whole call is `refused`."""
        return dict(self._market_errors)

    @property
    def refused(self) -> str | None:
        """Redis' error while it refuses our writes though it answers (e.g. OOM), else None."""
        return self._refused

    def budget_s(self, n: int) -> float:
        """How long a publish of `n` marks may take before it counts as failed."""
        return self._timeout_s + n * PER_MARK_S

    async def ping(self, timeout_s: float = 0.5) -> bool:
        """Whether Redis answers now (for /readyz); never raises."""
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await self._redis.ping())
        except Exception:
            return False

    async def publish(self, marks: Sequence[Mark], *, fence: int | None = None) -> list[Mark]:
        """MarkSink's call: `publish_columns` of these marks."""
        return list(await self.publish_columns(MarkColumns.of(marks), fence=fence))

    async def publish_columns(self, marks: MarkColumns, *, fence: int | None = None) -> Written:
        """Write the marks of one tick, given as columns (MarkTable.columns: the daemon builds no Mark
        to publish one); returns those written, with their assigned `seq`."""
        if fence != self._fence:
            self._fence = fence
            self._synced.clear()  # a new leader term reads every stored seq back first
        if not len(marks) and not self._pending:
            return _NOTHING_WRITTEN
        if self._closed or self._reconnect is not None:
            return self._defer(marks)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.budget_s(len(marks) + len(self._pending))), self._lock:
                batch = self._merged(marks)
                try:
                    written, again = await self._write(batch)
                except BaseException:
                    self._keep(batch.marks())
                    raise
                self._keep(again)
        except Exception as exc:  # the contract: never raise into the tick loop
            log.warning("publish failed (%s); reconnecting in the background", _describe(exc))
            self._start_reconnect()
            return self._defer(marks)
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        return written

    async def close(self) -> None:
        self._closed = True
        task, self._reconnect = self._reconnect, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()

    def _defer(self, marks: MarkColumns) -> Written:
        self._keep(marks.marks())
        self._metrics.publish_failed(len(marks))
        return _NOTHING_WRITTEN

    def _merged(self, marks: MarkColumns) -> MarkColumns:
        """Marks refused last time (their market's fault) go again unless a newer one came: the kept
        marks, then these, the newest per market (in a dict merge's order). Usually nothing is kept."""
        pending, self._pending = self._pending, {}
        if not pending and len(set(marks.markets)) == len(marks):
            return marks
        return MarkColumns.of(list({**pending, **dict(zip(marks.markets, marks.marks(), strict=True))}.values()))

    def _keep(self, marks: Iterable[Mark]) -> None:
        for mark in marks:
            self._pending[mark.market] = mark  # the newest replaces older ones: never a backlog

    async def _write(self, marks: MarkColumns) -> tuple[Written, list[Mark]]:
        """Write `marks`; returns those written and those to try again (their market's fault).
        Raises only when the connection failed (the caller reconnects)."""
        unsynced = sorted(set(marks.markets) - self._synced)
        if unsynced:
            await self._claim(unsynced)
        synced = self._synced
        again = [marks.mark(j) for j, m in enumerate(marks.markets) if m not in synced]
        # never a write before its seq is known
        ready = marks.take([j for j, m in enumerate(marks.markets) if m in synced]) if again else marks
        now = self._clock.now()
        seqs: list[int] = []
        results = await _PUBLISH.run_many(self._redis, self._calls(ready, round(now * 1000), seqs))
        written: list[int] = []  # rows of `ready`
        for rows, result in zip(self._spans(len(ready)), results, strict=True):
            if _refused_call(result):
                for j in rows:
                    self._unwind_seq(ready.markets[j], seqs[j])
                self._call_refused([ready.markets[j] for j in rows], result)
                again += (ready.mark(j, seqs[j]) for j in rows)
                continue
            if isinstance(result, BaseException):
                raise result
            if self._refused is not None:
                log.info("Redis accepts our writes again")
                self._refused = None
            if not any(result):  # the usual: every mark of the call written
                written += rows
                continue
            for j, verdict in zip(rows, result, strict=True):
                market = ready.markets[j]
                if verdict == 0:
                    written.append(j)
                elif verdict in _BAD_KEY:
                    self._unwind_seq(market, seqs[j])
                    self._market_failed(market, "wrong_type", self._bad_key(market, verdict))
                    again.append(ready.mark(j, seqs[j]))
                else:
                    self._outbid(market, seqs[j], verdict)
        if self._market_errors:
            for j in written:
                self._market_ok(ready.markets[j])
        if len(written) == len(ready):
            done = Written(ready, seqs)
        else:
            done = Written(ready.take(written), [seqs[j] for j in written])
        if self._mark_gauges:
            _set_gauges(self._metrics, done, now)
        if len(done) < len(marks):
            self._metrics.publish_failed(len(marks) - len(done))
        return done, again

    async def _claim(self, markets: Sequence[str]) -> None:
        chunks = self._chunks(markets)
        calls = [([key for k in map(self._keys_of, c) for key in (k.mark, k.fence)], [self._token]) for c in chunks]
        for chunk, result in zip(chunks, await _CLAIM.run_many(self._redis, calls), strict=True):
            if _refused_call(result):
                self._call_refused(chunk, result)
                continue
            if isinstance(result, BaseException):
                raise result
            for market, stored in zip(chunk, result, strict=True):
                if stored in _BAD_KEY:
                    self._market_failed(market, "wrong_type", self._bad_key(market, stored))
                    continue
                self._last_seq[market] = max(self._last_seq.get(market, 0), int(stored))
                self._synced.add(market)

    def _bad_key(self, market: str, code: int) -> str:
        key = getattr(self._keys_of(market), _BAD_KEY[code])
        return f"key {key} holds the wrong type or a non-number"

    def _market_failed(self, market: str, code: str, why: str) -> None:
        self._metrics.market_publish_failed(market, code)
        if code == "wrong_type" and self._market_errors.get(market) != why:  # a refused call: see `refused`
            self._market_errors[market] = why
            log.warning("%s not published: %s (the other markets go on)", market, why)

    def _market_ok(self, market: str) -> None:
        if self._market_errors.pop(market, None) is not None:
            log.info("%s publishes again", market)

    def _call_refused(self, markets: Sequence[str], exc: ResponseError) -> None:
        why = f"Redis refused the write: {_describe(exc)}"  # redis-py drops the "OOM" of the reply
        if why != self._refused:
            log.warning("%s (%d markets of this call not published)", why, len(markets))
        self._refused = why
        for market in markets:
            self._market_failed(market, "redis_error", why)

    def _unwind_seq(self, market: str, seq: int) -> None:
        """A mark not written gives its seq back, so a market's seqs stay gapless across a fault."""
        if self._last_seq.get(market) == seq:
            self._last_seq[market] = seq - 1

    def _chunks(self, items: Sequence[_T]) -> list[Sequence[_T]]:
        return [items[rows.start : rows.stop] for rows in self._spans(len(items))]

    def _spans(self, n: int) -> list[range]:
        """Script calls over n items: in a Cluster one market each (one slot); else `batch` markets,
        so one call does a lot while holding Redis only briefly."""
        size = 1 if self._settings.cluster else self._batch
        return [range(a, min(a + size, n)) for a in range(0, n, size)]

    @property
    def _token(self) -> str:
        return "" if self._fence is None else str(self._fence)

    def _calls(self, marks: MarkColumns, now_ms: int, seqs: list[int]) -> Iterator[_Call]:
        """The script calls, built as they are sent: each chunk's strings are made and its seqs
        assigned (and added to `seqs`) just before it goes out, so that work overlaps Redis running
        the last (the first goes out soonest), and a failed link leaves the later chunks' seqs unused."""
        last = self._last_seq
        for rows in self._spans(len(marks)):
            markets = marks.markets[rows.start : rows.stop]
            chunk_seqs = [last.get(m, 0) + 1 for m in markets]
            last.update(zip(markets, chunk_seqs, strict=True))
            seqs += chunk_seqs
            text = _Text.of(marks, slice(rows.start, rows.stop))
            yield self._publish_call(markets, list(map(str, chunk_seqs)), text, now_ms)

    def _publish_call(self, markets: list[str], seqs: list[str], t: _Text, now_ms: int) -> _Call:
        """One call's KEYS and ARGV (see PUBLISH_LUA), interleaved column by column."""
        kids: Iterable[str] = repeat("")
        sigs: Iterable[str] = repeat("")
        if self._signer is not None:
            # Over the exact strings stored: oracle.signing.mark_payload's order.
            fields = zip(markets, t.price, t.confidence, t.ts_ms, seqs, t.status, t.tier, t.sources, strict=True)
            kids, sigs = repeat(self._signer.kid), [self._signer.sign("\n".join(f).encode()) for f in fields]
        keys = list(chain.from_iterable(map(self._script_keys.__getitem__, markets)))
        if self._fence is not None and not self._settings.cluster:
            keys.append(self._keys.epoch)
        channels = map(self._channels.__getitem__, markets)
        # kids and sigs may repeat "" endlessly: the other columns end it
        per_mark = zip(
            seqs, channels, t.candidate, t.price, t.confidence, t.ts_ms, t.status, t.tier, t.sources, kids, sigs,
            strict=False,
        )  # fmt: skip
        args: list[str | int] = [self._token, self._settings.history_maxlen, now_ms, *chain.from_iterable(per_mark)]
        return keys, args

    def _outbid(self, market: str, seq: int, verdict: int) -> None:
        """A write refused by the fence (-1: we were deposed) or by the seq check (the stored seq)."""
        if verdict > 0:  # someone wrote a higher seq: continue above it from the next tick
            self._last_seq[market] = max(self._last_seq[market], verdict)
        log.debug("%s seq %d refused (%s)", market, seq, "fence" if verdict < 0 else "seq")

    def _keys_of(self, market: str) -> MarketKeys:
        return self._market_keys[market]

    def _start_reconnect(self) -> None:
        if self._reconnect is None and not self._closed:
            self._synced.clear()  # Redis may have restarted empty, or another replica written
            self._reconnect = asyncio.create_task(self._reconnect_loop(), name="markd-publish-reconnect")

    async def _reconnect_loop(self) -> None:
        backoff = Backoff(*self._backoff_s)
        while True:
            # Real time, not the injected clock: this waits for a network peer, and a virtual
            # clock's sleep would spin.
            await asyncio.sleep(backoff.next())
            try:
                # A longer budget than a tick's: this blocks no caller (publish() only queues while
                # we reconnect), and catching up on every market must be able to finish.
                async with asyncio.timeout(max(self.budget_s(len(self._pending)), 2.0)), self._lock:
                    await self._flush()
                    self._reconnect = None  # under the lock: no publish can slip into _pending now
            except Exception as exc:
                log.debug("reconnect attempt failed (%s)", _describe(exc))
                continue
            log.info("publishing to %s again", redact(self._settings.url))
            return

    async def _flush(self) -> None:
        """One pass over the marks kept meanwhile; those deferred during it, or refused by a fault of
        their market, stay for the next publish (which merges them)."""
        await self._redis.ping()
        batch = dict(self._pending)
        _, again = await self._write(MarkColumns.of(list(batch.values())))
        retry = {m.market for m in again}
        for market, mark in batch.items():
            if self._pending.get(market) is mark and market not in retry:
                del self._pending[market]


def _set_gauges(metrics: Metrics, written: Written, now: float) -> None:
    """The markd_mark_* gauges of the marks written, from their columns."""
    c = written.cols
    n_sources = [len(s) for s in c.sources.tolist()]
    status = [STATUSES[k] for k in c.status.tolist()]
    price, confidence, ts = c.price.tolist(), c.confidence.tolist(), c.ts.tolist()
    metrics.marks_published(c.markets, price, confidence, ts, n_sources, written.seqs, status, now)


def _script_keys(k: MarketKeys) -> tuple[str, str, str, str]:
    """A market's KEYS of PUBLISH_LUA, in its order."""
    return k.mark, k.history, k.provisional, k.fence


def _refused_call(result: Any) -> bool:
    """Redis answered this call with an error of its own (out of memory, a bad key outside a market's
    reach...): the connection is fine and only this call's marks failed. A read-only replica is not
    such an answer: it means we talk to a demoted primary, and reconnecting is the cure."""
    return isinstance(result, ResponseError) and not isinstance(result, ReadOnlyError)


def _describe(exc: BaseException) -> str:
    """Exception text for logs: redis-py messages name host and port, never the password."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- the perp mark (oracle.perp): P:{M}:perp, perp_history, perp_updates --------------------------

# What PERP_LUA's negative codes below -1 name: the market's key at fault.
_PERP_BAD_KEY = {-2: "perp", -3: "perp_history", -5: "fence"}

# KEYS: per perp: perp hash, perp history, fence; then, standalone with a token, the epoch.
# ARGV: token ('' = unfenced), history maxlen, then per perp: seq, channel, price, index, c1, c2, c3,
#       ts_ms, status, kid, sig (kid '' = unsigned). The same fence, seq and isolation rules as
# PUBLISH_LUA: returns per perp 0 written, -1 refused by the fence, -2 / -3 / -5 when its perp hash,
# perp history or fence holds the wrong type or a non-number (checked before anything of it is
# written, so one broken market never aborts the others' writes of the call), else the stored seq
# that refused it. A perp write never claims the fence: the index's write of the tick did.
PERP_LUA = (
    _KEY_CHECKS
    + """
local token = tonumber(ARGV[1])
local deposed = token and #KEYS % 3 == 1 and tonumber(redis.call('GET', KEYS[#KEYS]) or '0') ~= token
local out = {}
for i = 0, math.floor(#KEYS / 3) - 1 do
  local k, a = i * 3, 2 + i * 11
  local seq = tonumber(ARGV[a + 1])
  local stored = number_at(redis.pcall('HGET', KEYS[k + 1], 'seq'))
  local seen = number_at(redis.pcall('GET', KEYS[k + 3]))
  local verdict = 0
  if not stored then verdict = -2
  elseif not of_type(KEYS[k + 2], 'stream') then verdict = -3
  elseif not seen then verdict = -5
  elseif deposed or (token and seen > token) then verdict = -1
  elseif seq <= stored then verdict = stored end
  if verdict == 0 then
    local f = {'price', ARGV[a + 3], 'index', ARGV[a + 4], 'c1', ARGV[a + 5], 'c2', ARGV[a + 6],
               'c3', ARGV[a + 7], 'ts_ms', ARGV[a + 8], 'seq', ARGV[a + 1], 'status', ARGV[a + 9]}
    local json = '{"price":"' .. ARGV[a + 3] .. '","index":"' .. ARGV[a + 4] .. '","c1":"' .. ARGV[a + 5] ..
      '","c2":"' .. ARGV[a + 6] .. '","c3":"' .. ARGV[a + 7] .. '","ts_ms":' .. ARGV[a + 8] .. ',"seq":' ..
      ARGV[a + 1] .. ',"status":"' .. ARGV[a + 9] .. '"'
    if ARGV[a + 10] ~= '' then
      table.insert(f, 'kid'); table.insert(f, ARGV[a + 10]); table.insert(f, 'sig'); table.insert(f, ARGV[a + 11])
      json = json .. ',"kid":"' .. ARGV[a + 10] .. '","sig":"' .. ARGV[a + 11] .. '"'
    end
    -- HSET first: Redis refuses a script over maxmemory at its first write only if that write may
    -- grow memory, and an HDEL first let the whole write through an out-of-memory Redis.
    redis.call('HSET', KEYS[k + 1], unpack(f))
    if ARGV[a + 10] == '' then redis.call('HDEL', KEYS[k + 1], 'kid', 'sig') end
    redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', ARGV[2], '*', unpack(f))
    redis.call('PUBLISH', ARGV[a + 2], json .. '}')
  end
  out[i + 1] = verdict
end
return out
"""
)
_PERP = Script(PERP_LUA)


def perp_fields(p: PerpMark) -> tuple[str, ...]:
    """The exact strings stored for a perp mark, in oracle.schema.PERP_FIELDS order (the signed
    order); a component that was not computed (the index not usable) is the empty string."""

    def num(x: float) -> str:
        return "" if math.isnan(x) else repr(float(x))

    return (num(p.price), num(p.index), num(p.c1), num(p.c2), num(p.c3), str(p.ts_ms), str(p.seq), p.status.value)


class RedisPerpPublisher:
    """Writes perp marks with the mark publisher's guarantees: `seq` strictly rising per market (read
    back from Redis before a market's first write, after a failure and in a new leader term, never
    below our own), the leader fence, the signature, and its failure model. Shares the mark
    publisher's connection and its reconnect; never raises.

    A perp not written (Redis down or reconnecting, a publish over its budget, a key of its market
    holding the wrong type, a call Redis refused) is kept, the newest per market only, and goes out
    with the next publish unless a newer one of its market comes with it: after an outage the newest
    perp mark of every market reaches Redis with the first publish that finds it back, even one that
    brings no perp mark of its own. One market's fault stops that market only; it is counted and
    logged like a mark's (markd_publish_market_errors_total) and kept in `market_errors`."""

    def __init__(self, marks: RedisPublisher) -> None:
        self._marks = marks
        self._seq: dict[str, int] = {}
        self._synced: set[str] = set()  # markets whose stored seq was read since a failure/new term
        self._fence: int | None = None
        self._pending: dict[str, PerpMark] = {}  # newest unwritten perp per market, written next time
        self._market_errors: dict[str, str] = {}
        self._refused: str | None = None  # Redis' message while it refuses our calls (OOM...)

    @property
    def market_errors(self) -> dict[str, str]:
        """The markets whose last perp write failed through a fault of their own or a refused call."""
        return dict(self._market_errors)

    @property
    def pending(self) -> list[str]:
        """The markets with a perp mark kept for the next publish."""
        return sorted(self._pending)

    async def publish(self, perps: Sequence[PerpMark], *, fence: int | None = None) -> list[PerpMark]:
        """Write this tick's perp marks and those kept from before; returns those written, seq set."""
        m = self._marks
        if fence != self._fence:
            self._fence = fence
            self._synced.clear()  # a new leader term reads every stored seq back first
        batch = {**self._pending, **{p.market: p for p in perps}}  # the newest per market
        if not batch:
            return []
        if m._closed or m._reconnect is not None:  # Redis is known down: keep them, wait no time
            self._pending = batch
            self._synced.clear()  # it may come back empty, or another replica write meanwhile
            m._metrics.publish_failed(len(perps))
            return []
        self._pending = {}
        try:
            async with asyncio.timeout(m.budget_s(len(batch))):
                written, again = await self._write(list(batch.values()), fence)
        except Exception as exc:  # never into the tick loop; the marks' reconnect restores the link
            log.warning("perp publish failed (%s); kept for the next publish", _describe(exc))
            m._metrics.publish_failed(len(batch))
            self._synced.clear()  # the write may have landed or not: read the seqs back next time
            self._keep(batch.values())
            return []
        self._keep(again)
        if len(written) < len(batch):
            m._metrics.publish_failed(len(batch) - len(written))
        return written

    def _keep(self, perps: Iterable[PerpMark]) -> None:
        for p in perps:  # the newest of its market (publish merged them): its seq is set anew
            self._pending[p.market] = replace(p, seq=0)

    async def _write(self, perps: list[PerpMark], fence: int | None) -> tuple[list[PerpMark], list[PerpMark]]:
        """Write `perps`; returns those written and those to try again (their market's fault, or a
        call Redis refused). Raises only when the connection failed."""
        again = await self._sync([p.market for p in perps if p.market not in self._synced], perps)
        ready = [replace(p, seq=self._next(p.market)) for p in perps if p.market in self._synced]
        # In a Cluster one call may touch one slot only: one call per market there.
        chunks = [[p] for p in ready] if self._marks._settings.cluster else [ready] if ready else []
        results = await _PERP.run_many(self._marks._redis, [self._call(c, fence) for c in chunks])
        written: list[PerpMark] = []
        for chunk, result in zip(chunks, results, strict=True):
            if _refused_call(result):
                self._call_refused(chunk, result)
                again += chunk
                continue
            if isinstance(result, BaseException):
                raise result
            if self._refused is not None:
                log.info("Redis accepts our perp writes again")
                self._refused = None
            for p, verdict in zip(chunk, (int(v) for v in result), strict=True):
                if verdict == 0:
                    written.append(p)
                    if self._market_errors.pop(p.market, None) is not None:
                        log.info("%s perp mark publishes again", p.market)
                elif verdict in _PERP_BAD_KEY:
                    self._failed(p, "wrong_type", self._bad_key(p.market, verdict))
                    again.append(p)
                elif verdict > 0:  # someone wrote a higher seq: continue above it
                    self._seq[p.market] = max(self._seq[p.market], verdict)
        return written, again

    async def _sync(self, markets: list[str], perps: list[PerpMark]) -> list[PerpMark]:
        """Read the markets' stored perp seqs back; returns the perps of markets whose perp hash
        cannot be read (the wrong type), which stay unsynced and are tried again next time."""
        if not markets:
            return []
        pipe = self._marks._redis.pipeline(transaction=False)
        for market in markets:
            pipe.hget(self._marks._keys.perp(market)[0], "seq")
        broken: set[str] = set()
        for market, stored in zip(markets, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(stored, BaseException) and not _refused_call(stored):
                raise stored  # the link, not the market
            try:
                seq = int(stored or 0)  # WRONGTYPE (a ResponseError) or a seq that is not a number
            except (TypeError, ValueError):
                broken.add(market)
                continue
            self._seq[market] = max(self._seq.get(market, 0), seq)
            self._synced.add(market)
        again = [p for p in perps if p.market in broken]
        for p in again:
            self._failed(p, "wrong_type", self._bad_key(p.market, -2))
        return again

    def _failed(self, perp: PerpMark, code: str, why: str) -> None:
        """A perp of `perp.market` not written through no fault of the link: counted, logged once per
        fault (a refused call: once for all, by _call_refused), its seq given back (so its market's
        seqs stay gapless)."""
        if perp.seq and self._seq.get(perp.market) == perp.seq:
            self._seq[perp.market] = perp.seq - 1
        self._marks._metrics.market_publish_failed(perp.market, code)
        if self._market_errors.get(perp.market) != why:
            self._market_errors[perp.market] = why
            if code == "wrong_type":
                log.warning("%s perp mark not published: %s (the other markets go on)", perp.market, why)

    def _call_refused(self, chunk: Sequence[PerpMark], exc: ResponseError) -> None:
        why = f"Redis refused the write: {_describe(exc)}"
        if why != self._refused:
            log.warning("%s (%d perp marks of this call not published)", why, len(chunk))
        self._refused = why
        for p in chunk:
            self._failed(p, "redis_error", why)

    def _bad_key(self, market: str, code: int) -> str:
        perp, history, _ = self._marks._keys.perp(market)
        key = {"perp": perp, "perp_history": history, "fence": self._marks._keys_of(market).fence}
        return f"key {key[_PERP_BAD_KEY[code]]} holds the wrong type or a non-number"

    def _next(self, market: str) -> int:
        self._seq[market] = self._seq.get(market, 0) + 1
        return self._seq[market]

    def _call(self, perps: Sequence[PerpMark], fence: int | None) -> _Call:
        m = self._marks
        keys: list[str] = []
        args: list[str | int] = ["" if fence is None else str(fence), m._settings.history_maxlen]
        for p in perps:
            perp_key, history, updates = m._keys.perp(p.market)
            keys += (perp_key, history, m._keys_of(p.market).fence)
            fields = perp_fields(p)
            kid, sig = "", ""
            if m._signer is not None:
                kid, sig = m._signer.kid, m._signer.sign("\n".join((p.market, *fields)).encode())
            args += (fields[6], updates, *fields[:6], fields[7], kid, sig)
        if fence is not None and not m._settings.cluster:
            keys.append(m._keys.epoch)
        return keys, args
