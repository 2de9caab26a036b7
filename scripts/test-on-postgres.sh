#!/usr/bin/env bash
# The test suite with every test daemon on PostgreSQL instead of SQLite (issue 19).
#
# ORCHGPT_TEST_STORE=postgres makes tests/support/mesh.py's Daemon pass
# `--store postgresql://...` with a fresh database (one per daemon data dir) of one
# private server the session starts from Debian's `postgresql` package
# (tests/support/postgres.py: initdb + pg_ctl on a free loopback port, stopped at the end).
# Tests of the SQLite file itself are marked `sqlite_only` and skipped (tests/conftest.py).
#
# Usage: scripts/test-on-postgres.sh [pytest arguments]   (default: the whole suite)
#   e.g. scripts/test-on-postgres.sh -x tests/test_mesh_routing.py
# It takes longer than the README's SQLite run (PostgreSQL commits go through a server).
# Last full run (30 Nov 19:03 UTC, main after the merges, -n 2, quiet machine): 1340 passed,
#   3 skipped (sqlite_only, each with its reason), 0 failed, in 10:59.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "test-on-postgres: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 2
fi
python -c 'import psycopg' 2>/dev/null || {
  echo "test-on-postgres: psycopg is missing (pip install -e '.[dev,postgres]')" >&2; exit 2; }
export ORCHGPT_TEST_STORE=postgres
exec python -m pytest "$@"
