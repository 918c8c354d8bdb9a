"""The paper's training launch rehearsed on this CPU: DeepSpeed ZeRO-3 over 2 processes.

Every training stage of the paper profiles launches with `configs/accelerate/zero3.yaml`
(ZeRO-3, weights sharded while they load, a plain model gathered on save). Here the four
training stages run through the project's launcher (`launch_stage`) with
`configs/accelerate/zero3_cpu.yaml`, which differs from it only where a CPU must (`use_cpu`,
float32): DeepSpeed's CPU accelerator, collectives on gloo, on the tiny profile's recipes with
tiny random models. Each stage is killed in one rank (SIGKILL to the RANK=1 worker after its
first checkpoint) and launched again: the rerun resumes from ZeRO-3's sharded optimizer states
and publishes a plain Hugging Face model.

What each test shows:
- teacher_sft: ZeRO-3 on 2 processes trains the same model as one process on the same global
  batch.
- teacher_rl: the reward's frozen student is whole in every process while the policy is
  sharded, and the rewards and the live policy's log-probs of the completions each rank drew
  equal a single process' on the same completions (`reward_probe.py` records them).
- teacher_rl, student_sft (optimizer offloaded to DeepSpeed's CPU Adam), student_rl: killed in
  one rank after checkpoint-1, whose gathered model is exactly its shards' float32 weights,
  then resumed and published as a plain model (teacher_rl: equal to its uninterrupted run).
- teacher_sft over two Ray nodes (`resources.<stage>.nodes`, `tasks.multinode`): killed on one
  node, resumed, equal to the uninterrupted one-node run.

Each launch starts two Python processes (about 10 s of imports each on these 2 cores). The
first offloaded launch in a virtual environment compiles DeepSpeed's CPU Adam (about 40 s),
cached in ~/.cache/torch_extensions. (DeepSpeed's shared-memory collectives op, which only its
inference uses, is kept from compiling: `rlt_core.devices.no_cpu_shm_collectives`.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlt_core import artifacts
from rlt_core.config import config_dir, load_config
from rlt_core.config.resources import StageResources
from rlt_core.logprobs import token_logprobs
from rlt_core.models import make_tiny_model
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.trl import RLTReward
from rlt_core.stages.data import run_data
from rlt_core.stages.launch import StageLaunchError, launch_stage, stage_arguments
from rlt_core.stages.specs import spec_of
from tests.fixtures_ray import RayNode

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
ZERO3 = config_dir() / "accelerate" / "zero3_cpu.yaml"
ZERO3_OFFLOAD = config_dir() / "accelerate" / "zero3_offload_cpu.yaml"
PROBE = Path(__file__).with_name("reward_probe.py")
STEPS = 3
# Every stage: 3 steps of a global batch of 4 (2 per process), a checkpoint after each step.
# SFT rows cut at 512 tokens (the teacher prompt is ~400), with gradient checkpointing as the
# paper trains; GRPO: 1 prompt x group 4 per step, 16-token completions.
SIZES = [
    "teacher_sft.num_train_samples=12",
    "teacher_sft.max_length=512",
    "teacher_sft.save_steps=1",
    "teacher_sft.gradient_checkpointing=true",
    f"teacher_rl.max_steps={STEPS}",
    "teacher_rl.max_completion_length=16",
    "student_sft.countdown.num_train_samples=12",
    "student_sft.countdown.batch_size=4",
    "student_sft.countdown.max_length=512",
    "student_sft.countdown.save_steps=1",
    "student_sft.countdown.gradient_checkpointing=true",
    f"student_rl.countdown.max_steps={STEPS}",
    "student_rl.countdown.max_completion_length=16",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_path: Path) -> dict:
    """Tiny models in every role and the tiny profile's data stage output (its countdown corpus
    carries traces, so it is also the student stages' dataset)."""
    root = tmp_path_factory.mktemp("zero3")
    policy = make_tiny_model(root / "policy", smollm2_tokenizer_path, seed=0)
    student = make_tiny_model(root / "student", smollm2_tokenizer_path, seed=1)
    overrides = [
        *SIZES,
        f"teacher_sft.model={policy}",
        f"teacher_rl.model={policy}",
        f"reward.student_model={student}",
        f"student_sft.countdown.model={student}",
        f"student_rl.countdown.model={student}",
    ]
    corpus = run_data(load_config("tiny", overrides), root / "data").path / "corpus.parquet"
    return {
        "root": root,
        "overrides": overrides,
        "corpus": corpus,
        "policy": policy,
        "student": student,
    }


