"""Sampling-only copies of trained UNets: BatchNorm folded away, cache-sized batches on CPU.

Every sampler (Part A's local backends, Part B's grids, GIFs, evaluations and denoised test
digits) runs a trained UNet in eval mode, where each BatchNorm is a fixed per-channel affine
map. :func:`fold_batchnorm` folds it into the convolution before it (weights ``w * g / s``,
bias ``(b - mean) * g / s + beta``; ``s = sqrt(var + eps)``), so a forward pass does the same
arithmetic without the BatchNorm passes (equal to ~1e-5 in float32).

On a CPU, :class:`SamplingUNet` also keeps the weights ``channels_last`` (oneDNN's fast layout
for these small convolutions) and feeds the body at most ``chunk`` images at a time: a batch of
256 28x28x16 activations no longer fits the cache, and CFG x views batches reach 256-512
images. For the D = 16 class-conditioned UNet on one AVX2 core, a 64-image anagram with CFG
(256 rows a step) runs 1.44x faster than through the trained UNet with glibc malloc's defaults
and 1.13x once jobs keep freed memory (:func:`fundiff.runtime.tune_allocator`, itself 1.25x
on the copy; ``bench/bench_sampler.py``, ``speedup_sampling_copy`` and ``speedup_allocator``).
GPUs get the folded body and whole batches.

A sampling copy is for inference only: its weights differ from the trained ones, so it cannot
be saved as a run's model (:func:`fundiff.unets.unet_spec` refuses it).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["CPU_CHUNK", "SamplingUNet", "fold_batchnorm", "for_sampling"]

#: images per forward call on a CPU (batches are split, results concatenated)
CPU_CHUNK = 64


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``Conv2d``/``ConvTranspose2d`` -> ``BatchNorm2d`` pair of ``nn.Sequential``
    children into the convolution (the BatchNorm becomes ``nn.Identity``); in place.

    Uses the BatchNorm's running statistics, i.e. eval-mode semantics. Returns ``module``.
    """
    for child in module.children():
        if isinstance(child, nn.Sequential):
            for k in range(len(child) - 1):
                conv, bn = child[k], child[k + 1]
                if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(
                    bn, nn.BatchNorm2d
                ):
                    transpose = isinstance(conv, nn.ConvTranspose2d)
                    child[k] = fuse_conv_bn_eval(conv.eval(), bn.eval(), transpose=transpose)
                    child[k + 1] = nn.Identity()
        fold_batchnorm(child)
    return module


class SamplingUNet(nn.Module):
    """Eval-only stand-in for a trained fundiff UNet with the same call signature.

    ``forward(x (B, C, 28, 28), *conditions)``: every condition that is a tensor with B rows
    (t (B,), one-hot c (B, K)) is split with ``x`` into chunks of at most ``chunk`` images
    (``None``: one call); others (a scalar t) are passed whole. Returns (B, C, 28, 28)
    contiguous. ``conditioning``, ``num_classes`` and ``in_channels`` are the trained UNet's.
    """

    def __init__(self, unet: nn.Module, chunk: int | None, channels_last: bool) -> None:
        super().__init__()
        body = fold_batchnorm(copy.deepcopy(unet).eval())
        self.channels_last = channels_last
        self.body = body.to(memory_format=torch.channels_last) if channels_last else body
        self.chunk = chunk
        self.conditioning = getattr(unet, "conditioning", "none")
        self.num_classes = getattr(unet, "num_classes", 0)
        self.in_channels = unet.in_channels
        self.eval()

    def _body(self, x: Tensor, *cond: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x, *cond).contiguous()

    def forward(self, x: Tensor, *cond: Tensor) -> Tensor:
        b = x.shape[0]
        if self.chunk is None or b <= self.chunk:
            return self._body(x, *cond)

        def part(a: Tensor, lo: int) -> Tensor:
            split = isinstance(a, Tensor) and a.ndim >= 1 and a.shape[0] == b
            return a[lo : lo + self.chunk] if split else a

        outs = [
            self._body(x[lo : lo + self.chunk], *(part(a, lo) for a in cond))
            for lo in range(0, b, self.chunk)
        ]
        return torch.cat(outs)


def for_sampling(objective: nn.Module, chunk: int | None = CPU_CHUNK) -> nn.Module:
    """Swap ``objective.unet`` for a :class:`SamplingUNet` (in place) and return ``objective``.

    CPU: folded, ``channels_last``, ``chunk`` images per call. Other devices: folded, whole
    batches in the default layout. The objective is left in eval mode.
    """
    unet = objective.unet
    if isinstance(unet, SamplingUNet):
        return objective
    device = next(unet.parameters()).device
    on_cpu = device.type == "cpu"
    objective.unet = SamplingUNet(unet, chunk if on_cpu else None, channels_last=on_cpu)
    return objective.eval()
