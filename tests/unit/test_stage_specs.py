"""One declaration per stage (rlt_core.stages.specs): keys hold exactly the config a stage reads,
the artifact key is the orchestrator's cache key, and `rlt plan` says what would run and why."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from rlt_core import artifacts
from rlt_core.config import (
    ConfigError,
    PipelineConfig,
    available_profiles,
    load_config,
)
from rlt_core.identity import input_identity
from rlt_core.stages.data import run_data
from rlt_core.stages.plan import stage_cache_key
from rlt_core.stages.specs import DATA, SPECS, TEACHER_SFT, StageSpec, check_config
from tasks.runtime import input_digest

PROFILES = [p for p in ("tiny", "paper-7b", "paper-32b") if p in available_profiles()]
Path_ = tuple[str, ...]


def _leaves(obj: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every leaf value of the config, by its path (recipes of a mapping by their name)."""
    if dataclasses.is_dataclass(obj):
        for field in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, field.name), (*path, field.name))
    elif isinstance(obj, Mapping):
        for name, value in obj.items():
            yield from _leaves(value, (*path, name))
    else:
        yield path, obj


def _replace(obj: Any, path: Path_, value: Any) -> Any:
    """`obj` with the leaf at `path` set to `value` (frozen dataclasses and mappings rebuilt)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value)})
    changed = {**obj, head: _replace(obj[head], rest, value)}
    return MappingProxyType(changed) if isinstance(obj, MappingProxyType) else changed


def _alternatives(cfg: PipelineConfig, path: Path_, value: Any, seen: dict[str, set]) -> list:
    """Other values for one leaf: other numbers, the flipped flag, the other choices of a
    Literal field, every other value the profiles give a field of that name (e.g. each
    `dataset`), other recipe names for the runs."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, max(value - 1, 0), 0, 1, 2]
    if isinstance(value, float):
        return [value * 1.1, value * 0.5, value + 0.1, value - 0.05, 0.0, 0.5, 1.0]
    if value is None:
        return [1, 2, 0.5, "x", "offline:smollm2-135m-instruct"]
    if isinstance(value, str):
        return [*_choices(cfg, path), value + "-x", *sorted(seen.get(path[-1], ()))]
    if isinstance(value, tuple):
        runs = path[0].endswith("_runs")
        recipes = getattr(cfg, path[0].removesuffix("_runs")) if runs else {}
        extra = [(*value, name) for name in recipes if name not in value]
        return [value[:-1], *extra] if value else [("x",), *extra]
    raise AssertionError(f"no alternative for {path}: {value!r}")


def _choices(cfg: PipelineConfig, path: Path_) -> list[str]:
    """The values a Literal-typed field allows."""
    parent: Any = cfg
    for name in path[:-1]:
        parent = parent[name] if isinstance(parent, Mapping) else getattr(parent, name)
    if not dataclasses.is_dataclass(parent):
        return []
    hint = typing.get_type_hints(type(parent)).get(path[-1])
    options = [a for a in typing.get_args(hint) if isinstance(a, str)]
    return options if typing.get_origin(hint) is typing.Literal else []


def _valid(cfg: PipelineConfig, path: Path_, values: list) -> list[PipelineConfig]:
    """The configs with each alternative at `path` that validation accepts: the config's own
    and the stages' declarations' (`check_config`)."""
    configs = []
    for value in values:
        try:
            changed = _replace(cfg, path, value)
            check_config(changed)
        except ConfigError:
            continue
        configs.append(changed)
    return configs


