"""Disputes of markd: the records, their store, the workflow around them, the API and the webhook.

A dispute holds a market at its last validated price until it is ruled. Detectors of the validation
stage open some (`oracle.validation.stage.DisputeStage`); an operator opens the others through the
API. The package exports the pure core, `disputes.model` (records, events, paging); the shell is
imported from its module: `disputes.store.DisputeStore` (Redis), `disputes.service.DisputeService`
(store + webhook + metrics around the stage), `disputes.api.dispute_routes` (HTTP) and
`disputes.notify.Notifier`, so that reading the records (a replay) loads neither aiohttp nor Redis.
The per-tick rules that turn a candidate into a mark (tiers, jump guard, anchor, publish cadence)
live in `oracle.validation`.
"""

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

__all__ = [
    "Decision",
    "Dispute",
    "DisputeClosed",
    "DisputeError",
    "Event",
    "EventKind",
    "Outcome",
    "Reason",
    "UnknownDispute",
    "UnknownMarket",
    "dispute_event",
]
