"""The rows of the experiments' report tables, built from the flows' stage refs: the one place
that knows the flows' labels (a student's `<source>-<recipe>`, an RL run's
`rl-<source>-<recipe>`) and turns them into the paper's row titles. The tables themselves are
`rlt_core.reports`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlt_core.config import PipelineConfig
from rlt_core.stages.specs import DATA, GENERATE_TRACES, RAW_TRACES, REFINE_TRACES, StageSpec

Ref = Mapping[str, str]  # an artifact ref as the orchestration layer passes it: {"uri", "digest"}
# Table 1's trace sources by the flows' names, each with the stage that writes it: the
# teacher's traces vs the corpus' own traces. The table titles a source by its stage's
# declared `title`.
TRACE_SOURCES: Mapping[str, StageSpec[Any]] = {"RLT": GENERATE_TRACES, "corpus": DATA}
RL_RAW = "RL-raw"  # Table 2's "RL cold-start (raw) + RL": the cold start of RL_RAW runs
RL_GPT = "RL-GPT"  # Table 2's "RL cold-start (GPT) + RL": the raw answers reformatted
# Table 2's cold starts titled by their stage's declaration where the name is not the title.
COLD_STARTS: Mapping[str, StageSpec[Any]] = {RL_RAW: RAW_TRACES, RL_GPT: REFINE_TRACES}


def title(source: str, stages: Mapping[str, StageSpec[Any]]) -> str:
    """What a report row calls `source`: the `title` of the stage `stages` says writes it,
    else the source's own name."""
    spec = stages.get(source)
    return spec.title if spec is not None and spec.title else source


def model_name(reference: str) -> str:
    """A model reference's short name (`offline:smollm2-135m` -> `smollm2-135m`)."""
    return reference.split(":")[-1].split("/")[-1]


def student_label(source: str, recipe: str) -> str:
    """The evaluation key of the student distilled from `source`'s traces with `recipe`."""
    return f"{source}-{recipe}"


def rl_label(source: str, recipe: str) -> str:
    """The evaluation key of the student_rl run of `recipe` cold-started from `source`."""
    return f"rl-{source}-{recipe}"


def pipeline_tables(
    cfg: PipelineConfig,
    students: Mapping[tuple[str, str], Ref],
    trained: Mapping[tuple[str, str], Ref],
    evaluations: Mapping[str, Ref],
) -> dict[str, list[dict[str, Any]]]:
    """Table 1 (the base model, then each (trace source, recipe) student) and Table 2 (each
    (cold start, recipe) RL run) of the full pipeline, as report rows `{"labels",
    "evaluation"}`. Evaluations are keyed `base`, `<source>-<recipe>`, `rl-<start>-<recipe>`."""
    base = model_name(cfg.student_sft[cfg.student_sft_runs[0]].model)
    table_1 = [{"labels": {"Model": base, "Traces": "—", "Student": base, "Data": "—"},
                "evaluation": evaluations["base"]}]  # fmt: skip
    for source, recipe in students:
        recipe_cfg = cfg.student_sft[recipe]
        labels = {
            "Model": f"{source}-{recipe}",
            "Traces": title(source, TRACE_SOURCES),
            "Student": model_name(recipe_cfg.model),
            "Data": student_data(cfg, recipe),
        }
        table_1.append({"labels": labels, "evaluation": evaluations[student_label(source, recipe)]})
    table_2 = [
        {
            "labels": {"Model": f"RL[{recipe}]", "Cold start": title(source, COLD_STARTS)},
            "evaluation": evaluations[rl_label(source, recipe)],
        }
        for source, recipe in trained
    ]
    return {"table_1": table_1, "table_2": table_2}


def student_data(cfg: PipelineConfig, recipe: str) -> str:
    """What a student trained on, as the report's `Data` column says it: the student_sft
    recipe and its rows (`all`: every row of its data set)."""
    return f"{recipe} ({cfg.student_sft[recipe].num_train_samples or 'all'})"


def ablation_row(label: str, evaluation: Ref, traces: Ref, data: str) -> dict[str, Any]:
    """A Table 9 row: the reward variant, what its student trained on (`student_data`), its
    evaluation and the teacher's traces (their mean think length is shown)."""
    labels = {"Reward": label, "Data": data}
    return {"labels": labels, "evaluation": evaluation, "traces": traces}


def rank_row(rank: int, evaluation: Ref, data: str) -> dict[str, Any]:
    """A section 4.5 row: the reward rank of the student's dataset, what the student trained
    on (`student_data`) and its evaluation."""
    labels = {"Rank": str(rank), "Data": data}
    return {"labels": labels, "rank": rank, "evaluation": evaluation}


def transfer_row(model: str, training: str, data: str, evaluation: Ref) -> dict[str, Any]:
    """A Figure 4 (left) row: the model, its countdown training, what it trained on
    (`student_data`, or the RL recipe and its rows) and its evaluation on countdown."""
    labels = {"Model": model, "Countdown training": training, "Data": data}
    return {"labels": labels, "evaluation": evaluation}
