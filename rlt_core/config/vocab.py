"""The closed sets of values (enums) that several stage configs share."""

from typing import Literal

Dtype = Literal["bfloat16", "float16", "float32"]
Backend = Literal["vllm", "transformers"]
LrScheduler = Literal["constant", "cosine"]
EvalTask = Literal[
    "aime24", "math500", "gpqa_diamond", "livecodebench", "olympiadbench", "countdown"
]
EVAL_TASKS: tuple[str, ...] = EvalTask.__args__
