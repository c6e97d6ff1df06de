"""Views for visual anagrams and filters for hybrid (factorized) images.

A *view* is an invertible transform of the image being denoised. The sampler shows the model
``view(x_t)`` and maps the model's noise estimate back with ``inverse(eps)``. For the estimate to
remain a valid noise prediction the view must keep Gaussian noise Gaussian (i.i.d. N(0, 1)
pixels stay i.i.d. N(0, 1)): pixel permutations (flips, 90-degree rotations, jigsaw) and
negation qualify; blur or bilinear resampling do not.

``inverse_variance(v)`` maps the model's learned-variance channels back: spatial views move
them like the noise, negation leaves them alone (a variance is not signed).

A *filter* (hybrid images, Factorized Diffusion) is the identity on the input and filters the
noise estimate: ``LowPass`` / ``HighPass`` (and optionally ``BandPass``) built on one Gaussian
blur, so the bands sum exactly to the identity. Filters act on the noise channels only.

All tensors are (B, C, H, W) (a leading batch dim is required); views are pure functions that
return new tensors and never modify their input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fundiff.errors import FundiffError

__all__ = [
    "View",
    "Identity",
    "VFlip",
    "HFlip",
    "Rot180",
    "Rot90CW",
    "Rot90CCW",
    "Negate",
    "Jigsaw",
    "LowPass",
    "HighPass",
    "BandPass",
    "VIEW_NAMES",
    "get_view",
    "gaussian_kernel1d",
    "gaussian_blur",
    "gaussian_kernel_for",
    "hybrid_filters",
]


class View:
    """Base class: the identity. Subclasses override ``view`` / ``inverse`` (+ variance)."""

    name: str = "identity"

    def view(self, x: Tensor) -> Tensor:
        """Transform an image / noisy latent (B, C, H, W); any value range."""
        return x

    def inverse(self, eps: Tensor) -> Tensor:
        """Map a noise estimate (B, C, H, W) computed on ``view(x)`` back to x's frame."""
        return eps

    def inverse_variance(self, v: Tensor) -> Tensor:
        """Map learned-variance channels (B, C, H, W) back: the spatial part of ``inverse``."""
        return self.inverse(v)

    @property
    def key(self) -> tuple:
        """Hashable identity of this view (same key = same transform)."""
        return (self.name,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, View) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _check_4d(x: Tensor) -> None:
    if x.ndim != 4:
        raise FundiffError(f"views expect (B, C, H, W) tensors, got shape {tuple(x.shape)}")


def _check_square(x: Tensor, name: str) -> None:
    _check_4d(x)
    if x.shape[-1] != x.shape[-2]:
        raise FundiffError(f"view {name!r} needs square images, got {x.shape[-2]}x{x.shape[-1]}")


class Identity(View):
    """No transform."""

    name = "identity"


class VFlip(View):
    """Upside down by a vertical flip (``torch.flip`` over H), the reference anagram 'flip'."""

    name = "vflip"

    def view(self, x: Tensor) -> Tensor:
        _check_4d(x)
        return torch.flip(x, dims=[-2])

    def inverse(self, eps: Tensor) -> Tensor:
        return self.view(eps)


class HFlip(View):
    """Mirror left-right (``torch.flip`` over W)."""

    name = "hflip"

    def view(self, x: Tensor) -> Tensor:
        _check_4d(x)
        return torch.flip(x, dims=[-1])

    def inverse(self, eps: Tensor) -> Tensor:
        return self.view(eps)


class Rot180(View):
    """Upside down by a 180-degree rotation (what the course's demo assets show)."""

    name = "rot180"

    def view(self, x: Tensor) -> Tensor:
        _check_4d(x)
        return torch.flip(x, dims=[-2, -1])

    def inverse(self, eps: Tensor) -> Tensor:
        return self.view(eps)


class Rot90CW(View):
    """Rotate 90 degrees clockwise (square images only)."""

    name = "rot90cw"

    def view(self, x: Tensor) -> Tensor:
        _check_square(x, self.name)
        return torch.rot90(x, k=-1, dims=(-2, -1))

    def inverse(self, eps: Tensor) -> Tensor:
        _check_square(eps, self.name)
        return torch.rot90(eps, k=1, dims=(-2, -1))


class Rot90CCW(View):
    """Rotate 90 degrees counter-clockwise (square images only)."""

    name = "rot90ccw"

    def view(self, x: Tensor) -> Tensor:
        _check_square(x, self.name)
        return torch.rot90(x, k=1, dims=(-2, -1))

    def inverse(self, eps: Tensor) -> Tensor:
        _check_square(eps, self.name)
        return torch.rot90(eps, k=-1, dims=(-2, -1))


class Negate(View):
    """Colour negation ``x -> -x`` (for data in a range symmetric about 0, e.g. IF's [-1, 1]).

    The variance channels are *not* negated.
    """

    name = "negate"

    def view(self, x: Tensor) -> Tensor:
        return -x

    def inverse(self, eps: Tensor) -> Tensor:
        return -eps

    def inverse_variance(self, v: Tensor) -> Tensor:
        return v


