"""teacher_rl end to end with the real SmolLM2-135M-Instruct as teacher and frozen student: the
tiny profile's recipe and reward on the data stage's countdown corpus, one GRPO step, and its
reward curves. (teacher_eval's comparison is tests/unit/test_teacher_eval.py's, on tiny models,
and the e2e pipeline's.)"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM

from rlt_core import artifacts
from rlt_core.config import load_config
from rlt_core.stages.data import run_data
from rlt_core.stages.teacher_rl import REWARD_CURVES, REWARD_LOG, run_teacher_rl

pytestmark = pytest.mark.smoke


def test_smollm2_teacher_takes_a_grpo_step_on_the_rlt_reward(
    smollm2_model_path: Path, tmp_path: Path
) -> None:
    cfg = load_config("tiny")
    data = run_data(cfg, tmp_path / "store")
    # The tiny recipe (Table 3 values, fp32, transformers generation) cut to 1 step of
    # 1 prompt x group 4 with 32-token completions (~380 prompt tokens each). A group of 2
    # with 16 tokens sampled two identical completions here: equal rewards, zero advantages
    # (frac_reward_zero_std 1) and a zero gradient, so nothing moved.
    recipe = dataclasses.replace(
        cfg.teacher_rl,
        model=str(smollm2_model_path),
        max_steps=1,
        batch_size=4,
        num_generations=4,
        max_completion_length=32,
    )
    reward_cfg = dataclasses.replace(cfg.reward, student_model=str(smollm2_model_path))
    corpus = data.path / "corpus.parquet"
    ref = run_teacher_rl(recipe, reward_cfg, None, corpus, tmp_path / "store")  # no warm-up
    out = Path(ref.uri)
    manifest = artifacts.read_manifest(out)
    assert manifest["metrics"]["train"]["global_step"] == 1
    (step,) = json.loads((out / REWARD_LOG).read_text())
    assert step["step"] == 1
    for term in ("rlt/r_ss", "rlt/r_kl", "rlt/reward", "rlt/penalty_rate", "rlt/think_len"):
        assert math.isfinite(step[term]), (term, step)
    # r_SS is a mean log-prob of the solution tokens (Eq. 3): at most 0.
    assert step["rlt/r_ss"] <= 0.0
    assert step["frac_reward_zero_std"] == 0.0  # the group's rewards differ: a policy gradient
    before = AutoModelForCausalLM.from_pretrained(str(smollm2_model_path)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(out / "model")).state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed, "no parameter moved after one GRPO step"
    # The reward curves of the run: a PNG beside the reward log.
    with Image.open(out / REWARD_CURVES) as figure:
        assert figure.format == "PNG"
