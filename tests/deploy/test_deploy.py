"""The deployment artifacts: Dockerfile, deploy/compose.yaml, Prometheus rules, Grafana dashboard.

There is no Docker engine in CI, so the image is checked by reading the Dockerfile, and its
HEALTHCHECK command is run for real against a local server. Prometheus files go through promtool
(CI installs the Debian `prometheus` package). Metric names are checked against the registry that
oracle.metrics builds, so a renamed metric breaks this test rather than a dashboard in production.
No YAML library is a dependency: the few facts read from YAML files come from plain-text patterns.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from oracle.metrics import Metrics
from oracle.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "markd.json"
METRIC_NAME = re.compile(r"\bmarkd_[a-zA-Z0-9_]+")


# --- helpers ---------------------------------------------------------------------------------------


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not on PATH: install the Debian package `prometheus` "
            "(apt-get install prometheus; .ci/run does this in CI)"
        )
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def exported_series() -> dict[str, set[str]]:
    """Metric family -> the series names it exports. Labelled metrics have no samples until first
    used, so the names come from each family's type (a Counter family's name drops `_total`)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    return {f.name: {f.name + s for s in suffixes[f.type]} for f in Metrics().registry.collect()}


def exported_names() -> set[str]:
    return set().union(*exported_series().values())


def strings_in(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings_in(value)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dash: dict) -> list[dict]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def alert_names() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)", (PROMETHEUS / "alerts.yml").read_text(), re.M)


