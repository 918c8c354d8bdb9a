"""Corpora, validation, subsets, LIMR and evaluation sets, and the countdown task.

Every corpus becomes one row shape (`CORPUS_COLUMNS`: id, question, solution, thought, system,
source); see `corpus.py` for the contract and `countdown.py` for the generated task of section 4.4.
"""

from rlt_core.data.benchmarks import load_eval_set, load_limr, plain_answer
from rlt_core.data.corpus import CorpusLoad, load_corpus, seeded_subset
from rlt_core.data.countdown import (
    CountdownProblem,
    countdown_question,
    countdown_rows,
    countdown_solution,
    countdown_splits,
    generate_countdown,
    search_trace,
)
from rlt_core.data.countdown_verify import (
    BoxedAnswer,
    CountdownVerdict,
    extract_answer,
    parse_boxed_answer,
    score_countdown_completion,
    verify_countdown,
    verify_countdown_answer,
)
from rlt_core.data.sources import read_table
from rlt_core.data.validation import (
    CORPUS_COLUMNS,
    DataValidationError,
    ValidationReport,
    row_systems,
    validate_rows,
)

__all__ = [
    "BoxedAnswer",
    "CORPUS_COLUMNS",
    "CorpusLoad",
    "CountdownProblem",
    "CountdownVerdict",
    "DataValidationError",
    "ValidationReport",
    "countdown_question",
    "countdown_rows",
    "countdown_solution",
    "countdown_splits",
    "extract_answer",
    "generate_countdown",
    "load_corpus",
    "load_eval_set",
    "load_limr",
    "parse_boxed_answer",
    "plain_answer",
    "read_table",
    "row_systems",
    "score_countdown_completion",
    "search_trace",
    "seeded_subset",
    "validate_rows",
    "verify_countdown",
    "verify_countdown_answer",
]
