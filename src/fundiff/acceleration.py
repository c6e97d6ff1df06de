"""How a training step runs fast: precision (bf16 autocast where the hardware has it) and
``torch.compile`` of the UNet.

* :func:`resolve_precision` maps ``"auto"`` onto ``"bf16"`` where the device computes bf16
  convolutions natively (CUDA with bf16; a CPU whose oneDNN has bf16 kernels: AVX-512 or AMX),
  else ``"fp32"``. On a CPU without them (e.g. AVX2 only) bf16 autocast falls back to a slow
  reference convolution: measured 8x *slower* than fp32 (AMD EPYC, AVX2, D = 16).
* :func:`compiled_unet` runs an objective's UNet through ``torch.compile`` inside a ``with``
  block and puts the original module back afterwards, so state dicts never carry the
  ``_orig_mod.`` prefix of a compiled wrapper: checkpoints and weights load without compile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from fundiff.errors import FundiffError

__all__ = [
    "COMPILE_OPTIONS",
    "autocast",
    "compiled_unet",
    "native_bf16",
    "resolve_precision",
    "speed_warnings",
]

# keyword arguments of torch.compile. dynamic=False: one static graph per batch shape (the full
# batch and an epoch's smaller last batch), no dynamic-shape kernels.
COMPILE_OPTIONS: dict[str, Any] = {"dynamic": False}


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` runs bf16 convolutions natively (not via a slow fallback)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # oneDNN's own check (AVX-512 BW/VL/DQ, AVX-512 BF16 or AMX)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older or unusual builds: ask for AVX-512
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` if :func:`native_bf16` else ``"fp32"``; others unchanged."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise FundiffError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast on ``device`` for ``precision="bf16"``, else a no-op context."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def speed_warnings(precision: str, compile: bool, device: torch.device) -> list[str]:
    """Warnings for slow choices of a (resolved) ``precision`` and ``compile`` on ``device``."""
    out = []
    if precision == "bf16" and not native_bf16(device):
        out.append(
            f"precision bf16 on {device} without native bf16 convolutions: autocast falls back "
            "to slow kernels (measured 8x slower than fp32 on an AVX2 CPU); precision auto "
            "picks fp32 here"
        )
    if compile and device.type == "cpu":
        out.append(
            "compile on CPU: torch.compile first builds C++ kernels (minutes per batch shape on "
            "a small CPU, cached by torch afterwards) for ~1.3x per step"
        )
    return out


@contextmanager
def compiled_unet(objective: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Inside the block ``objective.unet`` is ``torch.compile(unet, **COMPILE_OPTIONS)``.

    The compiled wrapper shares the original module's parameters and buffers, so training it
    trains the original. Yields the original module (save *its* ``state_dict``: no
    ``_orig_mod.`` prefix); ``objective.unet`` is the original again after the block, also
    when it raises. With ``enabled=False`` nothing changes. The first call of each input shape
    compiles (minutes on a small CPU; cached on disk by torch afterwards).
    """
    unet = objective.unet
    if not enabled:
        yield unet
        return
    objective.unet = torch.compile(unet, **COMPILE_OPTIONS)
    try:
        yield unet
    finally:
        objective.unet = unet
