"""`benchmarks/gpu_check.sh --dry`: the lent GPU machine's one script, every part at toy sizes
on this CPU, so that the one run a GPU session gets does not fail on a script error."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.smoke

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_every_part_in_its_dry_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in done.stderr, done.stderr[-3000:]
    assert "chunked" in (tmp_path / "reward_bench.txt").read_text()
    steps = json.loads((tmp_path / "grpo_steps.json").read_text())
    assert [row["step"] for row in steps] == [1] and steps[0]["total"] > 0
    # the dry run measures the four fit parts in one process (fit.json); a GPU run, one each
    fit = json.loads((tmp_path / "fit.json").read_text())
    by_part = {row["part"]: row for row in fit if row["part"] != "activations"}
    assert list(by_part) == ["sft", "grpo", "scorer"]
    for row in by_part.values():
        assert row["measured_gib"] > 0 and row["estimated_gib"] > 0
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0 and row["seconds"] > 0
    scorer = by_part["scorer"]
    assert scorer["tokens_per_second"] > 0 and 0 <= scorer["mfu"] < 1
    activations = [row for row in fit if row["part"] == "activations"]
    assert [row["checkpointing"] for row in activations] == [False, True]
    # measured in one process at toy sizes (a dry run's figures mean nothing): what the forward
    # saves can round to 0 GiB; a step always allocates
    assert all(row["saved_gib"] >= 0 and row["step_gib"] > 0 for row in activations)
    assert all(row["step_estimated_gib"] > 0 for row in activations)
    grpo = by_part["grpo"]
    # the planner's teacher_rl estimate without rollouts: the reward's student, its logits and
    # the reference are all in it
    assert {"reward student", "reward logits", "reference model"} <= set(grpo["estimate_parts"])
    assert "colocated rollouts" not in grpo["estimate_parts"]
    tests = (tmp_path / "gpu_tests.txt").read_text()  # no CUDA here: every GPU test skips
    assert " skipped" in tests and "passed" not in tests and "failed" not in tests
