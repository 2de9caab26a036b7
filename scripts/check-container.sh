#!/usr/bin/env bash
# Prove the container story on this machine, with no image registry: build a Debian
# bookworm base with debootstrap, build the project's Dockerfile on it with podman, start
# compose.yaml's services (the daemon, an echo and a backend agent, each with its own
# certificate) with podman-compose, wait for the HEALTHCHECK to turn healthy, run
# `autogpt -c '/echo run "hello"'` from the host against the container, and remove it all.
#
#   sudo scripts/check-container.sh            # about 4 minutes cold, 1 warm (see README)
#
# Needs root and Debian's apt (podman, runc, debootstrap are installed when missing),
# deb.debian.org and PyPI. Exit status: 0 passed; 1 the project failed (image build,
# health, agents joining, the echo reply); 3 this machine cannot run the check (not root,
# no apt, podman cannot run a container, Debian or PyPI unreachable), with the reason.
#
# Kept between runs: the debootstrapped root in /var/tmp (ORCHGPT_CHECK_ROOT) and its
# image localhost/debian-py:bookworm. Removed at the end: the containers, their network
# and volumes, the built image and the intermediate images its build made
# (ORCHGPT_CHECK_KEEP_IMAGE=1 keeps them: a faster next run), and the work dir.
#
# Facts of this machine baked in: crun refuses its kernel's hybrid cgroups and raised
# rlimits, so podman runs as `podman --runtime runc --cgroup-manager cgroupfs` with
# `--ulimit nofile=1024:1024 --ulimit nproc=1024:1024` on build and run (given to
# podman-compose with --podman-args and --podman-run-args; compose.yaml stays portable).
# No systemd: the health check is run by `podman healthcheck run`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root_dir=${ORCHGPT_CHECK_ROOT:-/var/tmp/orchgpt-debian-py-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base=localhost/debian-py:bookworm
image=localhost/orchgpt:check
project=orchgpt-check
podman=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
run_once=(run --rm --no-healthcheck --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
t0=$SECONDS

stage() { printf '\n==> [%4ss] %s\n' "$((SECONDS - t0))" "$*"; }
info() { printf '    %s\n' "$*"; }
fail() { printf '\nFAIL [%ss]: %s\n' "$((SECONDS - t0))" "$*" >&2; exit 1; }
cannot() { printf '\nCANNOT RUN HERE: %s\n' "$*" >&2; exit 3; }
# the last lines of a log, indented
tail_log() { tail -n "${2:-30}" "$1" | sed 's/^/    | /' >&2; }

[ "$(id -u)" = 0 ] || cannot "needs root (podman as root, debootstrap, chown of the certificates)"
exec 9>/var/tmp/orchgpt-check-container.lock
flock -w 600 9 || cannot "another check-container.sh holds /var/tmp/orchgpt-check-container.lock"

work=$(mktemp -d /var/tmp/orchgpt-check.XXXXXX)
compose_up=0
cleanup() {
  local rc=$?
  set +e
  if [ "$compose_up" = 1 ]; then
    stage "cleanup: containers, network and volumes"
    if [ "$rc" != 0 ]; then
      for s in orchgpt agent-echo agent-backend; do
        echo "    --- logs of $s (last 15 lines)" >&2
        timeout 30 "${podman[@]}" logs --tail 15 "${project}_${s}_1" 2>&1 | sed 's/^/    | /' >&2
      done
    fi
    compose down -v >"$work/down.log" 2>&1 || tail_log "$work/down.log" 10
  fi
  if [ "${ORCHGPT_CHECK_KEEP_IMAGE:-0}" != 1 ] && [ -f "$work/images-before" ]; then
    # the built image and the intermediate images this run's build made (its cache), no others
    timeout 120 "${podman[@]}" rmi -f "$image" >/dev/null 2>&1
    timeout 60 "${podman[@]}" images -a -q --no-trunc | sort -u >"$work/images-after"
    comm -13 "$work/images-before" "$work/images-after" >"$work/images-new"
    [ -s "$work/images-new" ] && timeout 300 xargs -a "$work/images-new" "${podman[@]}" rmi -f >/dev/null 2>&1
  fi
  rm -rf "$work"
  printf '\n%s in %ss\n' "$([ "$rc" = 0 ] && echo PASSED || echo "ended with status $rc")" \
    "$((SECONDS - t0))"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stage "tools: podman, runc, debootstrap"
missing=()
for p in podman runc debootstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || cannot "no apt-get to install ${missing[*]}"
  info "apt-get install ${missing[*]}"
  { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
      apt-get install -y -qq "${missing[@]}"; } >"$work/apt.log" 2>&1 \
    || { tail_log "$work/apt.log"; cannot "apt-get install ${missing[*]} failed"; }
fi
info "$(podman --version), $(runc --version | head -n1)"
timeout 60 "${podman[@]}" info >"$work/podman-info.log" 2>&1 \
  || { tail_log "$work/podman-info.log"; cannot "podman cannot run here"; }

stage "base image: debootstrap bookworm with python3 -> $base"
fresh=0
if [ ! -x "$root_dir/usr/bin/python3" ] || [ ! -f "$root_dir/usr/lib/python3.11/ensurepip/__init__.py" ]; then
  rm -rf "$root_dir" "$root_dir.tmp"
  info "debootstrap --variant=minbase into $root_dir (under a minute or two)"
  timeout 900 debootstrap --variant=minbase --include=python3,python3-venv,python3-pip \
      bookworm "$root_dir.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail_log "$work/debootstrap.log"; rm -rf "$root_dir.tmp"; cannot "debootstrap from $mirror failed"; }
  mv "$root_dir.tmp" "$root_dir"
  fresh=1
else
  info "cached root $root_dir"
fi
if [ "$fresh" = 1 ] || ! timeout 60 "${podman[@]}" image exists "$base"; then
  tar -C "$root_dir" -c . | timeout 600 "${podman[@]}" import - "$base" >"$work/import.log" 2>&1 \
    || { tail_log "$work/import.log"; cannot "podman import of $root_dir failed"; }
fi
info "$base: $(timeout 60 "${podman[@]}" "${run_once[@]}" "$base" python3 --version 2>&1)"

stage "image build: $repo/Dockerfile on $base -> $image"
timeout 60 "${podman[@]}" images -a -q --no-trunc | sort -u >"$work/images-before"
secret=()
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && secret=(--secret "id=ca-certificates,src=$ca") && info "pip trusts the host's CA bundle $ca (build secret)"
if ! timeout 900 "${podman[@]}" build --format docker "${ulimits[@]}" "${secret[@]}" \
    --build-arg "BASE=$base" -t "$image" -f "$repo/Dockerfile" "$repo" >"$work/build.log" 2>&1; then
  tail_log "$work/build.log" 40
  if grep -qE 'Could not fetch URL|Temporary failure in name resolution|Failed to establish a new connection|Network is unreachable|Could not resolve|Failed to fetch|CERTIFICATE_VERIFY_FAILED' "$work/build.log"; then
    cannot "the image build could not reach PyPI or the Debian mirror"
  fi
  fail "the image build failed"
fi
grep -E '^\[[0-9]/[0-9]\] STEP|COMMIT' "$work/build.log" | sed 's/^/    /' | cut -c1-110
cfg=$(timeout 60 "${podman[@]}" image inspect --format \
  'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} healthcheck={{.Config.Healthcheck.Test}}' "$image")
info "built $image: $(timeout 60 "${podman[@]}" image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'), $cfg"
case $cfg in *"healthcheck=[CMD orchgpt health"*) ;; *) fail "the image has no HEALTHCHECK through orchgpt health";; esac
uid=$(timeout 60 "${podman[@]}" "${run_once[@]}" --entrypoint id "$image" -u)
[ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
info "runs as uid $uid; $(timeout 60 "${podman[@]}" "${run_once[@]}" --entrypoint sh "$image" -c \
  'printf "%s, node %s, git %s" "$(python -c "import pytest, fastapi, uvicorn; print(\"pytest\", pytest.__version__, \"fastapi\", fastapi.__version__)")" "$(node --version)" "$(git --version | cut -d" " -f3)"')"

stage "host side: a venv with this checkout's autogpt and podman-compose"
timeout 120 python3 -m venv --system-site-packages "$work/venv"
timeout 900 "$work/venv/bin/pip" install -q --disable-pip-version-check "$repo" podman-compose \
  >"$work/pip.log" 2>&1 || { tail_log "$work/pip.log"; cannot "pip install of the checkout and podman-compose failed"; }
info "orchgpt from $("$work/venv/bin/python" -c 'import orchgpt, os; print(os.path.dirname(orchgpt.__file__))')"
info "$("$work/venv/bin/podman-compose" --version 2>/dev/null | head -n1)"

stage "certificates: scripts/certs-for-compose.sh (server certificate names the service host orchgpt)"
ORCHGPT="$work/venv/bin/orchgpt" timeout 120 "$repo/scripts/certs-for-compose.sh" "$work/certs" | sed 's/^/    /'
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stage "compose up: orchgpt, agent-echo, agent-backend (published on 127.0.0.1:$port only)"
compose() {
  ORCHGPT_IMAGE=$image ORCHGPT_COMPOSE_CERTS="$work/certs" ORCHGPT_PORT=$port ORCHGPT_PUBLISH=127.0.0.1 \
  OPENAI_BASE_URL=http://model.invalid/v1 \
    timeout 300 "$work/venv/bin/podman-compose" --podman-args="${podman[*]:1}" \
      --podman-run-args="${ulimits[*]}" \
      -p "$project" -f "$repo/compose.yaml" "$@"
}
# The backend agent only has to join (this check asks no model): it gets an unreachable one.
compose down -v >/dev/null 2>&1 || true   # leftovers of an interrupted run
compose_up=1
compose up -d --no-build >"$work/up.log" 2>&1 || { tail_log "$work/up.log"; fail "podman-compose up failed"; }
timeout 60 "${podman[@]}" ps --filter "name=${project}_" --format '{{.Names}}  {{.Status}}  {{.Ports}}' | sed 's/^/    /'

stage "health: the image's HEALTHCHECK (orchgpt health over mutual TLS), run by podman healthcheck run"
daemon=${project}_orchgpt_1
last=
deadline=$((SECONDS + 120))
while :; do
  status=$(timeout 30 "${podman[@]}" inspect --format '{{.State.Health.Status}}' "$daemon" 2>/dev/null || echo gone)
  [ "$status" != "$last" ] && info "$(date -u +%T) $daemon: $status" && last=$status
  timeout 30 "${podman[@]}" healthcheck run "$daemon" >/dev/null 2>&1 || true
  status=$(timeout 30 "${podman[@]}" inspect --format '{{.State.Health.Status}}' "$daemon" 2>/dev/null || echo gone)
  [ "$status" != "$last" ] && info "$(date -u +%T) $daemon: $status" && last=$status
  [ "$status" = healthy ] && break
  [ "$SECONDS" -ge "$deadline" ] && fail "the daemon did not turn healthy within 120 s (last: $status)"
  sleep 2
done

autogpt() { timeout "$1" "$work/venv/bin/autogpt" --orchestrator "127.0.0.1:$port" --certs "$work/certs/client" "${@:2}"; }

stage "agents: echo-1 and backend-1 join from their own containers with their own certificates"
deadline=$((SECONDS + 90))
until autogpt 30 -c '/agents' >"$work/agents.txt" 2>&1 \
    && grep -qw echo-1 "$work/agents.txt" && grep -qw backend-1 "$work/agents.txt"; do
  [ "$SECONDS" -ge "$deadline" ] && { tail_log "$work/agents.txt"; fail "echo-1 and backend-1 did not both register within 90 s"; }
  sleep 2
done
sed 's/^/    /' "$work/agents.txt"

stage "echo: autogpt -c '/echo run \"hello\"' from the host"
rc=0
autogpt 120 -c '/echo run "hello"' >"$work/echo.txt" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail_log "$work/echo.txt"; fail "autogpt exited with status $rc"; }
sed 's/^/    /' "$work/echo.txt"
grep -qx hello "$work/echo.txt" || fail "the reply was not hello"
grep -q 'echo-1' "$work/echo.txt" || fail "the task did not run on the echo-1 container"
info "echo reply: hello (run by echo-1, in its own container)"

