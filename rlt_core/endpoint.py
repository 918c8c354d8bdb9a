"""Where the refine_traces stage sends its requests: an OpenAI-compatible chat endpoint, from
the profile (`refine_traces.base_url`, `.model`) and the environment (`$OPENAI_BASE_URL`, the
key in `$<refine_traces.api_key_env>`), and the errors its failures become. Light (no torch,
`openai` imported when a failure is translated), so a flow can ask whether the endpoint is
configured (`endpoint_of`) while it wires its DAG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from rlt_core.config import RefineTracesConfig

NO_KEY = "EMPTY"  # what the client sends to an endpoint given without a key (local servers)


class EndpointError(ValueError):
    """The endpoint cannot serve this stage as configured (refused key, unknown model, not an
    OpenAI-compatible server): retrying will not help; the message says what to fix."""


class EndpointUnavailable(ConnectionError):
    """The endpoint stayed unreachable or kept refusing for a transient reason (connection,
    timeout, 429, 5xx) after every retry: a later attempt may succeed (the task retries it)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the requests go: the base URL (None: OpenAI's API) and the API key."""

    base_url: str | None
    api_key: str = field(repr=False)  # never printed

    @property
    def address(self) -> str:
        """The base URL the requests go to, OpenAI's when none is given."""
        return self.base_url or "https://api.openai.com/v1"


def endpoint_of(cfg: RefineTracesConfig, environ: Mapping[str, str] = os.environ) -> Endpoint | str:
    """The endpoint the stage would call, or why there is none: no model, or neither an
    address (`base_url`, `$OPENAI_BASE_URL`) nor a key (`$<api_key_env>`) for OpenAI's API."""
    if cfg.model is None:
        return (
            "no endpoint configured: refine_traces.model is null (set it to the endpoint's "
            "chat model, and refine_traces.base_url or the key)"
        )
    base_url = cfg.base_url or environ.get("OPENAI_BASE_URL") or None
    key = environ.get(cfg.api_key_env) or None
    if base_url is None and key is None:
        return (
            f"no endpoint configured: set ${cfg.api_key_env} (OpenAI's API), or "
            "refine_traces.base_url / $OPENAI_BASE_URL for another OpenAI-compatible server"
        )
    return Endpoint(base_url, key or NO_KEY)


def endpoint_failure(error: Exception, cfg: RefineTracesConfig, endpoint: Endpoint) -> Exception:
    """`error` from the openai client as this stage's error, saying what failed and the fix."""
    import openai

    where = f"{endpoint.address} (model {cfg.model!r})"
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        key = f"the key in ${cfg.api_key_env}" if endpoint.api_key != NO_KEY else "no key"
        return EndpointError(
            f"{where} refused {key} ({error.status_code}): set ${cfg.api_key_env} to a key "
            "this endpoint accepts."
        )
    if isinstance(error, openai.NotFoundError):
        return EndpointError(
            f"{where} answered 404 for {error.request.url}: it is not an OpenAI-compatible "
            "API at that address; set refine_traces.base_url to the server's /v1 URL."
        )
    if isinstance(error, openai.RateLimitError | openai.InternalServerError):
        return EndpointUnavailable(
            f"{where} kept answering {error.status_code} after {cfg.max_retries} retries with "
            "backoff: it is overloaded or down. The run resumes from its finished shards when "
            "retried; lower refine_traces.concurrency if it is rate limiting."
        )
    if isinstance(error, openai.APIConnectionError):  # also a timeout
        return EndpointUnavailable(
            f"cannot reach {where}: {error.__cause__ or error}. Check that the server is "
            "running and refine_traces.base_url / $OPENAI_BASE_URL."
        )
    if isinstance(error, openai.APIStatusError):
        return EndpointError(f"{where} answered {error.status_code}: {error.message}")
    return error
