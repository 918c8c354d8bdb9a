"""A real Ray cluster on 127.0.0.1 for tests: `ray start --block` processes (a head node, and
more nodes joined to it), each stopped with its whole process group at the end.

Every node is a separate raylet with its own share of the machine's cores, as on a cluster of
several machines; the dashboard is off and the object store small (tasks pass refs, not data).
A node keeps up to `IDLE_WORKERS` idle workers instead of Ray's default (its core count): a
Prefect task that waits on another's result briefly frees its core, Ray starts one more worker,
and on a 1- or 2-core node the default then stopped an idle worker after a second, so the next
stage's task paid for a fresh worker importing the whole stack again (~13 CPU-seconds, five
workers over the tiny pipeline instead of three).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
IDLE_WORKERS = 4


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RayNode:
    """One `ray start --block` process (a head node, or a node joined to `address`)."""

    def __init__(
        self, *, cpus: int, address: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        """`env`: variables added to this process' environment for the node (its workers
        inherit them, as a machine's workers inherit its environment)."""
        self.log = Path(tempfile.mkstemp(prefix="rlt-ray-node-", suffix=".log")[1])
        self.temp = tempfile.mkdtemp(prefix="rlt-ray-")  # short: Ray's socket paths live here
        command = [
            RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
            "--num-gpus=0", "--object-store-memory=100000000", "--disable-usage-stats",
        ]  # fmt: skip
        if address is None:
            self.address = f"127.0.0.1:{free_port()}"
            port = self.address.rsplit(":", 1)[1]
            command += ["--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={self.temp}"]  # fmt: skip
        else:
            self.address = address
            command += [f"--address={address}"]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={
                    **os.environ, **(env or {}), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_num_workers_soft_limit": str(IDLE_WORKERS),
                },
            )  # fmt: skip
        self._wait_started()

    def _wait_started(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start failed:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the node: SIGTERM to `ray start --block`, which stops its raylet and workers;
        then SIGKILL to whatever of its process group is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.temp, ignore_errors=True)


def alive_nodes(address: str) -> int:
    """How many nodes the cluster at `address` counts alive (a short-lived driver asks it)."""
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
        "print(sum(1 for node in ray.nodes() if node['Alive']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, address], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])
