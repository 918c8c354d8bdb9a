"""The refine_traces stage: a chat model behind an OpenAI-compatible endpoint reformats a
traditionally RL-trained model's raw answers into the student format (Table 2, "RL cold-start
(GPT) + RL").

Section 4.3 post-processes the RL-trained teacher's raw traces with GPT-4.1(-mini), "following
a very similar strategy" to the R1 and QwQ pipelines of Li et al.: SkyThought asked
gpt-4o-mini (temperature 0.7, at most 16,384 tokens) to split each raw answer into a thought
section copied almost word for word and one clean final solution. This stage does the same on
any OpenAI-compatible chat endpoint (OpenAI, vLLM's server, ...), with this project's own
prompt (`rlt_core.formats.REFINE_SYSTEM_PROMPT`, `REFINE_USER_PROMPT`; docs/paper_index.md)
and one difference: the answer comes back as JSON with a `thought` and a `solution` under a
strict JSON schema (`REFINE_RESPONSE_FORMAT`, which OpenAI's API and vLLM's server both
enforce) instead of four tags in free text, so an answer that is not cut always parses.

Each row is one chat request (the raw answer of `raw_traces`, with its question), `seed + row
number` as its seed, `concurrency` requests in flight. The client retries a request refused
for a transient reason (connection, timeout, 408, 409, 429, 5xx) with exponential backoff up
to `max_retries` times; a request still refused fails the run with `EndpointUnavailable` (a
ConnectionError: the task runner retries it, and the finished shards are kept). A refused
key, an unknown model or an address that is no OpenAI-compatible server fails the run before
any row is sent (`EndpointError`, with the fix). A row the endpoint answers but that cannot
become a student sample is dropped and counted, as the keep rule does (`rejected.parquet`,
reason): `cut` (the answer hit max_tokens), `refused` (the endpoint's content filter, or a
400 for that row), `not json`, `empty thought`, `empty solution`.

The endpoint's address and key are never written down: the key holds the model name, the
prompts, the response format and the sampling values (`rlt_core.stages.specs.
refine_key_config`), and the manifest
the figures.

Output (`<store>/refine_traces/<key>/`): `shards/`, `traces.parquet` (id, question, system,
thought, solution, raw_response = the answer converted: not `response`, which student_sft
would train on verbatim), `rejected.parquet`,
`stats.json` and `manifest.json` last.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from rlt_core import artifacts
from rlt_core.config import RefineTracesConfig
from rlt_core.data.sources import is_text, read_table, require_columns
from rlt_core.endpoint import Endpoint, EndpointError, endpoint_failure, endpoint_of
from rlt_core.formats import REFINE_RESPONSE_FORMAT, REFINE_SYSTEM_PROMPT, REFINE_USER_PROMPT
from rlt_core.generation.shards import fill_shards, read_shards
from rlt_core.owner import Outcome, Work
from rlt_core.stages.specs import REFINE_TRACES

logger = logging.getLogger(__name__)

STAGE = REFINE_TRACES.name
FILES = REFINE_TRACES.outputs

RAW_COLUMNS = ("id", "question", "response")


def run_refine_traces(
    cfg: RefineTracesConfig, traces: str | Path, store: str | Path
) -> artifacts.ArtifactRef:
    """Convert every raw answer of `traces` (raw_traces' traces.parquet) into
    `<store>/refine_traces/<key>/`."""
    return REFINE_TRACES.run(store, {"cfg": cfg}, {"traces": traces})


def refine_corpus(work: Work, cfg: RefineTracesConfig, traces: str | Path) -> Outcome:
    """refine_traces' work (`REFINE_TRACES.entry`): `run_refine_traces` without the owner."""
    rows = read_raw_answers(traces)
    endpoint = endpoint_of(cfg)
    if isinstance(endpoint, str):
        raise EndpointError(f"refine_traces cannot run: {endpoint}.")
    out = work.out
    fill_shards(
        rows,
        cfg.shard_size,
        out,
        lambda: open_client(cfg, endpoint),
        lambda client, part, number: refine_shard(
            client, cfg, endpoint, part, first=number * cfg.shard_size
        ),
        desc=STAGE,
    )
    table = read_shards(out)
    kept = table[table["kept"]].drop(columns=["kept", "reason", "finish"])
    if kept.empty:
        raise ValueError(
            f"{cfg.model} at {endpoint.address} converted none of the {len(table)} answers "
            f"(reasons: {table['reason'].value_counts().to_dict()}). Check the model (it should "
            "follow the prompt and the JSON schema) and refine_traces.max_tokens."
        )
    kept.reset_index(drop=True).to_parquet(out / FILES.traces, index=False)
    table[~table["kept"]].reset_index(drop=True).to_parquet(out / FILES.rejected, index=False)
    stats = refine_stats(table)
    (out / FILES.stats).write_text(json.dumps(stats, indent=2, sort_keys=True))
    logger.info("refine_traces: kept %d of %d (%s)", stats["kept"], stats["rows"], stats["dropped"])
    return Outcome(stats, {"model": cfg.model})


def read_raw_answers(traces: str | Path) -> pd.DataFrame:
    """The raw answers to convert: id (str), question, response (and system, when given).
    Raises ValueError for missing columns or an answer that is not text."""
    table = read_table(str(traces))
    require_columns(
        table,
        RAW_COLUMNS,
        source=str(traces),
        hint="refine_traces reads raw_traces' traces.parquet (a model's raw answers)",
    )
    table = table.assign(id=table["id"].astype(str)).reset_index(drop=True)
    blank = [row.id for row in table.itertuples(index=False) if not is_text(row.response)]
    if blank:
        raise ValueError(
            f"{traces}: {len(blank)} row(s) without an answer to convert, ids {blank[:10]}; "
            "raw_traces keeps only non-empty answers: pass its traces.parquet."
        )
    return table


def open_client(cfg: RefineTracesConfig, endpoint: Endpoint) -> Any:
    """An OpenAI client on `endpoint`, checked before any row is sent: the endpoint answers,
    accepts the key and serves `cfg.model` (`EndpointError`, `EndpointUnavailable`)."""
    import openai

    client = openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=cfg.max_retries,
        timeout=cfg.timeout_s,
    )
    try:
        served = [model.id for model in client.with_options(max_retries=2).models.list()]
    except Exception as error:  # noqa: BLE001  (each translated into what to fix)
        client.close()
        raise endpoint_failure(error, cfg, endpoint) from error
    if cfg.model not in served:
        client.close()
        raise EndpointError(
            f"{endpoint.address} does not serve model {cfg.model!r} (it serves "
            f"{served[:10]}): set refine_traces.model to one of those, or point "
            "refine_traces.base_url at the server that has it."
        )
    return client