stage "sandbox in the agent container: python -m agentd.sandbox (uid 10001, user namespaces)"
set +e
timeout 120 "${podman[@]}" exec "${project}_agent-echo_1" python -m agentd.sandbox >"$work/sandbox.txt" 2>&1
rc=$?
set -e
python3 - "$work/sandbox.txt" <<'PY' || cat "$work/sandbox.txt"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
inside = r.get("inside", {})
print(f"    isolation: {r['isolation']} {r.get('reason', '')}".rstrip())
if inside:
    print(f"    inside: uid {inside['uid']}, hostname {inside['hostname']}, / holds {' '.join(inside['root'])}")
    print(f"    visible inside: {inside['visible']}")
PY
case $rc in
  0) info "isolated: generated code can run in this image" ;;
  3) info "WARNING: no namespaces in this container (the kernel or the runtime forbids them)" ;;
  *) tail_log "$work/sandbox.txt"; fail "the sandbox could not be set up in the container (status $rc)" ;;
esac

if [ "$rc" = 0 ]; then
  stage "agents' work in the backend container: a FastAPI test with pytest and node --check, in the sandbox"
  timeout 180 "${podman[@]}" exec -i "${project}_agent-backend_1" python - >"$work/work.txt" 2>&1 <<'PY' \
    || { tail_log "$work/work.txt"; fail "the image cannot run the agents' checks in its sandbox"; }
