#!/usr/bin/env bash
# Make the certificates compose.yaml's services need, one directory per service:
#
#   DIR/daemon/    the mesh CA (ca.pem, ca-key.pem: the daemon issues its spawned agents'
#                  certificates), server.pem naming the compose service host `orchgpt`
#                  (plus localhost, 127.0.0.1 and any --host), cli.pem for the HEALTHCHECK
#   DIR/echo-1/    ca.pem, echo-1.pem, echo-1-key.pem        (the `agent-echo` service)
#   DIR/backend-1/ ca.pem, backend-1.pem, backend-1-key.pem  (the `agent-backend` service)
#   DIR/client/    ca.pem, cli.pem, cli-key.pem: for `autogpt --certs DIR/client` on the host
#
#   scripts/certs-for-compose.sh [--host NAME]... [DIR]      # DIR defaults to ./compose-certs
#
# The containers run as uid 10001 and keys are 0600, so the service directories must
# belong to uid 10001: as root this script chowns them (CHOWN=0 to skip); otherwise it
# prints the command to run (sudo chown, or `podman unshare chown` for rootless podman).
# DIR/client stays yours. Running it again keeps the CA and the certificates that exist.
set -euo pipefail
read -ra orchgpt <<<"${ORCHGPT:-orchgpt}"   # e.g. ORCHGPT="python3 -m orchgpt"
uid=${ORCHGPT_CONTAINER_UID:-10001}
hosts=(--host orchgpt)
dir=
while [ $# -gt 0 ]; do
  case $1 in
    --host) hosts+=(--host "$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "certs-for-compose.sh: unknown option $1" >&2; exit 2 ;;
    *) dir=$1; shift ;;
  esac
done
dir=${dir:-compose-certs}
command -v "${orchgpt[0]}" >/dev/null || { echo "certs-for-compose.sh: '${orchgpt[0]}' not found (pip install . first, or set ORCHGPT)" >&2; exit 1; }

mkdir -p "$dir"
chmod 0700 "$dir"
"${orchgpt[@]}" certs init --dir "$dir/daemon" "${hosts[@]}" >/dev/null
for agent in echo-1 backend-1; do
  if [ ! -s "$dir/$agent/$agent.pem" ]; then
    mkdir -p "$dir/$agent"
    "${orchgpt[@]}" certs issue "$agent" --role agent --dir "$dir/daemon" --out "$dir/$agent" >/dev/null
  fi
done
mkdir -p "$dir/client"
for f in ca.pem cli.pem cli-key.pem; do
  [ -s "$dir/client/$f" ] || cp -p "$dir/daemon/$f" "$dir/client/$f"
done
chmod 0700 "$dir"/daemon "$dir"/echo-1 "$dir"/backend-1 "$dir"/client
chmod 0600 "$dir"/*/*-key.pem

services=("$dir/daemon" "$dir/echo-1" "$dir/backend-1")
if [ "$(id -u)" = 0 ] && [ "${CHOWN:-1}" != 0 ]; then
  chown -R "$uid:$uid" "${services[@]}"
  echo "certificates in $dir (service directories owned by uid $uid; $dir/client is for autogpt)"
else
  echo "certificates in $dir ($dir/client is for autogpt). The containers run as uid $uid: give"
  echo "them their directories with one of"
  echo "  sudo chown -R $uid:$uid ${services[*]}   # docker, rootful podman"
  echo "  podman unshare chown -R $uid:$uid ${services[*]}   # rootless podman"
fi