def with_alert_exprs(text: str, expr: str) -> str:
    """alerts.yml with every alert's `expr:` (inline or a block scalar) replaced by `expr`."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)expr:", line)
        if not m:
            out.append(line)
            i += 1
            continue
        indent = len(m.group(1))
        out.append(f"{m.group(1)}expr: {expr}")
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            i += 1
    return "\n".join(out) + "\n"


def compose_text() -> str:
    return (DEPLOY / "compose.yaml").read_text(encoding="utf-8")


def compose_services() -> list[str]:
    block = re.search(r"^services:\n(.*?)(?=^\S)", compose_text(), re.M | re.S)
    assert block, "compose.yaml has no services: block"
    return re.findall(r"^  ([A-Za-z0-9_.-]+):\s*$", block.group(1), re.M)


def compose_mounts() -> dict[str, str]:
    """Bind mounts of compose.yaml, host path (relative to deploy/) -> container path."""
    pairs = re.findall(r"^\s*- (\.\.?/[^:\s]*):(/[^:\s]*)(?::ro)?\s*$", compose_text(), re.M)
    return dict(pairs)


# --- Dockerfile reading ----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def only(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def healthcheck_argv() -> list[str]:
    (args,) = only(dockerfile_stages()[-1], "HEALTHCHECK")
    _, sep, command = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    argv = json.loads(command)  # the exec form: no shell, so nothing else parses it
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matching a path or any of its parent directories applies to it, and
    the last pattern that applies wins (`!` re-includes)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


# --- Prometheus ------------------------------------------------------------------------------------


def test_prometheus_config_is_valid_and_finds_its_rules_from_any_directory(tmp_path: Path) -> None:
    # Run from elsewhere: rule_files must resolve relative to prometheus.yml, as in the container.
    result = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_alert_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_promised_alerts_exist() -> None:
    names = set(alert_names())
    promised = {"MarkdMarkStale", "MarkdSourceDown", "MarkdFallbackTier", "MarkdDisputeOpen"}
    promised |= {"MarkdNoLeader", "MarkdTwoLeaders", "MarkdPublishErrors", "MarkdMarketHeld"}
    assert promised <= names


@pytest.mark.parametrize(
    ("mutation", "expr"),
    [("never fires", "vector(0) > 1"), ("always fires", "vector(1)")],
)
def test_every_alert_has_unit_tests_that_see_it_fire_and_stay_silent(tmp_path: Path, mutation: str, expr: str) -> None:
    # Replace every rule by one that never (always) fires: each alert's unit tests must then fail,
    # which proves alerts_test.yml expects it firing somewhere (silent on healthy series somewhere).
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    (tmp_path / "alerts.yml").write_text(with_alert_exprs((PROMETHEUS / "alerts.yml").read_text(), expr))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0, f"alerts_test.yml passes with rules that {mutation}"
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    untested = set(alert_names()) - failed
    assert not untested, f"no unit test notices these alerts when they {mutation}: {sorted(untested)}"


def test_alerts_use_only_metrics_markd_exports() -> None:
    used = set(METRIC_NAME.findall((PROMETHEUS / "alerts.yml").read_text()))
    assert used, "no markd_ metric found in alerts.yml"
    assert not used - exported_names(), f"unknown metrics in alerts.yml: {sorted(used - exported_names())}"


def test_scrape_targets_are_the_compose_replicas() -> None:
    targets = set(re.findall(r'"([A-Za-z0-9_.-]+):9108"', (PROMETHEUS / "prometheus.yml").read_text()))
    replicas = {s for s in compose_services() if s.startswith("markd")}
    assert len(replicas) >= 2, "compose.yaml should run at least two markd replicas"
    assert targets == replicas


# --- Grafana ---------------------------------------------------------------------------------------


def test_dashboard_uses_only_metrics_markd_exports_and_shows_every_one() -> None:
    used = {name for text in strings_in(dashboard()) for name in METRIC_NAME.findall(text)}
    unknown = used - exported_names()
    assert not unknown, f"unknown metrics in the dashboard: {sorted(unknown)}"
    # Every metric family appears in some form (a histogram as _bucket/_sum/_count, a counter as _total).
    missing = {family for family, series in exported_series().items() if not series & used}
    assert not missing, f"metrics no panel of deploy/grafana/dashboards/markd.json shows: {sorted(missing)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses each query as a recording rule, with Grafana's variables given sample values.
    dash = dashboard()
    values = {v["name"]: ".+" for v in dash["templating"]["list"] if v["type"] == "query"}
    values["__rate_interval"] = "1m"

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"${name} is not a variable of the dashboard"
        return values[name]

    exprs = [t["expr"] for p in panels(dash) for t in p.get("targets", [])]
    assert len(exprs) >= 15
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(exprs):
        promql = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)
        rules += [f"      - record: dashboard:query_{n}", "        expr: " + json.dumps(promql)]
    (tmp_path / "dashboard_rules.yml").write_text("\n".join(rules) + "\n")
    result = promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["ds"]["type"] == "datasource" and variables["ds"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(dash):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${ds}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${ds}", panel["title"]


def test_grafana_provisioning_points_where_compose_mounts() -> None:
    mounts = compose_mounts()
    provider = (GRAFANA / "provisioning" / "dashboards" / "markd.yml").read_text()
    (path,) = re.findall(r"^\s*path:\s*(\S+)", provider, re.M)
    assert mounts["./grafana/dashboards"] == path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = re.search(r"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH:\s*(\S+)", compose_text())
    assert home and home.group(1) == f"{path}/{DASHBOARD.name}"
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert re.search(r"^\s*url:\s*http://prometheus:9090\s*$", datasource, re.M)
    assert "prometheus" in compose_services()


# --- compose ---------------------------------------------------------------------------------------


def test_compose_runs_the_stack_with_every_mounted_path_present() -> None:
    services = compose_services()
    assert {"redis", "prometheus", "grafana"} <= set(services)
    mounts = compose_mounts()
    for host in mounts:
        assert (DEPLOY / host).exists(), f"compose.yaml mounts {host}, which does not exist"
    assert mounts["./prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose_text()
    assert mounts["../config"] == "/etc/markd"  # where the image's MARKD_CONFIG points
    assert "context: .." in compose_text() and "dockerfile: Dockerfile" in compose_text()
    # its ACL user, with the password from deploy/.env
    assert "MARKD_REDIS_URL: redis://markd:${MARKD_REDIS_PASSWORD:?" in compose_text()
    assert "docker compose up" in compose_text().split("services:")[0], "the header says how to run it"


def test_every_compose_image_is_an_exact_release() -> None:
    images = re.findall(r"^\s*image:\s*(\S+)\s*$", compose_text(), re.M)
    pulled = [i for i in images if i != "markd:local"]  # markd:local is built from ../Dockerfile
    assert len(pulled) >= 4, images
    for image in pulled:
        name, _, tag = image.partition(":")
        # x.y.z (optionally v-prefixed or suffixed), or a bare integer release of a one-number scheme
        assert re.fullmatch(r"v?\d+\.\d+\.\d+[\w.-]*|\d+", tag), f"{image}: not an exact release"
        assert not re.fullmatch(r"\d+(\.\d+)?", tag) or name in PLAIN_NUMBER_RELEASES, f"{image}: floating tag"


# Images whose releases are single numbers (31 is one release, not a moving "31.x").
PLAIN_NUMBER_RELEASES = {"mendhak/http-https-echo"}


def test_the_redis_password_comes_from_the_env_file_and_matches_the_acl() -> None:
    import hashlib

    assert "markd-demo-writer" not in compose_text(), "no password written into compose.yaml"
    example = dict(re.findall(r"^([A-Z_]+)=(.*)$", (DEPLOY / "env.example").read_text(), re.M))
    password = example["MARKD_REDIS_PASSWORD"]
    assert re.fullmatch(r"[A-Za-z0-9._-]+", password), "URL-safe, as the URL carries it unquoted"
    acl = (DEPLOY / "redis" / "users.acl").read_text()
    digest = re.search(r"^user markd on #([0-9a-f]{64}) ", acl, re.M)
    assert digest and hashlib.sha256(password.encode()).hexdigest() == digest.group(1), (
        "env.example and users.acl agree"
    )


def test_grafana_admin_password_is_required_from_the_environment() -> None:
    text = compose_text()
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?" in text
    assert ":-admin" not in text
    example = (DEPLOY / "env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.M), "env.example lists it, empty"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored, "a filled-in deploy/.env must never be committed"


# --- Alertmanager ----------------------------------------------------------------------------------

ALERTMANAGER = DEPLOY / "alertmanager"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("amtool")
    if exe is None:
        pytest.fail(
            "amtool is not on PATH: install the Debian package `prometheus-alertmanager` (.ci/run does this in CI)"
        )
    return subprocess.run([exe, *args], cwd=ALERTMANAGER, capture_output=True, text=True, timeout=30)


def test_alertmanager_config_is_valid() -> None:
    result = amtool("check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("severity", ["critical", "warning"])
def test_alertmanager_routes_each_alert_by_its_severity_to_a_webhook(severity: str) -> None:
    for alert in alert_names():
        labels = [f"alertname={alert}", f"severity={severity}", "market=BTC-USD"]
        result = amtool("config", "routes", "test", "--config.file=alertmanager.yml", *labels)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == severity, f"{alert} at {severity} went to {result.stdout.strip()}"
    receivers = (ALERTMANAGER / "alertmanager.yml").read_text()
    assert re.search(rf"- name: {severity}\n\s+webhook_configs:\n\s+- url: http://alert-webhook:8080/", receivers)


def test_every_alert_has_a_routed_severity() -> None:
    severities = re.findall(r"^\s*severity:\s*(\S+)", (PROMETHEUS / "alerts.yml").read_text(), re.M)
    assert len(severities) == len(alert_names())
    assert set(severities) <= {"critical", "warning"}


def test_prometheus_sends_alerts_to_the_compose_alertmanager() -> None:
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert re.search(
        r"^alerting:\n\s+alertmanagers:\n(?:.*\n){1,3}\s+- targets: \[\"alertmanager:9093\"\]", config, re.M
    )
    services = compose_services()
    assert {"alertmanager", "alert-webhook"} <= set(services)
    assert compose_mounts()["./alertmanager"] == "/etc/alertmanager"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in compose_text()


# --- the stale alert follows each market's max_age_ms ----------------------------------------------


def test_every_market_exports_its_max_age_as_the_stale_alert_reads_it() -> None:
    from oracle.service import Service
    from oracle.settings import load_settings

    settings = load_settings(ROOT / "config" / "markd.toml")
    text = Service(settings).metrics.render().decode()
    for market in settings.markets:
        want = settings.policy_for(market).max_age_ms / 1000
        line = re.search(rf'^markd_mark_max_age_seconds{{market="{re.escape(market)}"}} (\S+)$', text, re.M)
        assert line and float(line.group(1)) == want, market
    stale = (PROMETHEUS / "alerts.yml").read_text().split("- alert: MarkdMarkStale")[1].split("- alert:")[0]
    assert "markd_mark_max_age_seconds" in stale and "> 10" not in stale


# --- the lock file ---------------------------------------------------------------------------------


def locked() -> dict[str, tuple[str, str, list[str]]]:
    """requirements.lock: normalised name -> (version, marker, the `via` lines below it)."""
    out: dict[str, tuple[str, str, list[str]]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)(?:\s*;\s*([^\\\n]+?))?\s*\\", block)
        if m:
            assert "--hash=sha256:" in block, f"{m.group(1)} has no hash"
            comments = [ln.strip().removeprefix("#").strip() for ln in block.splitlines() if ln.strip().startswith("#")]
            via = [c.removeprefix("via").strip() for c in comments if c.removeprefix("via").strip()]
            out[_norm(m.group(1))] = (m.group(2), (m.group(3) or "").strip(), via)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_exactly_the_current_dependencies() -> None:
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # the [project] dependencies and the `fast` extra (uvloop), which the image installs too
    wanted = [
        Requirement(r)
        for r in pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["fast"]
    ]
    lock = locked()
    for req in wanted:
        name = _norm(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock: run `make lock`"
        version, marker, _ = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} breaks {req}: make lock"
        assert marker == (str(req.marker) if req.marker else ""), f"{req.name}: marker changed: make lock"
    direct = {n for n, (_, _, via) in lock.items() if "markd (pyproject.toml)" in via}
    assert direct == {_norm(r.name) for r in wanted}, "requirements.lock is older than pyproject.toml: make lock"
    makefile = (ROOT / "Makefile").read_text()
    assert "pip-compile" in makefile and "requirements.lock" in makefile


def test_the_image_installs_from_the_lock_with_hashes() -> None:
    build = dockerfile_stages()[0]
    runs = " ".join(only(build, "RUN"))
    assert "--require-hashes" in runs and "-r requirements.lock" in runs
    assert "pip wheel --no-deps" in runs, "markd itself must not resolve anything beyond the lock"
    assert any("requirements.lock" in c for c in only(build, "COPY"))


# --- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_builds_a_wheel_and_installs_only_it_on_a_slim_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    for stage in stages:  # an exact Python release, never the floating 3.11-slim
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", only(stage, "FROM")[0].split()[0])
    assert any("pip wheel" in run for run in only(stages[0], "RUN"))
    final = stages[-1]
    runs = " ".join(only(final, "RUN"))
    install = re.search(r"pip install ([^&;]*)", runs)
    assert install, "the runtime stage installs the wheel with pip"
    assert "--no-index" in install.group(1), "only the builder's wheels, nothing fetched afresh"
    assert re.search(r"\bmarkd\[fast\]\s*$", install.group(1)), "installs `markd` with uvloop (`fast`), no other extra"
    everything = " ".join(args for _, args in dockerfile_instructions())
    assert "[dev]" not in everything and "[report]" not in everything
    assert not re.search(r"apt-get|gcc|build-essential|requirements-dev", runs)


def test_dockerfile_image_runs_markd_as_a_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    users = only(final, "USER")
    assert users, "no USER: the daemon would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert only(final, "ENTRYPOINT") == ['["markd"]'] and only(final, "CMD") == ['["run"]']
    assert only(final, "STOPSIGNAL") == ["SIGTERM"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "markd" in pyproject["project"]["scripts"]


def test_dockerfile_env_config_and_port() -> None:
    final = dockerfile_stages()[-1]
    env = " ".join(only(final, "ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "MARKD_CONFIG=/etc/markd/markd.toml"):
        assert setting in env.split(), setting
    assert "config/markd.toml /etc/markd/markd.toml" in only(final, "COPY")
    config = tomllib.loads((ROOT / "config" / "markd.toml").read_text())
    # The healthcheck talks to 127.0.0.1 and others to the published port: it must bind every address.
    assert config["service"]["http_host"] == "0.0.0.0"
    assert only(final, "EXPOSE") == [str(config["service"]["http_port"])]
    # The port comes from the config (and MARKD_HTTP_PORT), as the daemon reads it: see the tests below.
    assert healthcheck_argv() == ["python", "-m", "oracle.healthcheck"]


def test_dockerfile_copies_every_package_and_dockerignore_lets_them_through() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}

    def context_sources(stage: list[tuple[str, str]]) -> set[str]:
        """What a stage copies from the build context (not `COPY --from=` another stage)."""
        copies = [args.split() for args in only(stage, "COPY") if "--from=" not in args]
        return {src.rstrip("/") for args in copies for src in args[:-1] if not src.startswith("--")}

    stages = dockerfile_stages()
    sources = context_sources(stages[0])
    assert packages <= sources, f"packages the wheel would miss: {sorted(packages - sources)}"
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= sources
    sources = set().union(*map(context_sources, stages))
    patterns = dockerignore_patterns()
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such path"
        files = [path] if path.is_file() else [f for f in path.rglob("*.py") if "__pycache__" not in f.parts]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            assert not dockerignored(rel, patterns), f".dockerignore drops {rel}, which the image needs"
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "out/marks.csv", ".env"):
        assert dockerignored(kept_out, patterns), f"{kept_out} would be sent to the Docker daemon"
    assert dockerignored("oracle/__pycache__/cli.cpython-311.pyc", patterns)


# --- the HEALTHCHECK command, run for real ---------------------------------------------------------


async def run_healthcheck(port: int | None, config: Path = ROOT / "config" / "markd.toml") -> tuple[int, str]:
    """The HEALTHCHECK's command as the image runs it: MARKD_CONFIG set, MARKD_HTTP_PORT when `port`."""
    argv = healthcheck_argv()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKD_")} | {"MARKD_CONFIG": str(config)}
    if port is not None:
        env["MARKD_HTTP_PORT"] = str(port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv[1:],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def serve_healthz(status: int) -> tuple[web.AppRunner, int]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": status == 200}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
async def test_healthcheck_command_follows_healthz(status: int, healthy: bool) -> None:
    runner, port = await serve_healthz(status)
    try:
        code, err = await run_healthcheck(port)
    finally:
        await runner.cleanup()
    assert (code == 0) is healthy, f"/healthz {status} gave exit code {code}"
    if not healthy:
        assert err.strip() == f"healthcheck: http://127.0.0.1:{port}/healthz: HTTP {status}"


async def test_healthcheck_command_fails_in_one_line_when_nothing_listens() -> None:
    code, err = await run_healthcheck(free_port())
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


async def test_healthcheck_reads_the_port_from_the_config_file(tmp_path: Path) -> None:
    # No MARKD_HTTP_PORT: an operator who moved http_port in the config moves the check with it.
    runner, port = await serve_healthz(200)
    config = tmp_path / "markd.toml"
    base = (ROOT / "config" / "markd.toml").read_text()
    config.write_text(re.sub(r"(?m)^http_port\s*=.*$", f"http_port = {port}", base))
    try:
        code, err = await run_healthcheck(None, config)
    finally:
        await runner.cleanup()
    assert code == 0, err


async def test_healthcheck_with_a_broken_config_fails_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "markd.toml"
    config.write_text("[service]\nhttp_port = -1\n")
    code, err = await run_healthcheck(None, config)
    assert code == 1 and err.startswith("healthcheck: config: ") and len(err.strip().splitlines()) == 1, err


async def test_the_images_command_serves_the_healthcheck_and_stops_on_its_stop_signal(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # ENTRYPOINT + CMD as the image runs them, the config found through MARKD_CONFIG alone; its one
    # source points at a closed port, so no test ever reaches a real venue.
    final = dockerfile_stages()[-1]
    (entrypoint,) = only(final, "ENTRYPOINT")
    (cmd,) = only(final, "CMD")
    argv = [*json.loads(entrypoint), *json.loads(cmd)]
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    config = tmp_path / "markd.toml"
    config.write_text(
        '[service]\ntick_ms = 100\nhttp_host = "127.0.0.1"\n'
        f'[sources.local]\nkind = "http_json"\nbase_url = "http://127.0.0.1:{free_port()}/price"\n'
        '[markets.TEST-USD]\nsources = [{ source = "local", pair = "TEST-USD", path = "price" }]\n'
        "min_sources = 1\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKD_")}
    env |= {"MARKD_CONFIG": str(config), "MARKD_REDIS_URL": redis_server.url, "MARKD_HTTP_PORT": str(port)}
    daemon = await asyncio.create_subprocess_exec(
        *argv, cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while (await run_healthcheck(port, config))[0] != 0:
            assert daemon.returncode is None, "markd run exited before it was healthy"
            assert loop.time() < deadline, "markd run never passed the HEALTHCHECK"
            await asyncio.sleep(0.2)
        (signame,) = only(final, "STOPSIGNAL")
        daemon.send_signal(getattr(signal, signame))
        _, stderr = await asyncio.wait_for(daemon.communicate(), 8)  # within compose's stop_grace_period
        assert daemon.returncode == 0, stderr.decode()[-2000:]
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
