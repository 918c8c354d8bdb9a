"""The fit planner (`rlt_core.fit`): figures worked by hand from the models' shapes, the
Hugging Face cache as the shapes' source, and a run that cannot fit refused before any stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlt_core import fit
from rlt_core.config import load_config
from rlt_core.fit import GIB, FitError, ModelShape, zero3_model_states
from rlt_core.stages.specs import SPECS, fit_profile

# config.json fields of the Qwen2.5 Instruct models (hub), and their published parameter counts
QWEN = {
    "Qwen/Qwen2.5-0.5B-Instruct": (24, 896, 4864, 14, 2, 151936, True, 494_032_768),
    "Qwen/Qwen2.5-1.5B-Instruct": (28, 1536, 8960, 12, 2, 151936, True, 1_543_714_304),
    "Qwen/Qwen2.5-7B-Instruct": (28, 3584, 18944, 28, 4, 152064, False, 7_615_616_512),
    "Qwen/Qwen2.5-32B-Instruct": (64, 5120, 27648, 40, 8, 152064, False, 32_763_876_352),
}


def qwen_config(name: str) -> dict:
    layers, hidden, inter, heads, kv, vocab, tied, _ = QWEN[name]
    return {
        "model_type": "qwen2", "num_hidden_layers": layers, "hidden_size": hidden,
        "intermediate_size": inter, "num_attention_heads": heads, "num_key_value_heads": kv,
        "vocab_size": vocab, "tie_word_embeddings": tied,
    }  # fmt: skip


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face hub cache holding only the config.json of the Qwen2.5 models and of the
    paper's reward student (a Qwen2.5-7B fine-tune), laid out as `huggingface_hub` writes it."""
    cache = tmp_path / "hub"
    configs = {name: qwen_config(name) for name in QWEN}
    configs["bespokelabs/Bespoke-Stratos-7B"] = qwen_config("Qwen/Qwen2.5-7B-Instruct")
    for name, config in configs.items():
        repo = cache / ("models--" + name.replace("/", "--"))
        (repo / "snapshots" / "0").mkdir(parents=True)
        (repo / "snapshots" / "0" / "config.json").write_text(json.dumps(config))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("name", list(QWEN))
def test_parameter_counts_match_the_published_ones(name: str) -> None:
    shape = ModelShape.from_config(qwen_config(name), name)
    assert shape.params == QWEN[name][-1]


@pytest.mark.parametrize("name", list(QWEN))
def test_the_shape_matches_transformers_model_and_deepspeeds_largest_layer(name: str) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = qwen_config(name)
    with torch.device("meta"):  # no memory: only the module tree and the parameters' sizes
        model = Qwen2ForCausalLM(Qwen2Config(**config))
    shape = ModelShape.from_config(config, name)
    assert shape.params == sum(p.numel() for p in model.parameters())
    # DeepSpeed's `estimate_zero3_model_states_mem_needs_all_live`: the largest module's own
    # parameters
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    assert shape.largest_layer_params == largest


def test_qwen_7b_by_hand() -> None:
    shape = ModelShape.from_config(qwen_config("Qwen/Qwen2.5-7B-Instruct"), "7b")
    # one layer: q 3584x3584 + k, v 3584x512 each + o 3584x3584, biases 3584 + 2x512,
    # MLP 3 x 3584 x 18944, two norms 2 x 3584
    layer = 3584 * 3584 * 2 + 2 * 3584 * 512 + (3584 + 1024) + 3 * 3584 * 18944 + 2 * 3584
    assert shape.layer_params == layer == 233_057_792
    # embedding and (untied) output head 152064 x 3584 each, 28 layers, final norm
    assert shape.params == 2 * 152064 * 3584 + 28 * layer + 3584
    assert shape.largest_layer_params == 152064 * 3584  # the embedding
    # K and V: 2 x 28 layers x 4 heads x 128 x 2 bytes = 57,344 bytes per token
    assert shape.kv_bytes_per_token(2) == 57_344
    assert shape.kv_bytes_per_token(2, tensor_parallel=2) == 28_672


def test_zero3_model_states_follow_deepspeeds_estimate() -> None:
    # DeepSpeed's estimate_zero3_model_states_mem_needs: 4 x largest layer + 18 x params / GPUs
    # (optimizer offloaded: 2 x params / GPUs; parameters too: the largest layer only)
    params, largest = 7_615_616_512, 544_997_376
    assert zero3_model_states(params, largest, 8) == 4 * largest + int(18 * params / 8)
    assert zero3_model_states(params, largest, 8) / GIB == pytest.approx(17.99, abs=0.01)
    assert zero3_model_states(params, largest, 8, offload_optimizer=True) == (
        4 * largest + int(2 * params / 8)
    )
    assert zero3_model_states(params, largest, 8, offload_params=True) == 4 * largest


