"""The `Backend` interface: every method its callers use is declared, and both backends have it."""

import pytest
import torch

from defvos_core.inference.backend import Backend, TorchBackend
from defvos_core.onnx.runtime import OnnxBackend
from tracker_helpers import ShiftingOracle, tiny_model

CALLED_BY_CALLERS = {"encode", "encode_identity", "segment", "prepare", "is_prepared",
                     "prompt_head", "graphs_summary"}


def test_interface_declares_what_callers_use():
    assert Backend.__abstractmethods__ == CALLED_BY_CALLERS


@pytest.mark.parametrize("missing", sorted(CALLED_BY_CALLERS))
def test_backend_lacking_a_method_cannot_be_constructed(missing):
    methods = {name: getattr(ShiftingOracle, name) for name in CALLED_BY_CALLERS - {missing}}
    incomplete = type("Incomplete", (Backend,), methods)
    with pytest.raises(TypeError, match=missing):
        incomplete()


@pytest.mark.parametrize("backend_class", [TorchBackend, OnnxBackend])
def test_both_backends_implement_the_whole_interface(backend_class):
    assert issubclass(backend_class, Backend)
    assert not backend_class.__abstractmethods__


def test_torch_backend_answers_the_interface():
    model = tiny_model()
    backend = TorchBackend(model)
    assert backend.prepare(240, 427) == {}
    assert backend.is_prepared(240, 427)
    assert backend.prompt_head() is backend.model.prompt_head
    assert backend.graphs_summary() is None
    assert backend.dtype == torch.float32 and backend.model_config == model.config