def _reads(stage: str, recipe: str | None, path: Path_, cfg: PipelineConfig) -> bool | None:
    """Whether a run of `stage` depends on the config value at `path` (the paper's pipeline:
    SPEC.md). None: it depends on it only through a derived choice (which optional tables the
    data stage writes), so a change may or may not matter."""
    head = path[0]
    if stage == "data":
        if path == ("data", "subset_seed"):  # the training stages draw their own subsets
            return False
        if head == "data" or path in (("teacher_sft", "model"), ("evaluate", "tasks")):
            return True
        derived = head in ("student_sft", "student_rl") and path[-1] == "dataset"
        return None if derived or head in ("student_sft_runs", "student_rl_runs") else False
    if stage == "generate_traces":
        uses_reward = cfg.generate_traces.num_candidates > 1 or cfg.generate_traces.score_traces
        return head == "generate_traces" or (head == "reward" and uses_reward)
    if stage == "teacher_eval":  # samples as teacher_rl's rollouts do, scores with the reward
        rollout = ("max_completion_length", "temperature", "top_p", "top_k", "min_p",
                   "repetition_penalty")  # fmt: skip
        sampled = head == "teacher_rl" and path[1] in rollout
        return head in ("teacher_eval", "reward") or sampled
    if stage == "refine_traces":  # the answers depend on the model and sampling, not on where
        # the endpoint is, its key or how the requests are sent (concurrency, retries, shards)
        return head == "refine_traces" and path[1] in (
            "model", "temperature", "top_p", "max_tokens", "seed",
        )  # fmt: skip
    # Every other stage reads what its declaration hands its entry function: the config
    # sections (a recipe of a recipe section) and the subset seed its rows are drawn with.
    arguments = SPECS[stage].config_args(cfg, recipe)
    if path == ("data", "subset_seed"):
        return "subset_seed" in arguments
    return any(path[: len(where)] == where for where in _sections(cfg, arguments.values()))


def _sections(cfg: PipelineConfig, values: Any) -> list[Path_]:
    """Where in `cfg` each of `values` is held (by identity): a section's path, or a
    recipe's `(section, name)`."""
    found = []
    for value in values:
        for field in dataclasses.fields(cfg):
            section = getattr(cfg, field.name)
            if section is value:
                found.append((field.name,))
            elif isinstance(section, Mapping):
                found += [(field.name, name) for name, item in section.items() if item is value]
    return found


def _runs(cfg: PipelineConfig) -> Iterator[tuple[StageSpec[Any], str | None]]:
    for spec in SPECS.values():
        recipes = getattr(cfg, spec.recipe_section) if spec.recipe_section else {None: None}
        for recipe in recipes:
            yield spec, recipe


def _digest(spec: StageSpec[Any], cfg: PipelineConfig, recipe: str | None) -> str | None:
    """The digest of the config part of the stage's key (its inputs and code held fixed, the
    key changes exactly when this does: `StageKey.digest` hashes it with them)."""
    try:
        return artifacts.digest_json(spec.key_config(**spec.config_args(cfg, recipe)))
    except (KeyError, ValueError):  # an alternative no valid config can hold (unknown recipe)
        return None


@pytest.mark.parametrize("profile", PROFILES)
def test_a_config_value_is_in_a_stage_key_iff_the_stage_reads_it(profile: str) -> None:
    configs = [load_config(p) for p in PROFILES]
    seen: dict[str, set] = {}
    for other in configs:
        for path, value in _leaves(other):
            if isinstance(value, str):
                seen.setdefault(path[-1], set()).add(value)
    cfg = load_config(profile)
    base = {(spec.name, recipe): _digest(spec, cfg, recipe) for spec, recipe in _runs(cfg)}
    wrong = []
    for path, value in _leaves(cfg):
        others = [alt for alt in _alternatives(cfg, path, value, seen) if alt != value]
        changed_cfgs = _valid(cfg, path, others)
        for spec, recipe in _runs(cfg):
            expected = _reads(spec.name, recipe, path, cfg)
            if expected is None:
                continue
            if not changed_cfgs:
                continue  # no valid config differs in this value alone (a cross-field rule)
            digests = [_digest(spec, changed, recipe) for changed in changed_cfgs]
            changed = any(d is not None and d != base[spec.name, recipe] for d in digests)
            if changed != expected:
                wrong.append(f"{spec.name}[{recipe}] {'.'.join(path)}: changed={changed}")
    assert not wrong, f"{len(wrong)} key(s) wrong on {profile}:\n" + "\n".join(wrong[:20])


