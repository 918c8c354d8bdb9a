"""The report of a flow run as Prefect artifacts: its markdown with the figures inlined, and
each figure as an image artifact."""

from __future__ import annotations

from collections.abc import Mapping

from prefect.artifacts import create_image_artifact, create_markdown_artifact

from rlt_core.figures import data_uri, inline_images
from rlt_core.reports import FIGURE_8, REPORT_MD, REWARD_CURVES
from rlt_core.store import ArtifactStore


def publish_report(store: ArtifactStore, report: Mapping[str, str], key: str) -> str:
    """The report (`report`, a ref in `store`) as a Prefect artifact (`key`): its markdown,
    its figures inlined as data URIs so they render in the Prefect UI for a local and an
    `s3://` store alike, and each figure also as an image artifact (`<key>-figure-8`,
    `<key>-reward-curves`), which the opt-in React UI (/v2) renders too (its markdown drops
    data URIs; scripts/ui_figures.py checks both)."""
    local = store.fetch(report)
    markdown = inline_images((local / REPORT_MD).read_text(), local)
    for name, suffix, text in (
        (FIGURE_8, "figure-8", "Figure 8: think-token lengths per trace source"),
        (REWARD_CURVES, "reward-curves", "teacher_rl reward terms per GRPO step"),
    ):
        if (local / name).is_file():
            create_image_artifact(data_uri(local / name), key=f"{key}-{suffix}", description=text)
    create_markdown_artifact(markdown, key=key, description="RLT experiment report")
    return markdown
