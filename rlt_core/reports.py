"""The paper's experiment reports, assembled from evaluation and trace artifacts.

- Table 1 (section 4.2): students distilled from each trace source (RLT vs the corpus' own R1
  traces), by student size and data size, on AIME24 / MATH500 / GPQA Diamond and their average.
- Table 2 (section 4.3): cold-start RL from each trace set vs RL with no cold start.
- Table 9 (Appendix D): reward ablations (lambda = 0, alpha = 0) next to the full reward, with
  the think lengths of their traces.
- Figure 4 (left, section 4.4): the countdown transfer's models on the countdown test set, as a
  table and a bar chart, with the overlap of two models' solved sets per question (both ways:
  the paper compares direct RL with the RL-free Bespoke-7B student).
- Section 4.5: the Pearson correlation between a dataset's reward rank and its student's score.
- Figure 8: the distribution of think-token lengths per trace source, as a PNG.
- Reward curves: each teacher_rl run's reward terms per GRPO step (its `reward_log.json`), as
  a PNG (`rlt_core.figures`), with the first and last step's values in a table.
- Held-out teachers: teacher_sft vs teacher_rl on held-out pairs, scored with the RLT reward
  (teacher_eval's `comparison.json`): both means, the difference and its 95% interval.

Every function takes plain values (rows of labelled evaluations, arrays of lengths) and returns
markdown or writes a file, so the orchestration layer decides what runs and publishes the text.
Scores are fractions in [0, 1] in the artifacts and percentages (one decimal) in the tables, as
in the paper.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rlt_core import artifacts
from rlt_core.evaluation.tables import (
    TASK_TITLES,
    ReportRow,
    overall,
    read_scores,
    score_table,
)
from rlt_core.figures import CURVE_PANELS, reward_curve_figure, save_figure, score_bars
from rlt_core.layout import DataFiles, EvalFiles, TeacherEvalFiles, TeacherRLFiles, TraceFiles
from rlt_core.owner import Outcome, Work, own

TRACES = TraceFiles.traces
REWARD_LOG = TeacherRLFiles.reward_log
COMPARISON = TeacherEvalFiles.comparison
HELD_OUT_METRICS = dict(TeacherEvalFiles.metrics)

REPORT_STAGE = "report"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
FIGURE_8 = "think_lengths.png"
REWARD_CURVES = TeacherRLFiles.reward_curves
FIGURE_4 = "figure_4.png"
FIGURES = (FIGURE_8, REWARD_CURVES, FIGURE_4)  # the PNGs a report may hold
DETAILS = EvalFiles.details


def table_1(rows: Sequence[ReportRow], tasks: Sequence[str]) -> str:
    """Table 1: students by trace source, student size and data size (labels `Model`,
    `Traces`, `Student`, `Data`)."""
    title = "**Table 1.** Students distilled from each trace source (pass@1, %).\n\n"
    return title + score_table(
        rows, label_columns=("Model", "Traces", "Student", "Data"), tasks=tasks
    )


def table_2(rows: Sequence[ReportRow], tasks: Sequence[str]) -> str:
    """Table 2: RL with a cold start from each trace set vs RL from the base model (labels
    `Model` and `Cold start`)."""
    title = (
        "**Table 2.** Traditional RL with and without a distillation cold start (pass@1, %).\n\n"
    )
    return title + score_table(rows, label_columns=("Model", "Cold start"), tasks=tasks)


def table_9(rows: Sequence[ReportRow], tasks: Sequence[str]) -> str:
    """Table 9: reward ablations next to the full reward (label `Reward`, and `Data`: the
    students' recipe and rows, when given; extra `Think tokens (mean)` from the traces,
    Appendix D)."""
    title = "**Table 9.** Ablations of the RLT reward (pass@1, %).\n\n"
    columns = ("Reward", *_data_column(rows))
    return title + score_table(
        rows, label_columns=columns, tasks=tasks, extra_columns=("Think tokens (mean)",)
    )


def figure_4(rows: Sequence[ReportRow], tasks: Sequence[str]) -> str:
    """Figure 4 (left) as a table: each model of the countdown transfer (labels `Model`,
    `Countdown training`, `Data`); the bar chart beside it is `FIGURE_4`."""
    title = (
        "**Figure 4 (left).** Countdown test set: a student of the RLT's zero-shot countdown "
        "traces, the main corpus' students without countdown training, and RL on countdown "
        "(pass@1, %).\n\n"
    )
    columns = ("Model", "Countdown training", "Data")
    return title + score_table(rows, label_columns=columns, tasks=tasks)


@dataclass(frozen=True)
class SolvedOverlap:
    """How far two models solve the same questions of one task (section 4.4): the questions
    both were asked, how many each solved and how many both solved."""

    task: str
    first: str
    second: str
    questions: int
    solved_first: int
    solved_second: int
    both: int

    def shares(self) -> tuple[float | None, float | None]:
        """Of the first model's solved questions, the share the second solves too; and the
        other way. None where a model solved nothing (no share to take)."""
        return (
            self.both / self.solved_first if self.solved_first else None,
            self.both / self.solved_second if self.solved_second else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The counts and both shares, for report.json."""
        first, second = self.shares()
        return {**self.__dict__, "first_in_second": first, "second_in_first": second}