class Jigsaw(View):
    """Shuffle square pieces of a ``grid x grid`` tiling by a seeded permutation.

    Args:
        grid: pieces per side; H and W must be divisible by it (the pieces must tile).
        seed: seeds the permutation (a fresh ``torch.Generator``); never the identity.

    Output piece ``j`` (row-major) is input piece ``perm[j]``; ``inverse`` applies ``argsort``.
    """

    name = "jigsaw"

    def __init__(self, grid: int = 4, seed: int = 0) -> None:
        if int(grid) < 2:
            raise FundiffError(f"jigsaw grid must be >= 2, got {grid}")
        self.grid = int(grid)
        self.seed = int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        n = self.grid * self.grid
        perm = torch.randperm(n, generator=gen)
        while bool((perm == torch.arange(n)).all()):
            perm = torch.randperm(n, generator=gen)
        self.perm = perm
        self.inv_perm = torch.argsort(perm)

    @property
    def key(self) -> tuple:
        return (self.name, self.grid, self.seed)

    def __repr__(self) -> str:
        return f"Jigsaw(grid={self.grid}, seed={self.seed})"

    def _shuffle(self, x: Tensor, perm: Tensor) -> Tensor:
        _check_4d(x)
        b, c, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise FundiffError(f"jigsaw grid {g} does not tile a {h}x{w} image (H, W % grid != 0)")
        ph, pw = h // g, w // g
        pieces = (
            x.reshape(b, c, g, ph, g, pw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, g * g, ph, pw)
        )
        pieces = pieces[:, :, perm.to(x.device)]
        return pieces.reshape(b, c, g, g, ph, pw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)

    def view(self, x: Tensor) -> Tensor:
        return self._shuffle(x, self.perm)

    def inverse(self, eps: Tensor) -> Tensor:
        return self._shuffle(eps, self.inv_perm)


# --------------------------------------------------------------------------- Gaussian blur
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
    """``G_sigma * eps`` (Gaussian blur of the noise estimate)."""

    name = "lowpass"

    def inverse(self, eps: Tensor) -> Tensor:
        return self._blur(eps)


class HighPass(_Filter):
    """``eps - G_sigma * eps``; ``LowPass(k, s) + HighPass(k, s)`` is the identity."""

    name = "highpass"

    def inverse(self, eps: Tensor) -> Tensor:
        return eps - self._blur(eps)


class BandPass(_Filter):
    """``G_fine * eps - G_coarse * eps`` (``sigma`` = fine < ``sigma_coarse``).

    With ``LowPass(k, sigma_coarse)`` and ``HighPass(k, sigma)`` the three bands sum to the
    identity.
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
        return self._blur(eps) - self._blur(eps, self.sigma_coarse)


def hybrid_filters(
    resolution: int,
    *,
    sigma: float | None = None,
    kernel_size: int | None = None,
    band_sigma: float | None = None,
) -> list[View]:
    """Filters whose outputs sum to the identity, coarsest band first.

    Two bands (default): ``[LowPass, HighPass]`` with kernel/sigma from
    :func:`gaussian_kernel_for` (33 / 2.0 at 64 px) unless given. Three bands with
    ``band_sigma`` (< sigma): ``[LowPass(sigma), BandPass(band_sigma, sigma), HighPass(band_sigma)]``.
    """
    k, s = gaussian_kernel_for(resolution, sigma=sigma)
    if kernel_size is not None:
        k = int(kernel_size)
    if band_sigma is None:
        return [LowPass(k, s), HighPass(k, s)]
    return [LowPass(k, s), BandPass(k, float(band_sigma), s), HighPass(k, float(band_sigma))]


VIEW_NAMES: tuple[str, ...] = (
    "identity",
    "flip",
    "vflip",
    "hflip",
    "rot180",
    "rot90cw",
    "rot90ccw",
    "negate",
    "jigsaw",
)

_VIEWS: dict[str, type[View]] = {
    "identity": Identity,
    "flip": VFlip,  # the default "flip" is the reference vertical flip
    "vflip": VFlip,
    "hflip": HFlip,
    "rot180": Rot180,
    "rot90cw": Rot90CW,
    "rot90ccw": Rot90CCW,
    "negate": Negate,
    "jigsaw": Jigsaw,
}


def get_view(name: str, **kwargs: object) -> View:
    """A view by config name (see ``VIEW_NAMES``); ``jigsaw`` takes ``grid`` and ``seed``.

    ``"flip"`` is the vertical flip. Raises FundiffError for an unknown name.
    """
    cls = _VIEWS.get(str(name).lower())
    if cls is None:
        raise FundiffError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")
    if kwargs and cls is not Jigsaw:
        raise FundiffError(f"view {name!r} takes no options, got {sorted(kwargs)}")
    return cls(**kwargs)  # type: ignore[arg-type]
