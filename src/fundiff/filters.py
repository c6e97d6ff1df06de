"""Gaussian blur and the hybrid-image filters of Factorized Diffusion (course A.1.9).

A *filter* is a :class:`~fundiff.views.View` that is the identity on the input and filters the
noise estimate: ``LowPass`` / ``HighPass`` (and optionally ``BandPass``) built on Gaussian
blurs so the bands sum exactly to the identity. Filters act on the noise channels only, never
on learned variances.

Tensors are (B, C, H, W) (or (C, H, W) for :func:`gaussian_blur`), any value range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fundiff.errors import FundiffError
from fundiff.views import View, _check_4d

__all__ = [
    "gaussian_kernel1d",
    "gaussian_blur",
    "gaussian_kernel_for",
    "LowPass",
    "HighPass",
    "BandPass",
    "hybrid_filters",
]


def gaussian_kernel1d(kernel_size: int, sigma: float) -> Tensor:
    """Normalised 1-D Gaussian taps (kernel_size,), float64, centred; same taps as torchvision."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise FundiffError(f"Gaussian kernel size must be odd and >= 1, got {kernel_size}")
    if sigma <= 0:
        raise FundiffError(f"Gaussian sigma must be > 0, got {sigma}")
    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, kernel_size, dtype=torch.float64)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding (torch only, like torchvision's).

    Args:
        x: (B, C, H, W) or (C, H, W), any value range; float.
        kernel_size: odd, at most ``2 * min(H, W) - 1`` (reflect padding limit).
        sigma: standard deviation in pixels, > 0.

    Returns:
        Blurred tensor, same shape and dtype as ``x``.
    """
    squeeze = x.ndim == 3
    if squeeze:
        x = x.unsqueeze(0)
    _check_4d(x)
    k = gaussian_kernel1d(int(kernel_size), float(sigma)).to(x.device, x.dtype)
    pad = int(kernel_size) // 2
    h, w = x.shape[-2:]
    if pad >= h or pad >= w:
        raise FundiffError(
            f"Gaussian kernel {kernel_size} is too large for a {h}x{w} image "
            f"(reflect padding needs kernel <= {2 * min(h, w) - 1})"
        )
    c = x.shape[1]
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.squeeze(0) if squeeze else y


def gaussian_kernel_for(
    resolution: int,
    *,
    base_kernel: int = 33,
    base_sigma: float = 2.0,
    base_resolution: int = 64,
    sigma: float | None = None,
) -> tuple[int, float]:
    """Kernel size and sigma for the hybrid filter at ``resolution`` px.

    Scales the course's (kernel 33, sigma 2 at 64 px) linearly with resolution: 28 px gives
    kernel 15, sigma 0.875. An explicit ``sigma`` (in pixels at ``resolution``) overrides the
    scaled one; the kernel then grows if needed to cover +-3 sigma. The kernel is odd and at
    most ``2 * resolution - 1``.
    """
    scale = resolution / base_resolution
    s = base_sigma * scale if sigma is None else float(sigma)
    if s <= 0:
        raise FundiffError(f"hybrid sigma must be > 0, got {s}")
    k = int(math.floor(base_kernel * scale + 0.5))
    k = max(k, 2 * math.ceil(3 * s) + 1) if sigma is not None else k
    k = k + 1 if k % 2 == 0 else k
    k = min(max(k, 3), 2 * resolution - 1)
    return k, s


class _Filter(View):
    """A hybrid filter: identity on the input, filters the noise estimate, not the variance."""

    def __init__(self, kernel_size: int = 33, sigma: float = 2.0) -> None:
        gaussian_kernel1d(int(kernel_size), float(sigma))  # validate
        self.kernel_size = int(kernel_size)
        self.sigma = float(sigma)

    def _blur(self, eps: Tensor, sigma: float | None = None) -> Tensor:
        return gaussian_blur(eps, self.kernel_size, self.sigma if sigma is None else sigma)

    def inverse_variance(self, v: Tensor) -> Tensor:
        return v

    @property
    def key(self) -> tuple:
        return (self.name, self.kernel_size, self.sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, sigma={self.sigma})"


class LowPass(_Filter):
    """``G_sigma * eps`` (Gaussian blur of the noise estimate).

    With ``pre_sigma`` the estimate is first blurred with ``G_pre_sigma`` (the coarsest band of
    the 3-band split, blurred twice as the reference does).
    """

    name = "lowpass"

    def __init__(
        self, kernel_size: int = 33, sigma: float = 2.0, pre_sigma: float | None = None
    ) -> None:
        super().__init__(kernel_size, sigma)
        self.pre_sigma = None if pre_sigma is None else float(pre_sigma)

    @property
    def key(self) -> tuple:
        return (self.name, self.kernel_size, self.sigma, self.pre_sigma)

    def inverse(self, eps: Tensor) -> Tensor:
        if self.pre_sigma is not None:
            eps = self._blur(eps, self.pre_sigma)
        return self._blur(eps)


class HighPass(_Filter):
    """``eps - G_sigma * eps``; ``LowPass(k, s) + HighPass(k, s)`` is the identity."""

    name = "highpass"

    def inverse(self, eps: Tensor) -> Tensor:
        return eps - self._blur(eps)


class BandPass(_Filter):
    """``G_fine * eps - G_coarse * (G_fine * eps)`` (``sigma`` = fine < ``sigma_coarse``).

    The reference's (visual_anagrams) middle band: with ``LowPass(k, sigma_coarse,
    pre_sigma=sigma)`` and ``HighPass(k, sigma)`` the three bands sum to the identity.
    """

    name = "bandpass"

    def __init__(self, kernel_size: int = 33, sigma: float = 1.0, sigma_coarse: float = 2.0):
        super().__init__(kernel_size, sigma)
        if not sigma_coarse > sigma:
            raise FundiffError(
                f"band-pass needs sigma_coarse > sigma, got {sigma_coarse} <= {sigma}"
            )
        self.sigma_coarse = float(sigma_coarse)

    @property
    def key(self) -> tuple:
        return (self.name, self.kernel_size, self.sigma, self.sigma_coarse)

    def inverse(self, eps: Tensor) -> Tensor:
        fine = self._blur(eps)
        return fine - self._blur(fine, self.sigma_coarse)


def hybrid_filters(
    resolution: int,
    *,
    sigma: float | None = None,
    kernel_size: int | None = None,
    band_sigma: float | None = None,
) -> list[View]:
    """Filters whose outputs sum to the identity, coarsest band first.

    Two bands (default): ``[LowPass, HighPass]`` with kernel/sigma from
    :func:`gaussian_kernel_for` (33 / 2.0 at 64 px) unless given: ``low = G_s eps_1``,
    ``high = eps_2 - G_s eps_2`` as in Factorized Diffusion. Three bands with ``band_sigma``
    (< sigma), as the reference's triple hybrids: with ``m = G_band eps``, ``low = G_s m``,
    ``band = m - G_s m``, ``high = eps - m`` (the low band is blurred twice).
    """
    k, s = gaussian_kernel_for(resolution, sigma=sigma)
    if kernel_size is not None:
        k = int(kernel_size)
    if band_sigma is None:
        return [LowPass(k, s), HighPass(k, s)]
    fine = float(band_sigma)
    return [LowPass(k, s, pre_sigma=fine), BandPass(k, fine, s), HighPass(k, fine)]
