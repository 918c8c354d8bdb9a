"""Figures people look at instead of reading logs: the teacher's reward curves, and markdown
whose images render anywhere (the Prefect UI included).

- `reward_curve_figure`: per GRPO step of teacher_rl (its `reward_log.json`), r_RLT (Eq. 5),
  r_SS (Eq. 3), r_KL (Eq. 4), the format-penalty rate, the think length and the
  solution-copy share (`rlt_core.reward.copying`), one line per run, so a run and its ablation
  (lambda = 0) can sit in one figure.
- `score_bars`: one bar per model's pass@1 (Figure 4, left: the countdown transfer).
- `inline_images`: a markdown image that names a PNG file beside the markdown becomes a
  `data:image/png;base64,...` URI. A report links its figures by file name, which a browser
  cannot open from the Prefect UI (a local path, or an `s3://` URI it cannot read); inlined,
  the image travels inside the markdown artifact itself and renders for every store.

matplotlib runs on its Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# (reward_log.json key, panel title) in the order of the figure's panels
CURVE_PANELS = (
    ("rlt/reward", "r_RLT (Eq. 5)"),
    ("rlt/r_ss", "r_SS: student log-likelihood of the solution (Eq. 3)"),
    ("rlt/r_kl", "r_KL: KL of the think tokens (Eq. 4)"),
    ("rlt/penalty_rate", "format-penalty rate"),
    ("rlt/think_len", "think tokens (mean)"),
    ("rlt/solution_copy", "solution copy (share of 4-grams)"),
)

_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<target>[^)\s]+\.png)\)")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_points(steps: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The (step, value) pairs of one logged term; entries without it (or NaN) are skipped."""
    xs, ys = [], []
    for entry in steps:
        value = entry.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        xs.append(int(entry["step"]))
        ys.append(float(value))
    return xs, ys


def reward_curve_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], out: str | Path, *, title: str | None = None
) -> Path:
    """The reward curves of one or more teacher_rl runs (label -> reward log entries) as a PNG.

    Six panels (`CURVE_PANELS`), one line per run with a marker per step; a term a run did not
    log is left out of that panel (said in the panel when no run logged it). Raises ValueError
    when no run has a logged step.
    """
    if not any(runs.values()):
        raise ValueError(
            "no reward steps to plot: every reward log is empty. teacher_rl logs one entry per "
            "GRPO step (reward_log.json); a run without steps has nothing to show."
        )
    plt = _pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5), dpi=100, sharex=True)
    for axis, (key, panel) in zip(axes.flat, CURVE_PANELS, strict=True):
        drawn = False
        for index, (label, steps) in enumerate(runs.items()):
            xs, ys = curve_points(steps, key)
            if xs:
                axis.plot(xs, ys, marker="o", markersize=3, color=f"C{index}", label=label)
                drawn = True
        if not drawn:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(panel, fontsize=10)
        axis.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for axis in axes[-1]:
        axis.set_xlabel("GRPO step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(runs) > 1 and handles:
        figure.legend(handles, labels, loc="upper right", fontsize=9)
    figure.suptitle(title or "teacher_rl reward terms per step (batch means)")
    return save_figure(figure, out)


def score_bars(scores: Mapping[str, float], out: str | Path, *, title: str) -> Path:
    """One bar per model (label -> pass@1 as a fraction), its percentage written on the bar,
    as a PNG (Figure 4, left). A missing score (NaN) is drawn as an empty slot marked "—"."""
    if not scores:
        raise ValueError("no scores to plot: give at least one model's score.")
    plt = _pyplot()
    labels = list(scores)
    values = [100 * scores[label] for label in labels]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.5 * len(labels)), 4), dpi=110)
    heights = [0.0 if math.isnan(v) else v for v in values]
    bars = axis.bar(range(len(labels)), heights, color=[f"C{i}" for i in range(len(labels))])
    for bar, value in zip(bars, values, strict=True):
        text = "—" if math.isnan(value) else f"{value:.1f}"
        axis.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=9)  # fmt: skip
    axis.set_xticks(range(len(labels)), labels, rotation=15, ha="right", fontsize=9)
    axis.set_ylabel("pass@1 (%)")
    axis.set_ylim(0, 105)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    return save_figure(figure, out)


def save_figure(figure: Any, out: str | Path) -> Path:
    """Lay out `figure`, write it as a PNG at `out` (parents made) and free it."""
    figure.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    _pyplot().close(figure)
    return path


def data_uri(png: str | Path) -> str:
    """The PNG file as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def inline_images(markdown: str, folder: str | Path) -> str:
    """`markdown` with each `![alt](name.png)` whose file is in `folder` made a data URI.

    Images whose file is not there (a URL, another folder) are left as they are.
    """
    folder = Path(folder)

    def replace(match: re.Match[str]) -> str:
        """The image as a data URI when its file is beside the markdown, else unchanged."""
        target = match["target"]
        path = folder / target
        if "/" in target or ":" in target or not path.is_file():
            return match[0]
        return f"![{match['alt']}]({data_uri(path)})"

    return _IMAGE.sub(replace, markdown)
