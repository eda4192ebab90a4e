"""Disputes of markd: the records, their store, the workflow around them, the API and the webhook.

A dispute holds a market at its last validated price until it is ruled. Detectors of the validation
stage open some (`oracle.validation.stage.DisputeStage`); an operator opens the others through the
API. Pure core: `disputes.model` (records, events, paging). Shell: `DisputeStore` (Redis),
`DisputeService` (store + webhook + metrics around the stage), `dispute_routes` (HTTP), `Notifier`.
The per-tick rules that turn a candidate into a mark (tiers, jump guard, anchor, publish cadence)
live in `oracle.validation`.
"""

import importlib
from typing import Any

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

# The shell (aiohttp, Redis) is loaded when first asked for: a replay, which only reads the records,
# does not pay ~0.15 s of imports for it.
_SHELL = {
    "dispute_app": "disputes.api",
    "dispute_routes": "disputes.api",
    "Notifier": "disputes.notify",
    "DisputeService": "disputes.service",
    "DisputeStore": "disputes.store",
}


def __getattr__(name: str) -> Any:
    if name in _SHELL:
        return getattr(importlib.import_module(_SHELL[name]), name)
    raise AttributeError(f"module 'disputes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


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
