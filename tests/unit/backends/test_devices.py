"""The device choice: GPU when the runtime has one, CPU otherwise, PREDICTORS_DEVICE to force.
No GPU is needed: the runtimes' answers are passed in."""

from __future__ import annotations

import pytest

from predictors.backends.devices import DeviceError, choose_device, onnx_providers, torch_device
from predictors.model.environment import EnvironmentSettingError

CUDA_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_onnx_uses_cuda_with_cpu_fallback_when_the_build_has_it(monkeypatch):
    monkeypatch.delenv("PREDICTORS_DEVICE", raising=False)
    providers, choice = onnx_providers(CUDA_BUILD)
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and choice.device == "cuda"
    providers, choice = onnx_providers(["CPUExecutionProvider"])
    assert providers == ["CPUExecutionProvider"] and choice.device == "cpu" and "not available" in choice.reason


def test_torch_uses_cuda_when_available(monkeypatch):
    monkeypatch.delenv("PREDICTORS_DEVICE", raising=False)
    assert torch_device(True).device == "cuda"
    assert torch_device(False).device == "cpu"


def test_the_environment_forces_a_device(monkeypatch):
    monkeypatch.setenv("PREDICTORS_DEVICE", "cpu")
    assert onnx_providers(CUDA_BUILD)[0] == ["CPUExecutionProvider"]
    assert torch_device(True).reason == "PREDICTORS_DEVICE=cpu"
    monkeypatch.setenv("PREDICTORS_DEVICE", "cuda")
    with pytest.raises(DeviceError, match="CUDA in torch is not available"):
        torch_device(False)
    monkeypatch.setenv("PREDICTORS_DEVICE", "tpu")
    with pytest.raises(EnvironmentSettingError, match="PREDICTORS_DEVICE='tpu' is not valid"):
        choose_device(True, "test")


def test_this_machine_serves_on_the_cpu_without_a_gpu(monkeypatch):
    """The real runtimes here: the CPU onnxruntime wheel has no CUDA provider, torch sees no GPU."""
    import onnxruntime

    monkeypatch.delenv("PREDICTORS_DEVICE", raising=False)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert onnx_providers(onnxruntime.get_available_providers())[1].device == "cpu"
