"""The dispute stage's shell: Redis, webhook, metrics and logs around the pure `DisputeStage`.

The daemon's tick loop calls `stage.process()` (pure) and hands the events to `record()`; the HTTP
API opens and resolves disputes through `open()` and `resolve()`. Resolving asks Redis first,
atomically, so exactly one of two concurrent resolves wins, whichever replica served them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.exceptions import RedisError

from disputes.model import Action, Dispute, DisputeClosed, Event, EventKind, Outcome, Reason, TooManyOpen, dispute_event
from disputes.notify import Notifier
from disputes.store import DisputeStore
from oracle.clock import Clock
from oracle.metrics import Metrics
from oracle.models import Mark
from oracle.validation.stage import DisputeStage

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0  # how often closed records past disputes.keep_closed_days are looked for


class DisputeService:
    def __init__(
        self,
        stage: DisputeStage,
        store: DisputeStore,
        clock: Clock,
        *,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.stage = stage
        self.store = store
        self.clock = clock
        self.notifier = notifier
        self.metrics = metrics
        self._sync_failing = False  # sync() failed last time: log the outage once, not every call
        self._last_trim = -float("inf")

    async def restore(self, marks: Iterable[Mark] = ()) -> list[Dispute]:
        """Load the open disputes from Redis into the stage (once at start, before the first tick).

        `marks`: the last published marks, so a held market keeps its price across the restart.
        """
        disputes = await self.store.load_open()
        self.stage.restore(disputes, marks)
        self._count_open(set(self.stage.settings.markets))
        return disputes

    async def sync(self) -> None:
        """Adopt what other replicas sharing the store opened or resolved (call every second or so).

        Any replica's API may serve a write; the leader's stage learns of it here. The events were
        already audited and notified by the replica that served the request.
        """
        try:
            stored = await self.store.load_open()
            still_open = {d.id for d in stored}
            for d in self.stage.disputes():
                if d.is_open and d.id not in still_open:  # closed elsewhere: learn how
                    stored.append(await self.store.get(d.id) or d)
        except RedisError as exc:
            # Once per outage: a replica syncs about every second, and one line says it all.
            if not self._sync_failing:
                log.error("disputes_not_synced", extra={"error": type(exc).__name__})
            self._sync_failing = True
            return
        if self._sync_failing:
            log.info("disputes_synced", extra={"open": len(stored)})
            self._sync_failing = False
        for d in stored:
            self.stage.adopt(d)
        self._count_open({d.market for d in stored})
        await self._trim_when_due()

    async def _trim_when_due(self) -> None:
        """Closed records older than `disputes.keep_closed_days` leave Redis (the audit stream keeps
        their events); checked at the first sync and then every TRIM_EVERY_S, by any replica."""
        now = self.clock.now()
        if now - self._last_trim < TRIM_EVERY_S:
            return
        self._last_trim = now
        keep_s = self.stage.settings.disputes.keep_closed_days * 86_400
        try:
            removed = await self.store.trim_closed(now - keep_s)
        except RedisError as exc:
            log.warning("disputes_not_trimmed", extra={"error": type(exc).__name__})
            return
        if removed:
            log.info("disputes_trimmed", extra={"removed": removed, "keep_closed_days": keep_s / 86_400})

    async def open(self, market: str, reason: Reason | str, note: str = "") -> Dispute:
        """Raises UnknownMarket, TooManyOpen when the market has `disputes.max_open_per_market`
        open already (as this replica knows them: others' are adopted within a sync), or ValueError
        for a reason outside the code set."""
        limit = self.stage.settings.disputes.max_open_per_market
        if self.stage.open_counts().get(market, 0) >= limit:
            raise TooManyOpen(market, limit)
        d = self.stage.open_dispute(market, reason, self.clock.now(), note=note)
        await self.record([dispute_event(d)])
        return d

    async def resolve(self, dispute_id: str, action: Action) -> Dispute:
        """Raises UnknownDispute, or DisputeClosed when it was closed already (here or elsewhere)."""
        current = self.stage.dispute(dispute_id)
        if not current.is_open:
            raise DisputeClosed(dispute_id)
        now = self.clock.now()
        if not await self.store.close_dispute(current.closed(Outcome.of(action), now)):
            raise DisputeClosed(dispute_id)
        closed = self.stage.resolve(dispute_id, action, now)
        await self._emit(dispute_event(closed))
        return closed

    async def record(self, events: Iterable[Event]) -> None:
        """Persist, audit, notify and count the events of a tick (or of an API call).

        A Redis outage must not stop the tick loop: the stage keeps the truth in memory, so a
        failed write is logged and the tick goes on.
        """
        for event in events:
            try:
                await self._persist(event)
            except RedisError as exc:
                log.error("dispute_not_persisted", extra=_failure(event, exc))
            await self._emit(event)

    async def _persist(self, event: Event) -> None:
        d = event.dispute
        if d is None:
            return
        if event.kind is EventKind.DISPUTE_OPENED:
            await self.store.save(d)
        elif not await self.store.close_dispute(d):
            log.info("dispute_closed_elsewhere", extra={"id": d.id})

    async def _emit(self, event: Event) -> None:
        try:
            await self.store.append(event)
        except RedisError as exc:
            log.error("dispute_event_not_audited", extra=_failure(event, exc))
        log.info(event.kind.value, extra=event.log_fields())
        if self.notifier is not None:
            self.notifier.send(event)
        if self.metrics is not None:
            self.metrics.stage_event(event.market, event.kind.value)
        if self.metrics is not None and event.dispute is not None:
            if event.kind is EventKind.DISPUTE_OPENED:
                self.metrics.dispute_opened(event.market, event.dispute.reason.value)
            self._count_open({event.market})

    def _count_open(self, markets: set[str]) -> None:
        if self.metrics is None:
            return
        counts = self.stage.open_counts()
        for m in sorted(markets & counts.keys()):
            self.metrics.set_disputes_open(m, counts[m])


def _failure(event: Event, exc: Exception) -> dict[str, str]:
    return {"kind": event.kind.value, "market": event.market, "error": type(exc).__name__}
