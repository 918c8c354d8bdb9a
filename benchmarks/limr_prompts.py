"""Figures: what the LIMR prompts of student RL give a student to grade, before and after.

Student RL (section 4.3, Table 6) samples a group of answers per LIMR question and rewards
them -1 / -0.5 / +1 (`rlt_core.reward.correctness`). Its first steps' rollouts are samples of
the cold-start student on the prompts `rlt_core.stages.student_rl.rl_dataset` builds. This
script samples exactly such rollouts (the recipe's temperature, top-p and group size) on two
prompt layouts and grades them with the stage's own reward:

- `before`: what student_rl sent until now: LIMR's raw question under the Figure 6 text
  ("analysing"), the prompt the Bespoke-trained students never saw;
- `after`: `rl_dataset`'s prompt: the question with SkyThought's boxed instruction
  (`formats.student_question`, as in the corpus and the evaluation) under the system prompt
  the student carries (the default, Bespoke-Stratos' text, for a model without one).

It prints, per layout, the share of completions with a `\\boxed{` anywhere, the share in the
student format, the correctness-reward mean and the accuracy.

Usage:
    python benchmarks/limr_prompts.py                         # offline SmolLM2, the fixture
    python benchmarks/limr_prompts.py --student artifacts/student_sft/<key>/model \\
        --limr tests/fixtures/data/limr_sample.jsonl --generations 8 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlt_core import formats
from rlt_core.config import load_config
from rlt_core.data import load_limr
from rlt_core.models import resolve_model, system_prompt_of
from rlt_core.reward.correctness import BOXED, CorrectnessReward, student_solution
from rlt_core.stages.student_rl import rl_dataset

FIXTURE = Path(__file__).parents[1] / "tests" / "fixtures" / "data" / "limr_sample.jsonl"


def prompts_before(tokenizer, questions: list[str]) -> list[str]:
    """The prompts student_rl built before: raw question, the Figure 6 text."""
    return [
        formats.render_student_prompt(tokenizer, q, formats.FIGURE_6_SYSTEM_PROMPT)
        for q in questions
    ]


def sample(model, tokenizer, prompts: list[str], args) -> list[list[str]]:
    """`args.generations` completions per prompt, sampled as the GRPO rollouts are."""
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(
                **ids,
                do_sample=True,
                temperature=args.temperature,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                num_return_sequences=args.generations,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        width = ids["input_ids"].shape[1]
        out.append(tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
    return out


def figures(groups: list[list[str]], answers: list[str]) -> dict[str, float]:
    """Boxed share, formatted share, reward mean and accuracy over every completion."""
    reward = CorrectnessReward(task="math")
    texts = [t for group in groups for t in group]
    golds = [a for a, group in zip(answers, groups, strict=True) for _ in group]
    rewards = reward([""] * len(texts), texts, answer=golds)
    n = len(texts)
    return {
        "completions": n,
        "boxed": sum(BOXED in t for t in texts) / n,
        "formatted": sum(student_solution(t) is not None for t in texts) / n,
        "reward_mean": sum(rewards) / n,
        "accuracy": sum(r == reward.correct for r in rewards) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="offline:smollm2-135m-instruct")
    parser.add_argument("--limr", default=str(FIXTURE))
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.temperature = load_config("tiny").student_rl["countdown"].temperature
    path = resolve_model(args.student)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = load_limr(args.limr)
    answers = [str(a) for a in rows["answer"]]
    layouts = {
        "before": prompts_before(tokenizer, list(rows["question"])),
        "after": list(rl_dataset(tokenizer, rows, "math", system=system_prompt_of(path))["prompt"]),
    }
    print(
        f"{args.student}: {len(rows)} LIMR questions x {args.generations} samples, "
        f"temperature {args.temperature}, {args.max_new_tokens} new tokens"
    )
    print(f"{'layout':8} {'boxed':>7} {'formatted':>10} {'reward':>8} {'accuracy':>9}")
    for name, prompts in layouts.items():
        torch.manual_seed(args.seed)
        got = figures(sample(model, tokenizer, prompts, args), answers)
        print(
            f"{name:8} {got['boxed']:>7.1%} {got['formatted']:>10.1%} "
            f"{got['reward_mean']:>8.3f} {got['accuracy']:>9.1%}"
        )


if __name__ == "__main__":
    main()
