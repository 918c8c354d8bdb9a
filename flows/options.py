"""The command-line options the flows' `main`s and `rlt plan` share (typer), in a module that
imports no Prefect, so that `rlt config` and `rlt score` stay light."""

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

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

# The option of every flow parameter the flows share (its name is the parameter's).
SHARED_OPTIONS: dict[str, Any] = {
    "profile": ProfileOption,
    "overrides": OverridesOption,
    "store": StoreOption,
    "recipe": RecipeOption,
    "runner": RunnerOption,
    "ray_address": RayAddressOption,
    "strict_env": StrictEnvOption,
}


def flow_command(
    flow: Callable[..., Any],
    doc: str,
    *,
    options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    before: Callable[..., bool] | None = None,
) -> Callable[..., None]:
    """A typer command that runs `flow` in this process, built from the flow's own signature.

    One option per flow parameter, with the flow's name and default (`defaults` replaces a
    default on the command line only) and the help of `SHARED_OPTIONS` or `options` (which
    may also add options the flow does not take, e.g. `--plan`). `before(kwargs, **extra)`
    sees the flow's arguments and the added options first; it may refuse them (raise) or
    answer the command itself (return True: the flow is not run). A flow parameter without an
    option is an error here, at import, not a missing flag later.
    """
    function = getattr(flow, "fn", flow)  # a Prefect flow's function
    taken = inspect.signature(function).parameters
    options = {**SHARED_OPTIONS, **(options or {})}
    missing = [name for name in taken if name not in options]
    if missing:
        raise TypeError(
            f"{function.__name__} parameters {missing} have no command-line option: add them "
            "to flow_command's options (or SHARED_OPTIONS)."
        )
    defaults = dict(defaults or {})
    added = [name for name in options if name not in taken and name not in SHARED_OPTIONS]
    params = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=defaults.get(name, taken[name].default if name in taken else False),
            annotation=options[name],
        )
        for name in (*taken, *added)
    ]

    def command(**kwargs: Any) -> None:
        extra = {name: kwargs.pop(name) for name in added}
        if "overrides" in kwargs:
            kwargs["overrides"] = kwargs["overrides"] or []
        if before is not None and before(kwargs, **extra):
            return
        flow(**kwargs)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = "main"
    command.__doc__ = doc
    return command
