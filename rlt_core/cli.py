"""The `rlt` command line: run the pipeline's stages, inspect configs, build offline models.

rlt run --profile tiny [--set key.path=value ...] [--store DIR]
rlt config show paper-7b
rlt models smollm2
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from rlt_core.config import ConfigError, PipelineConfig, load_config
from rlt_core.config.__main__ import app as config_app
from rlt_core.models.cli import app as models_app
from rlt_core.reward.score import app as score_app

app = typer.Typer(add_completion=False, help="Reinforcement-Learned Teachers: the RLT pipeline.")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(score_app)  # `rlt score ...`

console = Console()
DEFAULT_STORE = Path("artifacts")


def _timed(times: dict[str, float], name: str, step: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    with console.status(f"[bold]{name}[/bold] ..."):
        result = step()
    times[name] = time.perf_counter() - start
    console.log(f"{name}: done in {times[name]:.1f} s")
    return result


def _teacher_tokenizer(cfg: PipelineConfig) -> Any:
    from transformers import AutoTokenizer

    from rlt_core.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(cfg.teacher_sft.model))


def run_pipeline(cfg: PipelineConfig, store: Path) -> dict[str, float]:
    """Run the stages that exist so far, in order; returns seconds per step.

    Today: data, teacher_sft (Appendix A.1) and the baseline students of Table 1, distilled
    from the corpus' own traces (the RLT students join once teacher_rl and generate_traces
    land). Every stage is cached in `store`: a second run reuses finished artifacts.
    """
    from rlt_core.stages import run_data, run_student_sft, run_teacher_sft

    times: dict[str, float] = {}
    tokenizer = _timed(times, "models (offline build / tokenizer)", lambda: _teacher_tokenizer(cfg))
    data = _timed(times, "data", lambda: run_data(cfg, store, tokenizer=tokenizer))
    corpus = data.path / "corpus.parquet"
    _report_data(data)
    teacher = _timed(times, "teacher_sft", lambda: run_teacher_sft(cfg.teacher_sft, corpus, store))
    console.print(f"teacher_sft artifact: {teacher.uri}")
    for name in cfg.student_sft_runs:
        recipe = cfg.student_sft[name]
        if recipe.dataset != "corpus":
            console.print(
                f"student_sft[{name}]: needs generated countdown traces (issue 6); skipped"
            )
            continue
        stage = f"student_sft[{name}] (baseline: corpus traces)"
        student = _timed(times, stage, lambda r=recipe: run_student_sft(r, corpus, store))
        console.print(f"{stage} artifact: {student.uri}")
    return times


def _report_data(data: Any) -> None:
    corpus = data.report["corpus"]
    console.print(
        f"data artifact: {data.path}\n  corpus rows kept {corpus['kept']} of {corpus['total']}"
        f" (dropped: {corpus['dropped'] or 'none'}); eval sets {data.report['eval']};"
        f" think tokens {data.report.get('think_tokens')}"
    )


@app.command()
def run(
    profile: Annotated[
        str, typer.Option(help="profile name (tiny, paper-7b, paper-32b) or YAML")
    ] = "tiny",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="key.path=value; repeatable")
    ] = None,
    store: Annotated[
        Path, typer.Option(help="artifact store root (a local directory)")
    ] = DEFAULT_STORE,
) -> None:
    """Run the pipeline's stages on a profile (data, teacher_sft, baseline student_sft so far)."""
    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = load_config(profile, overrides or ())  # validated before any model loads
    except ConfigError as error:
        console.print(f"[red]config error[/red]\n{error}")
        raise typer.Exit(2) from None
    times = run_pipeline(cfg, store)
    table = Table(title=f"rlt run --profile {cfg.profile}: time per stage")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for name, seconds in times.items():
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("[bold]total[/bold]", f"[bold]{sum(times.values()):.1f}[/bold]")
    console.print(table)


if __name__ == "__main__":
    app()
