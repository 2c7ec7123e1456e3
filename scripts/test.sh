#!/usr/bin/env bash
# The whole suite against real services on loopback. Starts what is not running,
# stops afterwards what it started (keep them with KEEP_SERVICES=1).
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(scripts/devstack.sh status | awk '$2 == "down" {print $1}' | xargs)
scripts/devstack.sh up || exit 1
if [ -n "$started" ] && [ "${KEEP_SERVICES:-0}" != "1" ]; then
    trap 'scripts/devstack.sh down $started' EXIT
fi
.venv/bin/ruff check src tests || exit 1
.venv/bin/mypy || exit 1
.venv/bin/pytest "$@"
