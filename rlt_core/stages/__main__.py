"""Command line that runs ONE stage: what `rlt_core.stages.launch` starts per process.

    python -m rlt_core.stages student_sft --profile tiny --store ./store \\
        --input dataset=traces.parquet --recipe countdown [--set k=v ...] [--ref-out ref.json]

Loads the profile with its overrides, calls the stage's entry function with the given input
paths and writes the resulting ArtifactRef as JSON to `--ref-out`, or as the last line of
stdout. Under `accelerate launch` every process runs the stage (the Trainer shards the work);
only the main process (RANK 0) writes the ref.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from rlt_core.artifacts import ArtifactRef
from rlt_core.config import ConfigError, load_config
from rlt_core.devices import no_cpu_shm_collectives, without_unused_vllm
from rlt_core.stages.launch import transient_marker
from rlt_core.stages.specs import STAGES, spec_of
from rlt_core.store import is_transient

app = typer.Typer(add_completion=False, help="Run one RLT training stage in this process.")


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """`["corpus=a.parquet", ...]` -> `{"corpus": "a.parquet"}`; ValueError on a bad pair."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input {pair!r} is not NAME=PATH (e.g. --input corpus=c.parquet)")
        if name in inputs:
            raise ValueError(f"--input {name} given twice ({inputs[name]!r}, {path!r}): keep one")
        inputs[name] = path
    return inputs


def write_ref(ref: ArtifactRef, ref_out: Path | None) -> None:
    """Write `ref` as JSON to `ref_out`, or as stdout's last line; only on the main process."""
    if os.environ.get("RANK", "0") != "0":
        return
    text = json.dumps(ref.to_dict())
    if ref_out is None:
        sys.stdout.write(f"\n{text}\n")
        sys.stdout.flush()
        return
    ref_out.parent.mkdir(parents=True, exist_ok=True)
    ref_out.write_text(text)


@app.command()
def main(
    stage: Annotated[
        str,
        typer.Argument(help=", ".join(STAGES)),
    ],
    profile: Annotated[str, typer.Option(help="profile name (tiny, paper-7b, ...) or YAML path")],
    store: Annotated[Path, typer.Option(help="artifact store root (a local directory)")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key.path=value; repeatable")
    ] = None,
    input_pairs: Annotated[
        list[str] | None, typer.Option("--input", help="NAME=PATH; repeatable")
    ] = None,
    recipe: Annotated[str | None, typer.Option(help="student_sft/student_rl recipe name")] = None,
    ref_out: Annotated[Path | None, typer.Option(help="write the ArtifactRef JSON here")] = None,
) -> None:
    """Run one stage with the profile's config and write its ArtifactRef (see module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    no_cpu_shm_collectives()
    try:
        cfg = load_config(profile, overrides or [])
        spec = spec_of(stage)
        without_unused_vllm(spec.config_args(cfg, recipe))  # checks the recipe first
        ref = spec.call(cfg, store, parse_inputs(input_pairs or []), recipe)
    except Exception as error:
        if is_transient(error):  # the launcher's caller may retry this one
            write_failure(error, ref_out)
            raise
        if not isinstance(error, (ConfigError, ValueError, FileNotFoundError, RuntimeError)):
            raise
        sys.stderr.write(f"error: {error}\n")
        raise typer.Exit(2) from None
    write_ref(ref, ref_out)


def write_failure(error: BaseException, ref_out: Path | None) -> None:
    """Leave `<ref-out>.transient` beside the ref file: the stage failed in a way a retry may
    cure (`rlt_core.store.is_transient`), which an exit code cannot carry through
    `accelerate launch`."""
    if ref_out is not None:
        ref_out.parent.mkdir(parents=True, exist_ok=True)
        transient_marker(ref_out).write_text(f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    app()