def solved_questions(evaluation: str | Path, task: str) -> tuple[set[str], set[str]]:
    """The ids of the questions a finished evaluation asked on `task`, and of those it solved
    (its per-sample details: `correct` 1)."""
    artifacts.read_manifest(evaluation)  # refuses an unfinished artifact
    path = Path(evaluation) / DETAILS / f"{task}.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the evaluation did not run task {task!r} (evaluate.tasks)."
        )
    table = pd.read_parquet(path, columns=["id", "correct"])
    ids = table["id"].astype(str)
    return set(ids), set(ids[table["correct"].astype(float) > 0])


def solved_overlap(first: Evaluated, second: Evaluated, task: str) -> SolvedOverlap:
    """`SolvedOverlap` of two evaluations on `task`, per question. Raises ValueError when they
    were not asked the same questions (then their solved sets cannot be compared)."""
    names = (first.labels.get("Model", "first"), second.labels.get("Model", "second"))
    asked_first, solved_first = solved_questions(first.evaluation, task)
    asked_second, solved_second = solved_questions(second.evaluation, task)
    if asked_first != asked_second:
        raise ValueError(
            f"{names[0]} and {names[1]} were asked different {task} questions "
            f"({len(asked_first)} vs {len(asked_second)}, {len(asked_first ^ asked_second)} "
            "not shared): evaluate both with the same evaluation set and evaluate.max_samples."
        )
    return SolvedOverlap(task, *names, len(asked_first), len(solved_first), len(solved_second),
                         len(solved_first & solved_second))  # fmt: skip


