"""The RLT reward terms (Eq. 3 to 5) on tiny hand-worked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlt_core.reward import (
    compute_reward,
    kl_k3,
    kl_sampled,
    per_token_kl,
    r_kl,
    r_rlt,
    r_ss,
)

ALPHA = 0.01


def test_r_ss_mean_plus_alpha_min():
    logprobs = torch.tensor([[-0.5, -1.5, -1.0]])
    mask = torch.tensor([[True, True, True]])
    # mean -1.0, min -1.5 -> -1.0 + 0.01 * -1.5 = -1.015
    torch.testing.assert_close(r_ss(logprobs, mask, alpha=ALPHA), torch.tensor([-1.015]))


def test_r_ss_alpha_zero_is_the_plain_mean():
    logprobs = torch.tensor([[-0.5, -1.5, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(r_ss(logprobs, mask, alpha=0.0), torch.tensor([-1.0]))


def test_r_ss_padding_never_becomes_the_min():
    # The padded -9.0 would be the min if it leaked in: -0.75 + 0.01 * -9 = -0.84.
    logprobs = torch.tensor([[-9.0, -0.5, -1.0]])
    mask = torch.tensor([[False, True, True]])
    # mean -0.75, min -1.0 -> -0.75 - 0.01 = -0.76
    torch.testing.assert_close(r_ss(logprobs, mask, alpha=ALPHA), torch.tensor([-0.76]))


def test_r_ss_mixed_lengths_and_empty_span():
    logprobs = torch.tensor([[-0.5, -1.5, -1.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    # row 0: -1.015; row 1: mean -2, min -2 -> -2.02; row 2: empty -> -1 (reference behaviour)
    expected = torch.tensor([-1.015, -2.02, -1.0])
    torch.testing.assert_close(r_ss(logprobs, mask, alpha=ALPHA), expected)


def test_kl_sampled_is_the_log_ratio():
    teacher = torch.tensor([[-1.0, -2.0]])
    student = torch.tensor([[-1.5, -1.0]])
    # -1.0 - -1.5 = 0.5 ; -2.0 - -1.0 = -1.0 (a single sample can be negative)
    torch.testing.assert_close(kl_sampled(teacher, student), torch.tensor([[0.5, -1.0]]))


def test_kl_k3_on_known_numbers_is_non_negative():
    teacher = torch.tensor([[-1.0, -2.0, -0.7]])
    student = torch.tensor([[-1.5, -1.0, -0.7]])
    # log r = student - teacher = [-0.5, 1.0, 0.0]
    # k3 = e^-0.5 - 1 + 0.5 = 0.1065307 ; e^1 - 1 - 1 = 0.7182818 ; e^0 - 1 - 0 = 0
    expected = torch.tensor([[math.exp(-0.5) - 0.5, math.e - 2.0, 0.0]])
    out = kl_k3(teacher, student)
    torch.testing.assert_close(out, expected)
    assert (out >= 0).all()


def test_per_token_kl_dispatch_and_errors():
    teacher, student = torch.tensor([[-1.0]]), torch.tensor([[-1.5]])
    exact = torch.tensor([[0.25]])
    assert per_token_kl("sampled", teacher, student).item() == pytest.approx(0.5)
    assert per_token_kl("k3", teacher, student).item() == pytest.approx(math.exp(-0.5) - 0.5)
    assert per_token_kl("full", teacher, student, exact) is exact
    with pytest.raises(ValueError, match="needs full_kl"):
        per_token_kl("full", teacher, student)
    with pytest.raises(ValueError, match=r"student think log-probs \(1, 2\) differ"):
        per_token_kl("sampled", teacher, torch.tensor([[-1.5, -1.0]]))
    with pytest.raises(ValueError, match="unknown KL estimator 'k2'"):
        per_token_kl("k2", teacher, student)  # type: ignore[arg-type]


def test_r_kl_mean_plus_alpha_max():
    kl = torch.tensor([[0.2, 0.6, 0.1]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # mean 0.3, max 0.6 -> 0.3 + 0.006 = 0.306
    torch.testing.assert_close(r_kl(kl, mask, alpha=ALPHA), torch.tensor([0.306]))


def test_r_kl_padding_never_becomes_the_max():
    # Sampled KLs can be negative; the padded 0.0 would be the max if it leaked in.
    kl = torch.tensor([[-0.3, -0.1, 0.0], [0.2, 0.4, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    # row 0: mean -0.2, max -0.1 -> -0.201 ; row 1: mean 0.3, max 0.4 -> 0.304
    torch.testing.assert_close(r_kl(kl, mask, alpha=ALPHA), torch.tensor([-0.201, 0.304]))


def test_r_kl_empty_span_sets_each_reduction_to_plus_one():
    kl = torch.tensor([[0.2, 0.6], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    # row 0: mean 0.4 + 0.01 * 0.6 = 0.406
    # row 1 has no think token: avg -> +1 and max -> +1 (reference), so 1 + 0.01 * 1 = 1.01
    torch.testing.assert_close(r_kl(kl, mask, alpha=ALPHA), torch.tensor([0.406, 1.01]))
    # alpha = 0.5: 1 + 0.5 * 1 = 1.5 ; the padding values under the mask never count.
    padded = torch.tensor([[0.2, 0.6], [9.0, -9.0]])
    torch.testing.assert_close(r_kl(padded, mask, alpha=0.5), torch.tensor([0.7, 1.5]))


def test_r_rlt_combines_with_lambda_and_penalty():
    ss, kl = torch.tensor([-1.015, -1.015]), torch.tensor([0.306, 0.306])
    ok = torch.tensor([True, False])
    # -1.015 - 3 * 0.306 = -1.933 ; the second misses its closing tag: -1.933 - 1 = -2.933
    expected = torch.tensor([-1.933, -2.933])
    torch.testing.assert_close(r_rlt(ss, kl, lam=3.0, format_ok=ok), expected)


def test_lambda_zero_reduces_to_r_ss():
    ss, kl = torch.tensor([-1.015, -0.2]), torch.tensor([0.306, 7.0])
    ok = torch.tensor([True, True])
    torch.testing.assert_close(r_rlt(ss, kl, lam=0.0, format_ok=ok), ss)


def _batch() -> dict[str, torch.Tensor]:
    return {
        "student_solution_logprobs": torch.tensor([[-0.5, -1.5, -1.0], [-2.0, 0.0, 0.0]]),
        "solution_mask": torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool),
        "teacher_think_logprobs": torch.tensor([[-1.0, -2.0], [0.0, 0.0]]),
        "student_think_logprobs": torch.tensor([[-1.5, -1.0], [0.0, 0.0]]),
        "think_mask": torch.tensor([[1, 1], [0, 0]], dtype=torch.bool),
        "format_ok": torch.tensor([True, False]),
    }


def test_compute_reward_sampled_breakdown():
    out = compute_reward(**_batch())
    # r_SS: row 0 -1.015 ; row 1 mean -2, min -2 -> -2.02
    torch.testing.assert_close(out.r_ss, torch.tensor([-1.015, -2.02]))
    # sampled KL row 0 [0.5, -1.0]: mean -0.25, max 0.5 -> -0.245
    # row 1 empty: avg +1, max +1 -> 1 + 0.01 * 1 = 1.01
    torch.testing.assert_close(out.r_kl, torch.tensor([-0.245, 1.01]))
    # row 0: -1.015 - 3 * -0.245 = -0.28 ; row 1: -2.02 - 3 * 1.01 - 1 (penalty) = -6.05
    torch.testing.assert_close(out.reward, torch.tensor([-0.28, -6.05]))
    torch.testing.assert_close(out.penalty, torch.tensor([0.0, -1.0]))
    assert out.think_len.tolist() == [2, 0]
    assert out.solution_len.tolist() == [3, 1]
    assert (out.n_empty_think, out.n_empty_solution) == (1, 0)


def test_compute_reward_k3_and_full_estimators():
    out = compute_reward(**_batch(), estimator="k3")
    # k3 row 0 [0.1065307, 0.7182818]: mean 0.4124062 + 0.01 * 0.7182818 = 0.4195891
    # reward row 0: -1.015 - 3 * 0.4195891 = -2.2737672
    assert out.r_kl[0].item() == pytest.approx(0.4195891, abs=1e-6)
    assert out.reward[0].item() == pytest.approx(-2.2737672, abs=1e-6)
    full = torch.tensor([[0.1, 0.3], [0.0, 0.0]])
    out = compute_reward(**_batch(), estimator="full", full_kl=full, lam=1.0, alpha=0.0)
    # r_KL row 0 = mean(0.1, 0.3) = 0.2 ; reward = -1.0 (alpha 0: plain mean) - 0.2 = -1.2
    assert out.reward[0].item() == pytest.approx(-1.2, abs=1e-6)


def test_to_rows_gives_one_plain_dict_per_completion():
    rows = compute_reward(**_batch()).to_rows()
    assert len(rows) == 2
    assert set(rows[0]) == {
        "r_ss", "r_kl", "reward", "penalty", "think_len", "solution_len",
        "empty_think", "empty_solution",
    }  # fmt: skip
    assert rows[1]["empty_think"] is True and rows[1]["think_len"] == 0
    assert rows[1]["reward"] == pytest.approx(-6.05, abs=1e-6)


def test_shape_mismatch_names_the_tensor():
    with pytest.raises(ValueError, match="per_token_kl has shape"):
        r_kl(torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool), alpha=ALPHA)
