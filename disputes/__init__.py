"""Disputes of markd: the records, their store, the workflow around them, the API and the webhook.

A dispute holds a market at its last validated price until it is ruled. Detectors of the validation
stage open some (`oracle.validation.stage.DisputeStage`); an operator opens the others through the
API. Pure core: `disputes.model` (records, events, paging). Shell: `DisputeStore` (Redis),
`DisputeService` (store + webhook + metrics around the stage), `dispute_routes` (HTTP), `Notifier`.
The per-tick rules that turn a candidate into a mark (tiers, jump guard, anchor, publish cadence)
live in `oracle.validation`.
"""

from disputes.api import dispute_app, dispute_routes
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
    dispute_event,
)
from disputes.notify import Notifier
from disputes.service import DisputeService
from disputes.store import DisputeStore

__all__ = [
    "Decision",
    "Dispute",
    "DisputeClosed",
    "DisputeError",
    "DisputeService",
    "DisputeStore",
    "Event",
    "EventKind",
    "Notifier",
    "Outcome",
    "Reason",
    "UnknownDispute",
    "UnknownMarket",
    "dispute_app",
    "dispute_event",
    "dispute_routes",
]
