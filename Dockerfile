# syntax=docker/dockerfile:1
# markd image: `docker build -t markd .`, then `docker run -p 9108:9108 -v ./config:/etc/markd:ro markd`.
# deploy/compose.yaml runs two replicas with Redis, Prometheus and Grafana.

# --- build: the markd wheel plus a wheel of every runtime dependency ---------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (README.md is the package's long description).
COPY pyproject.toml README.md ./
COPY oracle ./oracle
COPY feeds ./feeds
COPY disputes ./disputes
# `pip wheel .` resolves the [project] dependencies only, never the dev or report extras. numpy and
# hiredis ship manylinux wheels for 3.11, so neither stage needs a compiler.
RUN pip wheel --wheel-dir /wheels .

# --- runtime -------------------------------------------------------------------------------------
FROM python:3.11-slim
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
# mount keeps the wheels out of every layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels markd

# The default config; mount a directory over /etc/markd to replace it.
COPY config/markd.toml /etc/markd/markd.toml

# Writable scratch for ad-hoc `markd record` / `markd replay` runs; the daemon itself writes nothing.
WORKDIR /srv/markd
USER 10001:10001

# config/markd.toml binds http_host = "0.0.0.0", so the port is reachable from outside the container.
EXPOSE 9108

# slim has no curl. urlopen raises on a refused connection and on any HTTP error status (503 while
# the tick loop is stalled), so the exit code is 1 and the traceback, kept in `docker inspect`,
# says which. MARKD_HTTP_PORT moves the daemon's port, so the check follows it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MARKD_HTTP_PORT', '9108'), timeout=3)"]

# The daemon stops on SIGTERM: it stops taking quotes, publishes one last tick, releases the leader
# lease (so a standby takes over at once, not after the lease expires) and closes its connections.
STOPSIGNAL SIGTERM
ENTRYPOINT ["markd"]
CMD ["run"]