def test_the_subset_seed_is_read_by_every_stage_that_draws_rows() -> None:
    # The bug this guards: the SFT stages drew rows with data.subset_seed but left it out of
    # their key, so a new seed returned the model trained on the old subset.
    cfg = load_config("tiny")
    reseeded = load_config("tiny", ["data.subset_seed=7"])
    for spec, recipe in _runs(cfg):
        moved = spec.key(cfg, recipe, {}).digest != spec.key(reseeded, recipe, {}).digest
        assert moved == (spec.name in ("teacher_sft", "student_sft", "student_rl")), spec.name


@pytest.mark.parametrize("stage", sorted(SPECS))
def test_each_entry_function_takes_exactly_what_its_declaration_gives(stage: str) -> None:
    spec = SPECS[stage]
    cfg = load_config("tiny")
    recipe = next(iter(getattr(cfg, spec.recipe_section))) if spec.recipe_section else None
    given = {"work", *spec.config_args(cfg, recipe), *spec.input_names}
    params = inspect.signature(spec.entry_function()).parameters
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
    assert required <= given, f"{spec.entry} needs {sorted(required - given)}"
    assert given <= set(params), f"{spec.entry} takes no {sorted(given - set(params))}"
    # The key's config is built from the very arguments the entry function receives.
    assert spec.key_of(spec.config_args(cfg, recipe), {}) == spec.key(cfg, recipe, {})


@pytest.mark.parametrize("stage", sorted(SPECS))
def test_no_stage_module_keys_finds_or_publishes_its_own_run(stage: str) -> None:
    # The owner (rlt_core.owner, through StageSpec.run) keys, leases, resumes and publishes;
    # a stage module that did any of it itself would be a second owner of its runs.
    source = inspect.getsource(importlib.import_module(SPECS[stage].module))
    for owned in ("key_of(", ".key(", "StageKey", "is_complete(out", "write_manifest(",
                  "load_ref(out", ".dir(store"):  # fmt: skip
        assert owned not in source, f"{SPECS[stage].module} does the owner's {owned!r}"


