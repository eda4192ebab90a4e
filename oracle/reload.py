"""Reloading the config without a restart (SIGHUP to `markd run`): read it, vet it, say what changed.

    new = load_for_reload(path, running)   # Settings, or ConfigError listing every problem by key path
    change = ConfigChange.between(running, new)

The daemon (Service.reload) applies a ConfigChange; nothing in here touches its state, so a file
that fails here changes nothing. A reload reads the file and the environment's overrides exactly as
`markd run` does at start (the environment is the process's own, so only the file can differ).

What a reload cannot change: the Redis connection (`[redis]`: the publisher, the lease and the
dispute store hold it, and a replica moving to another Redis mid-term would split the leadership),
the signing key (`[signing]`: the margin engine verifies with the key it was given), and the HTTP
listener (`service.http_*`: the socket and its limits are bound at start). A reload that changes
any of them is refused, whole, as an error saying a restart is needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from oracle.settings import ConfigError, Settings, load_settings

log = logging.getLogger("markd.reload")

# Top-level tables that only a restart may change, and the `service` keys of the same kind.
RESTART_TABLES = ("redis", "signing")
RESTART_SERVICE_PREFIX = "http_"


def load_for_reload(path: str | Path, running: Settings) -> Settings:
    """The config at `path` if it validates (as `markd check-config` would) and changes nothing that
    needs a restart; otherwise ConfigError with every problem, each naming its key path."""
    from feeds.runner import build_adapters  # every source must be servable by its venue adapter

    settings = load_settings(path)
    build_adapters(settings)
    problems = restart_needed(running, settings)
    if problems:
        raise ConfigError(problems)
    return settings


def restart_needed(running: Settings, new: Settings) -> list[str]:
    """One problem per key whose change needs a restart (secrets named, never their values)."""
    problems: list[str] = []
    for table in RESTART_TABLES:
        problems += [
            f"{path}: changed, and a reload cannot change it: restart markd to apply it"
            for path in _changed(getattr(running, table), getattr(new, table), table)
        ]
    if (running.signing_key is None) != (new.signing_key is None) or (
        running.signing_key is not None
        and new.signing_key is not None
        and running.signing_key.get_secret_value() != new.signing_key.get_secret_value()
    ):
        problems.append("signing_key: changed, and a reload cannot change it: restart markd to apply it")
    for key in type(running.service).model_fields:
        if key.startswith(RESTART_SERVICE_PREFIX) and getattr(running.service, key) != getattr(new.service, key):
            problems.append(f"service.{key}: changed, and a reload cannot change it: restart markd to apply it")
    return problems


def _changed(old: BaseModel, new: BaseModel, path: str) -> list[str]:
    return [f"{path}.{key}" for key in type(old).model_fields if getattr(old, key) != getattr(new, key)]


@dataclass(frozen=True)
class ConfigChange:
    """What a reload changes among the markets, by name (sorted)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    retuned: tuple[str, ...]  # kept markets whose policy, tiers or perp table changed

    @classmethod
    def between(cls, old: Settings, new: Settings) -> ConfigChange:
        kept = set(old.markets) & set(new.markets)
        return cls(
            added=tuple(sorted(set(new.markets) - kept)),
            removed=tuple(sorted(set(old.markets) - kept)),
            retuned=tuple(
                sorted(m for m in kept if old.markets[m] != new.markets[m] or old.policy_for(m) != new.policy_for(m))
            ),
        )

    def log_fields(self) -> dict[str, Any]:
        return {"added": list(self.added), "removed": list(self.removed), "retuned": list(self.retuned)}


def log_refused(path: str | Path, err: ConfigError) -> None:
    """Each problem on a line of its own (its key path first), then one line saying nothing changed."""
    for problem in err.problems:
        log.error("config_reload_problem", extra={"path": str(path), "problem": problem})
    log.error(
        "config_reload_refused",
        extra={"path": str(path), "problems": len(err.problems), "detail": "the running config is unchanged"},
    )
