"""What a trace dataset records about itself: rows kept and dropped, truncation, the keep rules
used, and think-token lengths (Figure 8) with a histogram."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rlt_core.config import GenerateTracesConfig

HISTOGRAM_BINS = 20


def think_length_stats(lengths: np.ndarray) -> dict[str, Any]:
    """Count, mean, p10/p50/p90 and max of think-token lengths (Figure 8)."""
    if not lengths.size:
        return {"count": 0}
    quantiles = np.percentile(lengths, [10, 50, 90]).round(1).tolist()
    return {
        "count": int(lengths.size),
        "mean": round(float(lengths.mean()), 1),
        "p10_p50_p90": quantiles,
        "max": int(lengths.max()),
    }


def trace_stats(table: pd.DataFrame, cfg: GenerateTracesConfig) -> dict[str, Any]:
    """What the dataset records about itself: rows kept and dropped, the truncation share of
    the candidates, the selection rules used and the think-token lengths (Figure 8)."""
    kept = table[table["kept"]]
    candidates = len(table) * cfg.num_candidates
    return {
        "rows": len(table),
        "kept": len(kept),
        "dropped": {
            str(k): int(v) for k, v in table.loc[~table["kept"], "reason"].value_counts().items()
        },
        "candidates": candidates,
        "share_truncated": round(float(table["candidates_truncated"].sum()) / candidates, 4),
        "share_unclosed": round(float(table["candidates_unclosed"].sum()) / candidates, 4),
        "rules": {str(k): int(v) for k, v in kept["reason"].value_counts().items()},
        "think_tokens": length_stats(kept["think_tokens"].to_numpy()),
        "student_tokens": length_stats(kept["student_tokens"].to_numpy()),
    }


def length_stats(lengths: np.ndarray) -> dict[str, Any]:
    """The data stage's length summary (count, mean, p10/p50/p90, max) plus a 20-bin
    histogram of token lengths (Figure 8)."""
    stats = think_length_stats(lengths)
    if lengths.size:
        counts, edges = np.histogram(lengths, bins=HISTOGRAM_BINS)
        stats["histogram"] = {"counts": counts.tolist(), "edges": edges.round(1).tolist()}
    return stats