def overlap_section(overlaps: Sequence[SolvedOverlap]) -> str:
    """The solved-set overlaps as a table: per task, each model's solved count, both, and the
    share of each model's solved questions that the other solves too."""
    lines = [
        "| Task | Questions | Solved by A | Solved by B | By both | A's also solved by B "
        "| B's also solved by A |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in overlaps:
        shares = ["—" if v is None else f"{100 * v:.1f}%" for v in item.shares()]
        counts = (item.questions, item.solved_first, item.solved_second, item.both)
        cells = [TASK_TITLES.get(item.task, item.task), *map(str, counts), *shares]
        lines.append("| " + " | ".join(cells) + " |")
    first, second = overlaps[0].first, overlaps[0].second
    return (
        f"**Solved-set overlap** (section 4.4), per question: A = {first}, B = {second}. The "
        "paper finds over 98.5% overlap between direct RL on countdown and the RL-free "
        "Bespoke-7B student.\n\n" + "\n".join(lines) + "\n"
    )


def _data_column(rows: Sequence[ReportRow]) -> tuple[str, ...]:
    """("Data",) when the rows say what their students trained on (recipe and rows)."""
    return ("Data",) if any("Data" in row.labels for row in rows) else ()


@dataclass(frozen=True)
class Correlation:
    """Pearson correlation of section 4.5 between reward rank and student score."""

    r: float
    p_value: float
    n: int

    def to_markdown(self) -> str:
        """One line in the paper's style: r and its p-value."""
        return f"Pearson r = {self.r:.3f} (p = {self.p_value:.3g}, n = {self.n} datasets)\n"


def rank_correlation(ranks: Sequence[int], scores: Sequence[float]) -> Correlation:
    """Section 4.5: Pearson r (and two-sided p-value) between each dataset's reward rank and
    its student's score. Needs at least 3 datasets and scores that are not all equal."""
    if len(ranks) != len(scores) or len(ranks) < 3:
        raise ValueError(
            f"need one score per rank and at least 3 of them, got {len(ranks)} ranks and "
            f"{len(scores)} scores."
        )
    if len(set(scores)) == 1:
        raise ValueError(
            f"every student scored {scores[0]}: a correlation is undefined for a constant "
            "score. Evaluate on more questions (evaluate.max_samples) or train longer."
        )
    result = stats.pearsonr(np.asarray(ranks, dtype=float), np.asarray(scores, dtype=float))
    return Correlation(r=float(result.statistic), p_value=float(result.pvalue), n=len(ranks))


def trace_think_lengths(generate_traces: str | Path) -> np.ndarray:
    """The think-token length of every kept trace of a finished generate_traces artifact."""
    artifacts.read_manifest(generate_traces)  # refuses an unfinished artifact
    table = pd.read_parquet(Path(generate_traces) / TRACES, columns=["think_tokens"])
    return table["think_tokens"].to_numpy()


def corpus_think_lengths(data: str | Path) -> np.ndarray:
    """The think-token length of every corpus trace, from a finished data artifact (the
    baseline traces of Figure 8; written when the data stage had a tokenizer)."""
    artifacts.read_manifest(data)
    path = Path(data) / DataFiles.think_tokens
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the data stage measures think lengths only when it is given the "
            "teacher's tokenizer (run_data(..., tokenizer=...)), as the pipeline does."
        )
    return pd.read_parquet(path, columns=["think_tokens"])["think_tokens"].to_numpy()


