"""Figures: how the token layout of the reward's two sequences moves r_RLT on a real model.

SmolLM2-135M-Instruct (offline, `rlt_core.models`) is teacher and student, as in the CPU
profiles. One countdown question and solution, two explanations: one that states the steps and
one about something else. Each is scored with the RLT reward (Eq. 3 to 5; sampled KL, lambda 3,
alpha 0.01, temperature 0.7 unless overridden) along the two paths the project uses:

- `text`: the explanation given as text (`align_text`, as `rlt score` and the keep rule do);
- `sampled`: the teacher's completion ids as teacher_sft tokenises a completion (explanation,
  closing tag, end of turn), aligned the way the GRPO reward aligns sampled ids
  (`align_completion`).

For each it prints r_SS, r_KL and r_RLT, and whether the student ids the reward scored are the
ids student_sft trains on for the same row (`sft_ids`: `rlt_core.sft_data`'s tokenisation of
the student-format example, prompt and completion). The ranking the method depends on is
"steps above unrelated".

`--rows N` adds a wider check on N countdown corpus rows (the tiny profile's corpus): each
row's own written-search thought against the thought of the next row (a step-by-step
explanation of another problem), scored along the text path; it prints the mean r_SS and r_RLT
of both and how often the row's own explanation ranks first.

Usage:
    python benchmarks/reward_layout.py                  # SmolLM2, about 30 s on 2 cores
    python benchmarks/reward_layout.py --set reward.alpha=0 --set reward.kl_estimator=full
    python benchmarks/reward_layout.py --rows 32       # + 32 countdown rows, about 5 min more
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from rlt_core.config import RewardConfig
from rlt_core.data import countdown_rows, countdown_splits
from rlt_core.models import materialize_smollm2
from rlt_core.reward.scorer import RLTScorer
from rlt_core.reward.spans import align_completion, align_text
from rlt_core.sft_data import student_pairs, teacher_pairs, tokenize_pairs

QUESTION = "Using the numbers [4, 6, 9], create an equation that equals 33."
SOLUTION = "4 * 6 + 9 = 33. The answer is <answer>4 * 6 + 9</answer>."
EXPLANATIONS = {
    "steps": (
        "We need 33 from 4, 6 and 9. Multiply 4 by 6 to get 24. Then add 9: 24 + 9 = 33. "
        "So the equation is 4 * 6 + 9 = 33."
    ),
    "unrelated": (
        "The Eiffel Tower is in Paris. It was finished in 1889 and is made of wrought iron. "
        "Many tourists visit it every summer."
    ),
}


def reward_config(overrides: list[str], student: str) -> RewardConfig:
    """The default RewardConfig with `reward.<field>=<value>` overrides applied."""
    values: dict[str, object] = {"student_model": student}
    for item in overrides:
        key, _, raw = item.partition("=")
        name = key.removeprefix("reward.").replace("lambda", "lam")
        values[name] = raw if name == "kl_estimator" else float(raw)
    return RewardConfig(**values)  # type: ignore[arg-type]


def sft_student_ids(tokenizer, explanation: str) -> list[int]:
    """The ids student_sft trains on for (QUESTION, explanation, SOLUTION)."""
    row = pd.DataFrame([{"question": QUESTION, "thought": explanation, "solution": SOLUTION}])
    dataset, _ = tokenize_pairs(tokenizer, *student_pairs(tokenizer, row), max_length=4096)
    return list(dataset[0]["input_ids"])


def teacher_completion_ids(tokenizer, explanation: str) -> list[int]:
    """A teacher completion as teacher_sft tokenises one: explanation, tag, end of turn."""
    row = pd.DataFrame([{"question": QUESTION, "thought": explanation, "solution": SOLUTION}])
    _, completions = teacher_pairs(tokenizer, row)
    return list(tokenizer(completions[0], add_special_tokens=False)["input_ids"])


def own_vs_other(scorer: RLTScorer, num_rows: int) -> None:
    """Each countdown row's own thought against the next row's, along the text path."""
    train, _ = countdown_splits(num_rows, 1, seed=1, num_numbers=(3, 4))
    rows = countdown_rows(train, seed=1).to_dict("records")
    others = [rows[(i + 1) % len(rows)]["thought"] for i in range(len(rows))]
    tok = scorer.tokenizer
    samples = [
        align_text(tok, f"{r['id']}#{kind}", r["question"], r["solution"], thought)
        for r, other in zip(rows, others, strict=True)
        for kind, thought in (("own", r["thought"]), ("other", other))
    ]
    got = scorer.score(samples)
    own, other = slice(0, None, 2), slice(1, None, 2)
    wins_ss = (got.r_ss[own] > got.r_ss[other]).float().mean().item()
    wins = (got.reward[own] > got.reward[other]).float().mean().item()
    print(f"{len(rows)} countdown rows, own thought vs the next row's (text path):")
    print(
        f"  mean r_SS  own {got.r_ss[own].mean():.4f}  other {got.r_ss[other].mean():.4f}"
        f"  own ranks first {wins_ss:.0%}"
    )
    print(
        f"  mean r_RLT own {got.reward[own].mean():.4f}  other {got.reward[other].mean():.4f}"
        f"  own ranks first {wins:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=0, help="also compare on N countdown rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = str(materialize_smollm2())
    cfg = reward_config(args.overrides, ref)
    scorer = RLTScorer.from_refs(ref, ref, cfg=cfg)
    tok = scorer.tokenizer
    print(f"SmolLM2-135M-Instruct as teacher and student; {cfg}")
    print(f"{'path':8} {'explanation':10} {'r_SS':>9} {'r_KL':>9} {'r_RLT':>9}  sft_ids  retok")
    for path in ("text", "sampled"):
        samples = []
        for name, text in EXPLANATIONS.items():
            if path == "text":
                samples.append(align_text(tok, name, QUESTION, SOLUTION, text))
            else:
                ids = teacher_completion_ids(tok, text)
                samples.append(align_completion(tok, name, QUESTION, SOLUTION, ids))
        got = scorer.score(samples)
        for row, (name, text) in enumerate(EXPLANATIONS.items()):
            same = samples[row].student_ids == sft_student_ids(tok, text)
            print(
                f"{path:8} {name:10} {got.r_ss[row]:9.4f} {got.r_kl[row]:9.4f} "
                f"{got.reward[row]:9.4f}  {str(same):7}  {samples[row].retokenized}"
            )
        ranked = "steps above unrelated" if got.reward[0] > got.reward[1] else "UNRELATED ON TOP"
        print(f"{path:8} r_RLT ranking: {ranked}")
    if args.rows:
        own_vs_other(scorer, args.rows)


if __name__ == "__main__":
    main()
