"""The scripted models' guarantee (tests/fixtures_models.py), checked by hand-worked figures."""

from __future__ import annotations

import math

import torch

from rlt_core.config import load_config
from rlt_core.config.serialize import to_dict
from tests.fixtures_models import SCRIPT_TEMPERATURE, script_miss


def test_script_miss_is_one_minus_the_scripts_probability_by_hand() -> None:
    # Row 0: one token, logits (2, 0, 0), target 0. At T = 1, P = e^2 / (e^2 + 2).
    # Row 1: two tokens, each logits (0, 5, 5) with target 1: P per token = 1/(2 + e^-5) -> ~1/2.
    logits = torch.tensor([[[2.0, 0.0, 0.0], [9.0, 0.0, 0.0]], [[0.0, 5.0, 5.0], [0.0, 5.0, 5.0]]])
    target = torch.tensor([[0, 0], [1, 1]])
    miss = script_miss(logits, target, 1.0)
    row0 = 1 - (math.e**2 / (math.e**2 + 2)) * (math.e**9 / (math.e**9 + 2))
    row1 = 1 - (1 / (2 + math.e**-5)) ** 2
    assert torch.allclose(miss, torch.tensor([row0, row1]), rtol=1e-5)
    # Halving the temperature sharpens: e^4 / (e^4 + 2) for row 0's first token.
    half = 1 - (math.e**4 / (math.e**4 + 2)) * (math.e**18 / (math.e**18 + 2))
    assert math.isclose(script_miss(logits[:1], target[:1], 0.5).item(), half, rel_tol=1e-5)


def test_script_miss_keeps_its_precision_far_below_float32s_resolution_near_one() -> None:
    # A gap of 20 at T = 0.7 against 1,000 other tokens: miss = 1000 e^(-20/0.7) ~ 3.8e-10,
    # which 1 - P in float32 would round to 0.
    logits = torch.zeros(1, 1, 1001)
    logits[0, 0, 0] = 20.0
    expected = 1000 * math.exp(-20 / 0.7) / (1 + 1000 * math.exp(-20 / 0.7))
    got = script_miss(logits, torch.tensor([[0]]), 0.7).item()
    assert got > 0 and math.isclose(got, expected, rel_tol=1e-4)


def test_no_tiny_profile_section_samples_hotter_than_the_scripted_models_guarantee() -> None:
    # The scripted models follow their script at SCRIPT_TEMPERATURE or below; a profile that
    # sampled hotter would break tests that check their output exactly.
    found = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif path.endswith(".temperature"):
            found[path] = node

    walk(to_dict(load_config("tiny")), "tiny")
    assert "tiny.generate_traces.temperature" in found and "tiny.teacher_rl.temperature" in found
    assert all(t <= SCRIPT_TEMPERATURE for t in found.values()), found
