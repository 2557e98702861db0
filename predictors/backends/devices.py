"""Which device a backend runs on: a GPU when the runtime can use one, the CPU otherwise.

Chosen once, when a model loads, and reported (in /v2/models/<name>/config and `list`).
PREDICTORS_DEVICE=cpu keeps every model on the CPU on a node that has a GPU; `cuda` makes a
missing GPU an error instead of a silent fallback; unset or `auto` takes the GPU when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..model.environment import server_environment

DEVICE_ENV = "PREDICTORS_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


class DeviceError(RuntimeError):
    pass


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda" or "cpu"
    reason: str


def requested_device() -> str:
    return server_environment().device


def choose_device(gpu_available: bool, what: str, requested: str | None = None) -> DeviceChoice:
    """`what` names the runtime's own test for a GPU, for the reason."""
    requested = requested or requested_device()
    if requested == "cpu":
        return DeviceChoice("cpu", f"{DEVICE_ENV}=cpu")
    if gpu_available:
        return DeviceChoice("cuda", f"{what} is available")
    if requested == "cuda":
        raise DeviceError(f"{DEVICE_ENV}=cuda but {what} is not available")
    return DeviceChoice("cpu", f"{what} is not available")


def onnx_providers(available: Iterable[str], requested: str | None = None) -> tuple[list[str], DeviceChoice]:
    """ONNX Runtime execution providers, best first: CUDA (with the CPU for the nodes it lacks) when
    this onnxruntime build has it, else the CPU."""
    choice = choose_device(CUDA_PROVIDER in set(available), "onnxruntime's CUDAExecutionProvider", requested)
    return ([CUDA_PROVIDER, CPU_PROVIDER] if choice.device == "cuda" else [CPU_PROVIDER]), choice


def torch_device(cuda_available: bool, requested: str | None = None) -> DeviceChoice:
    return choose_device(cuda_available, "CUDA in torch", requested)
