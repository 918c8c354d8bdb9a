"""One entry function per stage: data, teacher_sft, teacher_rl, generate_traces, student_sft,
student_rl, evaluate. Each takes its typed config and the refs of its inputs and writes a
self-describing artifact directory (manifest last)."""

from rlt_core.stages.data import DataOutputs, run_data
from rlt_core.stages.evaluate import run_evaluate
from rlt_core.stages.generate_traces import run_generate_traces
from rlt_core.stages.rank_traces import run_rank_traces
from rlt_core.stages.sft import run_student_sft, run_teacher_sft
from rlt_core.stages.student_rl import run_student_rl
from rlt_core.stages.teacher_rl import run_teacher_rl

__all__ = [
    "DataOutputs",
    "run_data",
    "run_evaluate",
    "run_generate_traces",
    "run_rank_traces",
    "run_student_rl",
    "run_student_sft",
    "run_teacher_rl",
    "run_teacher_sft",
]
