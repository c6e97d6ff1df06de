"""Views for visual anagrams and filters for hybrid (factorized) images.

A *view* is an invertible transform of the image being denoised. The sampler shows the model
``view(x_t)`` and maps the model's noise estimate back with ``inverse(eps)``. For the estimate to
remain a valid noise prediction the view must keep Gaussian noise Gaussian (i.i.d. N(0, 1)
pixels stay i.i.d. N(0, 1)): pixel permutations (flips, 90-degree rotations, patch
permutations, the jigsaw puzzle of :mod:`fundiff.jigsaw`) and negation qualify; blur or
bilinear resampling do not.

``inverse_variance(v)`` maps the model's learned-variance channels back: spatial views move
them like the noise, negation leaves them alone (a variance is not signed).

The hybrid-image *filters* (Factorized Diffusion) share the View interface and live in
:mod:`fundiff.filters`.

All tensors are (B, C, H, W) (a leading batch dim is required); views are pure functions that
return new tensors and never modify their input.
"""

from __future__ import annotations

import torch
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
    "PatchPermute",
    "Jigsaw",
    "VIEW_NAMES",
    "get_view",
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


class PatchPermute(View):
    """Shuffle square patches of a ``grid x grid`` tiling by a seeded permutation.

    (Was called ``jigsaw`` before the real :class:`Jigsaw` existed: the patches keep their
    orientation and their square shape.)

    Args:
        grid: patches per side; H and W must be divisible by it (the patches must tile).
        seed: seeds the permutation (a fresh ``torch.Generator``); never the identity.

    Output patch ``j`` (row-major) is input patch ``perm[j]``; ``inverse`` applies ``argsort``.
    """

    name = "patch_permute"

    def __init__(self, grid: int = 4, seed: int = 0) -> None:
        if int(grid) < 2:
            raise FundiffError(f"patch_permute grid must be >= 2, got {grid}")
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
        return f"PatchPermute(grid={self.grid}, seed={self.seed})"

    def _shuffle(self, x: Tensor, perm: Tensor) -> Tensor:
        _check_4d(x)
        b, c, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise FundiffError(
                f"patch_permute grid {g} does not tile a {h}x{w} image (H, W % grid != 0)"
            )
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


class Jigsaw(View):
    """The 4 x 4 jigsaw puzzle: interlocking pieces moved to other slots, each rotated.

    A pixel permutation (see :mod:`fundiff.jigsaw`) for square images whose side is a
    multiple of 4, at least 16 px (e.g. 28, 64, 256); other sizes raise FundiffError naming
    the size. The permutation for each size is built on first use from ``seed``.
    """

    name = "jigsaw"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._perms: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def key(self) -> tuple:
        return (self.name, self.seed)

    def __repr__(self) -> str:
        return f"Jigsaw(seed={self.seed})"

    def _perm(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from fundiff.jigsaw import jigsaw_permutation

        _check_square(x, self.name)
        size = x.shape[-1]
        if size not in self._perms:
            dest = jigsaw_permutation(size, self.seed)
            self._perms[size] = (torch.argsort(dest), dest)
        src, dest = self._perms[size]
        return src.to(x.device), dest.to(x.device)

    def _gather(self, x: Tensor, index: Tensor) -> Tensor:
        return x.flatten(-2)[..., index].reshape(x.shape)

    def view(self, x: Tensor) -> Tensor:
        return self._gather(x, self._perm(x)[0])

    def inverse(self, eps: Tensor) -> Tensor:
        return self._gather(eps, self._perm(eps)[1])


VIEW_NAMES: tuple[str, ...] = (
    "identity",
    "flip",
    "vflip",
    "hflip",
    "rot180",
    "rot90cw",
    "rot90ccw",
    "negate",
    "patch_permute",
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
    "patch_permute": PatchPermute,
    "jigsaw": Jigsaw,
}


def get_view(name: str, **kwargs: object) -> View:
    """A view by config name (see ``VIEW_NAMES``).

    ``"flip"`` is the vertical flip; ``patch_permute`` takes ``grid`` and ``seed``,
    ``jigsaw`` (the 4 x 4 puzzle with rotated pieces) takes ``seed``. Raises FundiffError for
    an unknown name.
    """
    cls = _VIEWS.get(str(name).lower())
    if cls is None:
        raise FundiffError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")
    if kwargs and cls not in (PatchPermute, Jigsaw):
        raise FundiffError(f"view {name!r} takes no options, got {sorted(kwargs)}")
    return cls(**kwargs)  # type: ignore[arg-type]
