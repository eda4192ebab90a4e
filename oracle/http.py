"""The daemon's HTTP face: /metrics, /healthz, /readyz, /v1/marks, and the dispute API.

Handlers only read the daemon's state through the small `DaemonView` protocol (the Service is one;
this module never imports it, so http and service have no import circle); nothing here mutates the
oracle except the authenticated dispute routes, which live in disputes/api.py.
"""

from __future__ import annotations

import math
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from oracle.metrics import Metrics
from oracle.models import Mark, PerpMark


class DaemonView(Protocol):
    """What the HTTP face reads of the daemon (oracle.service.Service provides it)."""

    metrics: Metrics
    leading: bool  # this replica holds the lease and publishes (/readyz shows it)

    async def render_metrics(self) -> bytes:
        """The Prometheus text, rendered off the event loop."""
        ...

    def liveness(self) -> tuple[bool, str]: ...

    async def readiness(self) -> list[str]: ...

    def current_marks(self) -> dict[str, tuple[Mark, bool]]:
        """market -> (its latest mark, whether it was published)"""
        ...

    def current_perps(self) -> dict[str, PerpMark]:
        """market -> its latest perp mark, for the markets with a perp table"""
        ...


MAX_BODY = 16 * 1024  # the dispute API refuses larger bodies with 413
SERVICE_KEY = web.AppKey("service", DaemonView)


UNPUBLISHED = "unpublished"


def mark_json(mark: Mark, published: bool = True) -> dict[str, object]:
    """A mark as /v1/marks shows it. One this replica computed but nobody published (a standby's, or
    any while Redis is down) has status `unpublished`, which no consumer may use, with the status it
    was computed with in `computed_status`: only Redis holds a mark the margin engine may act on."""
    if not published:
        return {**mark_json(mark), "status": UNPUBLISHED, "computed_status": mark.status.value}
    return {
        "price": mark.price,
        "confidence": mark.confidence,
        "ts_ms": mark.ts_ms,
        "seq": mark.seq,
        "status": mark.status.value,
        "tier": mark.tier,
        "sources": list(mark.sources),
    }


def _service(request: web.Request) -> DaemonView:
    return request.app[SERVICE_KEY]


async def metrics(request: web.Request) -> web.Response:
    service = _service(request)
    body = await service.render_metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    alive, reason = _service(request).liveness()
    return web.json_response({"ok": alive, "reason": reason}, status=200 if alive else 503)


async def readyz(request: web.Request) -> web.Response:
    service = _service(request)
    reasons = await service.readiness()
    body = {"ready": not reasons, "reasons": reasons, "leader": service.leading}
    return web.json_response(body, status=503 if reasons else 200)


def perp_json(perp: PerpMark, published: bool = True) -> dict[str, object]:
    """A perp mark as /v1/marks shows it under its market's `perp`: c1..c3 are null where the index
    was not usable; like its index, `unpublished` when this replica's marks are not the ones in Redis."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    status = perp.status.value if published else UNPUBLISHED
    return {"price": perp.price, "index": num(perp.index), "c1": num(perp.c1), "c2": num(perp.c2),
            "c3": num(perp.c3), "ts_ms": perp.ts_ms, "status": status}  # fmt: skip


async def marks(request: web.Request) -> web.Response:
    service = _service(request)
    current, perps = service.current_marks(), service.current_perps()
    body = {m: mark_json(mk, published) for m, (mk, published) in sorted(current.items())}
    for m, perp in perps.items():
        if m in body:
            body[m]["perp"] = perp_json(perp, current[m][1])
    return web.json_response(body)


def build_app(service: DaemonView, extra_routes: list[web.RouteDef] | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    app.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/v1/marks", marks),
            *(extra_routes or []),
        ]
    )
    return app
