"""The dispute HTTP API (aiohttp), to mount on the daemon's application.

    POST /v1/disputes               {market, reason, note?}  -> 201 {id, market, reason, status, opened_ts, note?}
    POST /v1/disputes/{id}/resolve  {action: uphold|reject}  -> 200 the closed dispute
    GET  /v1/disputes[?status=open|closed][&market=M][&limit=N][&cursor=C]
                                                             -> 200 {"disputes": [...], "next_cursor": C|null}
    GET  /v1/disputes/{id}                                   -> 200 the dispute

Writes need `Authorization: Bearer $MARKD_DISPUTE_TOKEN`, compared in constant time; with no token
configured every write is refused. `reason` is a code (manual, jump, anchor, divergence), so it can
label a metric; an operator's words go in `note`, which is stored but never becomes a label.
Bodies over 16 KiB are refused from Content-Length, or while reading, before the whole body is in.

The listing is paged, oldest first: `limit` records at most (default `disputes.list_limit`, 100;
at most MAX_LIMIT), and `next_cursor`, when more follow, to pass back as `cursor` for the next page.
A market with `disputes.max_open_per_market` open disputes refuses another with 429.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from disputes.model import (
    Action,
    Cursor,
    Dispute,
    DisputeClosed,
    Reason,
    TooManyOpen,
    UnknownDispute,
    UnknownMarket,
    listing_key,
    page_of,
)
from disputes.service import DisputeService
from oracle.http import MAX_BODY  # the one limit: this app and the daemon's share it

log = logging.getLogger(__name__)

MAX_NOTE = 2000
ACTIONS: tuple[Action, ...] = ("uphold", "reject")
MAX_LIMIT = 1000


def dispute_routes(service: DisputeService) -> list[web.RouteDef]:
    api = _DisputeApi(service)
    return [
        web.get("/v1/disputes", api.list_disputes),
        web.get("/v1/disputes/{id}", api.get),
        web.post("/v1/disputes", api.open),
        web.post("/v1/disputes/{id}/resolve", api.resolve),
    ]


def dispute_app(service: DisputeService) -> web.Application:
    """A standalone application serving only the dispute API (tests, or `add_subapp`)."""
    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes(dispute_routes(service))
    return app


def _error(cls: type[web.HTTPException], message: str, **kw: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json", **kw)


def _too_large(size: int) -> web.HTTPException:
    return _error(web.HTTPRequestEntityTooLarge, f"body over {MAX_BODY} bytes", max_size=MAX_BODY, actual_size=size)


def _unauthorised(message: str) -> web.HTTPException:
    return _error(web.HTTPUnauthorized, message, headers={"WWW-Authenticate": "Bearer"})


class _DisputeApi:
    def __init__(self, service: DisputeService) -> None:
        self.service = service
        token = service.stage.settings.dispute_token
        self._token = token.get_secret_value().encode() if token and token.get_secret_value() else None

    async def list_disputes(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status not in (None, "open", "closed"):
            raise _error(web.HTTPBadRequest, "status must be open or closed")
        market = request.query.get("market")
        limit = _limit(request.query.get("limit"), self.service.stage.settings.disputes.list_limit)
        after = _decode_cursor(request.query.get("cursor"))
        try:
            disputes, more = await self.service.store.page(status=status, market=market, limit=limit, after=after)
        except RedisError as exc:  # Redis has every replica's disputes; without it, this replica's memory
            log.warning("dispute_store_unavailable", extra={"error": type(exc).__name__})
            disputes, more = page_of(self.service.stage.disputes(), status, market, limit, after)
        next_cursor = _encode_cursor(listing_key(disputes[-1])) if more and disputes else None
        return web.json_response({"disputes": [d.to_dict() for d in disputes], "next_cursor": next_cursor})

    async def get(self, request: web.Request) -> web.Response:
        dispute_id = request.match_info["id"]
        try:
            d = await self.service.store.get(dispute_id)
        except RedisError as exc:
            log.warning("dispute_store_unavailable", extra={"error": type(exc).__name__})
            d = self._remembered(dispute_id)
        if d is None:
            raise _error(web.HTTPNotFound, "no such dispute")
        return web.json_response(d.to_dict())

    def _remembered(self, dispute_id: str) -> Dispute | None:
        try:
            return self.service.stage.dispute(dispute_id)
        except UnknownDispute:
            return None

    async def open(self, request: web.Request) -> web.Response:
        body = await self._authorised_body(request)
        market, note, given = body.get("market"), body.get("note") or "", body.get("reason")
        reason = _reason(given)
        if isinstance(note, str) and reason is Reason.MANUAL and given != Reason.MANUAL.value:
            note = f"{given}: {note}" if note else str(given)  # free text lives in the record, not a label
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise _error(web.HTTPBadRequest, f"note must be text of at most {MAX_NOTE} characters")
        try:
            # A Redis outage does not fail an open: the stage holds the market either way, and
            # the service logs the record it could not write.
            d = await self.service.open(market if isinstance(market, str) else "", reason, note)
        except UnknownMarket:
            raise _error(web.HTTPBadRequest, "unknown market") from None
        except TooManyOpen as exc:
            raise _error(web.HTTPTooManyRequests, str(exc)) from None
        full = d.to_dict()
        # What is stored, as a GET would show it: free text comes back as `manual` and in `note`.
        record = {k: full[k] for k in ("id", "market", "reason", "status", "opened_ts")}
        if d.note:
            record["note"] = d.note
        return web.json_response(record, status=201)

    async def resolve(self, request: web.Request) -> web.Response:
        body = await self._authorised_body(request)
        action = body.get("action")
        if action not in ACTIONS:
            raise _error(web.HTTPBadRequest, "action must be uphold or reject")
        try:
            d = await self.service.resolve(request.match_info["id"], action)
        except UnknownDispute:
            raise _error(web.HTTPNotFound, "no such dispute") from None
        except DisputeClosed:
            raise _error(web.HTTPConflict, "dispute already closed") from None
        except RedisError as exc:
            raise _unavailable(exc) from None
        return web.json_response(d.to_dict())

    async def _authorised_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise _too_large(request.content_length)
        self._authorise(request)
        raw = await _read_bounded(request)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _error(web.HTTPBadRequest, "malformed JSON") from None
        if not isinstance(body, dict):
            raise _error(web.HTTPBadRequest, "the body must be a JSON object")
        return body

    def _authorise(self, request: web.Request) -> None:
        if self._token is None:
            raise _unauthorised("disputes are read-only: MARKD_DISPUTE_TOKEN is not set")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise _unauthorised("missing or wrong bearer token")


async def _read_bounded(request: web.Request) -> bytes:
    """Read the body, giving up as soon as it passes MAX_BODY (a chunked body has no length)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large(size)
    return b"".join(chunks)


