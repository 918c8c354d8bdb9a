"""Keys that cannot go stale: change one thing a stage reads, see exactly which keys move.

Every model and data source a config names is keyed by what it holds (`rlt_core.identity`):
local files and folders by their bytes, offline models by the file they are built from, hub
ids by the commit the local hub cache resolves them to. Nothing here loads a model."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from rlt_core import artifacts, identity
from rlt_core.config import (
    PipelineConfig,
    Reference,
    available_profiles,
    key_dict,
    load_config,
)
from rlt_core.identity import input_identity, reference_identity, references
from rlt_core.stages.plan import StoreIndex, plan_stage
from rlt_core.stages.specs import EVALUATE, SPECS

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _runs(cfg: PipelineConfig) -> dict[str, str]:
    """Every stage run's key digest (inputs held fixed), by `stage[recipe]`."""
    keys = {}
    for spec in SPECS.values():
        recipes = getattr(cfg, spec.recipe_section) if spec.recipe_section else {None: None}
        for recipe in recipes:
            keys[f"{spec.name}[{recipe}]" if recipe else spec.name] = spec.key(
                cfg, recipe, {}
            ).digest
    return keys


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A corpus file, a teacher and a student directory, and a hub cache holding
    `org/student` at COMMIT_A."""
    monkeypatch.setenv("RLT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(identity, "_MEMORY", {})
    corpus = tmp_path / "corpus.parquet"
    pd.DataFrame({"id": ["1"], "question": ["q"], "solution": ["s"]}).to_parquet(corpus)
    paths = {"corpus": corpus}
    for name in ("teacher", "student"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights v1")
        paths[name] = tmp_path / name
    hub = tmp_path / "hub"
    (hub / "models--org--student" / "refs").mkdir(parents=True)
    (hub / "models--org--student" / "refs" / "main").write_text(COMMIT_A)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    paths["hub"] = hub
    return paths


def _config(world: dict[str, Path], student: str | None = None) -> PipelineConfig:
    return load_config("tiny", [
        "data.corpus_schema=question_solution",
        f"data.corpus_source={world['corpus']}",
        f"teacher_sft.model={world['teacher']}",
        f"teacher_rl.model={world['teacher']}",
        f"reward.student_model={student or world['student']}",
    ])  # fmt: skip


def _retrain(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"weights v2, retrained in place")


def _edit_corpus(world: dict[str, Path]) -> None:
    pd.DataFrame({"id": ["1"], "question": ["q"], "solution": ["another"]}).to_parquet(
        world["corpus"]
    )


READS_STUDENT = {"teacher_rl", "rank_traces", "teacher_eval"}  # the reward's frozen student
READS_TEACHER = {"data", "teacher_sft", "teacher_rl"}  # data: think lengths in its tokens
CASES: dict[str, tuple[Callable[[dict[str, Path]], None], set[str]]] = {
    "the corpus file's bytes": (_edit_corpus, {"data"}),
    "the student's weights in place": (lambda w: _retrain(w["student"]), READS_STUDENT),
    "the teacher's weights in place": (lambda w: _retrain(w["teacher"]), READS_TEACHER),
    "nothing": (lambda w: None, set()),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_change_moves_exactly_the_keys_of_the_stages_that_read_it(
    case: str, world: dict[str, Path]
) -> None:
    change, expected = CASES[case]
    before = _runs(_config(world))
    change(world)
    after = _runs(_config(world))
    moved = {run.split("[")[0] for run in before if before[run] != after[run]}
    assert moved == expected


def test_a_hub_revision_moves_the_keys_of_the_stages_that_read_it(
    world: dict[str, Path],
) -> None:
    cfg = _config(world, student="org/student")
    before = _runs(cfg)
    assert (
        SPECS["teacher_rl"].key(cfg, None, {}).config["references"]["reward.student_model"]
        == f"org/student@{COMMIT_A}"
    )  # the commit the hub cache resolves `main` to
    (world["hub"] / "models--org--student" / "refs" / "main").write_text(COMMIT_B)
    after = _runs(cfg)
    assert {run for run in before if before[run] != after[run]} == READS_STUDENT


def test_an_evaluated_models_weights_are_its_identity(world: dict[str, Path]) -> None:
    cfg = _config(world)
    eval_dir = world["corpus"]

    def key() -> str:
        upstream = {"model": input_identity(world["student"]), "eval_dir": input_identity(eval_dir)}
        return EVALUATE.key(cfg, None, upstream).digest

    first = key()
    _retrain(world["student"])
    assert key() != first


def test_plan_says_which_content_changed(world: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(world)
    old = SPECS["teacher_rl"].key(cfg, None, {})
    out = old.dir(tmp_path / "store")
    out.mkdir(parents=True)
    artifacts.write_manifest(out, stage="teacher_rl", config=old.config, upstream={},
                             metrics={}, key=old)  # fmt: skip
    _retrain(world["student"])
    index = StoreIndex(str(tmp_path / "store"))
    row = plan_stage("teacher_rl", "teacher_rl", cfg, None, {}, [], index)
    assert row.status == "run"
    assert row.reasons == ["input changed: reward.student_model (its content)"]


def test_a_big_folder_is_hashed_once_per_change(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[Path] = []
    real = artifacts.files_digest
    monkeypatch.setattr(artifacts, "files_digest", lambda p: hashed.append(p) or real(p))
    first = reference_identity(str(world["student"]))
    monkeypatch.setattr(identity, "_MEMORY", {})  # a new process: only the cache file remains
    assert reference_identity(str(world["student"])) == first and len(hashed) == 1
    _retrain(world["student"])
    assert reference_identity(str(world["student"])) != first and len(hashed) == 2


def _looks_like_a_reference(value: object) -> bool:
    text = str(value)
    return isinstance(value, str) and (text.startswith("offline:") or "/" in text)


@pytest.mark.parametrize("profile", available_profiles())
def test_every_reference_valued_field_of_every_profile_is_keyed_by_its_content(
    profile: str,
) -> None:
    # Generated from the profiles: a string field holding a path, an offline name or a hub id
    # must be one `rlt_core.identity` resolves (a `reference` field of the config).
    unkeyed = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif _looks_like_a_reference(value) and not isinstance(value, Reference):
            unkeyed.append(f"{path.lstrip('.')}={value}")

    walk(key_dict(load_config(profile)), "")
    assert not unkeyed, f"fields naming what a stage reads, keyed by name only: {unkeyed}"


def _fields(section: type, path: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every field of a config section and of the sections it holds, by its dotted path."""
    found = []
    hints = typing.get_type_hints(section)
    for field in dataclasses.fields(section):
        found.append((f"{path}{field.name}", field))
        kind = hints[field.name]
        nested = [kind, *typing.get_args(kind)]
        for inner in nested:
            if dataclasses.is_dataclass(inner):
                found += _fields(inner, f"{path}{field.name}.")
    return found


