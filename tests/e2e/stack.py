"""The pieces of an end-to-end run, each a real process or server: simulated venues (SimVenues on an
event loop of their own thread), `markd run` as a subprocess, a Prometheus server, and small
synchronous HTTP and polling helpers. Every start has a stop that the fixtures call in teardown.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from oracle.sim.demo import demo_config, to_toml
from oracle.sim.market import VenueSpec
from oracle.sim.venues import SimVenues
from oracle.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "markd"  # demo_config's redis.prefix
TOKEN = "e2e-dispute-token"  # MARKD_DISPUTE_TOKEN of the daemons under test
_T = TypeVar("_T")


def wait_for(what: str, check: Callable[[], _T | None], timeout_s: float, every_s: float = 0.05) -> _T:
    """Poll `check` until it returns something truthy, or fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # a server still starting: try again until the deadline
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for {what} (last error: {last_error!r})")
        time.sleep(every_s)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any MARKD_ variable (they would override the config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


class VenueThread:
    """SimVenues served by an event loop on a thread of its own, so tests stay synchronous."""

    def __init__(self, seed: int = 7, specs: Mapping[str, VenueSpec] | None = None) -> None:
        self._seed, self._specs = seed, specs
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-venues", daemon=True)
        self.sim: SimVenues | None = None
        self.urls: dict[str, dict[str, str]] = {}

    def _run(self, coro: Any, timeout_s: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout_s)

    def start(self) -> VenueThread:
        self._thread.start()

        async def start() -> dict[str, dict[str, str]]:
            self.sim = SimVenues(seed=self._seed, specs=self._specs)
            return dict(await self.sim.start())

        self.urls = self._run(start())
        return self

    def outage(self, venue: str, kind: str, seconds: float) -> None:
        assert self.sim is not None
        self._run(self.sim.set_outage(venue, kind, seconds))

    def connections(self, venue: str) -> set[Any]:
        """The WebSocket connections `venue` has open now, one per client connection (the objects
        themselves: held by the caller, they cannot be mistaken for a later one, as an id() could)."""
        assert self.sim is not None
        sim = self.sim

        async def conns() -> set[Any]:
            return set(sim[venue]._conns)

        return set(self._run(conns()))

    def stop(self) -> None:
        if self.sim is not None:
            self._run(self.sim.stop())
            self.sim = None

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            self._run(drain())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


def write_config(directory: Path, urls: Mapping[str, Mapping[str, str]], redis_url: str, http_port: int) -> Path:
    path = directory / "markd.toml"
    path.write_text(to_toml(demo_config(urls, redis_url, http_port)), encoding="utf-8")
    return path


class Daemon:
    """`python -m oracle run --config FILE` as a subprocess; its stderr goes to a file."""

    def __init__(self, config: Path, http_port: int | None = None, **env: str) -> None:
        self.config = config
        self.port = http_port or free_port()
        self.env = clean_env(MARKD_HTTP_PORT=str(self.port), **env)
        self.stderr_path = Path(tempfile.mkstemp(prefix="markd-e2e-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daemon:
        with self.stderr_path.open("wb") as err:
            cmd = [sys.executable, "-m", "oracle", "run", "--config", str(self.config)]
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def wait_ready(self, timeout_s: float = 30.0) -> Daemon:
        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"markd exited:\n{self.stderr()}"
            return get(f"{self.url}/readyz")[0] == 200

        wait_for(f"{self.url}/readyz to answer 200", ready, timeout_s, every_s=0.1)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; the exit code (None when it never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> dict[str, Any]:
        """The /metrics families by name (counters without `_total`, as the parser names them)."""
        status, body = get(f"{self.url}/metrics")
        assert status == 200, status
        return {f.name: f for f in text_string_to_metric_families(body.decode())}

    def sample(self, family: str, **labels: str) -> float | None:
        f = self.metrics().get(family)
        for s in f.samples if f else ():
            if all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        return None


def request(
    method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, timeout_s: float = 5
) -> tuple[int, bytes]:
    """One HTTP request; (status, body) whatever the status."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def get(url: str) -> tuple[int, bytes]:
    return request("GET", url)


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


def post_chunked(host: str, port: int, path: str, chunks: list[bytes], headers: Mapping[str, str]) -> int:
    """A POST with a chunked body (no Content-Length, so the server must count as it reads)."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", path, body=iter(chunks), headers=dict(headers), encode_chunked=True)
        return conn.getresponse().status
    finally:
        conn.close()


class Prometheus:
    """A real Prometheus server scraping `targets` every second, its TSDB in a temp directory."""

    def __init__(self, targets: list[str], exe: str) -> None:
        self.exe = exe
        self.dir = Path(tempfile.mkdtemp(prefix="markd-prom-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "markd", "static_configs": [{"targets": targets}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        cmd = [
            self.exe,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        doc = get_json(url)
        assert doc["status"] == "success", doc
        return list(doc["data"]["result"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_cli(*args: str, env: Mapping[str, str], timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """`python -m oracle ARGS` to completion (killed on timeout), stdout and stderr captured."""
    cmd = [sys.executable, "-m", "oracle", *args]
    return subprocess.run(cmd, cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout_s)
