"""The `markd` command line (also `python -m oracle`).

Exit codes: 0 success, 2 bad usage or bad config/scenario (one clear line per problem, no
traceback), 1 anything else. `main` is the one place that turns an exception into a line on stderr
and an exit code; MARKD_DEBUG=1 adds the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

from pydantic import ValidationError

from oracle import __version__
from oracle.settings import (
    ConfigError,
    RedisSettings,
    Settings,
    SigningAlgorithm,
    default_config_path,
    error_message,
    load_settings,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
ALGORITHMS = get_args(SigningAlgorithm)


class UsageError(Exception):
    """A command's argument that cannot be used: one line, exit 2 (like argparse's own errors)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well; keep it terse
        self.print_usage(sys.stderr)
        print(f"markd: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def resolved_config(settings: Settings) -> dict[str, Any]:
    """The config as markd will use it: defaults filled in, each market's policy resolved. Secrets
    show as set or unset; the signing key by its kid only."""
    from oracle.connection import redact  # here: it imports redis, which most commands never use
    from oracle.signing import signer_from_settings

    data = settings.model_dump(mode="json", exclude={"dispute_token", "signing_key"})
    data["redis"]["url"] = redact(settings.redis.url)
    data["dispute_token"] = "set" if settings.dispute_token else "unset"
    for name, source in data["sources"].items():
        source["freeze_bps"] = settings.freeze_bps(name)  # None in the file: the kind's default
        if source["kind"] == "redis_hash" and source["base_url"]:  # the engine's Redis URL may hold a password
            source["base_url"] = redact(source["base_url"])
    signer = signer_from_settings(settings)
    data["signing"]["key"] = "unset" if signer is None else "MARKD_SIGNING_KEY" if settings.signing_key else "key_file"
    data["signing"]["kid"] = signer.kid if signer is not None else None
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
    settings = load_settings(path)
    from feeds.runner import build_adapters  # every source must be servable by its venue adapter
    from oracle.signing import signer_from_settings  # the signing key must be readable and usable

    build_adapters(settings)
    signer_from_settings(settings)
    return settings


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.path)
    print(json.dumps(resolved_config(settings), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    path = args.config or default_config_path()
    settings = _load(path)
    from oracle.logs import configure
    from oracle.service import Service, ignore_stop_signals, reload_on_sighup, stop_on_signals

    configure(settings.service.log_level)

    from oracle.loop import LoopError, new_event_loop

    try:
        loop = new_event_loop()
    except LoopError as exc:
        print(f"markd run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    service = Service(settings, config_path=path)
    stop_on_signals(service, loop)  # before the loop runs: asyncio.run then leaves SIGINT alone
    reload_on_sighup(service, loop)
    try:
        with asyncio.Runner(loop_factory=lambda: loop) as runner:
            runner.run(service.run())
    except OSError as exc:  # e.g. the HTTP port is taken
        print(f"markd run: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        ignore_stop_signals()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from oracle.demo import Options, run_demo

    return asyncio.run(run_demo(Options(seconds=args.seconds, seed=args.seed, calm=args.calm)))


def cmd_sim(args: argparse.Namespace) -> int:
    from oracle.sim.serve import SimError, serve_sim

    try:
        asyncio.run(serve_sim(args.seconds, args.seed))
    except SimError as exc:
        print(f"markd sim: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_marks(args: argparse.Namespace) -> int:
    from oracle.client import MarkError, print_marks

    url = args.redis or os.environ.get("MARKD_REDIS_URL") or RedisSettings().url
    try:
        RedisSettings(url=url, prefix=args.prefix)
    except ValidationError as exc:
        option = {"url": "--redis", "prefix": "--prefix"}
        problems = [f"{option[str(e['loc'][0])]} {e['input']!r}: {error_message(e)}" for e in exc.errors()]
        raise UsageError("; ".join(problems)) from None
    keys = _verify_keys(args.verify_key or [])
    try:
        table = print_marks(
            url,
            args.prefix,
            args.market or None,
            cluster=args.cluster,
            verify_key=keys or None,
            algorithm=args.algorithm,
        )
        print(asyncio.run(table))
    except MarkError as exc:
        print(f"markd marks: {exc}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def _verify_keys(paths: list[str]) -> list[bytes]:
    from oracle.signing import SigningKeyError, read_key

    try:
        return [read_key(p) for p in paths]
    except SigningKeyError as exc:
        raise UsageError(f"--verify-key {exc}") from None


def cmd_keygen(args: argparse.Namespace) -> int:
    """A new signing key in a new file (mode 0600). stdout gets the verifying key only for Ed25519
    (the public key, as hex: save it as the verifiers' --verify-key file); an HMAC key is its own
    verifying key, a secret that is never printed."""
    from oracle.signing import generate_key, write_key

    signer = generate_key(args.algorithm)
    try:
        write_key(signer, args.out)
    except FileExistsError:
        raise UsageError(f"--out {args.out}: exists; a key is never overwritten (remove it first)") from None
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror}") from None
    if args.algorithm == "ed25519":
        print(signer.verifying_key.hex())
        print(f"wrote the private seed to {args.out} (kid {signer.kid}); stdout is the public key", file=sys.stderr)
    else:
        print(f"wrote the HMAC key to {args.out} (kid {signer.kid}); verifiers need this same file", file=sys.stderr)
    return EXIT_OK


def cmd_record(args: argparse.Namespace) -> int:
    from feeds.record import run_record

    return run_record(args.config, args.out, args.seconds)


def cmd_replay(args: argparse.Namespace) -> int:
    from oracle.replay import run_scenario
    from oracle.replay.report import summary
    from oracle.replay.run import terminal_progress

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    outcome = run_scenario(args.scenario, args.out, terminal_progress(), html=not args.no_html)
    print(summary(outcome.report))
    return EXIT_FAIL if args.check and not outcome.passed else EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from oracle.replay.run import terminal_progress
    from oracle.replay.sweep import sweep

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    p, results = sweep(
        args.scenario, args.set or [], args.out, args.jobs, not args.no_html, terminal_progress("combinations")
    )
    print(f"{len(p.combos)} combinations x {len(results[0]) if results else 0} markets: {Path(args.out) / 'sweep.csv'}")
    return EXIT_OK


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="markd", description="markd: a multi-source price oracle")
    p.add_argument("--version", action="version", version=f"markd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("run", help="run the daemon")
    c.add_argument("--config", help="config file (default: $MARKD_CONFIG, else config/markd.toml)")
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("demo", help="simulated venues, a private Redis and the daemon, with a live view")
    c.add_argument("--seconds", type=_positive, help="end after N seconds (default: until Ctrl-C)")
    c.add_argument("--seed", type=int, default=None, help="seed the simulation and its outages")
    c.add_argument("--calm", action="store_true", help="no scripted incident and no venue outages")
    c.set_defaults(func=cmd_demo)

    c = sub.add_parser("sim", help="the simulated venues alone, on the ports of config/demo.toml")
    c.add_argument("--seconds", type=_positive, help="end after N seconds (default: until Ctrl-C)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random walk (default 0)")
    c.set_defaults(func=cmd_sim)

    c = sub.add_parser("check-config", help="validate a config and print it resolved")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)

    c = sub.add_parser("replay", help="replay a scenario on virtual time and report how far marks strayed")
    c.add_argument("scenario")
    c.add_argument("--out", required=True, help="directory for marks.csv, disputes.csv, report.json/.html")
    c.add_argument("--check", action="store_true", help="exit 1 if an expectation of the scenario fails")
    c.add_argument("--no-html", action="store_true", help="skip report.html (faster)")
    c.set_defaults(func=cmd_replay)

    c = sub.add_parser("sweep", help="replay a scenario under every combination of some config values")
    c.add_argument("scenario")
    c.add_argument(
        "--set",
        action="append",
        metavar="KEY=V1,V2",
        help="a config key path and its TOML values, e.g. policy.min_sources=2,3 (repeatable: the cartesian "
        'product); a comma inside quotes or brackets is part of a value: notify.url="http://h/?a,b",""',
    )
    c.add_argument("--out", required=True, help="directory for sweep.csv and sweep.html")
    c.add_argument("--jobs", type=_jobs, default=None, help="combinations run at once (default: every core)")
    c.add_argument("--no-html", action="store_true", help="skip sweep.html")
    c.set_defaults(func=cmd_sweep)

    c = sub.add_parser("record", help="record live quotes into a ticks file")
    c.add_argument("--config", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--seconds", type=_positive, default=None)
    c.set_defaults(func=cmd_record)

    # Listed for --help only: main() hands everything after `synth` to oracle.sim.synth's own parser.
    sub.add_parser("synth", help="write a ticks file of simulated venues (markd synth --help)", add_help=False)

    c = sub.add_parser("marks", help="print the validated marks as the margin engine sees them")
    c.add_argument("--redis", help="Redis URL (default: $MARKD_REDIS_URL, else redis://127.0.0.1:6379/0)")
    c.add_argument("--prefix", default="markd")
    c.add_argument("--cluster", action="store_true", help="the URL names a node of a Redis Cluster")
    c.add_argument("--market", action="append", help="only this market (repeatable)")
    c.add_argument(
        "--verify-key",
        action="append",
        metavar="FILE",
        help="hex of the HMAC key or Ed25519 public key; a mark that fails verification shows as FORGED "
        "(repeatable, for a key rotation)",
    )
    c.add_argument("--algorithm", choices=ALGORITHMS, default="hmac-sha256", help="the algorithm markd signs with")
    c.set_defaults(func=cmd_marks)

    c = sub.add_parser("keygen", help="write a new signing key (mode 0600) and print its verifying half")
    c.add_argument("--algorithm", choices=ALGORITHMS, default="hmac-sha256")
    c.add_argument("--out", required=True, help="the key file to create (never overwritten)")
    c.set_defaults(func=cmd_keygen)

    c = sub.add_parser("dispute", help="open, list or resolve disputes through the daemon's API")
    from oracle.dispute_cli import add_dispute_commands

    add_dispute_commands(c, _Parser)
    return p


def _synth(argv: list[str]) -> int:
    from oracle.sim.synth import run_synth

    return run_synth(argv)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a newcomer typing `markd` gets the commands, not just "COMMAND is required"
        build_parser().print_help(sys.stderr)
        raise SystemExit(EXIT_USAGE)  # as argparse does for every other usage error
    if argv[:1] == ["synth"]:  # synth parses its own options (argparse's REMAINDER drops leading --flags)
        return _synth(argv[1:])
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"markd {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAIL
    except BrokenPipeError:
        return _closed_stdout()
    except OSError as exc:  # a file that cannot be written, a port taken, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"markd {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        _debug_traceback()
        return EXIT_FAIL
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        print(f"markd {args.command}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not _debug_traceback():
            print("markd: set MARKD_DEBUG=1 to see the traceback", file=sys.stderr)
        return EXIT_FAIL


def _closed_stdout() -> int:
    """The reader went away (`markd check-config ... | head`): stop quietly, as `cat` would.
    What is left in stdout's buffer goes to /dev/null, so flushing it at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (tests capture it)
        pass
    return EXIT_FAIL


def _debug_traceback() -> bool:
    if os.environ.get("MARKD_DEBUG", "") not in ("", "0"):
        traceback.print_exc()
        return True
    return False