def test_every_reference_field_is_a_string_field() -> None:
    tagged = [(p, f) for p, f in _fields(PipelineConfig) if f.metadata.get("reference")]
    assert tagged, "no config field is marked as a reference"
    assert all("str" in str(f.type) for _, f in tagged), tagged


def test_a_reference_is_declared_on_its_field_not_found_by_its_name(tmp_path: Path) -> None:
    # A field called `model` that is not marked is just a string: an API model's name does
    # not make a key hash a folder of the same name.
    @dataclasses.dataclass(frozen=True)
    class Chat:
        model: str = "gpt-4.1-mini"
        weights: str = dataclasses.field(default="", metadata={"reference": True})

    (tmp_path / "gpt-4.1-mini").mkdir()
    (tmp_path / "gpt-4.1-mini" / "w.bin").write_bytes(b"w")
    folder = str(tmp_path / "gpt-4.1-mini")
    marked = key_dict(Chat(model=folder, weights=folder))
    assert type(marked["model"]) is str and isinstance(marked["weights"], Reference)
    assert list(references({"chat": marked})) == ["chat.weights"]


MODEL_STAGES = {name for name, spec in SPECS.items() if spec.dtype is not None}
LAUNCHED = {name for name, spec in SPECS.items() if spec.trains}  # training launches


