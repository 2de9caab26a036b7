# syntax=docker/dockerfile:1
# orchgpt daemon image. Certificates are mounted at /certs (make them with
# `orchgpt certs init --dir ./certs --host <name>`), state lives in /data:
#   docker build -t orchgpt .
#   docker run -p 8443:8443 -v $PWD/certs:/certs -v orchgpt-data:/data \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined \
#     -e OPENAI_API_KEY orchgpt
#
# The agents `orchgpt serve` spawns run generated code in a sandbox made of user,
# mount, pid, ipc, network and uts namespaces (uid 10001 cannot switch uids, so it
# uses a user namespace; docs/security-sandbox.md). Docker's default seccomp and
# AppArmor profiles forbid creating user namespaces and mounting, and its masked /proc
# forbids the sandbox its own /proc: hence the three --security-opt above. No
# capability is added and the container still runs as uid 10001. Check with
#   docker run --rm --entrypoint python <the same options> orchgpt -m agentd.sandbox
# (prints "isolation": "user-ns"). Without them the agents find no namespaces and
# refuse to run generated code; ORCHGPT_ALLOW_WEAK_SANDBOX=1 runs it anyway with
# limits only, and then it can read whatever uid 10001 can: /certs (the CA key) too.
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
    ORCHGPT_ALLOW_WEAK_SANDBOX=0 \
    ORCHGPT_LISTEN=0.0.0.0:8443 \
    PYTHONUNBUFFERED=1
VOLUME ["/certs", "/data"]
EXPOSE 8443
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["orchgpt", "health", "--address", "127.0.0.1:8443", "--certs", "/certs"]
ENTRYPOINT ["orchgpt", "serve"]
