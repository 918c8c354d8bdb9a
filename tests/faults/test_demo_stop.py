"""`make stop` stops what `make demo` started (scripts/up.sh: a Prefect server and the served
deployments), every process of theirs, and says so only when it is true."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _group(pid: int) -> list[psutil.Process]:
    """Every live process of the process group `pid` leads."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def test_make_stop_leaves_no_server_or_serve_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env |= {
        "RLT_STATE_DIR": str(state),
        "RLT_PREFECT_PORT": str(_free_port()),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "RLT_STORE": str(tmp_path / "store"),
        "PY": str(ROOT / ".venv" / "bin" / "python"),
        "PREFECT": str(ROOT / ".venv" / "bin" / "prefect"),
    }
    pids = {}
    try:
        up = subprocess.run(["bash", "scripts/up.sh"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        pids = {name: int((state / f"{name}.pid").read_text()) for name in ("server", "serve")}
        for name, pid in pids.items():
            assert _group(pid), f"{name} is not running"
        stop = subprocess.run(["bash", "scripts/stop.sh"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert stop.returncode == 0, stop.stdout + stop.stderr
        for name, pid in pids.items():
            assert f"stopped {name} ({pid})" in stop.stdout
            assert not _group(pid), f"{name} left processes behind"
        assert not list(state.glob("*.pid"))
    finally:
        for pid in pids.values():
            for process in _group(pid):
                process.kill()