def test_the_dtype_a_stage_really_runs_in_is_keyed(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny profile asks for float32; a profile asking for bf16 runs it in float32 on a CPU
    # and in bf16 on a GPU: two different artifacts.
    cfg = load_config("tiny", ["teacher_sft.dtype=bfloat16"])
    monkeypatch.setattr("rlt_core.devices.gpu_count", lambda: 0)
    on_cpu = _runs(cfg)
    assert SPECS["teacher_sft"].key(cfg, None, {}).config["numerics"]["dtype"] == "float32"
    monkeypatch.setattr("rlt_core.devices.gpu_count", lambda: 1)
    on_gpu = _runs(cfg)
    assert SPECS["teacher_sft"].key(cfg, None, {}).config["numerics"]["dtype"] == "bfloat16"
    assert {run.split("[")[0] for run in on_cpu if on_cpu[run] != on_gpu[run]} == MODEL_STAGES


def test_the_accelerate_configs_content_is_keyed_for_training_launches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlt_core import devices

    cfg = load_config("tiny")
    edited = tmp_path / "zero3.yaml"
    edited.write_text(devices.zero3_config().read_text())
    monkeypatch.setattr(devices, "zero3_config", lambda: edited)
    monkeypatch.setattr(devices, "gpu_count", lambda: 8)  # a node whose stages launch ZeRO-3
    before = _runs(cfg)
    edited.write_text(edited.read_text().replace("mixed_precision: bf16", "mixed_precision: fp16"))
    after = _runs(cfg)
    assert {run.split("[")[0] for run in before if before[run] != after[run]} == LAUNCHED


def test_offloading_is_keyed_for_training_launches_and_the_micro_batch_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlt_core import devices

    monkeypatch.setattr(devices, "gpu_count", lambda: 8)  # a node whose stages launch ZeRO-3
    eight = [f"resources.{stage}.gpus=8" for stage in sorted(LAUNCHED)]
    before = _runs(load_config("tiny", eight))
    offloaded = _runs(load_config("tiny", [*eight, "resources.student_sft.offload_optimizer=true"]))
    assert {run for run in before if before[run] != offloaded[run]} == {
        f"student_sft[{recipe}]" for recipe in load_config("tiny").student_sft
    }
    micro = _runs(
        load_config("tiny", [*eight, *(f"resources.{s}.micro_batch=1" for s in LAUNCHED)])
    )
    assert micro == before


def test_a_pinned_hub_revision_loads_from_the_cache_and_is_keyed_by_its_commit(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from rlt_core.models import resolve_model

    hub = tmp_path / "hub"
    repo = hub / "models--org--tiny"
    shutil.copytree(tiny_model_path, repo / "snapshots" / COMMIT_A)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(COMMIT_A)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert Path(resolve_model("org/tiny@v1")) == repo / "snapshots" / COMMIT_A
    assert reference_identity("org/tiny@v1") == f"org/tiny@{COMMIT_A}"
    cfg = load_config("tiny", ["reward.student_model=org/tiny@v1"])
    refs = SPECS["teacher_rl"].key(cfg, None, {}).config["references"]
    assert refs["reward.student_model"] == f"org/tiny@{COMMIT_A}"  # the commit that was used
    with pytest.raises(ValueError, match="'v2' is not in the local hub cache.*offline"):
        resolve_model("org/tiny@v2")


def test_an_s3_object_is_keyed_by_its_etag(s3_env, s3_bucket: str, tmp_path: Path) -> None:
    client = s3_env.client()
    client.put_object(Bucket=s3_bucket, Key="corpus.parquet", Body=b"first rows")
    first = reference_identity(f"s3://{s3_bucket}/corpus.parquet")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings per instance
    client.put_object(Bucket=s3_bucket, Key="corpus.parquet", Body=b"edited rows")
    second = reference_identity(f"s3://{s3_bucket}/corpus.parquet")
    assert first != second and second.startswith(f"s3://{s3_bucket}/corpus.parquet@")