def _launch(
    setup: dict, stage: str, store: Path, inputs: dict, recipe: str | None = None, config=ZERO3
) -> Path:
    ref = launch_stage(
        stage,
        profile="tiny",
        overrides=setup["overrides"],
        store=store,
        inputs=inputs,
        recipe=recipe,
        accelerate_config=config,
        num_processes=2,
    )
    return Path(ref.uri)


_LAUNCH = """
import json, sys
from pathlib import Path
from rlt_core.stages.launch import launch_stage
config, stage, store, recipe, inputs = sys.argv[1:6]
recipe, inputs, overrides = recipe or None, json.loads(inputs), sys.argv[6:]
launch_stage(stage, profile="tiny", overrides=overrides, store=store, inputs=inputs,
             recipe=recipe, accelerate_config=Path(config), num_processes=2)
"""


def _kill_rank_1_after_first_checkpoint(
    setup: dict,
    stage: str,
    store: Path,
    inputs: dict,
    recipe: str | None = None,
    config: Path = ZERO3,
) -> Path:
    """Launch `stage` in a driver process; SIGKILL its RANK=1 worker once checkpoint-1 is
    complete; the driver must then fail and leave no process behind. Returns checkpoint-1."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inputs_json = json.dumps({k: str(v) for k, v in inputs.items()})
    args = [str(config), stage, str(store), recipe or "", inputs_json]
    driver = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, *args, *setup["overrides"]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def ended() -> str | None:
        return driver.stderr.read().decode()[-3000:] if driver.poll() is not None else None

    _await_first_checkpoint(store, stage, ended)
    workers = _stage_processes(store)
    assert sorted(p.environ()["RANK"] for p in workers) == ["0", "1"], "expected two processes"
    (killed,) = _stage_processes(store, rank="1")
    killed.send_signal(signal.SIGKILL)
    assert driver.wait(timeout=120) != 0  # the launch failed ...
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"training processes outlived the failed launch: {alive}"  # ... cleanly
    assert not list(store.glob(f"{stage}/*"))  # nothing half-written taken as finished
    (checkpoint,) = store.glob(f".work/{stage}/*/checkpoints/checkpoint-1")
    return checkpoint


def _await_first_checkpoint(store: Path, stage: str, ended: Callable[[], str | None]) -> None:
    """Wait until the run of `stage` on `store` has a complete checkpoint-1; `ended()` says
    why the launch is over (then the wait fails), None while it runs."""
    pattern = f".work/{stage}/*/checkpoints/checkpoint-1/trainer_state.json"
    deadline = time.monotonic() + 300
    while not list(store.glob(pattern)):
        problem = ended()
        assert problem is None, f"the launch ended before checkpoint-1: {problem}"
        assert time.monotonic() < deadline, "no checkpoint-1 within 300 s"
        time.sleep(0.05)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(model_dir).state_dict()


def _check_zero3_checkpoint(checkpoint: Path) -> None:
    """A ZeRO-3 checkpoint: each rank's shard of the optimizer and of the float32 weights, and
    one gathered model whose weights are exactly those shards put together (DeepSpeed's own
    `zero_to_fp32` reading them)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    shards = {p.name for p in checkpoint.glob("global_step1/*_optim_states.pt")}
    assert shards == {
        "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
    } or shards == {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }, shards
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }
    gathered = load_file(checkpoint / "model.safetensors")
    joined = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    for name, tensor in gathered.items():
        assert tensor.shape == joined[name].shape and tensor.numel() > 0, name
        torch.testing.assert_close(tensor, joined[name], atol=0, rtol=0)


