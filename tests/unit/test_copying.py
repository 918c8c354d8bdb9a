"""The solution-copy measure, worked by hand (rlt_core.reward.copying)."""

import math

import pytest

from rlt_core.reward.copying import mean_copy, ngrams, solution_copy


def test_ngrams_in_order_and_none_when_too_short():
    assert ngrams("abcd", 2) == [("a", "b"), ("b", "c"), ("c", "d")]
    assert ngrams("ab", 3) == []


def test_one_of_three_trigrams_restated():
    # solution a b c d e -> trigrams abc, bcd, cde; the thought holds abc only ("y" breaks bcd).
    assert solution_copy(list("xabcyde"), list("abcde"), n=3) == pytest.approx(1 / 3)


def test_full_restatement_and_none():
    solution = [5, 6, 7, 8, 9]
    assert solution_copy([1, 2, *solution, 3], solution, n=4) == 1.0
    assert solution_copy([1, 2, 3], solution, n=4) == 0.0
    # every piece present but out of order: no 4-gram survives the shuffle
    assert solution_copy([9, 8, 7, 6, 5], solution, n=4) == 0.0


def test_repeated_ngram_counts_per_position():
    # solution a a a a: n=2 gives aa at 3 positions; the thought has "a a" once -> all 3 found.
    assert solution_copy(list("xaay"), list("aaaa"), n=2) == 1.0
    # solution a b a c: ab, ba, ac; the thought "a b" only -> 1 of 3.
    assert solution_copy(list("ab"), list("abac"), n=2) == pytest.approx(1 / 3)


def test_short_solution_is_one_ngram_of_its_length():
    assert solution_copy([1, 42, 2], [42], n=4) == 1.0
    assert solution_copy([1, 2], [42], n=4) == 0.0
    assert solution_copy([3, 1, 2], [1, 2], n=4) == 1.0


def test_empty_solution_is_undefined_and_bad_n_refused():
    assert math.isnan(solution_copy([1, 2], []))
    with pytest.raises(ValueError, match="n >= 1"):
        solution_copy([1], [1], n=0)


def test_mean_skips_undefined():
    assert mean_copy([0.5, math.nan, 1.0]) == 0.75
    assert math.isnan(mean_copy([math.nan]))
    assert math.isnan(mean_copy([]))
