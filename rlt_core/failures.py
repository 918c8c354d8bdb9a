"""Failures classified once: which errors a retry may cure.

A refused or reset connection, a timeout, throttling, or a 5xx / 429 answer from S3 or the model
hub is transient: the orchestration layer retries it (also when it happened inside a stage's
child process, `rlt_core.stages.launch.TransientStageError`). Bad input, out-of-memory,
refused credentials, a missing bucket and everything else are not: retrying cannot help, so
they fail at once with their own message. Client errors are judged by class name and module,
so no client library is imported here.
"""

from __future__ import annotations

# Connection-level failures of botocore / aiohttp / urllib3, by class name (none is imported).
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ConnectionError", "ProxyConnectionError", "HTTPClientError",
    "ResponseStreamingError", "ClientConnectorError", "ClientConnectionError",
    "ServerDisconnectedError", "ServerTimeoutError", "ClientOSError", "ClientPayloadError",
    "ProtocolError", "NewConnectionError", "MaxRetryError",
})  # fmt: skip
# S3 error codes that mean "try again later".
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "503", "500",
})  # fmt: skip
_CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "s3fs")
# The model hub's HTTP clients: their connection failures and 5xx / 429 answers are transient.
_HUB_MODULES = ("httpx", "requests", "huggingface_hub")
_HUB_TRANSIENT_NAMES = frozenset({
    "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
    "RemoteProtocolError", "ReadError", "WriteError", "ChunkedEncodingError", "Timeout",
})  # fmt: skip


def classify_store_error(error: BaseException) -> bool | None:
    """True for a transient store failure, False for one a retry cannot fix, None for an
    error that is not the store's (it propagates as it is). Wrapped errors (s3fs re-raises
    botocore's as OSError `from` it) are judged by their cause: the raised exception's own
    chain (`raise ... from`), never the error that was being handled when it was raised (a
    ValueError raised while handling a lost connection is not transient)."""
    seen: set[int] = set()
    current: BaseException | None = error
    verdicts = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        verdicts.append(_judge(current))
        current = current.__cause__
    decided = [v for v in verdicts if v is not None]
    return decided[0] if decided else None


def is_transient(error: BaseException) -> bool:
    """Whether a retry may cure `error`: the store or the network failed (a refused or reset
    connection, a timeout, throttling, a 5xx from S3 or the model hub). Configuration errors,
    out-of-memory, refused credentials and everything else are not."""
    return classify_store_error(error) is True


def _judge(error: BaseException) -> bool | None:
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if type(error).__module__.startswith(_HUB_MODULES):
        status = getattr(getattr(error, "response", None), "status_code", None)
        if isinstance(status, int):
            return status >= 500 or status == 429
        return type(error).__name__ in _HUB_TRANSIENT_NAMES or None
    if isinstance(error, (PermissionError, FileNotFoundError)):
        return False
    if type(error).__module__.startswith(_CLIENT_MODULES):
        name = type(error).__name__
        if name == "ClientError":
            response = getattr(error, "response", {}) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code in _TRANSIENT_CODES or status >= 500 or status == 429
        return name in _TRANSIENT_NAMES or "Timeout" in name
    return None