import asyncio, sys, tempfile
from pathlib import Path
from agentd.sandbox import Limits, Sandbox, SandboxPolicy

APP = "from fastapi import FastAPI\napp = FastAPI()\n\n@app.get('/ping')\ndef ping():\n    return {'ok': True}\n"
TEST = ("from fastapi.testclient import TestClient\nfrom app import app\n\n"
        "def test_ping():\n    assert TestClient(app).get('/ping').json() == {'ok': True}\n")

async def main() -> int:
    with tempfile.TemporaryDirectory(prefix="orchgpt-check-work-") as d:
        ws = Path(d)
        (ws / "app.py").write_text(APP)
        (ws / "test_app.py").write_text(TEST)
        (ws / "app.js").write_text("document.title = 'ok';\n")
        sb = Sandbox(ws, Limits(timeout_s=60), policy=SandboxPolicy.from_env())
        rc = 0
        for name, cmd in (("pytest", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]),
                          ("node --check app.js", ["node", "--check", "app.js"])):
            r = await sb.run(cmd)
            last = (r.stdout.strip().splitlines() or [""])[-1]
            print(f"{name}: exit {r.exit_code}, isolation {r.isolation}  {last}")
            if r.exit_code:
                print(r.stderr.strip()[-500:])
            rc = rc or r.exit_code
        return rc

sys.exit(asyncio.run(main()))
PY
  sed 's/^/    /' "$work/work.txt"
fi
