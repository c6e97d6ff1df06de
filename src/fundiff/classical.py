"""Classical (non-diffusion) denoising for course A.1.2: Gaussian blur and PSNR."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fundiff.errors import FundiffError
from fundiff.filters import gaussian_blur

__all__ = ["psnr", "best_blur"]


def psnr(x: Tensor, ref: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB of (B, C, H, W) ``x`` against ``ref``; ``data_range`` = max - min."""
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1).clamp_min(1e-20)
    return 10.0 * torch.log10(data_range**2 / mse)


def best_blur(
    noisy: Tensor,
    clean: Tensor,
    *,
    kernel_sizes: Sequence[int] = (3, 5, 7, 9, 11, 13, 15),
    sigmas: Sequence[float] = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
    data_range: float = 2.0,
) -> tuple[Tensor, list[dict[str, float]]]:
    """Course A.1.2: the Gaussian blur of each noisy image with the best PSNR to the clean one.

    Searches the grid ``kernel_sizes x sigmas`` per image (a noise level each).

    Args:
        noisy, clean: (B, C, H, W) in the same value range (``data_range`` = its width).

    Returns:
        ``(blurred (B, C, H, W), [{"kernel_size", "sigma", "psnr"} per image])``.
    """
    if noisy.shape != clean.shape:
        raise FundiffError(f"noisy {tuple(noisy.shape)} and clean {tuple(clean.shape)} differ")
    best_val = torch.full((noisy.shape[0],), -math.inf, dtype=torch.float64)
    best = noisy.clone()
    params: list[dict[str, float]] = [{} for _ in range(noisy.shape[0])]
    for k in kernel_sizes:
        for s in sigmas:
            y = gaussian_blur(noisy, int(k), float(s))
            p = psnr(y, clean, data_range).cpu()
            for j in range(noisy.shape[0]):
                if p[j] > best_val[j]:
                    best_val[j] = p[j]
                    best[j] = y[j]
                    params[j] = {"kernel_size": int(k), "sigma": float(s), "psnr": float(p[j])}
    return best, params
