#!/usr/bin/env bash
# Start what `make demo` runs on: a local Prefect server (SQLite under $PREFECT_HOME) unless one
# answers already, and the served deployments (python -m deployments.serve) unless they run
# already. Each is started in a process group of its own (setsid), its pid in $RLT_STATE_DIR
# (.rlt), so that `make stop` (scripts/stop.sh) stops it with every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
PREFECT=${PREFECT:-.venv/bin/prefect}
PORT=${RLT_PREFECT_PORT:-4200}
STATE=${RLT_STATE_DIR:-.rlt}
mkdir -p "$STATE"
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.rlt/prefect}
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:$PORT/api}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS=rlt_core
export PYTHONUNBUFFERED=1

healthy() { "$PY" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$PREFECT_API_URL/health" 2>/dev/null; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { echo "up: $what did not come up; see $STATE/*.log" >&2; exit 1; }
    sleep 1
  done
}

if ! healthy; then
  echo "up: starting the Prefect server on port $PORT (log: $STATE/server.log)"
  setsid nohup "$PREFECT" server start --host 127.0.0.1 --port "$PORT" >"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/server.pid"
  wait_for 120 "the Prefect server" healthy
fi
if ! alive "$STATE/serve.pid"; then
  echo "up: serving the deployments (log: $STATE/serve.log)"
  setsid nohup "$PY" -m deployments.serve --profile tiny --store "${RLT_STORE:-artifacts}" \
    >"$STATE/serve.log" 2>&1 &
  echo $! >"$STATE/serve.pid"
  wait_for 120 "the deployments" "$PREFECT" deployment inspect rlt/full-pipeline >/dev/null 2>&1
  sleep 3  # the runner polls for scheduled runs once it has registered them
fi
