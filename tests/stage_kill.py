"""Kill a stage run part-way, for the resume tests: start it as a child process, wait until it
has written something, SIGKILL it and check that no process it started is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]

GENERATE_TRACES = """
import dataclasses, sys
from rlt_core.config import load_config
from rlt_core.stages.generate_traces import run_generate_traces
tiny = load_config("tiny")
cfg = dataclasses.replace(tiny.generate_traces, **{fields})
run_generate_traces(cfg, tiny.reward, sys.argv[1], sys.argv[2], sys.argv[3])
"""


def generate_traces_script(**fields: object) -> str:
    """A `python -c` program running generate_traces on the tiny profile with `fields` replaced;
    argv: teacher, corpus, store."""
    return GENERATE_TRACES.format(fields=repr(fields))


def kill_when(
    args: list[str], ready: Callable[[], bool], what: str, timeout: float = 240.0
) -> None:
    """Run `python *args` (repo on the path), SIGKILL it once `ready()` holds, and check that
    every process it started dies with it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)
    descendants = psutil.Process(child.pid).children(recursive=True)
    child.send_signal(signal.SIGKILL)
    child.wait()
    _, alive = psutil.wait_procs(descendants, timeout=30)
    assert not alive, f"processes outlived the killed stage: {alive}"
