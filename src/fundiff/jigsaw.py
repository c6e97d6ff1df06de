"""Geometry of the 4 x 4 jigsaw-puzzle view: interlocking pieces, each moved and rotated.

The square image (side ``S``, a multiple of 4, at least 16) is cut into 16 pieces on a 4 x 4
grid of cells (side ``c = S / 4``). Every internal cell edge carries a round knob that one
neighbour pushes into the other, so pieces interlock. The layout is symmetric under a
90-degree rotation about the image centre, which maps each piece onto another of its kind::

    c0 e0 f0 c1        c: corners, i: inner pieces, e / f: edge pieces;
    f3 i0 i1 e1        the index is the number of clockwise quarter turns
    e3 i3 i2 f1        that carries piece 0 of its kind there
    c3 f2 e2 c2

Knobs point clockwise along the border rows and around the centre, and from the edge pieces
into the inner ones, so ``e_k`` and ``f_k`` are translates of each other (by one cell along
their side). A jigsaw permutation sends corners to corners, inner pieces to inner pieces and
edge pieces to any edge slot: piece ``(kind, r)`` goes to slot ``(kind', r')`` by ``r' - r``
quarter turns about the image centre (the piece turns with it), then, for ``e <-> f``, one
cell along the side. The result is a permutation of pixels, so Gaussian noise stays Gaussian,
and its inverse is exact. (The same scheme as visual_anagrams' jigsaw view, whose piece
shapes are drawn by hand; ours are computed here.)

All geometry is done in doubled, centred integer coordinates ``u = 2 x + 1 - S`` (odd for
pixel centres), in which a quarter turn ``(u, v) -> (-v, u)`` is exact.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from fundiff.errors import FundiffError

__all__ = ["LAYOUT", "piece_labels", "jigsaw_permutation", "check_size"]

CORNER, INNER, EDGE_E, EDGE_F = 0, 1, 2, 3
#: piece label ``4 * kind + r`` of each cell, row-major (kinds: corner, inner, e, f)
LAYOUT: tuple[tuple[int, ...], ...] = (
    (0, 8, 12, 1),
    (15, 4, 5, 9),
    (11, 7, 6, 13),
    (3, 14, 10, 2),
)
# knobs of rotation 0: (giver label, receiver label, boundary cell edge) where the edge is
# ("v", k, j): the vertical line x = k c between rows j c .. (j+1) c, giver on the left
# (or "h", k, j): the horizontal line y = k c between columns j c .. (j+1) c, giver above
_KNOBS0 = (
    (0, 8, ("v", 1, 0)),  # c0 -> e0
    (8, 12, ("v", 2, 0)),  # e0 -> f0
    (12, 1, ("v", 3, 0)),  # f0 -> c1
    (8, 4, ("h", 1, 1)),  # e0 -> i0
    (12, 5, ("h", 1, 2)),  # f0 -> i1
    (4, 5, ("v", 2, 1)),  # i0 -> i1
)


def check_size(size: int) -> None:
    """Raise FundiffError naming ``size`` unless the jigsaw supports it."""
    if size < 16 or size % 4:
        raise FundiffError(
            f"the jigsaw view needs a square image whose side is a multiple of 4 and at "
            f"least 16 px, got {size} px (use patch_permute for other sizes)"
        )


def _rot(r: int, u: Tensor | int, v: Tensor | int) -> tuple:
    """``r`` clockwise quarter turns of the doubled, centred point(s) ``(u, v)``."""
    for _ in range(r % 4):
        u, v = -v, u
    return u, v


def _turn(label: int, r: int) -> int:
    return 4 * (label // 4) + (label % 4 + r) % 4


@lru_cache(maxsize=8)
def piece_labels(size: int) -> Tensor:
    """(S, S) long map of each pixel's piece label ``4 * kind + r`` (see the module doc)."""
    check_size(size)
    c = size // 4
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cells = torch.tensor(LAYOUT)
    base = cells[ys // c, xs // c]
    u, v = 2 * xs + 1 - size, 2 * ys + 1 - size
    radius = max(1.0, 0.25 * c)  # knob radius in pixels
    offset, r2 = round(radius), round(4 * radius * radius)  # in doubled units
    labels = base.clone()
    for giver, receiver, (kind, k, j) in _KNOBS0:
        line, mid = 2 * k * c - size, 2 * j * c + c - size
        # centre pushed half a radius into the receiver (right of / below the line)
        cu, cv = (line + offset, mid) if kind == "v" else (mid, line + offset)
        for r in range(4):
            ru, rv = _rot(r, cu, cv)
            inside = (u - ru) ** 2 + (v - rv) ** 2 <= r2
            labels[inside & (base == _turn(receiver, r))] = _turn(giver, r)
    return labels


def jigsaw_permutation(size: int, seed: int = 0) -> Tensor:
    """``dest`` (S*S,) long: pixel ``p`` (row-major) of the image goes to ``dest[p]``.

    A random jigsaw permutation from ``seed`` (corners among corners, inner among inner,
    edges among the 8 edge slots, never the identity). A bijection by construction, checked.
    """
    labels = piece_labels(size)
    c = size // 4
    gen = torch.Generator().manual_seed(int(seed))
    while True:
        corner, inner = torch.randperm(4, generator=gen), torch.randperm(4, generator=gen)
        edge = torch.randperm(8, generator=gen)  # slot s: kind e (s < 4) or f, rotation s % 4
        if not (
            torch.equal(corner, torch.arange(4))
            and torch.equal(inner, torch.arange(4))
            and torch.equal(edge, torch.arange(8))
        ):
            break
    target = {}
    for r in range(4):
        target[4 * CORNER + r] = 4 * CORNER + int(corner[r])
        target[4 * INNER + r] = 4 * INNER + int(inner[r])
        for kind, s in ((EDGE_E, r), (EDGE_F, 4 + r)):
            d = int(edge[s])
            target[4 * kind + r] = 4 * (EDGE_E if d < 4 else EDGE_F) + d % 4
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    u, v = (2 * xs + 1 - size).flatten(), (2 * ys + 1 - size).flatten()
    src = labels.flatten()
    du, dv = torch.empty_like(u), torch.empty_like(v)
    for label, dest in target.items():
        sel = src == label
        turns = (dest % 4 - label % 4) % 4
        nu, nv = _rot(turns, u[sel], v[sel])
        if label // 4 != dest // 4:  # e <-> f: one cell along side dest % 4
            step = 2 * c if dest // 4 == EDGE_F else -2 * c
            su, sv = _rot(dest % 4, step, 0)
            nu, nv = nu + su, nv + sv
        du[sel], dv[sel] = nu, nv
    dest_index = ((dv + size - 1) // 2) * size + (du + size - 1) // 2
    if not torch.equal(torch.sort(dest_index).values, torch.arange(size * size)):
        raise FundiffError(f"internal error: the {size} px jigsaw is not a permutation")
    return dest_index
