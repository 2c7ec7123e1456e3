#!/usr/bin/env bash
# The whole suite against real services on loopback. Starts what is not running,
# stops afterwards what it started (keep them with KEEP_SERVICES=1).
set -uo pipefail
cd "$(dirname "$0")/.."

# The status page is tested in Debian's headless Chromium (never a downloaded browser build).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[test] installing chromium with apt-get" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null || exit 1
    else
        echo "[test] chromium is missing: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

started=$(scripts/devstack.sh status | awk '$2 == "down" {print $1}' | xargs)
scripts/devstack.sh up || exit 1
if [ -n "$started" ] && [ "${KEEP_SERVICES:-0}" != "1" ]; then
    trap 'scripts/devstack.sh down $started' EXIT
fi
.venv/bin/ruff check src tests || exit 1
.venv/bin/mypy || exit 1
if [ "$#" -gt 0 ]; then
    # A targeted run (make test PYTEST_ARGS=...): exactly what was asked, in one process.
    .venv/bin/pytest "$@"
    exit $?
fi
# The whole suite: the tests that do not measure speed or timing run in parallel worker
# processes (each file on one worker; every test has its own topics, Redis keys and
# schema), then the ones that do run alone. TEST_WORKERS=1 runs everything in one process.
workers="${TEST_WORKERS:-3}"
if [ "$workers" -le 1 ]; then
    .venv/bin/pytest
    exit $?
fi
# Each part's output is kept, so that the names of what failed can be repeated at the
# very end, where a CI log that shows only its last lines still has them.
logs=$(mktemp -d)
.venv/bin/pytest -m "not serial" -n "$workers" --dist loadfile | tee "$logs/parallel.log"
parallel=${PIPESTATUS[0]}
.venv/bin/pytest -m serial | tee "$logs/serial.log"
serial=${PIPESTATUS[0]}
grep -hE '^(FAILED|ERROR) ' "$logs/parallel.log" "$logs/serial.log" >&2
rm -rf "$logs"
echo "[test] parallel part exit $parallel, serial part exit $serial" >&2
[ "$parallel" -eq 0 ] && [ "$serial" -eq 0 ]
