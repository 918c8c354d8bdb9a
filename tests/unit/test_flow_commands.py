"""The flows' command lines are built from the flows' own signatures (`flows.options`)."""

from __future__ import annotations

import inspect

import pytest

from flows import ablation, countdown_transfer, full_pipeline, reward_rank
from flows.options import flow_command

FLOWS = {
    "full_pipeline": (full_pipeline, {"plan", "as_json"}),
    "ablation": (ablation, set()),
    "reward_rank": (reward_rank, set()),
    "countdown_transfer": (countdown_transfer, set()),
}


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_each_main_takes_exactly_its_flows_parameters(name: str) -> None:
    module, extra = FLOWS[name]
    flow = getattr(module, name)
    taken = inspect.signature(flow.fn).parameters
    options = inspect.signature(module.main).parameters
    assert set(options) == set(taken) | extra
    changed = {n for n in taken if options[n].default != taken[n].default}
    assert changed == ({"lam"} if name == "ablation" else set())  # --lambda is never implied


def test_a_flow_parameter_without_an_option_is_refused_at_import() -> None:
    def flow(profile: str = "tiny", new_knob: int = 3) -> None:
        """A flow that grew a parameter nobody gave an option."""

    with pytest.raises(TypeError, match=r"\['new_knob'\] have no command-line option"):
        flow_command(flow, "doc")
