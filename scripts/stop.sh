#!/usr/bin/env bash
# `make stop`: stop the served deployments and the Prefect server that `make demo` started
# (scripts/up.sh), each with every process it started: its process group gets SIGTERM, then
# SIGKILL if anything of it is still there after $RLT_STOP_GRACE seconds (30). "stopped" is
# said only once nothing of the group is left; exit 1 if something could not be stopped.
cd "$(dirname "$0")/.."
STATE=${RLT_STATE_DIR:-.rlt}
GRACE=${RLT_STOP_GRACE:-30}
status=0

alive() { kill -0 -- "$1" 2>/dev/null; }
wait_gone() {  # wait_gone TARGET SECONDS
  local deadline=$((SECONDS + $2))
  while alive "$1" && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  ! alive "$1"
}

for name in serve server; do
  pidfile="$STATE/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  target="-$pid"                        # its process group (started with setsid) ...
  alive "$target" || target="$pid"      # ... or the process alone (started otherwise)
  if alive "$target"; then
    kill -TERM -- "$target" 2>/dev/null
    if ! wait_gone "$target" "$GRACE"; then
      echo "stop: $name ($pid) still running ${GRACE} s after SIGTERM; sending SIGKILL" >&2
      kill -KILL -- "$target" 2>/dev/null
      wait_gone "$target" 10
    fi
  fi
  if alive "$target"; then
    echo "stop: $name ($pid) is still running" >&2
    status=1
  else
    echo "stopped $name ($pid)"
    rm -f "$pidfile"
  fi
done
exit $status
