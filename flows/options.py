"""The command-line options the flows' `main`s and `rlt plan` share (typer), in a module that
imports no Prefect, so that `rlt config` and `rlt score` stay light."""

from typing import Annotated, Literal

import typer

ProfileOption = Annotated[str, typer.Option(help="tiny, paper-7b, paper-32b or a YAML path")]
OverridesOption = Annotated[
    list[str] | None, typer.Option("--set", help="key.path=value; repeatable")
]
StoreOption = Annotated[str, typer.Option(help="artifact store: a directory or s3://...")]
RecipeOption = Annotated[str | None, typer.Option(help="student_sft recipe")]
PlanOption = Annotated[
    bool, typer.Option("--plan", help="print what would run and why; run nothing")
]
JsonOption = Annotated[bool, typer.Option("--json", help="with --plan: print the plan as JSON")]
RunnerOption = Annotated[
    Literal["sequential", "ray"],
    typer.Option(
        help="sequential: one stage at a time in this process; ray: independent stages side by "
        "side on a Ray cluster, each with its resources.<stage> GPUs and cores",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="with --runner ray: the cluster (host:port of `ray start --head`, ray://host:10001, "
        "or auto); none: $RAY_ADDRESS, or a cluster `ray start` began on this machine, else a "
        "new local one for this flow run",
    ),
]
StrictEnvOption = Annotated[
    bool,
    typer.Option(
        "--strict-env",
        help="rerun a stage whose cached artifact was made under other package versions "
        "(torch, transformers, trl, vllm, ...): the versions join every key",
    ),
]
