#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh needs on the lent GPU machine, in .gpu-carry/ (ignored
# by git, named in the device call's `carry`): the Python 3.12 wheels of
# requirements/gpu-check.txt and SmolLM2's tokenizer (the GRPO breakdown's random model uses
# it). Needs PyPI. Refuses a bundle over 60 MiB (64 MiB travel with a call, the tree included).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu-carry && mkdir -p .gpu-carry/wheels
grep -v '^#' requirements/gpu-check.txt | pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  -d .gpu-carry/wheels -r /dev/stdin
.venv/bin/python - <<'PY'
import shutil
from rlt_core.models import materialize_smollm2_tokenizer
shutil.copytree(materialize_smollm2_tokenizer(), ".gpu-carry/tokenizer")
PY
size=$(du -sm .gpu-carry | cut -f1)
echo "gpu_carry: .gpu-carry holds ${size} MiB"
[ "$size" -le 60 ] || { echo "gpu_carry: over 60 MiB, it would not travel" >&2; exit 1; }