def refine_shard(
    client: Any, cfg: RefineTracesConfig, endpoint: Endpoint, rows: pd.DataFrame, *, first: int
) -> pd.DataFrame:
    """Convert one shard's rows (`first`: the row number of its first row, for the seeds),
    `concurrency` requests at once: the table of `convert_row` records, in row order."""

    failed = threading.Event()  # a failed request stops the shard: no further row is sent

    def convert(item: tuple[int, dict[str, Any]]) -> dict[str, Any] | None:
        """One row's record (`convert_row`), or None once a request of the shard failed."""
        if failed.is_set():
            return None
        number, row = item
        try:
            return convert_row(client, cfg, endpoint, row, seed=cfg.seed + first + number)
        except BaseException:
            failed.set()
            raise

    pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
    try:
        records = list(pool.map(convert, enumerate(rows.to_dict("records"))))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return pd.DataFrame.from_records(records)


def convert_row(
    client: Any, cfg: RefineTracesConfig, endpoint: Endpoint, row: dict[str, Any], *, seed: int
) -> dict[str, Any]:
    """One row's request and its record: id, question, system, thought and solution when
    kept, the raw `response`, `kept`, `reason` ("converted" or why it was dropped) and the
    endpoint's `finish` reason."""
    import openai

    record = {"id": row["id"], "question": row["question"], "system": row.get("system"),
              "raw_response": row["response"], "thought": None, "solution": None}  # fmt: skip
    prompt = REFINE_USER_PROMPT.format(question=row["question"], response=row["response"])
    messages = [
        {"role": "system", "content": REFINE_SYSTEM_PROMPT},
        {"role": "user", "content": prompt},
    ]
    try:
        answer = client.chat.completions.create(
            model=cfg.model, messages=messages, temperature=cfg.temperature, top_p=cfg.top_p,
            max_tokens=cfg.max_tokens, seed=seed, response_format=REFINE_RESPONSE_FORMAT,
        )  # fmt: skip
    except openai.BadRequestError as error:  # this row only (e.g. longer than the context)
        return {**record, "kept": False, "reason": "refused", "finish": f"400: {error.message}"}
    except openai.APIError as error:
        raise endpoint_failure(error, cfg, endpoint) from error
    choice = answer.choices[0]
    reason = parse_answer(choice.message.content, choice.finish_reason, record)
    return {**record, "kept": reason == "converted", "reason": reason,
            "finish": str(choice.finish_reason)}  # fmt: skip


def parse_answer(content: str | None, finish: str | None, record: dict[str, Any]) -> str:
    """Fill `record`'s thought and solution from the endpoint's answer; why it is dropped
    (`cut`, `refused`, `not json`, `empty thought`, `empty solution`), else "converted"."""
    if finish == "length":
        return "cut"
    if finish == "content_filter" or content is None:
        return "refused"
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError:
        return "not json"
    if not isinstance(parsed, dict):
        return "not json"
    thought, solution = parsed.get("thought"), parsed.get("solution")
    if not is_text(thought):
        return "empty thought"
    if not is_text(solution):
        return "empty solution"
    record["thought"], record["solution"] = thought.strip(), solution.strip()
    return "converted"


def refine_stats(table: pd.DataFrame) -> dict[str, Any]:
    """Rows sent, kept and dropped (by reason), and the converted thoughts' length against the
    raw answers' (characters: how much of the answer the thought kept)."""
    kept = table[table["kept"]]
    ratio = kept["thought"].str.len() / kept["raw_response"].str.len()
    return {
        "rows": len(table),
        "kept": len(kept),
        "dropped": {
            str(k): int(v) for k, v in table.loc[~table["kept"], "reason"].value_counts().items()
        },
        "thought_chars_over_answer_chars": {
            "mean": float(ratio.mean()) if len(ratio) else None,
            "min": float(ratio.min()) if len(ratio) else None,
        },
    }
