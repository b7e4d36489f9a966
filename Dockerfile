# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with the toolchain, run it on a slim base as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY sfu ./sfu
COPY client_sdk ./client_sdk
COPY loadtest ./loadtest
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 sfu && mkdir -p /data && chown sfu:sfu /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY web /opt/sfu/web
USER sfu
ENV SFU_HOST=0.0.0.0 SFU_PORT=7880 SFU_DATA_DIR=/data SFU_WEB_ROOT=/opt/sfu/web
EXPOSE 7880/tcp
# NOTE: ICE uses ephemeral UDP ports until --rtc-port-range exists (see README status); run with
# --network host, or publish the host's ephemeral range, and set SFU_ICE_HOSTS to the host's address.
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:7880/healthz').status != 200)"
ENTRYPOINT ["sfu", "serve"]