def _limit(given: str | None, default: int) -> int:
    if given is None:
        return default
    if not given.isdigit() or not 1 <= int(given) <= MAX_LIMIT:
        raise _error(web.HTTPBadRequest, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(given)


def _encode_cursor(key: Cursor) -> str:
    """Opaque to clients: where the next page starts (after this opened_ts and id)."""
    return base64.urlsafe_b64encode(json.dumps([key[0], key[1]]).encode()).decode().rstrip("=")


def _decode_cursor(given: str | None) -> Cursor | None:
    if given is None:
        return None
    try:
        ts, dispute_id = json.loads(base64.urlsafe_b64decode(given + "=" * (-len(given) % 4)))
        if isinstance(ts, int | float) and not isinstance(ts, bool) and isinstance(dispute_id, str):
            return float(ts), dispute_id
    except (ValueError, TypeError, binascii.Error):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        pass
    raise _error(web.HTTPBadRequest, "cursor is not one this API gave out")


def _reason(value: object) -> Reason:
    """A reason code as is; any other text is a manual dispute (the text is kept in its note)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NOTE:
        raise _error(web.HTTPBadRequest, f"reason must be non-empty text of at most {MAX_NOTE} characters")
    try:
        return Reason(value)
    except ValueError:
        return Reason.MANUAL


def _unavailable(exc: RedisError) -> web.HTTPException:
    log.error("dispute_store_unavailable", extra={"error": type(exc).__name__})
    return _error(web.HTTPServiceUnavailable, "dispute store unavailable")
