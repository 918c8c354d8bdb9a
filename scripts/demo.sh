#!/usr/bin/env bash
# `make demo`: the whole RLT pipeline on the CPU `tiny` profile, through Prefect.
#
# 1. installs .venv from the lock (scripts/setup.sh) and builds the offline SmolLM2 model;
# 2. starts a local Prefect server (SQLite under .rlt/prefect) unless one answers already;
# 3. serves the deployments (python -m deployments.serve) unless they are served already;
# 4. runs `prefect deployment run rlt/full-pipeline --watch` and prints the time per stage.
# The server and the deployments keep running for the UI (http://127.0.0.1:$RLT_PREFECT_PORT);
# `make stop` stops them. A second `make demo` is all cache hits.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
PY=.venv/bin/python
PREFECT=.venv/bin/prefect
PORT=${RLT_PREFECT_PORT:-4200}
mkdir -p .rlt
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
    [ $SECONDS -lt $deadline ] || { echo "demo: $what did not come up; see .rlt/*.log" >&2; exit 1; }
    sleep 1
  done
}

"$PY" -m rlt_core.models smollm2 >/dev/null  # the tiny profile's model, built once

if ! healthy; then
  echo "demo: starting the Prefect server on port $PORT (log: .rlt/server.log)"
  nohup "$PREFECT" server start --host 127.0.0.1 --port "$PORT" >.rlt/server.log 2>&1 &
  echo $! >.rlt/server.pid
  wait_for 120 "the Prefect server" healthy
fi
if ! alive .rlt/serve.pid; then
  echo "demo: serving the deployments (log: .rlt/serve.log)"
  nohup "$PY" -m deployments.serve --profile tiny --store artifacts >.rlt/serve.log 2>&1 &
  echo $! >.rlt/serve.pid
  wait_for 120 "the deployments" "$PREFECT" deployment inspect rlt/full-pipeline >/dev/null 2>&1
  sleep 3  # the runner polls for scheduled runs once it has registered them
fi

start=$SECONDS
"$PREFECT" deployment run rlt/full-pipeline --watch --watch-interval 5
echo "demo: rlt/full-pipeline finished in $((SECONDS - start)) s"
"$PY" -m flows.times rlt-stage-times
echo "demo: report and plots are Prefect artifacts (rlt-report) and under artifacts/report/;"
echo "      UI: http://127.0.0.1:$PORT  -  stop the server and deployments: make stop"
