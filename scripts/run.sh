#!/usr/bin/env bash
# The main job (`make run`, after `make services-up`): the Kite exchange simulator in the
# background and the market feed (with its control API and status page) in the
# foreground, streaming the registry's instruments into Kafka. It configures the
# simulator's universe (data/instruments.csv) as the feed's CSV, so a fresh install
# streams all of it until `alphapanda instruments stream` chooses a set; without
# `make run` (a real account) nothing streams until then.
# Ctrl-C (or SIGTERM) stops the feed gracefully, then the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin/alphapanda
INSTRUMENTS=${ALPHAPANDA_FEED__INSTRUMENTS_CSV:-data/instruments.csv}
RATE=${SIM_TICKS_PER_SECOND:-2000}
LOG_DIR=.alphapanda/run
mkdir -p "$LOG_DIR"

say() { printf '[run] %s\n' "$*" >&2; }

children=()
cleanup() {
    local pid
    for pid in "${children[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${children[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# 1. The simulator, on the ports the default settings point at (ws 18765, HTTP 18766).
"$BIN" sim --instruments "$INSTRUMENTS" --rate "$RATE" \
    >"$LOG_DIR/sim.out" 2>"$LOG_DIR/sim.log" &
children+=($!)
for _ in $(seq 1 100); do
    grep -q sim_ready "$LOG_DIR/sim.out" 2>/dev/null && break
    kill -0 "${children[0]}" 2>/dev/null || { say "simulator failed to start:"; tail -n 20 "$LOG_DIR/sim.log" >&2; exit 1; }
    sleep 0.1
done
grep -q sim_ready "$LOG_DIR/sim.out" || { say "simulator did not become ready"; exit 1; }
say "simulator: $(cat "$LOG_DIR/sim.out")"

# 2. The feed, in the foreground; it also serves the control API and the status page.
#    Its signals are forwarded so it drains and flushes before exiting.
prefix=${ALPHAPANDA_KAFKA__TOPIC_PREFIX:-}
say "feed: streaming the registry's instruments (PostgreSQL; $INSTRUMENTS until a streaming set is configured) at ~$RATE ticks/s into Kafka topic '${prefix}market.ticks'"
say "status page: http://127.0.0.1:${ALPHAPANDA_API__PORT:-18080}/  (logs in $LOG_DIR/)"
say "figures: .venv/bin/alphapanda status   (Ctrl-C stops the feed gracefully)"
"$BIN" feed --instruments "$INSTRUMENTS" &
feed_pid=$!
trap 'kill -TERM "$feed_pid" 2>/dev/null || true' INT TERM
# A signal interrupts `wait` (status > 128); wait again until the feed's graceful
# shutdown has finished, and exit with the feed's own status.
status=0
wait "$feed_pid" || status=$?
while kill -0 "$feed_pid" 2>/dev/null; do
    status=0
    wait "$feed_pid" || status=$?
done
exit "$status"
