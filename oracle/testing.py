"""Private Redis servers for tests and benchmarks: real redis-server processes on free loopback ports,
started and stopped here. Never the machine's shared Redis on 6379.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return exe


def make_tls_cert(directory: str) -> Path:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem) in `directory`; returns cert.pem."""
    d = Path(directory)
    cmd = [_exe("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    cmd += ["-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=127.0.0.1"]
    cmd += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    return d / "cert.pem"


class RedisServer:
    """One redis-server process; stop() and start() again on the same port simulate an outage.
    `password` adds --requirepass and puts it in `url`; `tls=True` serves TLS only (rediss://),
    with a self-signed certificate that `url` tells the client to trust."""

    def __init__(
        self,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        self.exe = _exe("redis-server")
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
        self.nodes = [
            RedisServer(
                extra=("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                       "--cluster-node-timeout", "2000")
            )
            for _ in range(masters)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in self.nodes]
        cmd = [_exe("redis-cli"), "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"]
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
