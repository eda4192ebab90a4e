"""The dispute stage of markd: tier hysteresis, jump guard, detectors, and the dispute workflow.

Pure core (no I/O, time passed in): `DisputeStage` and what it is made of (`TierMachine`,
`JumpGuard`/`DisputeWindow`, `Anchor`). Shell: `DisputeStore` (Redis),
`DisputeService` (store + webhook + metrics around the stage), `dispute_routes` (HTTP), `Notifier`.
"""

from disputes.api import dispute_app, dispute_routes
from disputes.detectors import Anchor
from disputes.guard import DisputeWindow, JumpGuard
from disputes.model import (
    Decision,
    Dispute,
    DisputeClosed,
    DisputeError,
    Event,
    EventKind,
    Outcome,
    Reason,
    UnknownDispute,
    UnknownMarket,
)
from disputes.notify import Notifier
from disputes.service import DisputeService
from disputes.stage import DisputeStage, dispute_event
from disputes.store import DisputeStore
from disputes.tiers import TierMachine

__all__ = [
    "Anchor",
    "Decision",
    "Dispute",
    "DisputeClosed",
    "DisputeError",
    "DisputeService",
    "DisputeStage",
    "DisputeStore",
    "DisputeWindow",
    "Event",
    "EventKind",
    "JumpGuard",
    "Notifier",
    "Outcome",
    "Reason",
    "TierMachine",
    "UnknownDispute",
    "UnknownMarket",
    "dispute_app",
    "dispute_event",
    "dispute_routes",
]
