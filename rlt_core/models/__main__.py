"""Entry point of `python -m rlt_core.models` (see `rlt_core.models.cli`)."""

from rlt_core.models.cli import app

app()
