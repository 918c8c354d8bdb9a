"""teacher_rl's real entry (`python -m rlt_core.stages teacher_rl ...`) with the RLT reward's
inputs and outputs recorded in each process, for tests/distributed/test_zero3.py.

Started by `accelerate launch` in place of `-m rlt_core.stages`:

    accelerate launch --config_file CONFIG --num_processes 2 \
        tests/distributed/reward_probe.py RECORD_DIR teacher_rl --profile tiny ...

It changes nothing the stage computes. Each process writes `RECORD_DIR/rank<RANK>.json`:
- `student`: every parameter of the reward's frozen student as (name, shape, sharded) at the
  first reward call, `teacher_sharded`: whether ZeRO-3 shards the live policy it scores with;
- `calls`: each reward call's completion ids, dataset columns and the rewards it returned with
  their r_SS and r_KL terms;
- `teacher_logprobs`: each teacher log-prob computation of those calls (the batch it scored
  and the per-token log-probs), the live policy's part of the reward.
The single-process side of the comparison recomputes all of them from the same inputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rlt_core.reward import scorer as scorer_module
from rlt_core.reward.trl import RLTReward
from rlt_core.stages.__main__ import app

RECORD: dict[str, Any] = {"calls": [], "teacher_logprobs": []}
_teacher: list[Any] = [None]  # the model the reward call in progress scores the teacher with


def _sharded(module: Any) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


_reward_call = RLTReward.__call__


def _recording_call(self: RLTReward, prompts, completions, completion_ids, **kwargs):
    if "student" not in RECORD:
        RECORD["student"] = [
            [name, list(p.shape), hasattr(p, "ds_id")]
            for name, p in self.scorer.student.named_parameters()
        ]
        RECORD["teacher_sharded"] = _sharded(self.scorer.teacher)
    _teacher[0] = self.scorer.teacher
    try:
        rewards = _reward_call(self, prompts, completions, completion_ids, **kwargs)
    finally:
        _teacher[0] = None
    breakdown = self.last_breakdown
    RECORD["calls"].append(
        {
            "completion_ids": [[int(t) for t in ids] for ids in completion_ids],
            "columns": {k: list(kwargs[k]) for k in ("id", "question", "solution", "system")},
            "reward": list(rewards),
            "r_ss": breakdown.r_ss.tolist(),
            "r_kl": breakdown.r_kl.tolist(),
        }
    )
    return rewards


_token_logprobs = scorer_module.token_logprobs


def _recording_logprobs(model, input_ids, attention_mask, **options):
    out = _token_logprobs(model, input_ids, attention_mask, **options)
    if model is _teacher[0]:
        RECORD["teacher_logprobs"].append(
            {
                "input_ids": input_ids.tolist(),
                "attention_mask": attention_mask.tolist(),
                "positions": options["positions"].tolist(),
                "temperature": options["temperature"],
                "chunk_size": options["chunk_size"],
                "logprobs": out.tolist(),
            }
        )
    return out


def main() -> None:
    record_dir, stage_args = Path(sys.argv[1]), sys.argv[2:]
    RLTReward.__call__ = _recording_call
    scorer_module.token_logprobs = _recording_logprobs
    try:
        app(stage_args, prog_name="rlt_core.stages")
    finally:
        record_dir.mkdir(parents=True, exist_ok=True)
        path = record_dir / f"rank{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps(RECORD))


if __name__ == "__main__":
    main()
