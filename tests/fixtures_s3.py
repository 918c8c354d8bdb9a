"""A real S3 endpoint for tests: moto's server on 127.0.0.1, shared by the whole test session.

The server runs as a process of its own (`python -m moto.server`), not as a thread of the test
process: moto's server is a Flask app, and Flask's context proxies (`flask.current_app`, ...)
raise on attribute access outside a request. vLLM's CPU worker, which runs in the process that
starts the engine, scans every loaded module's attributes at start and stops at the first such
proxy. A process of its own also goes away as a real endpoint does: `MotoServer.stop()` kills
it and every connection with it.

Register as a plugin (`pytest_plugins = ["fixtures_s3"]` in tests/conftest.py). Fixtures:

- `s3_server` (session): the running endpoint. For the session it sets dummy credentials and a
  region in the environment (`AWS_ACCESS_KEY_ID=testing`, ...), so nothing can reach real AWS.
- `s3_bucket` (function): a fresh, empty bucket per test (fresh names also keep s3fs's
  listing cache from going stale between tests).
- `s3_env` (function): also sets `AWS_ENDPOINT_URL`, for code that takes no storage options
  and relies on the standard variables, as a user's cluster would (`endpoint_env`, the same as
  a context manager, for a session-scoped fixture).

Code under test reaches the server either through `endpoint.storage_options` (fsspec/s3fs) or
through `s3_env`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Endpoint:
    """Where the moto server listens, and how to talk to it."""

    url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options that point at this endpoint."""
        return {"client_kwargs": {"endpoint_url": self.url}}

    def client(self) -> Any:
        """A boto3 S3 client bound to this endpoint."""
        import boto3  # imported on use: the GPU machine runs tests/gpu without the S3 stack

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1")

    def upload(self, bucket: str, key: str, path: str) -> str:
        """Upload a local file and return its `s3://bucket/key` URI."""
        self.client().upload_file(path, bucket, key)
        return f"s3://{bucket}/{key}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MotoServer:
    """moto's S3 server in a process of its own on a free 127.0.0.1 port (module docstring)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start on {self.url}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Kill the server: the endpoint and every open connection go away at once."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """Start moto's S3 server once per session on a free local port."""
    server = MotoServer()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        server.start()
        try:
            yield S3Endpoint(url=server.url)
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Endpoint) -> str:
    """A new empty bucket on the session's server; returns its name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@contextmanager
def endpoint_env(endpoint: S3Endpoint, **extra: str) -> Iterator[S3Endpoint]:
    """Inside: the standard `AWS_ENDPOINT_URL` variable points at `endpoint` (and `extra`
    variables are set), as code that takes no storage options and a user's cluster rely on.

    fsspec reuses filesystem instances made with the same arguments, whatever the environment
    says: the cache is cleared before and after, so nothing sees another endpoint's.
    """
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ENDPOINT_URL": endpoint.url, **extra}.items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield endpoint
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(s3_server: S3Endpoint) -> Iterator[S3Endpoint]:
    """`endpoint_env` on the session's server for one test."""
    with endpoint_env(s3_server) as endpoint:
        yield endpoint


class TcpProxy:
    """A TCP relay to `127.0.0.1:target_port` that can be cut: `stop()` closes the listening
    socket and every open connection at once, as a network failure does, while the server
    behind it stays up for the test to look at what it holds."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The endpoint URL clients should use."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def stop(self) -> None:
        """Cut every connection and refuse new ones."""
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