def _check_published(artifact: Path, stage: str) -> dict:
    """A finished artifact whose model is a plain Hugging Face model (no ZeRO shards), trained
    for STEPS steps by a run that resumed, whose work area is gone."""
    manifest = artifacts.read_manifest(artifact)
    assert manifest["stage"] == stage
    assert not list(artifact.rglob("global_step*")) and not list(artifact.rglob("*.pt"))
    train = manifest["metrics"]["train"]
    assert train["global_step"] == STEPS
    assert 1 <= train["resumed_from_step"] < STEPS
    assert manifest["metrics"]["batch"]["num_devices"] == 2
    work = artifact.parent.parent / ".work" / stage / artifact.name
    assert not work.exists()  # its checkpoints gone once published
    return manifest


def _same_weights(ours: Path, theirs: Path) -> None:
    mine, other = _weights(ours / "model"), _weights(theirs / "model")
    assert mine.keys() == other.keys()
    for name, tensor in other.items():
        # A resume restores the float32 shards, the RNG states and the data position, so it
        # continues the very computation: only the order of float sums could differ.
        torch.testing.assert_close(mine[name], tensor, atol=1e-6, rtol=0)


def test_teacher_sft_under_zero3_trains_what_one_process_trains(setup: dict) -> None:
    inputs = {"corpus": setup["corpus"]}
    whole = _launch(setup, "teacher_sft", setup["root"] / "whole", inputs)
    manifest = artifacts.read_manifest(whole)
    assert manifest["metrics"]["batch"] == {
        "global_batch": 4, "num_devices": 2, "per_device": 1, "grad_accum": 2,
    }  # fmt: skip
    assert manifest["metrics"]["train"]["global_step"] == STEPS
    assert not list(whole.rglob("global_step*")) and not list(whole.rglob("*.pt"))
    # The same run in one process (this one, as the stage's entry runs it in each rank): the
    # same global batch of 4 rows per step, there in 4 accumulated micro-batches of 1, here in
    # 2 per process, each token's loss over the global batch's token count either way. ZeRO-3
    # shards the weights, gradients and AdamW states but computes the same steps. The two
    # differ by float rounding in the gradient sums, which AdamW turns into differences far
    # below one step's size: an element moves at most about the learning rate per step, so
    # allow 1% of the schedule's sum.
    cfg = load_config("tiny", setup["overrides"])
    alone = Path(spec_of("teacher_sft").call(cfg, setup["root"] / "alone", inputs, None).uri)
    assert artifacts.read_manifest(alone)["metrics"]["batch"] == {
        "global_batch": 4, "num_devices": 1, "per_device": 1, "grad_accum": 4,
    }  # fmt: skip
    history = json.loads((whole / "log_history.json").read_text())
    budget = sum(entry["learning_rate"] for entry in history if "learning_rate" in entry)
    start, ours = _weights(setup["policy"]), _weights(whole / "model")
    theirs = _weights(alone / "model")
    moved = max((ours[k] - start[k]).abs().max().item() for k in ours)
    assert moved > 0.1 * budget, "the run barely trained: the comparison would be empty"
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, atol=0.01 * budget, rtol=0)
    setup["teacher_sft"] = whole  # teacher_rl starts from it; the two-node run must equal it


