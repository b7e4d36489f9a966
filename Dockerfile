# syntax=docker/dockerfile:1
# Multi-stage: wheels are built with the toolchain, the runtime is a slim base with no compiler, run as a
# non-root user. docs/deployment.md has the run line, a compose file with coturn, and the tuning notes.
# tests/unit/deploy/test_dockerfile.py lints this file; tests/integration/deploy/test_image_build.py runs
# its build steps (pip wheel, install, the entry point) without Docker.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY sfu ./sfu
COPY client_sdk ./client_sdk
COPY loadtest ./loadtest
# The project's wheel and every dependency's (with the `redis` extra, for `sfu serve --redis`), so the
# runtime stage installs offline.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --create-home --uid 10001 --user-group sfu \
    && mkdir -p /data && chown sfu:sfu /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "pysfu[redis]" && rm -rf /wheels
COPY web /opt/sfu/web
ENV PYTHONUNBUFFERED=1 \
    SFU_HOST=0.0.0.0 \
    SFU_PORT=7880 \
    SFU_DATA_DIR=/data \
    SFU_WEB_ROOT=/opt/sfu/web \
    SFU_RTC_PORT_RANGE=50000-50100
USER sfu
# 7880/tcp: HTTP(S) + WebSocket signaling; the UDP range: ICE/DTLS/SRTP (one port per transport and host
# address: two per participant). Publish both as they are (`-p 50000-50100:50000-50100/udp`), since the
# port in a host candidate must be the port the client can reach, and set SFU_PUBLIC_IPS to the host's
# public address (SFU_ICE_HOSTS to the container's own when it has several).
EXPOSE 7880/tcp 50000-50100/udp
VOLUME ["/data"]
# SIGTERM: sessions end with `closed {reason:"server_shutdown", reconnect:true}`, recordings are
# finalized, exit within 10 s (give `docker stop -t 15`). SIGUSR1 drains for rolling restarts.
STOPSIGNAL SIGTERM
# Liveness: a draining server (503 `draining`) is still healthy; readiness is GET /healthz itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["sfu", "health"]
ENTRYPOINT ["sfu", "serve"]
