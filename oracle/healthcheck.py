"""`python -m oracle.healthcheck`: the container's HEALTHCHECK. Exit 0 when the daemon's /healthz
answers 200, else 1 with one line saying why (Docker keeps it in `docker inspect`).

The port and address come from the same place the daemon reads them: the config file named by
`$MARKD_CONFIG` with the environment overrides applied (`MARKD_HTTP_PORT`, `MARKD_SERVICE__...`),
so moving `http_port` in the config moves the check with it. A wildcard bind (0.0.0.0, ::) is
checked on loopback.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from oracle.settings import ConfigError, load_settings
from oracle.settings import default_config_path as config_path

TIMEOUT_S = 3.0
LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}


def healthz_url(host: str, port: int) -> str:
    address = LOOPBACK.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{address}:{port}/healthz"


def check(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when `url` answers 200, else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return None if reply.status == 200 else f"{url}: HTTP {reply.status}"
    except urllib.error.HTTPError as exc:  # 503 while the tick loop is stalled
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url}: {reason}"


def main() -> int:
    try:
        service = load_settings(config_path()).service
    except ConfigError as exc:
        print(f"healthcheck: config: {exc.problems[0]}", file=sys.stderr)
        return 1
    problem = check(healthz_url(service.http_host, service.http_port))
    if problem is not None:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