def test_training_parts_by_hand() -> None:
    # a small shape: 2 layers, hidden 8, MLP 16, 2 heads of 4, 1 KV head, vocabulary 100
    shape = ModelShape("toy", 2, 8, 16, 2, 1, 4, 100, tied=True, qkv_bias=False)
    assert shape.params == 100 * 8 + 2 * (8 * (8 + 8) + 8 * 8 + 3 * 8 * 16 + 16) + 8
    # one GPU, fp32: weights, gradients and AdamW's two moments = 16 bytes per parameter;
    # per layer and token 4 bytes x (norms 4 x 8, q 8 and RoPE's 2 x 8, k and v 2 x 4 and
    # RoPE's 2 x 4, attention output 8, MLP 4 x 16) = 4 x 144 = 576 bytes
    assert shape.layer_activation_bytes(1, 4) == 576
    parts = fit.training_parts(shape, dtype="float32", gpus=1, micro_batch=2, tokens=10,
                               checkpointing=False, output_tokens=10)  # fmt: skip
    assert parts["model states"] == round(16 * shape.params / GIB, 2)
    assert parts["activations"] == round(2 * 20 * 576 / GIB, 2)
    checkpointed = fit.training_parts(shape, dtype="float32", gpus=1, micro_batch=2, tokens=10,
                                      checkpointing=True, output_tokens=10)  # fmt: skip
    # each layer's input (2 layers x 20 tokens x 8 x 4 bytes) plus one layer recomputed
    assert checkpointed["activations"] == round((2 * 20 * 8 * 4 + 20 * 576) / GIB, 2)


def test_the_output_head_is_trls_fused_head_by_hand() -> None:
    # 7B, bf16, one 16,384-token sequence: one 4,096 x 32,768 bf16 tile (256 MiB), and in the
    # backward fp32 gradients of the hidden states (16,384 x 3,584) and of the head's weight
    # (152,064 x 3,584), each cast back to bf16: 6 bytes per element
    shape = ModelShape.from_config(qwen_config("Qwen/Qwen2.5-7B-Instruct"), "7b")
    parts = fit.training_parts(shape, dtype="bfloat16", gpus=8, micro_batch=1, tokens=16384,
                               checkpointing=True, output_tokens=16384)  # fmt: skip
    expected = 4096 * 32768 * 2 + (16384 + 152064) * 3584 * 6
    assert expected == 3_890_741_248
    assert parts["output head"] == round(expected / GIB, 2) == 3.62


def test_engine_kv_room_in_full_sequences_by_hand() -> None:
    shape = ModelShape.from_config(qwen_config("Qwen/Qwen2.5-7B-Instruct"), "7b")
    parts, sequences = fit.engine_parts(shape, dtype="bfloat16", tensor_parallel=1,
                                        gpu_memory_gib=80, sequence_tokens=34_816)  # fmt: skip
    # 0.9 x 80 GiB - 2 x 7,615,616,512 bytes of weights - 1.5 GiB overhead = 60,467,565,568
    # bytes, over 57,344 x 34,816 = 1,996,488,704 bytes per sequence: 30.3
    room = 0.9 * 80 * GIB - 2 * 7_615_616_512 - 1.5 * GIB
    assert room == 60_467_565_568 and sequences == 30
    assert parts["engine weights"] == round(2 * 7_615_616_512 / GIB, 2)


def test_a_shape_not_on_this_machine_is_said_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    estimate = SPECS["teacher_sft"].estimate(load_config("paper-7b"))
    assert estimate.fits is None and "shape unknown offline" in estimate.summary()
    assert "Qwen/Qwen2.5-7B-Instruct" in estimate.summary()


def test_paper_7b_sft_fits_eight_80gb_gpus_and_one_24gb_gpu_does_not(hub_cache: Path) -> None:
    estimate = SPECS["teacher_sft"].estimate(load_config("paper-7b"))
    assert estimate.fits is True and estimate.summary().startswith("fits: ")
    assert estimate.parts["model states"] == pytest.approx(17.99, abs=0.01)
    small = load_config("paper-7b", ["resources.teacher_sft.gpus=1",
                                     "resources.teacher_sft.gpu_memory_gib=24"])  # fmt: skip
    cramped = SPECS["teacher_sft"].estimate(small)
    # one GPU: 8 bytes per bf16 parameter for weights, gradients and moments = 56.7 GiB
    assert cramped.parts["model states"] == pytest.approx(8 * 7_615_616_512 / GIB, abs=0.01)
    assert cramped.fits is False and "more GPUs" in cramped.summary()
    with pytest.raises(FitError, match=r"teacher_sft \(Qwen/Qwen2.5-7B-Instruct, 1 x 24 GiB\)"):
        fit.check_fit(fit_profile(small))


def test_a_run_that_cannot_fit_is_refused_before_any_stage(hub_cache: Path, tmp_path, monkeypatch):
    from flows.common import start_run

    impossible = ["resources.teacher_sft.gpus=1", "resources.teacher_sft.gpu_memory_gib=24"]
    store = tmp_path / "store"
    with pytest.raises(FitError, match=r"RLT_IGNORE_FIT=1"):
        start_run("paper-7b", impossible, str(store))
    assert not store.exists()  # nothing written, no stage ran
    monkeypatch.setenv("RLT_IGNORE_FIT", "1")
    assert fit.ignored()


