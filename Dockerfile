# syntax=docker/dockerfile:1
# runbookd as a container image.
#
#   docker build -t runbookd .
#   docker run -d --name runbookd -p 9464:9464 --stop-timeout 45 \
#     -v /srv/runbookd/runbookd.yaml:/etc/runbookd/runbookd.yaml:ro \
#     -v runbookd-state:/var/lib/runbookd runbookd
#
# The config must listen on 0.0.0.0:9464 (the default, 127.0.0.1, is unreachable from
# outside the container) and keep its state in /var/lib/runbookd. --stop-timeout (compose:
# stop_grace_period, Kubernetes: terminationGracePeriodSeconds) must exceed
# runbookd.drain_grace (30s by default), or running remediations are killed mid-way.

# --- build: the runbookd wheel and the wheels of its dependencies --------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): tests and local state stay out.
COPY pyproject.toml README.md ./
COPY daemon/ daemon/
COPY checks/ checks/
COPY remediations/ remediations/
COPY config/ config/
RUN pip wheel --wheel-dir /wheels .

# --- runtime ----------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="runbookd" \
      org.opencontainers.image.description="Monitoring and auto-remediation daemon that executes an operations runbook" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini as PID 1: it forwards SIGTERM/SIGHUP to runbookd (which drains and reloads by itself)
# and reaps the orphans that `command` remediations leave behind, which runbookd, waiting
# only for its own children, would leave as zombies.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 runbookd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/runbookd --shell /usr/sbin/nologin runbookd \
    && mkdir -p /etc/runbookd /var/lib/runbookd \
    && chown runbookd:runbookd /var/lib/runbookd \
    && chmod 0750 /var/lib/runbookd

# The wheels come in through a mount, so they add nothing to the image's layers; the
# install uses them only (--no-index): the image holds what was built, nothing newer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/runbookd \
    && /opt/runbookd/bin/pip install --no-cache-dir --no-index --find-links /wheels runbookd

ENV PATH=/opt/runbookd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RUNBOOKD_CONFIG=/etc/runbookd/runbookd.yaml

# A config that leaves state_dir at its default ("./state") still writes into the volume.
WORKDIR /var/lib/runbookd
VOLUME ["/etc/runbookd", "/var/lib/runbookd"]
EXPOSE 9464

USER 10001:10001

# Liveness only (/healthz answers while the event loop turns): readiness (/readyz) is for
# load balancers. Python's urllib, since the slim image has no curl; any error exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

# runbookd drains on SIGTERM (stop scheduling, let running remediations finish within
# drain_grace) and exits 0. Exec form, so tini and then runbookd get the signal, not a shell.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "runbookd"]
CMD ["run", "--config", "/etc/runbookd/runbookd.yaml"]
