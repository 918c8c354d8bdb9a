"""The report's figures, seen in the Prefect UI by a real browser (headless Chromium).

A Prefect server with its UI (the session's test server serves none) gets a report published
by the flows' own `publish_report`; `scripts/ui_figures.py` opens the artifacts in Chromium and
reads each image's decoded size. Skipped where Debian's `chromium` is not installed
(`apt-get install chromium`); the same command checks a real run (README, "Figures in the UI").
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.publish import publish_report
from rlt_core.reports import run_report
from rlt_core.store import ArtifactStore

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("chromium") is None,
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]
CHECK = Path(__file__).resolve().parents[2] / "scripts" / "ui_figures.py"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def ui_server(tmp_path: Path):
    """`prefect server start` with its UI pointed at its own API; yields the UI's URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_UI_API_URL": f"{url}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the Prefect server did not start within 120 s") from None
                time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def _check(url: str, key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": f"{url}/api"}
    command = [sys.executable, str(CHECK), "--key", key, "--ui", url, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_report_figures_render_in_the_prefect_ui(ui_server: str, tmp_path: Path) -> None:
    steps = [{"step": s, "rlt/reward": -2.0 + 0.5 * s, "rlt/solution_copy": 0.1 * s}
             for s in (1, 2, 3)]  # fmt: skip
    report = run_report(
        tmp_path / "store", title="ui", tasks=["countdown"],
        lengths={"RLT": [10, 20, 30]}, curves={"RLT teacher": steps},
    )  # fmt: skip
    store = ArtifactStore.open(tmp_path / "store")

    @flow
    def publish() -> None:
        publish_report(store, report.to_dict(), key="ui-report")
        # the way the report used to be published: an image linked by its local path
        create_markdown_artifact(f"![Figure 8]({report.uri}/think_lengths.png)", key="ui-linked")

    with temporary_settings({PREFECT_API_URL: f"{ui_server}/api"}):
        publish()
    shots = tmp_path / "shots"
    inlined = _check(ui_server, "ui-report", "--screenshot", str(shots / "report.png"))
    assert inlined.returncode == 0, inlined.stdout + inlined.stderr
    assert inlined.stdout.count('"width": 1200') == 1 and '"width": 840' in inlined.stdout
    # the figure's own image artifact renders in both of Prefect's UIs (/ and /v2)
    image = _check(ui_server, "ui-report-reward-curves", "--ui-version", "both")
    assert image.returncode == 0, image.stdout + image.stderr
    # the check fails where the browser cannot load the image
    linked = _check(ui_server, "ui-linked")
    assert linked.returncode == 1 and '"width": 0' in linked.stdout
    assert (shots / "report.png").stat().st_size > 10_000
