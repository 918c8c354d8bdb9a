"""Model references: one string names an offline model, a local checkpoint, or a hub id."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlt_core import artifacts
from rlt_core.models.smollm2 import SMOLLM2_NAME, materialize_smollm2

OFFLINE_PREFIX = "offline:"

# Offline model name -> function that materialises it (if needed) and returns its directory.
OFFLINE_MODELS: dict[str, Callable[[], Path]] = {SMOLLM2_NAME: materialize_smollm2}

# Hugging Face repo ids: `org/name`, letters, digits, '-', '_', '.'; no leading '.', '-' or '/';
# optionally pinned: `org/name@revision` (a commit, tag or branch).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}?(@[\w.-]{1,96})?")


def resolve_model(ref: str) -> str:
    """Turn a model reference into something `from_pretrained` accepts.

    Accepted forms, tried in this order:
    - `offline:<name>` with a name of `OFFLINE_MODELS` (e.g. `offline:smollm2-135m-instruct`):
      materialised on first use, returns the local checkpoint directory;
    - an existing local path: returned as given (`~` expanded);
    - a hub id `org/name` (e.g. `Qwen/Qwen2.5-7B-Instruct`): returned unchanged; pinned,
      `org/name@revision`: the local snapshot of that revision (ValueError when offline and
      not cached).
    Anything else raises ValueError naming the reference and these forms.
    """
    if ref.startswith(OFFLINE_PREFIX):
        name = ref.removeprefix(OFFLINE_PREFIX)
        if name not in OFFLINE_MODELS:
            raise ValueError(
                f"Unknown offline model {ref!r}. Known offline models: {_offline_refs()}."
            )
        return str(OFFLINE_MODELS[name]())
    local = os.path.expanduser(ref)
    if ref and Path(local).exists():
        return local
    if _HUB_ID.fullmatch(ref) and "--" not in ref and ".." not in ref:
        return _pinned(ref) if "@" in ref else ref
    raise ValueError(
        f"Model reference {ref!r} is neither an offline model ({_offline_refs()}), nor an "
        "existing local path, nor a hub id of the form 'org/name'. Fix the spelling, create the "
        "path, or use one of those forms."
    )


def _pinned(ref: str) -> str:
    """The local snapshot of `org/name@revision` (downloaded when the hub is reachable):
    every loader then reads exactly that revision from a path."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, revision = ref.split("@", 1)
    try:
        return snapshot_download(repo_id=repo, revision=revision)
    except LocalEntryNotFoundError as error:
        raise ValueError(
            f"model {ref!r}: revision {revision!r} is not in the local hub cache and the hub "
            "cannot be reached (offline). Download it where the hub is reachable "
            f"(`huggingface-cli download {repo} --revision {revision}`) or use a local path."
        ) from error


def _offline_refs() -> str:
    """The accepted `offline:<name>` references, comma-separated, for error messages."""
    return ", ".join(f"{OFFLINE_PREFIX}{name}" for name in OFFLINE_MODELS)


# The directory a training stage saves its final model (and tokenizer) into.
ARTIFACT_MODEL_DIR = "model"


@dataclass(frozen=True)
class ModelInput:
    """A model a stage reads: `path` for `from_pretrained`, `digest` for the stage's cache key."""

    path: str
    digest: str


def model_input(ref: str | Path) -> ModelInput:
    """Resolve a model input of a stage and what identifies its weights in the cache key.

    - a finished artifact directory (manifest + `model/`, e.g. a teacher_rl or student_sft
      output): its `model/`, identified by the artifact's digest;
    - the `model/` directory inside a finished artifact: itself, by the artifact's digest;
    - another local directory: itself, by the digest of its files (retrained weights at the same
      path get a new digest);
    - an offline name or hub id: `resolve_model(ref)`, identified by the reference itself.
    Raises FileNotFoundError for an artifact directory that is unfinished (no manifest) and
    ValueError for a reference that names nothing.
    """
    path = Path(ref).expanduser()
    if path.is_dir() and (path / ARTIFACT_MODEL_DIR).is_dir():
        if not artifacts.is_complete(path):
            raise FileNotFoundError(
                f"{path} holds a {ARTIFACT_MODEL_DIR}/ but no manifest.json: the stage that "
                "writes it did not finish. Run that stage again (it resumes) and pass its output."
            )
        return ModelInput(str(path / ARTIFACT_MODEL_DIR), artifacts.read_manifest(path)["digest"])
    if path.is_dir():
        if artifacts.is_complete(path.parent):
            return ModelInput(str(path), artifacts.read_manifest(path.parent)["digest"])
        return ModelInput(str(path), artifacts.files_digest(path))
    return ModelInput(resolve_model(str(ref)), str(ref))


# The student system prompt a model was trained with, written beside its weights by student_sft
# (and carried on by student_rl), read by student_rl and evaluate: the prompt travels with the
# model, so a student is never evaluated under a prompt it did not learn.
SYSTEM_PROMPT_FILE = "student_system_prompt.txt"


def system_prompt_of(model: str | Path) -> str | None:
    """The student system prompt recorded in a local model directory, or None (any other
    model: offline, hub, or trained elsewhere; the default prompt then applies)."""
    path = Path(os.path.expanduser(str(model))) / SYSTEM_PROMPT_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    return text if text.strip() else None


def record_system_prompt(model_dir: Path, prompt: str | None) -> None:
    """Write `prompt` as the model's student system prompt (nothing for None: the default)."""
    if prompt is not None:
        artifacts.write_atomic(
            Path(model_dir) / SYSTEM_PROMPT_FILE,
            lambda tmp: Path(tmp).write_text(prompt, encoding="utf-8"),
        )
