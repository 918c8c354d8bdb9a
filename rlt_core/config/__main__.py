"""Command line: `python -m rlt_core.config show|validate <profile> [--set key=value ...]`."""

import sys

import typer

from rlt_core.config.errors import ConfigError
from rlt_core.config.loader import load_config
from rlt_core.config.serialize import to_yaml
from rlt_core.stages.specs import check_config

app = typer.Typer(add_completion=False, help="Show or validate an RLT config profile.")

PROFILE = typer.Argument(..., help="profile name (paper-7b, paper-32b, tiny) or a YAML path")
SET = typer.Option([], "--set", help="override key.path=value; repeat for several")


@app.command()
def show(profile: str = PROFILE, overrides: list[str] = SET) -> None:
    """Print the resolved config as YAML (loads back with `load_config`)."""
    try:
        config = load_config(profile, overrides)
        check_config(config)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(1) from None
    sys.stdout.write(to_yaml(config))


@app.command()
def validate(profile: str = PROFILE, overrides: list[str] = SET) -> None:
    """Exit 0 when the profile is valid; otherwise print every problem and exit 1."""
    try:
        config = load_config(profile, overrides)
        check_config(config)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        raise typer.Exit(1) from None
    sys.stdout.write(f"ok: profile {config.profile!r} is valid\n")


if __name__ == "__main__":
    app()