def test_teacher_rl_under_zero3_scores_with_a_whole_student_as_one_process_would(
    setup: dict, tmp_path: Path
) -> None:
    if "teacher_sft" not in setup:
        pytest.skip("needs the teacher_sft artifact of the test above")
    inputs = {"corpus": setup["corpus"], "teacher_sft": setup["teacher_sft"]}
    records = tmp_path / "records"
    whole = _probe_teacher_rl(setup, setup["root"] / "whole", inputs, records)
    manifest = artifacts.read_manifest(whole)
    assert manifest["metrics"]["batch"]["num_devices"] == 2
    steps = json.loads((whole / "reward_log.json").read_text())
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    for entry in steps:
        # TRL averages the logged terms over the processes, each on its own 2 completions;
        # the mean equals TRL's reward over all 4 only if both ranks scored.
        assert entry["reward"] == pytest.approx(entry["rlt/reward"], abs=1e-4)

    # The frozen student is whole in both processes; the policy it scores against is sharded.
    student = AutoModelForCausalLM.from_pretrained(setup["student"])
    shapes = {name: list(p.shape) for name, p in student.named_parameters()}
    policy_start = Path(setup["teacher_sft"]) / "model"
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in ranks:
        assert {name: shape for name, shape, _ in record["student"]} == shapes
        assert not any(sharded for *_, sharded in record["student"])
        assert record["teacher_sharded"], "the policy should be ZeRO-3 sharded"
        assert len(record["calls"]) == STEPS and len(record["teacher_logprobs"]) == STEPS

    # One process, whole models, the same completions: the first step's reward is taken before
    # any update, so the policy is still teacher_sft's model. Same float32 computation on the
    # same batches, summed in another order (other thread counts): values of order 10 agree to
    # ~1e-6; 1e-4 leaves a wide margin and still catches any wrong weight.
    tokenizer = AutoTokenizer.from_pretrained(policy_start)
    policy = AutoModelForCausalLM.from_pretrained(policy_start).eval()
    cfg = load_config("tiny", setup["overrides"])
    scorer = RLTScorer.with_student(cfg.reward, tokenizer)
    scorer.set_teacher(policy)
    reward = RLTReward(scorer, max_completion_length=cfg.teacher_rl.max_completion_length)
    for record in ranks:
        call = record["calls"][0]
        rewards = reward(None, None, call["completion_ids"], **call["columns"])
        _agree(rewards, call["reward"])
        _agree(reward.last_breakdown.r_kl, call["r_kl"])
        _agree(reward.last_breakdown.r_ss, call["r_ss"])
        scored = record["teacher_logprobs"][0]
        assert torch.tensor(scored["positions"]).any()
        with torch.no_grad():
            expected = token_logprobs(
                policy,
                torch.tensor(scored["input_ids"]),
                torch.tensor(scored["attention_mask"]),
                positions=torch.tensor(scored["positions"]),
                temperature=scored["temperature"],
                chunk_size=scored["chunk_size"],
            )
        _agree(expected, scored["logprobs"])

    store = setup["root"] / "killed"
    checkpoint = _kill_rank_1_after_first_checkpoint(setup, "teacher_rl", store, inputs)
    _check_zero3_checkpoint(checkpoint)
    resumed = _launch(setup, "teacher_rl", store, inputs)
    assert resumed.name == whole.name
    _check_published(resumed, "teacher_rl")
    _same_weights(resumed, whole)
    # the reward log spans both launches: the checkpoint carried the killed run's steps
    steps = json.loads((resumed / "reward_log.json").read_text())
    assert [entry["step"] for entry in steps] == list(range(1, STEPS + 1))


def _agree(ours: object, recorded: object) -> None:
    torch.testing.assert_close(torch.as_tensor(ours), torch.tensor(recorded), atol=1e-4, rtol=0)