def think_length_figure(lengths: Mapping[str, Sequence[int]], out: str | Path) -> Path:
    """Figure 8: the think-token length distribution of each trace source, saved as a PNG.

    One step histogram per source on shared bins, each with a dashed line at its mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: np.asarray(values) for name, values in lengths.items() if len(values)}
    if not series:
        raise ValueError("no think lengths to plot: every trace source is empty.")
    top = max(float(values.max()) for values in series.values())
    bins = np.linspace(0, max(top, 1.0), 31)
    figure, axes = plt.subplots(figsize=(7, 4), dpi=120)
    for index, (name, values) in enumerate(series.items()):
        color = f"C{index}"
        axes.hist(values, bins=bins, histtype="step", linewidth=1.8, color=color, label=name)
        axes.axvline(values.mean(), color=color, linestyle="--", linewidth=1)
    axes.set_xlabel("think tokens per trace")
    axes.set_ylabel("traces")
    axes.set_title("Think-token lengths by trace source (dashed: mean)")
    axes.legend()
    return save_figure(figure, out)


def length_summary(lengths: Mapping[str, Sequence[int]]) -> str:
    """A markdown table of count, mean and median think tokens per trace source (Figure 8)."""
    lines = ["| Traces | Count | Mean | Median |", "|---|---|---|---|"]
    for name, values in lengths.items():
        array = np.asarray(values)
        if array.size:
            lines.append(f"| {name} | {array.size} | {array.mean():.1f} | {np.median(array):.1f} |")
        else:
            lines.append(f"| {name} | 0 | — | — |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Evaluated:
    """A labelled evaluation for a report: the table's label columns, the evaluate artifact
    directory and, for Table 9, the generate_traces artifact whose think lengths it shows."""

    labels: Mapping[str, str]
    evaluation: str
    traces: str | None = None


def report_rows(entries: Sequence[Evaluated]) -> list[ReportRow]:
    """Read the scores (and the traces' mean think length, when given) of each entry."""
    rows = []
    for entry in entries:
        extra: dict[str, float | int | str] = {}
        if entry.traces is not None:
            lengths = trace_think_lengths(entry.traces)
            extra["Think tokens (mean)"] = f"{lengths.mean():.1f}" if lengths.size else "—"
        rows.append(ReportRow(entry.labels, read_scores(entry.evaluation), extra))
    return rows


def run_report(
    store: str | Path,
    *,
    title: str,
    tasks: Sequence[str],
    table1: Sequence[Evaluated] = (),
    table2: Sequence[Evaluated] = (),
    table9: Sequence[Evaluated] = (),
    figure4: Sequence[Evaluated] = (),
    overlap: Sequence[Evaluated] = (),
    lengths: Mapping[str, Sequence[int]] | None = None,
    ranked: Sequence[tuple[int, Evaluated]] = (),
    curves: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    held_out: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> artifacts.ArtifactRef:
    """Assemble the requested tables into `<store>/report/<key>/`: report.md, report.json,
    think_lengths.png (Figure 8, when `lengths` are given), reward_curves.png (when `curves`,
    teacher_rl label -> its reward log, are given) and the manifest last. `held_out` maps a
    teacher's label to its teacher_eval comparison (`comparison.json`); `notes` are printed
    under the tables ("Not run": a row the flow could not make, and why).

    `figure4` are Figure 4's models (a table and `FIGURE_4`, their Overall as bars); `overlap`
    two evaluations whose solved sets are compared per question on each task (`solved_overlap`).
    `ranked` holds (reward rank, evaluation) pairs for the section 4.5 correlation. The key
    hashes the labels, ranks, lengths and the evaluations' digests: a finished report of the
    same inputs is returned as it is.
    """
    lengths = {name: [int(v) for v in values] for name, values in (lengths or {}).items()}
    if overlap and len(overlap) != 2:
        raise ValueError(f"overlap compares two evaluations, got {len(overlap)}")
    tables = (table1, table2, table9, figure4, overlap)
    entries = [*(e for table in tables for e in table), *(entry for _, entry in ranked)]
    upstream = {str(i): artifacts.load_ref(e.evaluation).digest for i, e in enumerate(entries)}
    config = {
        "title": title,
        "tasks": list(tasks),
        "tables": [[dict(e.labels) for e in t] for t in tables[:3]],
        "ranks": [rank for rank, _ in ranked],
        "lengths": artifacts.digest_json(lengths),
    }
    if figure4 or overlap:  # (absent otherwise: the keys of earlier reports stay)
        config["figure_4"] = [[dict(e.labels) for e in t] for t in (figure4, overlap)]
    if curves:
        config["curves"] = artifacts.digest_json({k: list(v) for k, v in curves.items()})
    if held_out:
        config["held_out"] = artifacts.digest_json(dict(held_out))
    if notes:
        config["notes"] = list(notes)
    key = artifacts.StageKey.of(REPORT_STAGE, config, upstream, __name__)

    def write(work: Work) -> Outcome:
        """The report's files in the run's work area; its summary for the manifest."""
        out = work.fresh()
        sections, summary = _tables(tasks, table1, table2, table9, figure4)
        if notes:
            sections.append("**Not run.**\n\n" + "".join(f"- {n}\n" for n in notes))
            summary["not_run"] = list(notes)
        if figure4:
            bars = {e.labels["Model"]: overall(read_scores(e.evaluation), tasks) for e in figure4}
            title_4 = "Figure 4 (left): " + ", ".join(TASK_TITLES.get(t, t) for t in tasks)
            score_bars(bars, out / FIGURE_4, title=f"{title_4} (pass@1)")
            sections.append(f"![Figure 4 (left)]({FIGURE_4})\n")
        if overlap:
            overlaps = [solved_overlap(*overlap, task) for task in tasks]
            sections.append(overlap_section(overlaps))
            summary["solved_overlap"] = [item.to_dict() for item in overlaps]
        if ranked:
            sections.append(_correlation(ranked, tasks, summary))
        if lengths:
            think_length_figure(lengths, out / FIGURE_8)
            sections.append(_figure_8(lengths))
        if curves and any(curves.values()):
            reward_curve_figure(curves, out / REWARD_CURVES)
            sections.append(_reward_curves(curves))
        if held_out:
            sections.append(held_out_table(held_out))
            summary["held_out"] = {label: dict(value) for label, value in held_out.items()}
        (out / REPORT_MD).write_text(f"# {title}\n\n" + "\n".join(sections))
        (out / REPORT_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True))
        return Outcome(summary)

    return own(key, store, write)


def _tables(
    tasks: Sequence[str], *tables: Sequence[Evaluated]
) -> tuple[list[str], dict[str, object]]:
    """The markdown of Tables 1, 2, 9 and Figure 4's table (those with rows) and their scores
    as JSON."""
    sections: list[str] = []
    summary: dict[str, object] = {}
    builders = {"table_1": table_1, "table_2": table_2, "table_9": table_9, "figure_4": figure_4}
    for (name, build), entries in zip(builders.items(), tables, strict=True):
        if entries:
            rows = report_rows(entries)
            sections.append(build(rows, tasks))
            summary[name] = [{"labels": dict(r.labels), "scores": dict(r.scores)} for r in rows]
    return sections, summary


def _correlation(
    ranked: Sequence[tuple[int, Evaluated]], tasks: Sequence[str], summary: dict[str, object]
) -> str:
    """Section 4.5: the students' scores by reward rank, and the rank-score correlation (or why
    it is undefined: every student scored the same)."""
    rows = [
        ReportRow(
            {"Rank": str(rank), **{k: v for k, v in entry.labels.items() if k == "Data"}},
            read_scores(entry.evaluation),
        )
        for rank, entry in ranked
    ]
    scores = [overall(row.scores, tasks) for row in rows]
    table = score_table(rows, label_columns=("Rank", *_data_column(rows)), tasks=tasks)
    try:
        result = rank_correlation([rank for rank, _ in ranked], scores)
    except ValueError as error:
        summary["rank_correlation"] = {
            "r": None,
            "p_value": None,
            "n": len(rows),
            "why": str(error),
        }
        line = f"correlation undefined: {error}\n"
    else:
        summary["rank_correlation"] = {"r": result.r, "p_value": result.p_value, "n": result.n}
        line = result.to_markdown()
    return (
        "**Section 4.5.** Students distilled from each reward rank (pass@1, %).\n\n"
        f"{table}\nReward rank vs student score: {line}\n"
        "The ranks order each pair's completions by r_RLT with the KL estimator named in the "
        "title. The paper's sampled estimator (log pi_T - log pi_S at the written tokens) "
        "estimates a KL only on the teacher's own samples, as here; to rank text the teacher "
        "did not write, use the full estimator (`rlt score --kl-estimator full`).\n"
    )


def _figure_8(lengths: Mapping[str, Sequence[int]]) -> str:
    return (
        f"**Figure 8.** Think-token lengths per trace source\n\n{length_summary(lengths)}\n"
        f"![Figure 8]({FIGURE_8})\n"
    )


def _reward_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The reward-curve section: each run's first and last logged step, then the figure."""
    header = ["Teacher", "Step", *(title.split(":")[0] for _, title in CURVE_PANELS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, steps in curves.items():
        for entry in (steps[0], steps[-1]) if len(steps) > 1 else steps[:1]:
            cells = [label, str(entry["step"])]
            for key, _ in CURVE_PANELS:
                value = entry.get(key)
                cells.append("—" if value is None or value != value else f"{float(value):.3g}")
            lines.append("| " + " | ".join(cells) + " |")
    return (
        "**Reward curves.** teacher_rl's reward terms per GRPO step (batch means; first and "
        "last step below)\n\n" + "\n".join(lines) + f"\n\n![Reward curves]({REWARD_CURVES})\n"
    )


def held_out_table(held_out: Mapping[str, Mapping[str, Any]]) -> str:
    """Each teacher's held-out comparison (teacher_eval): per metric the teacher_sft and
    teacher_rl means, their difference and its 95% interval over pairs."""
    lines = [
        "| Teacher | Metric | teacher_sft | teacher_rl | RL - SFT | 95% CI |",
        "|---|---|---|---|---|---|",
    ]
    sizes = []
    for label, comparison in held_out.items():
        sizes.append(
            f"{label}: {comparison.get('pairs', '?')} pairs x "
            f"{comparison.get('samples_per_pair', '?')} samples"
        )
        for name, title in HELD_OUT_METRICS.items():
            row = comparison["metrics"].get(name)
            if row is None:
                continue
            low, high = row["ci95"]
            interval = f"[{_number(low)}, {_number(high)}]"
            cells = [label, title, _number(row["before"]), _number(row["after"]),
                     _number(row["difference"], sign=True), interval]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return (
        "**Held-out teachers.** teacher_sft vs teacher_rl explaining the same held-out pairs "
        "(same prompts and seeds), scored with the RLT reward as in training; differences are "
        f"paired by pair ({'; '.join(sizes)}).\n\n" + "\n".join(lines) + "\n"
    )


def _number(value: float | None, *, sign: bool = False) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:+.3g}" if sign else f"{value:.3g}"


def report_from_refs(
    store: Any,
    *,
    title: str,
    tasks: Sequence[str],
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    lengths: Mapping[str, Mapping[str, Any]] | None = None,
    curves: Mapping[str, Mapping[str, Any]] | None = None,
    held_out: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
) -> artifacts.ArtifactRef:
    """`run_report` over refs: each is fetched from `store` (an `rlt_core.store.ArtifactStore`)
    into its working directory, where the report is written.

    `tables` maps table_1 / table_2 / table_9 / figure_4 to rows `{"labels", "evaluation"[,
    "traces"]}`, `solved_overlap` to two such rows and `ranked` to rows with a `rank` too;
    `lengths` maps a trace source to `{"traces": ref}` (a generate_traces artifact) or
    `{"corpus": ref}` (the data artifact's own traces);
    `curves` maps a teacher's label to `{"teacher_rl": ref}` (its reward log is drawn),
    `held_out` to `{"teacher_eval": ref}` (its comparison is tabled); `notes` are printed.
    """

    def entry(row: Mapping[str, Any]) -> Evaluated:
        """A report row's refs fetched into an `Evaluated`."""
        traces = str(store.fetch(row["traces"])) if row.get("traces") else None
        return Evaluated(row["labels"], str(store.fetch(row["evaluation"])), traces)

    def think_lengths(source: Mapping[str, Any]) -> list[int]:
        """The think-token lengths of one trace source, fetched."""
        if "traces" in source:
            return trace_think_lengths(store.fetch(source["traces"])).tolist()
        return corpus_think_lengths(store.fetch(source["corpus"])).tolist()

    return run_report(
        store.working,
        title=title,
        tasks=tasks,
        table1=[entry(r) for r in tables.get("table_1", ())],
        table2=[entry(r) for r in tables.get("table_2", ())],
        table9=[entry(r) for r in tables.get("table_9", ())],
        figure4=[entry(r) for r in tables.get("figure_4", ())],
        overlap=[entry(r) for r in tables.get("solved_overlap", ())],
        lengths={name: think_lengths(source) for name, source in (lengths or {}).items()},
        ranked=[(int(r["rank"]), entry(r)) for r in tables.get("ranked", ())],
        curves={
            label: json.loads((store.fetch(source["teacher_rl"]) / REWARD_LOG).read_text())
            for label, source in (curves or {}).items()
        },
        held_out={
            label: json.loads((store.fetch(source["teacher_eval"]) / COMPARISON).read_text())
            for label, source in (held_out or {}).items()
        },
        notes=notes,
    )
