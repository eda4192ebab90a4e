"""`markd dispute open|list|resolve`: a small client of the daemon's dispute API.

The token comes from MARKD_DISPUTE_TOKEN (never a command-line argument, which `ps` would show).
Exit codes: 0 done, 2 refused as bad input (400/401/404/409/413/429), 1 unreachable or a server error.
`list` prints one page as the API answers it; pass its `next_cursor` back with --cursor for the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.parse
from typing import Any


def _default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('MARKD_HTTP_PORT') or 9108}"


def add_dispute_commands(parser: argparse.ArgumentParser, parser_class: type[argparse.ArgumentParser]) -> None:
    parser.add_argument("--url", default=None, help="the daemon's HTTP root (default: 127.0.0.1:$MARKD_HTTP_PORT)")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=parser_class)
    o = sub.add_parser("open", help="open a dispute: the market is held until it is resolved")
    o.add_argument("market")
    o.add_argument("--reason", default="manual", help="a code (manual, jump, anchor, divergence) or free text")
    o.add_argument("--note", default="")
    ls = sub.add_parser("list", help="list disputes")
    ls.add_argument("--status", choices=("open", "closed"))
    ls.add_argument("--market", help="only this market's disputes")
    ls.add_argument("--limit", type=int, help="records per page (the daemon's default: 100)")
    ls.add_argument("--cursor", help="the next_cursor of the previous page")
    r = sub.add_parser("resolve", help="uphold (the candidate was bad) or reject (it was fine)")
    r.add_argument("id")
    r.add_argument("--action", dest="verdict", required=True, choices=("uphold", "reject"))
    parser.set_defaults(func=run_dispute_command)


def run_dispute_command(args: argparse.Namespace) -> int:
    url = (args.url or _default_url()).rstrip("/")
    call: tuple[str, str, dict[str, Any] | None]
    if args.action == "open":
        body: dict[str, Any] = {"market": args.market, "reason": args.reason}
        if args.note:
            body["note"] = args.note
        call = ("POST", f"{url}/v1/disputes", body)
    elif args.action == "resolve":
        call = ("POST", f"{url}/v1/disputes/{args.id}/resolve", {"action": args.verdict})
    else:
        wanted = {k: getattr(args, k) for k in ("status", "market", "limit", "cursor")}
        query = urllib.parse.urlencode({k: v for k, v in wanted.items() if v is not None})
        call = ("GET", f"{url}/v1/disputes{'?' + query if query else ''}", None)
    return asyncio.run(_request(*call))


async def _request(method: str, url: str, body: dict[str, Any] | None) -> int:
    import aiohttp  # here: every markd command builds this parser, and only this one needs aiohttp

    headers = {}
    token = os.environ.get("MARKD_DISPUTE_TOKEN")
    if token and method == "POST":
        headers["Authorization"] = f"Bearer {token}"
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"markd dispute: cannot reach {url} ({type(exc).__name__})", file=sys.stderr)
        return 1
    try:
        shown = json.dumps(json.loads(text), indent=2)
    except ValueError:
        shown = text
    if status < 300:
        print(shown)
        return 0
    print(f"markd dispute: HTTP {status}: {shown}", file=sys.stderr)
    if status == 401 and not token:
        print("markd dispute: set MARKD_DISPUTE_TOKEN to the daemon's token", file=sys.stderr)
    return 2 if status < 500 else 1
