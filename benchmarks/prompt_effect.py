"""Figures: how much the student's system prompt moves the RLT reward of a corpus row.

The reward's frozen student reads each row under a system prompt. Bespoke-Stratos-17k rows
carry the text the Bespoke-trained students know ("analisying"); the paper's Figure 6 prints
it with "analysing". This script scores the valid rows of the Bespoke-format fixture
(`tests/fixtures/data/bespoke_sample.jsonl`, each with its own R1-style thought as the
explanation) along the text path (`align_text`, as `rlt score` and the keep rule do) under the
two prompts, with SmolLM2-135M-Instruct as teacher and student (the CPU profiles' model), and
prints r_SS (Eq. 3), r_KL (Eq. 4) and r_RLT per row and prompt, and their differences.

Usage:
    python benchmarks/prompt_effect.py            # about 20 s on 2 cores
    python benchmarks/prompt_effect.py --set reward.kl_estimator=full
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rlt_core import formats
from rlt_core.config import load_config
from rlt_core.data import load_corpus, row_systems
from rlt_core.models import materialize_smollm2
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import align_text

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "data" / "bespoke_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = str(materialize_smollm2())
    cfg = load_config("tiny", args.overrides).reward  # Table 3's reward values (tiny = paper's)
    scorer = RLTScorer.from_refs(ref, ref, cfg=cfg, dtype=torch.float32, device="cpu")
    rows = load_corpus(str(FIXTURE), schema="bespoke", mode="lenient").rows
    prompts = {"figure 6": [formats.FIGURE_6_SYSTEM_PROMPT] * len(rows), "data": row_systems(rows)}
    scores = {}
    for name, systems in prompts.items():
        samples = [
            align_text(scorer.tokenizer, r.id, r.question, r.solution, r.thought, system=system)
            for r, system in zip(rows.itertuples(), systems, strict=True)
        ]
        scores[name] = scorer.score(samples)
    print(f"SmolLM2-135M-Instruct as teacher and student; {cfg}")
    print(f"{'row':22} {'prompt':9} {'r_SS':>9} {'r_KL':>9} {'r_RLT':>9}")
    for i, row_id in enumerate(rows["id"]):
        for name, got in scores.items():
            print(
                f"{row_id:22} {name:9} {got.r_ss[i].item():>9.4f} {got.r_kl[i].item():>9.4f} "
                f"{got.reward[i].item():>9.4f}"
            )
        delta = scores["data"].r_ss[i] - scores["figure 6"].r_ss[i]
        print(f"{'':22} {'data - 6':9} {delta.item():>+9.4f}")
    mean = (scores["data"].r_ss - scores["figure 6"].r_ss).abs().mean().item()
    print(f"mean |r_SS(data) - r_SS(figure 6)| over {len(rows)} rows: {mean:.4f}")


if __name__ == "__main__":
    main()
