#!/usr/bin/env bash
# `make stop`: stop the Prefect server and the served deployments that `make demo` started.
cd "$(dirname "$0")/.."
for name in serve server; do
  if [ -f ".rlt/$name.pid" ]; then
    kill "$(cat ".rlt/$name.pid")" 2>/dev/null && echo "stopped $name ($(cat ".rlt/$name.pid"))"
    rm -f ".rlt/$name.pid"
  fi
done
