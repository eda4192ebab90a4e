"""The `markd` command line (also `python -m oracle`).

Exit codes: 0 success, 2 bad usage or bad config/scenario (one clear line per problem, no
traceback), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from oracle import __version__
from oracle.settings import ConfigError, Settings, load_settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code is 2 as well; keep it terse
        self.print_usage(sys.stderr)
        print(f"markd: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def resolved_config(settings: Settings) -> dict[str, Any]:
    """The config as markd will use it: defaults filled in, each market's policy resolved."""
    data = settings.model_dump(mode="json", exclude={"dispute_token"})
    data["redis"]["url"] = redact_url(settings.redis.url)
    data["dispute_token"] = "set" if settings.dispute_token else "unset"
    for name, market in data["markets"].items():
        for key in list(market):
            if market[key] is None:
                del market[key]
        market["policy"] = settings.policy_for(name).model_dump(mode="json")
        market["tiers"] = [[r.model_dump(exclude_none=True) for r in t] for t in settings.markets[name].tiers]
        market.pop("sources", None)
        market.pop("fallback", None)
    data["market_order"] = settings.market_order()
    return data


def _load(path: str) -> Settings:
    return load_settings(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.path)
    print(json.dumps(resolved_config(settings), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="markd", description="markd: a multi-source price oracle")
    p.add_argument("--version", action="version", version=f"markd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check-config", help="validate a config and print it resolved")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