def test_the_artifact_directory_key_is_the_orchestrators_cache_key(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    ref = run_data(cfg, tmp_path).ref  # DATA.call also measures think lengths (e2e tier)
    out = Path(ref.uri)
    assert out == DATA.key(cfg, None, {}).dir(tmp_path)
    assert stage_cache_key("data", cfg, {}) == f"data-{out.name}"
    manifest = artifacts.read_manifest(out)
    assert manifest["key"]["digest"] == out.name and manifest["key"]["modules"]
    # An input as the stage sees it (a local path) and as the orchestrator does (a ref and a
    # file name) has one identity, so both sides compute one key for the next stage.
    as_ref = {"ref": ref.to_dict(), "file": DATA.outputs.corpus}
    path = out / DATA.outputs.corpus
    assert input_digest(as_ref) == input_identity(path) == f"{ref.digest}:corpus.parquet"
    assert input_digest(ref.to_dict()) == input_identity(out) == ref.digest
    # A model reference: what it is built from, the same on both sides (rlt_core.identity).
    offline = input_digest("offline:smollm2-135m-instruct")
    assert offline == input_identity("offline:smollm2-135m-instruct")
    assert offline.startswith("offline:smollm2-135m-instruct@")
    stage_side = TEACHER_SFT.key(cfg, None, {"corpus": input_identity(path)})
    orchestrator_side = stage_cache_key("teacher_sft", cfg, {"corpus": input_digest(as_ref)})
    assert orchestrator_side == f"teacher_sft-{stage_side.digest}"
    # A copy of the same bytes outside any artifact is identified by its content instead.
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(path.read_bytes())
    assert input_identity(copy) != input_identity(path)


def test_bad_requests_fail_with_the_declarations_names(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    with pytest.raises(ValueError, match=r"needs input\(s\) \['corpus'\]"):
        TEACHER_SFT.call(cfg, tmp_path, {})
    with pytest.raises(ValueError, match="takes no recipe"):
        TEACHER_SFT.call(cfg, tmp_path, {"corpus": str(tmp_path)}, "countdown")
    with pytest.raises(ValueError, match="student_sft has no recipe 'nope'"):
        SPECS["student_sft"].call(cfg, tmp_path, {"dataset": str(tmp_path)}, "nope")


def test_plan_says_cached_or_which_value_changed(tmp_path: Path, capsys) -> None:
    from flows.full_pipeline import pipeline
    from flows.plan import print_plan, start_plan

    store = tmp_path / "store"
    run_data(load_config("tiny"), store)
    planner = start_plan("tiny", [], str(store))
    pipeline(planner, title="plan")
    rows = {row.label: row for row in planner.rows}
    assert rows["data"].status == "cached" and rows["data"].key == rows["data"].uri.split("/")[-1]
    assert rows["teacher_sft"].status == "run" and rows["teacher_sft"].key is not None
    assert rows["teacher_sft"].reasons == ["no earlier run of this stage in the store"]
    assert rows["teacher_rl"].reasons == ["upstream teacher_sft runs first"]

    changed = start_plan("tiny", ["data.countdown_seed=99"], str(store))
    pipeline(changed, title="plan")
    data_row = changed.rows[0]
    assert data_row.status == "run"
    assert data_row.reasons == ["config changed: data.countdown_seed: 0 -> 99"] or (
        data_row.reasons[0].startswith("config changed: data.countdown_seed:")
    )
    printed = print_plan(changed, as_json=True)
    shown = json.loads(capsys.readouterr().out)
    assert shown["stages"] == printed and shown["cached"] == 0
    assert not (store / "teacher_sft").exists()  # planning runs and writes nothing


def test_rlt_plan_refuses_a_bad_profile_or_flow_with_a_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    bad = CliRunner().invoke(app, ["plan", "--store", str(tmp_path), "--set", "reward.lambda=-1"])
    assert bad.exit_code == 2 and "reward.lambda: -1.0 must be >= 0" in bad.output
    assert "Traceback" not in bad.output
    unknown = CliRunner().invoke(app, ["plan", "--flow", "nope"])
    assert unknown.exit_code == 2 and "unknown flow 'nope'" in unknown.output
    assert not any(tmp_path.iterdir())  # planning writes nothing


def test_each_stage_states_its_resources_from_the_profile_and_no_key_holds_them() -> None:
    paper, large, tiny = (load_config(p) for p in ("paper-7b", "paper-32b", "tiny"))
    assert (SPECS["teacher_rl"].resources(paper).gpus, SPECS["evaluate"].resources(paper).gpus) == (
        8,
        1,
    )  # a training run spans the node; a 7B student's evaluation fits one GPU
    assert SPECS["evaluate"].resources(large).gpus == large.evaluate.tensor_parallel_size == 4
    assert {(s.resources(tiny).gpus, s.resources(tiny).cpus) for s in SPECS.values()} == {(0, 1)}
    moved = load_config("tiny", ["resources.teacher_rl.cpus=2", "resources.evaluate.gpus=1"])
    for spec, recipe in _runs(tiny):  # the same run on other hardware: the same artifact
        assert spec.key(tiny, recipe, {}) == spec.key(moved, recipe, {}), spec.name
    # The declarations' rules of `resources` (config sits below the stages and knows none):
    # checked wherever a config enters the stages, before anything runs.
    typo = load_config("tiny", ["resources.teacher_lr.gpus=1"])
    with pytest.raises(ConfigError, match="no stage named 'teacher_lr'.*Did you mean 'teacher_rl'"):
        check_config(typo)
    with pytest.raises(ConfigError, match="no stage named 'teacher_lr'"):
        SPECS["teacher_rl"].key(typo, None, {})
    with pytest.raises(ConfigError, match="tensor_parallel_size=4; give it at least that many"):
        check_config(load_config("paper-32b", ["resources.evaluate.gpus=2"]))
    from typer.testing import CliRunner

    from flows.cli import app

    for command, code in ((["config", "validate", "tiny"], 1), (["plan"], 2)):
        shown = CliRunner().invoke(app, [*command, "--set", "resources.teacher_lr.gpus=1"])
        assert shown.exit_code == code and "no stage named 'teacher_lr'" in shown.output, command


def test_every_manifest_records_the_environment_and_plan_shows_what_changed_since(
    tmp_path: Path,
) -> None:
    from rlt_core.stages.plan import StoreIndex, plan_stage

    cfg = load_config("tiny")
    out = Path(run_data(cfg, tmp_path).ref.uri)
    manifest = artifacts.read_manifest(out)
    for name in ("torch", "transformers", "trl", "accelerate", "lighteval", "math-verify"):
        assert manifest["versions"][name], name
    assert manifest["device"] == "cpu"
    row = plan_stage("data", "data", cfg, None, {}, [], StoreIndex(str(tmp_path)))
    assert row.status == "cached" and row.environment == []
    # The same artifact made under another trl: still cached (lenient), and plan says so.
    manifest["versions"]["trl"] = "0.0.1"
    (out / "manifest.json").write_text(json.dumps(manifest))
    current = artifacts.package_versions()["trl"]
    row = plan_stage("data", "data", cfg, None, {}, [], StoreIndex(str(tmp_path)))
    assert row.status == "cached" and row.environment == [f"trl 0.0.1 -> {current}"]


@pytest.mark.parametrize("strict", [False, True])
def test_package_versions_join_the_keys_only_with_strict_env(
    strict: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config("tiny", ["strict_env=true"] if strict else [])
    before = {(s.name, r): s.key(cfg, r, {}).digest for s, r in _runs(cfg)}
    real = artifacts.package_versions
    monkeypatch.setattr(artifacts, "package_versions", lambda: {**real(), "trl": "9.9.9"})
    after = {(s.name, r): s.key(cfg, r, {}).digest for s, r in _runs(cfg)}
    changed = {run for run in before if before[run] != after[run]}
    assert changed == (set(before) if strict else set())  # lenient: an upgrade keeps the cache


def test_the_number_of_processes_is_in_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The paper's global batch is fixed and split over the processes (training/batching), so
    # one run on 1 process and on 8 is the same artifact.
    cfg = load_config("tiny")
    alone = {(s.name, r): s.key(cfg, r, {}).digest for s, r in _runs(cfg)}
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert {(s.name, r): s.key(cfg, r, {}).digest for s, r in _runs(cfg)} == alone


def test_one_list_of_stages_the_declarations() -> None:
    # Every other list of stages is derived from SPECS, so adding a stage means declaring it.
    import rlt_core.stages
    import tasks.stages

    for name, spec in SPECS.items():  # the library's entry points, one per declaration
        function = getattr(rlt_core.stages, f"run_{name}")
        assert function.__module__ == spec.module, name
    # one Prefect task per stage, built from its declaration (tasks.stages.stage_task)
    for name in SPECS:
        task = tasks.stages.task_of(name)
        assert task.name == name and getattr(tasks.stages, name) is task
        assert task.description == SPECS[name].summary
        params = list(inspect.signature(task.fn).parameters)
        recipe = ["recipe"] if SPECS[name].recipe_section else []
        assert params == ["run", *recipe, *SPECS[name].input_names], name


def test_a_declaration_that_cannot_run_is_refused_when_it_is_made() -> None:
    with pytest.raises(ValueError, match="runs='somewhere' is not one of"):
        dataclasses.replace(DATA, runs="somewhere")
    with pytest.raises(ValueError, match="runs under accelerate launch.*declare fit=FitPlan"):
        dataclasses.replace(DATA, name="trainer", runs="launch")
