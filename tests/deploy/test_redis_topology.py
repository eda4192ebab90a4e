"""deploy/'s Redis topology: the Sentinel config that compose runs is one a real Sentinel accepts
and that monitors the primary markd expects, and markd's replicas are pointed at the Sentinels."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import redis as redis_py

from oracle.testing import RedisServer, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")


def test_compose_runs_a_primary_a_replica_and_three_sentinels_that_markd_asks() -> None:
    for service in ("redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert re.search(rf"^  {service}:", COMPOSE, re.M), service
    assert "MARKD_REDIS__SENTINELS: sentinel-1:26379,sentinel-2:26379,sentinel-3:26379" in COMPOSE
    assert '"--replicaof", "redis", "6379"' in COMPOSE


def test_the_sentinel_config_monitors_the_markd_service_on_a_real_sentinel(tmp_path: Path) -> None:
    primary = RedisServer().start()
    # compose's host name `redis` does not resolve here: the same file, pointed at our primary
    text = (DEPLOY / "redis" / "sentinel.conf").read_text(encoding="utf-8")
    port = free_port()
    text = text.replace("port 26379", f"port {port}\nbind 127.0.0.1").replace(
        "monitor markd redis 6379", f"monitor markd 127.0.0.1 {primary.port}"
    )
    (tmp_path / "sentinel.conf").write_text(text, encoding="utf-8")
    exe = shutil.which("redis-server")
    assert exe is not None
    proc = subprocess.Popen([exe, str(tmp_path / "sentinel.conf"), "--sentinel"], stdout=subprocess.DEVNULL)
    client = redis_py.Redis(port=port, decode_responses=True, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                state = client.execute_command("SENTINEL MASTER", "markd")
                break
            except redis_py.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "the Sentinel did not start"
                time.sleep(0.05)
        assert int(state["port"]) == primary.port
        assert int(state["quorum"]) == 2
        assert int(state["down-after-milliseconds"]) == 5000
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        primary.stop()
