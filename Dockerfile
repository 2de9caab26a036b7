# syntax=docker/dockerfile:1
# orchgpt daemon image. Certificates are mounted at /certs (make them with
# `orchgpt certs init --dir ./certs --host <name>`), state lives in /data:
#   docker build -t orchgpt .
#   docker run -p 8443:8443 -v $PWD/certs:/certs -v orchgpt-data:/data \
#     -e OPENAI_API_KEY orchgpt
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto proto
COPY orchgpt orchgpt
COPY agentd agentd
COPY cli cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# git for the git agent, util-linux (unshare) for the code sandbox
RUN apt-get update \
 && apt-get install -y --no-install-recommends git util-linux \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 orchgpt \
 && mkdir -p /certs /data \
 && chown orchgpt:orchgpt /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER orchgpt
WORKDIR /home/orchgpt
ENV ORCHGPT_CERTS=/certs \
    ORCHGPT_DATA_DIR=/data \
    ORCHGPT_LISTEN=0.0.0.0:8443 \
    PYTHONUNBUFFERED=1
VOLUME ["/certs", "/data"]
EXPOSE 8443
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["orchgpt", "health", "--address", "127.0.0.1:8443", "--certs", "/certs"]
ENTRYPOINT ["orchgpt", "serve"]
