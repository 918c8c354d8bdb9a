"""The SFT stages on a tiny random Llama sharing SmolLM2's tokenizer: data, arguments, runs,
resume after a killed process, and bad input caught before training."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import SchedulerType

from rlt_core import artifacts, formats, sft_data
from rlt_core.config import PAPER_STUDENT_SFT, StudentSFTConfig, TeacherSFTConfig
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.models import system_prompt_of
from rlt_core.stages.sft import build_sft_trainer, run_student_sft, run_teacher_sft, sft_arguments
from rlt_core.training import plan_batch
from rlt_core.training.run import last_checkpoint, precision_flags

ROOT = Path(__file__).resolve().parents[2]

# Short recipes for a 2-core CPU: 2 rows per step, prompts are ~330 (student) and ~390
# (teacher) tokens because of the Figure 6/7 system prompts, so the explanations get cut.
STUDENT = StudentSFTConfig(
    num_train_samples=None, num_epochs=1.0, batch_size=2, dtype="float32",
    gradient_checkpointing=False, max_length=384, save_steps=1,
)  # fmt: skip
TEACHER = TeacherSFTConfig(
    num_train_samples=None, num_epochs=1.0, batch_size=2, dtype="float32",
    gradient_checkpointing=False, max_length=448, save_steps=1,
)  # fmt: skip


def _trace_rows(path: Path, n: int) -> Path:
    """n countdown rows (question, solution, thought = the written search) as a parquet file."""
    train, _ = countdown_splits(n, 1, seed=0, num_numbers=(3,))
    countdown_rows(train, seed=0).to_parquet(path, index=False)
    return path


def _weights(path: Path | str) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(str(path)).state_dict()


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_path: Path):
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_path))


# --------------------------------------------------------------------------- data


def test_end_of_turn_is_chatml_im_end(tokenizer) -> None:
    assert sft_data.end_of_turn(tokenizer) == "<|im_end|>"


def test_teacher_examples_train_only_on_explanation_and_keep_generation_prompt_ids(
    tokenizer,
) -> None:
    rows = pd.DataFrame({"question": ["What is 2+2?"], "solution": ["4"], "thought": ["Add."]})
    prompts, completions = sft_data.teacher_pairs(tokenizer, rows)
    # The prefill (Figure 7) sits in the prompt, the explanation + closing tag + turn end in
    # the completion.
    assert prompts[0] == formats.render_teacher_prompt(tokenizer, "What is 2+2?", "4")
    assert prompts[0].endswith("<|end_of_solution|>\n\n<|begin_of_explanation|>\n\n")
    assert completions[0] == "Add.\n\n<|end_of_explanation|><|im_end|>"
    dataset, stats = sft_data.tokenize_pairs(tokenizer, prompts, completions, max_length=4096)
    ids, mask = dataset[0]["input_ids"], dataset[0]["completion_mask"]
    prompt_ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    # The training context is token for token the prompt a generator sees (the final "\n\n"
    # stays one token; tokenizing the joined text would split it in two).
    assert ids[: len(prompt_ids)] == prompt_ids
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    trained = [token for token, bit in zip(ids, mask, strict=True) if bit]
    assert tokenizer.decode(trained) == completions[0]
    assert stats == {"examples": 1, "truncated": 0, "dropped_prompt_too_long": 0,
                     "longest_tokens": len(ids)}  # fmt: skip


def test_student_examples_train_on_the_whole_assistant_turn(tokenizer) -> None:
    rows = pd.DataFrame({"question": ["Q?"], "solution": ["S."], "thought": ["T."]})
    prompts, completions = sft_data.student_pairs(tokenizer, rows)
    assert prompts[0] == formats.render_student_prompt(tokenizer, "Q?")
    assert prompts[0].endswith("<|im_start|>assistant\n")
    assert completions[0] == (
        "<|begin_of_thought|>\n\nT.\n\n<|end_of_thought|>\n\n"
        "<|begin_of_solution|>\n\nS.\n\n<|end_of_solution|><|im_end|>"
    )


def test_a_raw_response_is_the_assistant_turn_verbatim(tokenizer, tmp_path: Path) -> None:
    # raw_traces rows: the answer as the model wrote it (here without the format's tags), or
    # none (that row falls back to thought + solution, and a row with neither is dropped).
    rows = pd.DataFrame({
        "id": ["a", "b", "c"], "question": ["Q1?", "Q2?", "Q3?"],
        "response": ["2 + 3 is 5, so the answer is 5.", None, None],
        "thought": [None, "T.", None], "solution": [None, "S.", None],
    })  # fmt: skip
    rows.to_parquet(tmp_path / "raw.parquet")
    kept, stats = sft_data.read_sft_rows(tmp_path / "raw.parquet", num_rows=None, seed=0)
    assert kept["id"].tolist() == ["a", "b"] and stats["dropped_no_thought"] == 1
    prompts, completions = sft_data.student_pairs(tokenizer, kept)
    assert prompts == [formats.render_student_prompt(tokenizer, q) for q in ("Q1?", "Q2?")]
    assert completions[0] == "2 + 3 is 5, so the answer is 5.<|im_end|>"
    assert completions[1].startswith("<|begin_of_thought|>\n\nT.")


def test_tokenize_pairs_counts_cut_samples_and_drops_prompts_that_fill_max_length(
    tokenizer,
) -> None:
    # SmolLM2 ids: "one two three" = 3 tokens, "one two three four five" = 5, "a" = 1,
    # "Ok." = 2. With max_length 5:
    #   row 0: prompt 3 + completion 2 = 5 tokens -> fits;
    #   row 1: prompt 1 + completion 5 = 6 > 5   -> cut (kept, TRL keeps its first 5);
    #   row 2: prompt 5 >= 5, no completion token would remain -> dropped.
    prompts = ["one two three", "a", "one two three four five"]
    completions = ["Ok.", "one two three four five", "Ok."]
    dataset, stats = sft_data.tokenize_pairs(tokenizer, prompts, completions, max_length=5)
    assert stats == {"examples": 2, "truncated": 1, "dropped_prompt_too_long": 1,
                     "longest_tokens": 6}  # fmt: skip
    assert dataset["completion_mask"] == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="raise the recipe's max_length"):
        sft_data.tokenize_pairs(tokenizer, prompts[2:], completions[2:], max_length=5)


def test_read_sft_rows_drops_rows_without_a_thought(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d"],
            "question": ["q"] * 4,
            "solution": ["s"] * 4,
            "thought": ["t1", None, "  ", "t4"],
        }
    )
    rows.to_parquet(tmp_path / "rows.parquet")
    kept, stats = sft_data.read_sft_rows(tmp_path / "rows.parquet", num_rows=None, seed=0)
    # b has no thought, c a blank one: 4 - 2 = 2 rows left.
    assert kept["id"].tolist() == ["a", "d"]
    assert stats == {"rows_read": 4, "dropped_no_thought": 2, "rows_used": 2}
    one, stats = sft_data.read_sft_rows(tmp_path / "rows.parquet", num_rows=1, seed=0)
    assert len(one) == 1 and stats["rows_used"] == 1
    rows.assign(thought=None).to_parquet(tmp_path / "none.parquet")
    with pytest.raises(ValueError, match="none of its 4 rows has a thought"):
        sft_data.read_sft_rows(tmp_path / "none.parquet", num_rows=None, seed=0)


# --------------------------------------------------------------------------- arguments


def test_trainer_receives_every_paper_value_of_table5_1k(
    tiny_model_path: Path, tokenizer, tmp_path: Path
) -> None:
    cfg = dataclasses.replace(PAPER_STUDENT_SFT["1k"], model=str(tiny_model_path))
    plan = plan_batch(cfg.batch_size, 1, 4)  # 16 = 4 per device x 4 accumulation x 1 device
    dataset, _ = sft_data.tokenize_pairs(tokenizer, ["one two"], ["three"], max_length=16)
    trainer = build_sft_trainer(cfg, tokenizer, dataset, tmp_path, plan)
    args = trainer.args
    assert args.learning_rate == 1e-5
    assert args.lr_scheduler_type == SchedulerType.COSINE_WITH_MIN_LR
    assert args.lr_scheduler_kwargs == {"min_lr_rate": pytest.approx(0.1)}
    assert args.warmup_steps == 0.05
    assert (args.weight_decay, args.adam_beta1, args.adam_beta2) == (1e-4, 0.9, 0.95)
    assert (args.adam_epsilon, args.max_grad_norm, args.num_train_epochs) == (1e-8, 1.0, 5.0)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 4)
    assert args.max_length == 16384 and args.completion_only_loss is True
    assert args.gradient_checkpointing is True
    assert (args.bf16, args.fp16) == (False, False)  # CPU: fp32 whatever the recipe says
    assert (args.seed, args.save_steps, args.output_dir) == (42, 100, str(tmp_path / "checkpoints"))
    # The optimizer and schedule built from them: 100 steps, warmup ceil(0.05 * 100) = 5.
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8
    lrs = []
    for _ in range(100):
        lrs.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    lrs.append(trainer.lr_scheduler.get_last_lr()[0])
    # Step 5 ends the warmup at the peak 1e-5; step 100 is the cosine's end: the floor
    # min_lr = 1e-6 (rate 0.1 + 0.9 * 0.5 * (1 + cos(pi)) = 0.1).
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(1e-5)
    assert lrs[100] == pytest.approx(1e-6)


def test_teacher_arguments_are_the_1k_recipe_at_double_the_epochs(tmp_path: Path) -> None:
    kwargs = sft_arguments(TeacherSFTConfig(), tmp_path, plan_batch(16, 1, 1))
    # Appendix A.1: Table 5 "1K" (batch 16, wd 1e-4, betas 0.9/0.95, warmup 0.05), 2 x 5 epochs.
    assert kwargs["num_train_epochs"] == 10.0
    assert kwargs["gradient_accumulation_steps"] * kwargs["per_device_train_batch_size"] == 16
    assert (kwargs["weight_decay"], kwargs["adam_beta2"], kwargs["warmup_steps"]) == (
        1e-4, 0.95, 0.05,
    )  # fmt: skip


def test_precision_follows_the_hardware() -> None:
    cpu = {"bf16": False, "fp16": False, "use_cpu": True}  # use_cpu: gloo under accelerate
    assert precision_flags("bfloat16", cuda=False) == cpu
    assert precision_flags("float16", cuda=True) == {"bf16": False, "fp16": True, "use_cpu": False}
    assert precision_flags("float32", cuda=True) == {"bf16": False, "fp16": False, "use_cpu": False}


def test_last_checkpoint_skips_one_cut_by_a_kill(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path) is None
    for step, state in ((2, "{}"), (4, "{}"), (6, '{"glob')):  # step 6: state half written
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoints" / "checkpoint-8").mkdir()  # step 8: no state yet
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-4"


# --------------------------------------------------------------------------- runs


def test_teacher_sft_trains_and_writes_a_complete_artifact(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    corpus = _trace_rows(tmp_path / "corpus.parquet", 4)
    cfg = dataclasses.replace(TEACHER, model=str(tiny_model_path))
    ref = run_teacher_sft(cfg, corpus, tmp_path / "store", max_per_device_batch=1)
    out = Path(ref.uri)
    assert out.parent == tmp_path / "store" / "teacher_sft"
    assert sorted(p.name for p in out.iterdir()) == ["log_history.json", "manifest.json", "model"]
    manifest = artifacts.read_manifest(out)
    # 4 rows / global batch 2 = 2 steps; 1 per device -> 2 accumulation steps.
    assert manifest["metrics"]["train"]["global_step"] == 2
    assert manifest["metrics"]["batch"] == {"global_batch": 2, "num_devices": 1,
                                            "per_device": 1, "grad_accum": 2}  # fmt: skip
    assert manifest["config"]["sft_config"]["completion_only_loss"] is True
    history = json.loads((out / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2]
    before, after = _weights(tiny_model_path), _weights(out / "model")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert set(changed) == set(before), f"unchanged: {set(before) - set(changed)}"
    assert AutoTokenizer.from_pretrained(str(out / "model")).chat_template
    again = run_teacher_sft(cfg, corpus, tmp_path / "store", max_per_device_batch=1)
    assert again == ref  # same config and input: the finished artifact is reused


def test_the_profiles_micro_batch_reaches_the_trainer_and_not_the_key(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    from rlt_core.config import load_config
    from rlt_core.stages.specs import TEACHER_SFT

    corpus = _trace_rows(tmp_path / "corpus.parquet", 4)
    cfg = dataclasses.replace(TEACHER, model=str(tiny_model_path))
    default = dataclasses.replace(load_config("tiny"), teacher_sft=cfg)
    two = dataclasses.replace(
        load_config("tiny", ["resources.teacher_sft.micro_batch=2"]), teacher_sft=cfg
    )
    assert TEACHER_SFT.key(two, None, {}) == TEACHER_SFT.key(default, None, {})
    ref = TEACHER_SFT.call(two, tmp_path / "store", {"corpus": corpus})
    # global batch 2 on one device: both samples in one micro-batch, no accumulation
    assert artifacts.read_manifest(Path(ref.uri))["metrics"]["batch"] == {
        "global_batch": 2, "num_devices": 1, "per_device": 2, "grad_accum": 1}  # fmt: skip


def test_the_subset_seed_is_in_the_key_of_both_sft_stages(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    # 2 of 6 rows per run: the subset seed picks which. A run with another seed trained on
    # other rows, so it must not be served the first run's model (it was, before the seed
    # joined the key).
    rows = _trace_rows(tmp_path / "rows.parquet", 6)
    runs = (
        (run_teacher_sft, dataclasses.replace(TEACHER, model=str(tiny_model_path))),
        (run_student_sft, dataclasses.replace(STUDENT, model=str(tiny_model_path))),
    )
    for run, recipe in runs:
        cfg = dataclasses.replace(recipe, num_train_samples=2)
        first = run(cfg, rows, tmp_path / "store", subset_seed=1)
        second = run(cfg, rows, tmp_path / "store", subset_seed=2)
        assert Path(first.uri).parent == Path(second.uri).parent  # the same stage ...
        assert first.uri != second.uri  # ... in its own artifact per seed
        seeds = [artifacts.read_manifest(r.uri)["config"]["subset_seed"] for r in (first, second)]
        assert seeds == [1, 2]
        assert run(cfg, rows, tmp_path / "store", subset_seed=1) == first  # still cached


def test_a_student_carries_the_system_prompt_of_its_rows(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    # Rows without one: the default; rows with their own (a Bespoke corpus): that text, for
    # student_rl and evaluation to read from the model (rlt_core.models.system_prompt_of).
    cfg = dataclasses.replace(STUDENT, model=str(tiny_model_path), num_train_samples=2)
    rows = _trace_rows(tmp_path / "rows.parquet", 2)
    plain = run_student_sft(cfg, rows, tmp_path / "store")
    assert system_prompt_of(Path(plain.uri) / "model") == formats.STUDENT_SYSTEM_PROMPT
    own = pd.read_parquet(rows).assign(system="A prompt of this corpus.")
    own.to_parquet(tmp_path / "own.parquet", index=False)
    ref = run_student_sft(cfg, tmp_path / "own.parquet", tmp_path / "store")
    assert system_prompt_of(Path(ref.uri) / "model") == "A prompt of this corpus."
    assert artifacts.read_manifest(ref.uri)["metrics"]["data"]["system_prompts"] == 1


_KILLABLE_RUN = """
import sys, time
from transformers import TrainerCallback
from rlt_core.config import StudentSFTConfig
from rlt_core.stages.sft import run_student_sft

