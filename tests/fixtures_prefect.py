"""One real Prefect server (SQLite) for the whole test session, shared by every tier that
needs one (e2e, faults): `prefect_test_harness` starts `prefect server` as a subprocess on a
free port with its own database; flows called in the test process talk to it, and so do
subprocesses given its `api_url` as PREFECT_API_URL.

Register as a plugin (`pytest_plugins` in tests/conftest.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

# Before anything imports Prefect (its settings are read then): the session's own home.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rlt-prefect-home-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect server for the whole session (about 7 s to start)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())
