#!/usr/bin/env bash
# The one-time format of the whole tree (issue 12): the lead runs it once, on main, after the
# last branch is merged, and commits the result as one commit ("format: ruff format the tree").
# It is mechanical: ruff format, the import sorting ruff check fixes, then the long-line rule and
# the format check switched on (pyproject.toml, .ci/run), and the checks that must pass after.
# Running it again on a formatted tree changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ruff format .
ruff check --fix --select I .  # import blocks, should the format have touched any

# Enforce E501 (line-length in pyproject.toml) from now on: drop it from the ignore list.
sed -i -e 's/^ignore = \["E501", /ignore = [/' -e '/^# FORMAT-CHECK: "E501" goes/d' pyproject.toml
# CI checks the format from now on (the line marked FORMAT-CHECK in .ci/run).
sed -i 's/^# FORMAT-CHECK: //' .ci/run

ruff format --check .
ruff check .
mypy orchgpt agentd cli
# No module over 450 lines (tests/test_layout.py) now that the lines are formatted.
python -m pytest -q -p no:cacheprovider tests/test_layout.py