class Slow(TrainerCallback):  # slow each step down so the parent can kill mid-run
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(1.0)

cfg = StudentSFTConfig(**eval(sys.argv[1]))
run_student_sft(cfg, sys.argv[2], sys.argv[3], callbacks=[Slow()])
"""


def test_killed_run_resumes_from_its_checkpoint(tiny_model_path: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(STUDENT, model=str(tiny_model_path), batch_size=1)
    traces, store = _trace_rows(tmp_path / "traces.parquet", 5), tmp_path / "store"  # 5 steps
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", _KILLABLE_RUN, repr(fields), str(traces), str(store)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(store.glob(".work/student_sft/*/checkpoints/checkpoint-2/trainer_state.json")):
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint-2 within 180 s"
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    (work,) = store.glob(".work/student_sft/*")  # killed: its work area, nothing published
    assert not list(store.glob("student_sft/*"))
    out = store / "student_sft" / work.name
    ref = run_student_sft(cfg, traces, store)
    train = artifacts.read_manifest(ref.uri)["metrics"]["train"]
    # Resumed from checkpoint 2 (or 3, if the kill came after the next save), on to step 5.
    assert 2 <= train["resumed_from_step"] < 5 and train["global_step"] == 5
    assert train["steps_this_run"] == 5 - train["resumed_from_step"]
    assert Path(ref.uri) == out and not work.exists()  # checkpoints gone once published
    assert AutoModelForCausalLM.from_pretrained(str(out / "model")).config.num_hidden_layers == 2


# --------------------------------------------------------------------------- bad input


def test_missing_columns_fail_before_training(tiny_model_path: Path, tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "question": ["q"], "answer": ["s"]}).to_parquet(
        tmp_path / "x.parquet"
    )
    cfg = dataclasses.replace(STUDENT, model=str(tiny_model_path))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['solution', 'thought'\]"):
        run_student_sft(cfg, tmp_path / "x.parquet", tmp_path / "store")
    assert not list((tmp_path / "store").rglob("checkpoints"))


def test_missing_model_path_fails_before_training(tmp_path: Path) -> None:
    corpus = _trace_rows(tmp_path / "corpus.parquet", 2)
    # The config checks the path when it is built; the stage checks again when it runs (an
    # upstream checkpoint can be deleted in between).
    (tmp_path / "gone").mkdir()
    cfg = dataclasses.replace(TEACHER, model=str(tmp_path / "gone"))
    (tmp_path / "gone").rmdir()
    with pytest.raises(ValueError, match="neither an offline model.*nor an existing local path"):
        run_teacher_sft(cfg, corpus, tmp_path / "store")


def test_tokenizer_without_chat_template_fails_before_training(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "plain"
    AutoModelForCausalLM.from_pretrained(str(tiny_model_path)).save_pretrained(model_dir)
    plain = AutoTokenizer.from_pretrained(str(tiny_model_path))
    plain.chat_template = None
    plain.save_pretrained(model_dir)
    corpus = _trace_rows(tmp_path / "corpus.parquet", 2)
    cfg = dataclasses.replace(TEACHER, model=str(model_dir))
    with pytest.raises(formats.FormatError, match="has no chat template"):
        run_teacher_sft(cfg, corpus, tmp_path / "store")
