"""Experiment reports (Tables 1, 2, 9, section 4.5, Figure 8) from real artifact directories."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rlt_core import artifacts
from rlt_core.figures import curve_points, data_uri, inline_images, reward_curve_figure
from rlt_core.reports import (
    FIGURE_4,
    FIGURE_8,
    REPORT_JSON,
    REPORT_MD,
    REWARD_CURVES,
    Evaluated,
    ReportRow,
    overall,
    rank_correlation,
    read_scores,
    run_report,
    score_table,
    solved_overlap,
    think_length_figure,
)

TASKS = ("aime24", "math500", "gpqa_diamond")


def _evaluation(root: Path, name: str, scores: dict[str, float]) -> str:
    """A finished evaluate artifact whose manifest metrics hold `scores`."""
    out = root / "evaluate" / name
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(scores))
    artifacts.write_manifest(out, stage="evaluate", config={}, upstream={}, metrics=scores)
    return str(out)


def _traces(root: Path, name: str, lengths: list[int]) -> str:
    out = root / "generate_traces" / name
    out.mkdir(parents=True)
    pd.DataFrame({"think_tokens": lengths}).to_parquet(out / "traces.parquet")
    artifacts.write_manifest(out, stage="generate_traces", config={}, upstream={}, metrics={})
    return str(out)


def test_overall_is_the_unweighted_mean_and_missing_is_nan() -> None:
    # (0.2 + 0.5 + 0.8) / 3 = 0.5
    assert overall({"aime24": 0.2, "math500": 0.5, "gpqa_diamond": 0.8}, TASKS) == pytest.approx(
        0.5
    )
    assert math.isnan(overall({"aime24": 0.2}, TASKS))


def test_score_table_prints_percentages_in_the_paper_layout() -> None:
    rows = [
        ReportRow(
            {"Model": "RLT-7B", "Data": "1K"},
            {"aime24": 0.2, "math500": 0.845, "gpqa_diamond": 0.4},
        ),
        ReportRow({"Model": "Bespoke-7B", "Data": "1K"}, {"aime24": 0.1, "math500": 0.7}),
    ]
    table = score_table(rows, label_columns=("Model", "Data"), tasks=TASKS)
    assert table.splitlines() == [
        "| Model | Data | AIME24 | MATH500 | GPQA Diamond | Overall |",
        "|---|---|---|---|---|---|",
        # Overall: (20 + 84.5 + 40) / 3 = 48.17 -> 48.2
        "| RLT-7B | 1K | 20.0 | 84.5 | 40.0 | 48.2 |",
        "| Bespoke-7B | 1K | 10.0 | 70.0 | — | — |",  # GPQA missing: no average either
    ]


def test_rank_correlation_by_hand() -> None:
    # Scores fall exactly linearly with the rank: r = -1. With 4 points the p-value is 0.
    exact = rank_correlation([1, 2, 3, 4], [0.8, 0.6, 0.4, 0.2])
    assert exact.r == pytest.approx(-1.0) and exact.p_value == pytest.approx(0.0, abs=1e-9)
    # ranks 1..3 vs scores 0.5, 0.1, 0.3: mean rank 2, mean score 0.3;
    # cov = (-1)(0.2) + 0(-0.2) + 1(0) = -0.2; sd_rank = sqrt(2), sd_score = sqrt(0.08)
    # r = -0.2 / sqrt(2 * 0.08) = -0.5
    assert rank_correlation([1, 2, 3], [0.5, 0.1, 0.3]).r == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="constant score"):
        rank_correlation([1, 2, 3], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlation([1, 2], [0.5, 0.1])


def test_figure_8_is_a_png_with_one_curve_per_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lengths = {"RLT": rng.integers(100, 400, 50), "Bespoke (R1)": rng.integers(300, 900, 50)}
    path = think_length_figure(lengths, tmp_path / "fig" / FIGURE_8)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (840, 480)  # 7 x 4 in at 120 dpi
    with pytest.raises(ValueError, match="every trace source is empty"):
        think_length_figure({"RLT": []}, tmp_path / "empty.png")


def test_report_assembles_tables_correlation_and_figure(tmp_path: Path) -> None:
    store = tmp_path / "store"
    rlt = _evaluation(tmp_path, "rlt", {"aime24": 0.2, "math500": 0.8, "gpqa_diamond": 0.5})
    base = _evaluation(tmp_path, "base", {"aime24": 0.1, "math500": 0.6, "gpqa_diamond": 0.4})
    lam0 = _evaluation(tmp_path, "lam0", {"aime24": 0.0, "math500": 0.5, "gpqa_diamond": 0.3})
    ref = run_report(
        store,
        title="tiny",
        tasks=TASKS,
        table1=[
            Evaluated({"Model": "RLT", "Traces": "RLT", "Student": "7B", "Data": "1K"}, rlt),
            Evaluated({"Model": "Bespoke", "Traces": "R1", "Student": "7B", "Data": "1K"}, base),
        ],
        table9=[
            Evaluated({"Reward": "full"}, rlt, _traces(tmp_path, "t1", [10, 20, 30])),
            Evaluated({"Reward": "lambda = 0"}, lam0, _traces(tmp_path, "t0", [40, 50])),
        ],
        lengths={"RLT": [10, 20, 30], "R1": [40, 50]},
        ranked=[(1, Evaluated({}, rlt)), (2, Evaluated({}, base)), (3, Evaluated({}, lam0))],
    )
    out = Path(ref.uri)
    text = (out / REPORT_MD).read_text()
    assert "| RLT | RLT | 7B | 1K | 20.0 | 80.0 | 50.0 | 50.0 |" in text
    assert "| lambda = 0 | 0.0 | 50.0 | 30.0 | 26.7 | 45.0 |" in text  # mean of 40, 50
    assert "Pearson r = " in text and f"![Figure 8]({FIGURE_8})" in text
    assert (out / FIGURE_8).is_file()
    summary = json.loads((out / REPORT_JSON).read_text())
    # Overall 0.5, 0.3667, 0.2667 fall with the rank.
    assert summary["rank_correlation"]["r"] < -0.9
    assert artifacts.read_manifest(out)["metrics"] == summary
    assert (
        run_report(store, title="tiny", tasks=TASKS, table1=[Evaluated({"Model": "RLT"}, rlt)])
        != ref
    )


def test_table_9_and_the_ranks_say_what_their_students_trained_on(tmp_path: Path) -> None:
    # The experiment's students (recipe and rows) are in the report, not only in the config.
    rlt = _evaluation(tmp_path, "rlt", {"aime24": 0.2, "math500": 0.8, "gpqa_diamond": 0.5})
    base = _evaluation(tmp_path, "base", {"aime24": 0.1, "math500": 0.6, "gpqa_diamond": 0.4})
    data = {"Data": "full (16710)"}
    ref = run_report(
        tmp_path / "store", title="17K", tasks=TASKS,
        table9=[Evaluated({"Reward": "full", **data}, rlt, _traces(tmp_path, "t", [10]))],
        ranked=[(r, Evaluated({"Rank": str(r), **data}, e)) for r, e in ((1, rlt), (2, base),
                                                                        (3, base))],
    )  # fmt: skip
    text = (Path(ref.uri) / REPORT_MD).read_text()
    assert "| Reward | Data |" in text
    assert "| full | full (16710) | 20.0 |" in text
    assert "| Rank | Data |" in text and "| 2 | full (16710) | 10.0 |" in text


def _solved(root: Path, name: str, correct: list[int], ids: list[str] | None = None) -> str:
    """A finished countdown evaluation whose per-question details mark `correct`."""
    ids = ids or [f"q{i}" for i in range(len(correct))]
    out = Path(_evaluation(root, name, {"countdown": sum(correct) / len(correct)}))
    (out / "details").mkdir()
    frame = pd.DataFrame({"id": ids, "question": ids, "correct": correct})
    frame.to_parquet(out / "details" / "countdown.parquet")
    return str(out)


def test_solved_overlap_by_hand_both_ways_and_refused_on_other_questions(tmp_path: Path) -> None:
    # A solves q0 q1 q2 q3, B solves q1 q2 q3 q4 q5: both 3, 3/4 of A's and 3/6 of B's.
    a = Evaluated({"Model": "A"}, _solved(tmp_path, "a", [1, 1, 1, 1, 0, 0, 0, 0]))
    b = Evaluated({"Model": "B"}, _solved(tmp_path, "b", [0, 1, 1, 1, 1, 1, 0, 0]))
    overlap = solved_overlap(a, b, "countdown")
    assert (overlap.questions, overlap.solved_first, overlap.solved_second, overlap.both) == (
        8, 4, 5, 3,
    )  # fmt: skip
    assert overlap.shares() == (0.75, 0.6)
    nothing = Evaluated({"Model": "C"}, _solved(tmp_path, "c", [0] * 8))
    assert solved_overlap(nothing, a, "countdown").shares() == (None, 0.0)
    other = Evaluated({"Model": "D"}, _solved(tmp_path, "d", [1] * 8, [f"x{i}" for i in range(8)]))
    with pytest.raises(ValueError, match="asked different countdown questions"):
        solved_overlap(a, other, "countdown")
    with pytest.raises(FileNotFoundError, match="did not run task 'math500'"):
        solved_overlap(a, b, "math500")


def test_figure_4_is_a_table_a_bar_chart_and_the_solved_overlap(tmp_path: Path) -> None:
    data = {"Countdown training": "none", "Data": "full (16710)"}
    rl = Evaluated({"Model": "CD RL", **data}, _solved(tmp_path, "rl", [1, 1, 0, 0]))
    student = Evaluated({"Model": "corpus student", **data}, _solved(tmp_path, "s", [1, 0, 1, 0]))
    ref = run_report(tmp_path / "store", title="4.4", tasks=("countdown",),
                     figure4=[student, rl], overlap=[rl, student])  # fmt: skip
    out = Path(ref.uri)
    text = (out / REPORT_MD).read_text()
    assert "**Figure 4 (left).**" in text
    assert "| Model | Countdown training | Data | Countdown | Overall |" in text
    assert "| CD RL | none | full (16710) | 50.0 | 50.0 |" in text
    assert f"![Figure 4 (left)]({FIGURE_4})" in text and Image.open(out / FIGURE_4).size[0] > 0
    assert "A = CD RL, B = corpus student" in text
    assert "| Countdown | 4 | 2 | 2 | 1 | 50.0% | 50.0% |" in text
    summary = json.loads((out / REPORT_JSON).read_text())
    assert summary["solved_overlap"][0]["both"] == 1
    assert summary["figure_4"][1]["labels"]["Model"] == "CD RL"
    with pytest.raises(ValueError, match="compares two evaluations"):
        run_report(tmp_path / "store", title="4.4", tasks=("countdown",), overlap=[rl])


def test_unfinished_evaluation_is_refused(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_scores(tmp_path / "half")


def _steps(rewards: list[float], copy: bool = True) -> list[dict]:
    """A reward log as teacher_rl writes it (one entry per step)."""
    steps = []
    for step, reward in enumerate(rewards, start=1):
        entry = {"step": step, "rlt/reward": reward, "rlt/r_ss": -1.0 / step, "rlt/r_kl": 0.5,
                 "rlt/penalty_rate": 0.25, "rlt/think_len": 40.0 + step}  # fmt: skip
        if copy:
            entry["rlt/solution_copy"] = 0.1 * step
        steps.append(entry)
    return steps


def test_reward_curves_are_a_six_panel_png_and_refuse_empty_logs(tmp_path: Path) -> None:
    runs = {"lambda = 3": _steps([-2.0, -1.5, -1.0]), "lambda = 0": _steps([-1.0], copy=False)}
    path = reward_curve_figure(runs, tmp_path / REWARD_CURVES)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1200, 650)
    steps, values = curve_points(runs["lambda = 3"], "rlt/solution_copy")
    assert steps == [1, 2, 3] and values == pytest.approx([0.1, 0.2, 0.3])
    assert curve_points(runs["lambda = 0"], "rlt/solution_copy") == ([], [])
    with pytest.raises(ValueError, match="every reward log is empty"):
        reward_curve_figure({"run": []}, tmp_path / "none.png")


def test_report_draws_the_teachers_reward_curves_and_lists_first_and_last_step(
    tmp_path: Path,
) -> None:
    rlt = _evaluation(tmp_path, "rlt", {"aime24": 0.2, "math500": 0.8, "gpqa_diamond": 0.5})
    curves = {"lambda = 3": _steps([-2.0, -1.5, -1.0]), "lambda = 0": _steps([-1.25])}
    ref = run_report(tmp_path / "store", title="curves", tasks=TASKS,
                     table9=[Evaluated({"Reward": "full"}, rlt)], curves=curves)  # fmt: skip
    out = Path(ref.uri)
    text = (out / REPORT_MD).read_text()
    assert f"![Reward curves]({REWARD_CURVES})" in text and (out / REWARD_CURVES).is_file()
    # first and last step of the 3-step run, the one step of the other (reward, r_SS, ...)
    assert "| lambda = 3 | 1 | -2 | -1 | 0.5 | 0.25 | 41 | 0.1 |" in text
    assert "| lambda = 3 | 3 | -1 | -0.333 | 0.5 | 0.25 | 43 | 0.3 |" in text
    assert "| lambda = 0 | 1 | -1.25 |" in text
    # another log is another report
    other = run_report(tmp_path / "store", title="curves", tasks=TASKS,
                       table9=[Evaluated({"Reward": "full"}, rlt)],
                       curves={"lambda = 3": _steps([-2.0])})  # fmt: skip
    assert other.uri != ref.uri


def test_inline_images_makes_a_local_png_a_data_uri_and_leaves_the_rest(tmp_path: Path) -> None:
    think_length_figure({"RLT": [1, 2, 3]}, tmp_path / FIGURE_8)
    markdown = (f"![Figure 8]({FIGURE_8})\n![gone](missing.png)\n"
                "![remote](https://example.org/a.png)\n")  # fmt: skip
    inlined = inline_images(markdown, tmp_path)
    assert f"![Figure 8]({data_uri(tmp_path / FIGURE_8)})" in inlined
    assert "![gone](missing.png)" in inlined and "(https://example.org/a.png)" in inlined
    encoded = data_uri(tmp_path / FIGURE_8).removeprefix("data:image/png;base64,")
    assert base64.b64decode(encoded) == (tmp_path / FIGURE_8).read_bytes()
