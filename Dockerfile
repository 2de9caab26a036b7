# syntax=docker/dockerfile:1
# One image for the orchgpt daemon and for its agents (README, "Container").
#
#   docker build -t orchgpt .
#   docker build -t orchgpt --build-arg BASE=localhost/debian-py:bookworm .   # any Debian
#                                         # image with python3 (>= 3.11) and python3-venv
#
# Certificates are mounted at /certs (scripts/certs-for-compose.sh, or
# `orchgpt certs init --dir ./certs --host <name>`, owned by uid 10001), state lives in /data:
#   docker run -p 8443:8443 -v $PWD/certs:/certs:ro -v orchgpt-data:/data \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined \
#     -e OPENAI_API_KEY orchgpt
# An agent: the same image with `--entrypoint agentd` (compose.yaml does both).
#
# The agents run generated code in a sandbox made of user, mount, pid, ipc, network
# and uts namespaces (uid 10001 cannot switch uids, so it uses a user namespace;
# docs/security-sandbox.md). Docker's default seccomp and AppArmor profiles forbid
# creating user namespaces and mounting, and its masked /proc forbids the sandbox its
# own /proc: hence the three --security-opt above. No capability is added and the
# container still runs as uid 10001. Check with
#   docker run --rm --entrypoint python <the same options> orchgpt -m agentd.sandbox
# (prints "isolation": "user-ns"). Without them the agents find no namespaces and
# refuse to run generated code; ORCHGPT_ALLOW_WEAK_SANDBOX=1 runs it anyway with
# limits only, and then it can read whatever uid 10001 can: /certs (the CA key) too.

# The official image for everyone; check-container.sh builds on a local debootstrapped
# Debian instead. Both stages use the same base, so the venv's interpreter path holds.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# A venv: works the same on the official image (python in /usr/local) and on Debian's
# python3 (whose system site-packages pip must not touch).
RUN python3 -m venv /opt/orchgpt
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY proto proto
COPY orchgpt orchgpt
COPY agentd agentd
COPY cli cli
# [workspace]: what generated code may import in the sandbox (fastapi, uvicorn, pytest).
# The optional build secret `ca-certificates` is a CA bundle for pip to trust, for a
# network behind a TLS-intercepting proxy (`--secret id=ca-certificates,src=FILE`;
# check-container.sh passes the host's); it is not kept in the image.
RUN --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && /opt/orchgpt/bin/pip install ".[workspace]" \
 && /opt/orchgpt/bin/pip check \
 && /opt/orchgpt/bin/orchgpt --help >/dev/null \
 && /opt/orchgpt/bin/agentd --version

FROM ${BASE}
# git for the git agent, util-linux (unshare) for the code sandbox, nodejs for the
# frontend's `node --check` and node tests, ca-certificates for the model APIs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      git util-linux nodejs ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group orchgpt \
 && mkdir -p /certs /data \
 && chown orchgpt:orchgpt /data \
 && chmod 0700 /data
COPY --from=build /opt/orchgpt /opt/orchgpt
USER orchgpt
WORKDIR /home/orchgpt
ENV PATH=/opt/orchgpt/bin:$PATH \
    ORCHGPT_CERTS=/certs \
    ORCHGPT_DATA_DIR=/data \
    ORCHGPT_ALLOW_WEAK_SANDBOX=0 \
    ORCHGPT_LISTEN=0.0.0.0:8443 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8443
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["orchgpt", "health", "--address", "127.0.0.1:8443", "--certs", "/certs"]
ENTRYPOINT ["orchgpt", "serve"]
