#!/usr/bin/env bash
# `make demo`: the whole RLT pipeline on the CPU `tiny` profile, through Prefect.
#
# 1. installs .venv from the lock (scripts/setup.sh) and builds the offline SmolLM2 model;
# 2. starts a local Prefect server (SQLite under .rlt/prefect) unless one answers already, and
# 3. serves the deployments (python -m deployments.serve) unless they are served already
#    (both: scripts/up.sh);
# 4. runs `prefect deployment run rlt/full-pipeline --watch` and prints the time per stage.
# The server and the deployments keep running for the UI (http://127.0.0.1:$RLT_PREFECT_PORT);
# `make stop` stops them. A second `make demo` is all cache hits.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
PY=.venv/bin/python
PREFECT=.venv/bin/prefect
PORT=${RLT_PREFECT_PORT:-4200}
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.rlt/prefect}
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:$PORT/api}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS=rlt_core
export PYTHONUNBUFFERED=1

"$PY" -m rlt_core.models smollm2 >/dev/null  # the tiny profile's model, built once
bash scripts/up.sh  # the Prefect server and the served deployments (make stop stops them)

start=$SECONDS
"$PREFECT" deployment run rlt/full-pipeline --watch --watch-interval 5
echo "demo: rlt/full-pipeline finished in $((SECONDS - start)) s"
"$PY" -m flows.times rlt-stage-times
echo "demo: report and plots are Prefect artifacts (rlt-report) and under artifacts/report/;"
echo "      UI: http://127.0.0.1:$PORT  -  stop the server and deployments: make stop"
