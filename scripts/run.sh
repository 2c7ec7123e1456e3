#!/usr/bin/env bash
# The main job: the local stack is up (make services-up); check it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/alphapanda doctor
