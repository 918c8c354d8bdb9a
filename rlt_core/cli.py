"""The `rlt` command line: inspect configs, build offline models, score traces.

    rlt config show paper-7b [--set key.path=value ...]
    rlt models smollm2
    rlt score --teacher M --student M --data traces.jsonl --out scored.parquet

The pipeline itself runs as Prefect flows (`flows/`): `prefect deployment run rlt/full-pipeline`
against a served deployment, or `python -m flows.full_pipeline --profile tiny` in one process;
one stage alone runs with `python -m rlt_core.stages STAGE ...`.
"""

from __future__ import annotations

import typer

from rlt_core.config.__main__ import app as config_app
from rlt_core.models.cli import app as models_app
from rlt_core.reward.score import app as score_app

app = typer.Typer(add_completion=False, help="Reinforcement-Learned Teachers: the RLT pipeline.")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(score_app)  # `rlt score ...`


if __name__ == "__main__":
    app()
