"""Two training processes on this CPU, as on a node: teacher_sft and teacher_rl launched by the
project's launcher (`rlt_core.stages.launch.launch_stage`) through `accelerate launch` with
`configs/accelerate/ddp.yaml` (gloo), on the tiny profile's recipes with tiny random models.

Each stage runs once uninterrupted and once killed in one rank (SIGKILL to the RANK=1 worker
after the first checkpoint) and launched again: the rerun resumes in the same artifact
directory and ends where the uninterrupted run ended. Each launch starts two Python processes
(about 10 s of imports each on these 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM

from rlt_core import artifacts
from rlt_core.config import config_dir, load_config
from rlt_core.models import make_tiny_model
from rlt_core.stages.data import run_data
from rlt_core.stages.launch import launch_stage

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
DDP = config_dir() / "accelerate" / "ddp.yaml"
# 16 SFT rows in global batches of 4 (2 per process): 4 steps, a checkpoint after each, on
# rows cut at 512 tokens (the teacher prompt is ~400: what is tested is the processes, not
# the length); GRPO: 4 steps of 1 prompt x group 4 (2 completions per process).
SIZES = [
    "teacher_sft.num_train_samples=16",
    "teacher_sft.max_length=512",
    "teacher_sft.save_steps=1",
    "teacher_rl.max_steps=4",
    "teacher_rl.max_completion_length=16",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> dict:
    """Tiny models in every role and the tiny profile's data stage output."""
    root = tmp_path_factory.mktemp("two-processes")
    policy = make_tiny_model(root / "policy", smollm2_tokenizer_path, seed=0)
    student = make_tiny_model(root / "student", smollm2_tokenizer_path, seed=1)
    overrides = [
        *SIZES,
        f"teacher_sft.model={policy}",
        f"teacher_rl.model={policy}",
        f"reward.student_model={student}",
    ]
    corpus = run_data(load_config("tiny", overrides), root / "data").path / "corpus.parquet"
    return {"root": root, "overrides": overrides, "corpus": corpus}


def _launch(setup: dict, stage: str, store: Path, inputs: dict) -> artifacts.ArtifactRef:
    return launch_stage(
        stage,
        profile="tiny",
        overrides=setup["overrides"],
        store=store,
        inputs=inputs,
        accelerate_config=DDP,
        num_processes=2,
    )


_LAUNCH = """
import json, sys
from rlt_core.config import config_dir
from rlt_core.stages.launch import launch_stage
stage, store, inputs, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
launch_stage(stage, profile="tiny", overrides=overrides, store=store, inputs=inputs,
             accelerate_config=config_dir() / "accelerate" / "ddp.yaml", num_processes=2)
"""


def _kill_rank_1_after_first_checkpoint(setup: dict, stage: str, store: Path, inputs: dict):
    """Launch `stage` in a driver process; SIGKILL its RANK=1 worker once checkpoint-1 is on
    disk; the driver must then fail (the other rank is stopped by the launcher)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [stage, str(store), json.dumps({k: str(v) for k, v in inputs.items()})]
    driver = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, *args, *setup["overrides"]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while not list(store.glob(f".work/{stage}/*/checkpoints/checkpoint-1/trainer_state.json")):
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint-1 within 240 s"
        time.sleep(0.05)
    workers = [
        p for p in psutil.Process(driver.pid).children(recursive=True) if _rank(p) is not None
    ]
    assert sorted(_rank(p) for p in workers) == ["0", "1"], "expected two training processes"
    next(p for p in workers if _rank(p) == "1").send_signal(signal.SIGKILL)
    assert driver.wait(timeout=120) != 0  # the launch failed ...
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"training processes outlived the failed launch: {alive}"  # ... cleanly


def _rank(process: psutil.Process) -> str | None:
    try:
        return process.environ().get("RANK")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _weights(artifact: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(artifact / "model").state_dict()


def _without_paths(value: object) -> object:
    """`value` without the trainer's output and logging directories (they name the store)."""
    if isinstance(value, dict):
        return {
            k: _without_paths(v) for k, v in value.items() if k not in ("output_dir", "logging_dir")
        }
    return value


def _same_run(resumed: Path, whole: Path) -> None:
    """The resumed artifact is the uninterrupted one: same key, config, inputs and weights."""
    assert resumed.name == whole.name  # one cache key for the same config and inputs
    first, second = artifacts.read_manifest(resumed), artifacts.read_manifest(whole)
    for field in ("stage", "config", "upstream"):
        assert _without_paths(first[field]) == _without_paths(second[field]), field
    assert first["metrics"]["batch"] == second["metrics"]["batch"]
    assert first["metrics"]["train"]["global_step"] == second["metrics"]["train"]["global_step"]
    assert first["metrics"]["train"]["resumed_from_step"] >= 1
    ours, theirs = _weights(resumed), _weights(whole)
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, atol=1e-6, rtol=0)


def test_teacher_sft_on_two_processes_resumes_after_a_rank_is_killed(setup: dict) -> None:
    inputs = {"corpus": setup["corpus"]}
    whole = Path(_launch(setup, "teacher_sft", setup["root"] / "whole", inputs).uri)
    manifest = artifacts.read_manifest(whole)
    # The global batch of 4 split over the 2 processes: 2 each, as 2 micro-batches of 1 (the
    # SFT stages' default micro-batch); 16 rows make 4 steps.
    assert manifest["metrics"]["batch"] == {
        "global_batch": 4, "num_devices": 2, "per_device": 1, "grad_accum": 2,
    }  # fmt: skip
    assert manifest["metrics"]["train"]["global_step"] == 4
    store = setup["root"] / "killed"
    _kill_rank_1_after_first_checkpoint(setup, "teacher_sft", store, inputs)
    (cut,) = store.glob(".work/teacher_sft/*")  # the work area of the cut run
    assert not list(store.glob("teacher_sft/*"))  # nothing half-written taken as finished
    # One checkpoint for the two processes: one model, both ranks' RNG states.
    checkpoint = cut / "checkpoints" / "checkpoint-1"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
    assert len(list(checkpoint.glob("model*.safetensors"))) == 1
    resumed = Path(_launch(setup, "teacher_sft", store, inputs).uri)
    assert resumed == store / "teacher_sft" / cut.name and not cut.exists()
    _same_run(resumed, whole)
    setup["teacher_sft"] = whole


def test_teacher_rl_on_two_processes_scores_each_ranks_completions(setup: dict) -> None:
    if "teacher_sft" not in setup:
        pytest.skip("needs the teacher_sft artifact of the test above")
    inputs = {"corpus": setup["corpus"], "teacher_sft": setup["teacher_sft"]}
    whole = Path(_launch(setup, "teacher_rl", setup["root"] / "whole", inputs).uri)
    manifest = artifacts.read_manifest(whole)
    assert manifest["metrics"]["batch"] == {
        "global_batch": 4, "num_devices": 2, "per_device": 2, "grad_accum": 1,
        "prompts_per_step": 1,
    }  # fmt: skip
    steps = json.loads((whole / "reward_log.json").read_text())
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    for entry in steps:
        # TRL averages the reward's logged terms over the processes, each on its own 2
        # completions; the mean equals TRL's reward over all 4 only if both ranks scored.
        assert entry["reward"] == pytest.approx(entry["rlt/reward"], abs=1e-4)
        assert entry["rlt/time/step"] > 0
    store = setup["root"] / "killed"
    _kill_rank_1_after_first_checkpoint(setup, "teacher_rl", store, inputs)
    resumed = Path(_launch(setup, "teacher_rl", store, inputs).uri)
    _same_run(resumed, whole)