def _probe_teacher_rl(setup: dict, store: Path, inputs: dict, records: Path) -> Path:
    """teacher_rl's real entry under the ZeRO-3 launch, its reward recorded (reward_probe.py)."""
    ref_out = records.parent / "ref.json"
    args = stage_arguments(
        "teacher_rl",
        profile="tiny",
        overrides=setup["overrides"],
        store=store,
        inputs=inputs,
        ref_out=ref_out,
    )
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO3)]
    command = [*launcher, "--num_processes", "2", str(PROBE), str(records), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(json.loads(ref_out.read_text())["uri"])


# student_sft with the optimizer offloaded, as paper-32b trains its 32B students
# (resources.student_sft.offload_optimizer): AdamW's states and step in DeepSpeed's CPU Adam.
@pytest.mark.parametrize(
    ("stage", "config"),
    [("student_sft", ZERO3_OFFLOAD), ("student_rl", ZERO3)],
    ids=["student_sft-offload", "student_rl"],
)
def test_student_stage_under_zero3_resumes_after_a_rank_is_killed(
    setup: dict, stage: str, config: Path
) -> None:
    inputs = {"dataset": setup["corpus"]}
    if stage == "student_rl":
        inputs["start_model"] = setup["student"]
    store = setup["root"] / f"killed-{stage}"
    checkpoint = _kill_rank_1_after_first_checkpoint(
        setup, stage, store, inputs, "countdown", config
    )
    _check_zero3_checkpoint(checkpoint)
    resumed = _launch(setup, stage, store, inputs, "countdown", config)
    manifest = _check_published(resumed, stage)
    if stage == "student_rl":  # the killed run's rewards came back with its checkpoint
        assert manifest["metrics"]["rewards"]["steps"] == list(range(1, STEPS + 1))
    trained, start = _weights(resumed / "model"), _weights(setup["student"])
    assert trained.keys() == start.keys()
    if stage == "student_sft":
        assert any(not torch.equal(trained[k], start[k]) for k in start), "nothing was trained"
    # student_rl's random student never solves a countdown question: every group's rewards are
    # equal, its advantages zero, and so are its updates; what is shown is the launch, the
    # sharded checkpoint, the resume and the publish.


def test_teacher_sft_over_two_ray_nodes_trains_and_resumes_after_one_node_is_killed(
    setup: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resources.teacher_sft.nodes: 2` as Ray places it: a placement group of one bundle per
    node (STRICT_SPREAD) over two Ray nodes on 127.0.0.1, one process each, one ZeRO-3 launch
    (`--num_machines 2`) over gloo. The worker node's process is killed after checkpoint-1;
    the run launched again resumes from ZeRO-3's sharded states and publishes what the
    uninterrupted one-node run published: the same computation (2 processes, ranks in the same
    places), continued exactly."""
    import ray

    from tasks.multinode import launch_across_nodes

    monkeypatch.setenv("RLT_PLACEMENT_TIMEOUT_S", "120")  # the nodes' workers inherit it
    nodes = [RayNode(cpus=1)]
    try:
        nodes.append(RayNode(cpus=1, address=nodes[0].address))
        ray.init(address=nodes[0].address, log_to_driver=False)
        given = StageResources(cpus=1, nodes=2)
        store = setup["root"] / "two-nodes"
        launch = {
            "profile": "tiny",
            "overrides": setup["overrides"],
            "store": store,
            "inputs": {"corpus": setup["corpus"]},
        }
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(launch_across_nodes, "teacher_sft", given, **launch)
            _await_first_checkpoint(
                store, "teacher_sft", lambda: str(first.exception()) if first.done() else None
            )
            (killed,) = _stage_processes(store, rank="1")
            killed.send_signal(signal.SIGKILL)
            with pytest.raises(StageLaunchError, match="one machine's part"):
                first.result(timeout=180)
        _, alive = psutil.wait_procs(_stage_processes(store), timeout=60)
        assert not alive, f"training processes outlived the failed launch: {alive}"
        assert not list(store.glob("teacher_sft/*"))
        (checkpoint,) = store.glob(".work/teacher_sft/*/checkpoints/checkpoint-1")
        _check_zero3_checkpoint(checkpoint)

        # Launched again as the Ray runner launches a stage: from a Ray task that holds a core
        # (`flows.runners.ray_options`), which Ray lends back while it waits for the group.
        driver = ray.remote(num_cpus=1, max_retries=0)(launch_across_nodes)
        ref, where = ray.get(driver.remote("teacher_sft", given, **launch), timeout=600)
        assert len(set(where)) == 2, f"both machine ranks ran on one Ray node: {where}"
        resumed = Path(ref.uri)
        manifest = _check_published(resumed, "teacher_sft")
        assert manifest["metrics"]["batch"]["global_batch"] == 4
        if "teacher_sft" not in setup:
            pytest.skip("needs the uninterrupted teacher_sft run of the first test")
        assert resumed.name == Path(setup["teacher_sft"]).name  # one key, wherever it ran
        _same_weights(resumed, Path(setup["teacher_sft"]))
    finally:
        ray.shutdown()
        for node in reversed(nodes):
            node.stop()


def _stage_processes(store: Path, rank: str | None = None) -> list[psutil.Process]:
    """The training processes of runs on `store` (any machine rank, or `rank`)."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(store) not in process.cmdline():  # its --store argument
                continue
            process_rank = process.environ().get("RANK")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if process_rank is not None and rank in (None, process_rank):
            found.append(process)
    return found
