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

    Today: data, teacher_sft (Appendix A.1), teacher_rl (section 3, Table 3), the baseline
    students of Table 1 distilled from the corpus' own traces, and their cold-start RL
    (Table 6). The RLT students join once generate_traces lands (issue 6). Every stage is
    cached in `store`: a second run reuses finished artifacts.
    """
    from rlt_core.stages import run_data, run_teacher_rl, run_teacher_sft

    times: dict[str, float] = {}
    tokenizer = _timed(times, "models (offline build / tokenizer)", lambda: _teacher_tokenizer(cfg))
    data = _timed(times, "data", lambda: run_data(cfg, store, tokenizer=tokenizer))
    corpus, seed = data.path / "corpus.parquet", cfg.data.subset_seed
    _report_data(data)
    warm = _timed(
        times,
        "teacher_sft",
        lambda: run_teacher_sft(cfg.teacher_sft, corpus, store, subset_seed=seed),
    )
    console.print(f"teacher_sft artifact: {warm.uri}")
    teacher = _timed(
        times,
        "teacher_rl",
        lambda: run_teacher_rl(cfg.teacher_rl, cfg.reward, Path(warm.uri), corpus, store),
    )
    console.print(f"teacher_rl artifact: {teacher.uri}")
    students = _baseline_students(cfg, corpus, store, times)
    _cold_start_rl(cfg, data.path, students, store, times)
    return times


def _baseline_students(
    cfg: PipelineConfig, corpus: Path, store: Path, times: dict[str, float]
) -> dict[str, Path]:
    """Table 1 baselines: students distilled from the corpus' own traces, by recipe name."""
    from rlt_core.stages import run_student_sft

    students: dict[str, Path] = {}
    seed = cfg.data.subset_seed
    for name in cfg.student_sft_runs:
        recipe = cfg.student_sft[name]
        if recipe.dataset != "corpus":
            console.print(f"student_sft[{name}]: needs countdown traces (issue 6); skipped")
            continue
        step = f"student_sft[{name}] (baseline: corpus traces)"
        ref = _timed(
            times, step, lambda r=recipe: run_student_sft(r, corpus, store, subset_seed=seed)
        )
        console.print(f"{step} artifact: {ref.uri}")
        students[name] = Path(ref.uri) / "model"
    return students


def _cold_start_rl(
    cfg: PipelineConfig,
    data_dir: Path,
    students: dict[str, Path],
    store: Path,
    times: dict[str, float],
) -> None:
    """Table 2: cold-start RL from each baseline student (or from the base model)."""
    from rlt_core.stages import run_student_rl

    seed = cfg.data.subset_seed
    for name in cfg.student_rl_runs:
        recipe = cfg.student_rl[name]
        start = students.get(recipe.cold_start) if recipe.cold_start else recipe.model
        rows = data_dir / ("limr.parquet" if recipe.dataset == "limr" else "corpus.parquet")
        if start is None or not rows.is_file():
            console.print(f"student_rl[{name}]: its start model or data is not built yet; skipped")
            continue
        step = f"student_rl[{name}] (cold start: {recipe.cold_start})"
        ref = _timed(
            times,
            step,
            lambda r=recipe, s=start, d=rows: run_student_rl(r, s, d, store, subset_seed=seed),
        )
        console.print(f"{step} artifact: {ref.uri}")


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
    """Run the pipeline's stages on a profile (every stage that exists so far)."""
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