def test_paper_7b_grpo_fits_eight_80gb_gpus_at_one_completion_per_micro_batch(
    hub_cache: Path,
) -> None:
    cfg = load_config("paper-7b")
    estimate = SPECS["teacher_rl"].estimate(cfg)
    assert estimate.micro_batch == 1 and estimate.fits is True, estimate.describe()
    # checkpointed activations of 1 x 18,432 tokens: 28 layer inputs + one layer recomputed
    shape = ModelShape.from_config(qwen_config("Qwen/Qwen2.5-7B-Instruct"), "7b")
    tokens = 2048 + 16384
    expected = 28 * tokens * 3584 * 2 + shape.layer_activation_bytes(tokens, 2)
    assert estimate.parts["activations"] == pytest.approx(expected / GIB, abs=0.01)
    eight = SPECS["teacher_rl"].estimate(
        load_config("paper-7b", ["resources.teacher_rl.micro_batch=8"])
    )
    assert eight.micro_batch == 8 and eight.fits is False
    assert "resources.teacher_rl.micro_batch=1" in eight.summary()
    assert SPECS["student_rl"].estimate(cfg, "limr").fits is True


def test_paper_32b_students_fit_with_the_optimizer_offloaded(hub_cache: Path) -> None:
    cfg = load_config("paper-32b")
    runs = {(f.stage, f.model): f for f in fit_profile(cfg)}
    student = runs[("student_sft", "Qwen/Qwen2.5-32B-Instruct")]
    params = 32_763_876_352
    largest = 152064 * 5120  # the embedding
    # DeepSpeed with the optimizer offloaded: 4 x largest layer + 2 x params / GPUs
    assert student.parts["model states"] == pytest.approx(
        (4 * largest + 2 * params // 8) / GIB, abs=0.01
    )
    assert student.fits is True and any("CPU memory" in note for note in student.notes)
    assert all(f.fits is True for f in runs.values()), [f.summary() for f in runs.values()]
    on_gpu = load_config("paper-32b", ["resources.student_sft.offload_optimizer=false"])
    kept = [f for f in fit_profile(on_gpu) if f.stage == "student_sft"]
    assert kept and all(f.fits is False for f in kept)
    assert "resources.student_sft.offload_optimizer=true" in kept[0].summary()


def test_a_run_over_two_nodes_shards_its_states_over_all_their_gpus(hub_cache: Path) -> None:
    # paper-32b's 32B student without the offload does not fit one 8 x 80 GB node; over two
    # nodes ZeRO-3 shards its states over 16 GPUs: 4 x largest layer + 18 x params / 16.
    one = load_config("paper-32b", ["resources.student_sft.offload_optimizer=false"])
    two = load_config(
        "paper-32b",
        ["resources.student_sft.offload_optimizer=false", "resources.student_sft.nodes=2"],
    )
    (alone,) = [f for f in fit_profile(one) if f.stage == "student_sft"][:1]
    (spread,) = [f for f in fit_profile(two) if f.stage == "student_sft"][:1]
    params, largest = 32_763_876_352, 152064 * 5120
    assert (alone.gpus, spread.gpus) == (8, 16)
    assert spread.parts["model states"] == pytest.approx(
        (4 * largest + 18 * params / 16) / GIB, abs=0.01
    )
    assert alone.fits is False and spread.fits is True, spread.summary()


def test_offloading_needs_a_zero3_launch() -> None:
    from rlt_core.config import ConfigError

    with pytest.raises(ConfigError, match=r"offload_optimizer.*2 or more GPUs"):
        load_config("tiny", ["resources.teacher_sft.offload_optimizer=true"])


def test_gpu_small_plans_on_one_24gb_gpu_and_its_data_stage_runs(
    hub_cache: Path, tmp_path: Path, smollm2_tokenizer_path
) -> None:
    import pandas as pd
    from transformers import AutoTokenizer

    from rlt_core.stages import run_data

    cfg = load_config("gpu-small")
    fits = fit_profile(cfg)
    assert {f.stage for f in fits} == {name for name, spec in SPECS.items() if spec.fit}
    assert {(f.model, f.gpus, f.gpu_memory_gib) for f in fits} == {
        ("Qwen/Qwen2.5-0.5B-Instruct", 1, 24.0)
    }
    assert all(f.fits is True for f in fits), [f.summary() for f in fits]
    # the one CPU stage, on the profile's own sizes; the teacher's tokenizer (which measures
    # think lengths) is the local SmolLM2 one instead of the hub's Qwen2.5
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    data = run_data(cfg, tmp_path / "store", tokenizer=tokenizer)
    out = data.path
    corpus = pd.read_parquet(out / "corpus.parquet")
    test = pd.read_parquet(out / "eval" / "countdown.parquet")
    assert (len(corpus), len(test)) == (4096, 256)
    assert not set(corpus.question) & set(test.question)
    # the recipes' 4,096-token contexts hold the longest countdown trace with room to spare
    assert data.report["think_tokens"]["max"] < 4096 // 2, data.report["think_tokens"]
