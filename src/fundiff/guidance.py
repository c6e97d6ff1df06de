"""Classifier-free guidance and the reduction over view branches (Parts A and B).

One noise prediction for a step is assembled here:

* :func:`cfg` -- classifier-free guidance ``eps = eps_u + g (eps_c - eps_u)`` (Part A's
  samplers and Part B's DDPM / flow-matching samplers use this one function);
* :func:`reduce_terms` -- the reduction over branches (``mean`` for visual anagrams, ``sum``
  for hybrid / factorized images);
* :func:`predict_noise` -- Part A's single batched model call over every branch's view (and
  the shared unconditional passes), then inverse views, CFG on the noise half only, the
  branch filter and the reduction; the learned variance (never guided, filtered or negated)
  is the mean of every branch's inverse-viewed conditional variance (as visual_anagrams
  does), or branch 0's with ``variance_combine="first"``.

Tensors are (B, C, H, W); a model's output may carry learned-variance channels after the
noise channels, as IF's does (``2C`` channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from fundiff.denoisers import Denoiser
from fundiff.errors import FundiffError
from fundiff.views import Identity, View

__all__ = ["Branch", "cfg", "reduce_terms", "predict_noise", "REDUCTIONS", "VARIANCE_COMBINES"]

#: how branch estimates combine: ``mean`` (anagrams) or ``sum`` (hybrids)
REDUCTIONS: tuple[str, ...] = ("mean", "sum")
#: how branches' learned variances combine: ``mean`` of the inverse-viewed conditional
#: variances of all branches (visual_anagrams), or ``first`` (branch 0's only)
VARIANCE_COMBINES: tuple[str, ...] = ("mean", "first")


def cfg(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance ``uncond + scale * (cond - uncond)`` (any matching shapes).

    ``scale = 1`` is the conditional estimate, ``0`` the unconditional one; the course uses
    7 (Part A) and 5 (Part B). Apply it to noise (or velocity) channels only, never to
    learned-variance channels.
    """
    return uncond + scale * (cond - uncond)


def reduce_terms(terms: Sequence[Tensor], how: str = "mean") -> Tensor:
    """Sum the (B, C, H, W) terms in order; ``how="mean"`` then divides by their number."""
    if how not in REDUCTIONS:
        raise FundiffError(f"reduce must be one of {REDUCTIONS}, got {how!r}")
    if not terms:
        raise FundiffError("at least one term is needed")
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total / len(terms) if how == "mean" else total


@dataclass
class Branch:
    """One term of the per-step reduction.

    Attributes:
        cond: condition for ONE sample (no batch dim), e.g. (77, 4096) T5 embeddings or (10,)
            one-hot; with ``per_image=True`` a (B, ...) batch, one row per image.
        view: shown to the model as ``view(x_t)``; its estimate is mapped back by ``inverse``.
        filter: hybrid band applied to the (guided) noise estimate after the inverse view.
        per_image: ``cond`` has a leading batch dim matching ``x_t``.
    """

    cond: Tensor
    view: View = field(default_factory=Identity)
    filter: View | None = None
    per_image: bool = False


def _expand(cond: Tensor, batch: int, per_image: bool, what: str) -> Tensor:
    if per_image:
        if cond.shape[0] != batch:
            raise FundiffError(
                f"{what}: per-image conditions have {cond.shape[0]} rows, need {batch}"
            )
        return cond
    return cond.unsqueeze(0).expand(batch, *cond.shape)


def _timestep_vector(t: int | Tensor, batch: int, device: torch.device) -> Tensor:
    if isinstance(t, Tensor) and t.ndim > 0:
        if t.shape != (batch,):
            raise FundiffError(f"t must be an int or a ({batch},) tensor, got {tuple(t.shape)}")
        return t.to(device=device, dtype=torch.long)
    return torch.full((batch,), int(t), dtype=torch.long, device=device)


def predict_noise(
    denoiser: Denoiser,
    x_t: Tensor,
    t: int | Tensor,
    *,
    branches: Sequence[Branch],
    null_cond: Tensor | None = None,
    guidance: float | None = None,
    reduce: Literal["mean", "sum"] = "mean",
    image: Tensor | None = None,
    variance_combine: Literal["mean", "first"] = "mean",
) -> tuple[Tensor, Tensor | None]:
    """The guided, inverse-viewed, filtered and reduced noise estimate at one step.

    Makes exactly ONE model call with batch ``(len(branches) + U) * B``, where ``U`` is the
    number of distinct views when ``guidance`` is set (the null condition for a view is shared
    by all branches with that view) and 0 otherwise.

    Args:
        x_t: (B, C, H, W) current images.
        t: int or (B,) long timesteps.
        branches: at least one :class:`Branch`.
        null_cond: condition of the unconditional pass (one sample, no batch dim); required
            with ``guidance``.
        guidance: CFG scale ``g`` or None for no unconditional pass.
        reduce: ``"mean"`` (anagrams) or ``"sum"`` (hybrids) over branches.
        image: optional (B, C', H, W) conditioning image concatenated to ``x_t`` along the
            channels *before* each view (IF stage II's upscaled low-resolution image, viewed
            together with ``x_t`` as the reference anagram code does); the denoiser then gets
            ``C + C'`` input channels and returns C noise channels.
        variance_combine: ``"mean"`` (default) or ``"first"``, see ``VARIANCE_COMBINES``.

    Returns:
        ``(eps, variance)``: (B, C, H, W) each; ``variance`` combines the branches'
        conditional learned variances, each mapped back by its view's ``inverse_variance``
        (None for models without learned variance).
    """
    if not branches:
        raise FundiffError("at least one branch (prompt) is needed")
    if reduce not in REDUCTIONS:
        raise FundiffError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if variance_combine not in VARIANCE_COMBINES:
        raise FundiffError(
            f"variance_combine must be one of {VARIANCE_COMBINES}, got {variance_combine!r}"
        )
    if guidance is not None and null_cond is None:
        raise FundiffError("classifier-free guidance needs the null ('') condition")
    b = x_t.shape[0]
    x_full = x_t if image is None else torch.cat([x_t, image.to(x_t.device, x_t.dtype)], dim=1)
    xs = [br.view.view(x_full) for br in branches]
    cs = [_expand(br.cond, b, br.per_image, "branch") for br in branches]
    uncond_slot: list[int] = []
    if guidance is not None:
        distinct: list[View] = []
        for br in branches:
            if br.view not in distinct:
                distinct.append(br.view)
            uncond_slot.append(len(branches) + distinct.index(br.view))
        xs += [v.view(x_full) for v in distinct]
        null = _expand(null_cond, b, False, "null condition")  # type: ignore[arg-type]
        cs += [null] * len(distinct)
    x_in = torch.cat(xs)
    c_in = torch.cat([c.to(cs[0].dtype) for c in cs])
    t_in = _timestep_vector(t, b, x_t.device).repeat(len(xs))
    out = denoiser(x_in, t_in, c_in)
    if out.eps.shape != (x_in.shape[0], *x_t.shape[1:]):
        raise FundiffError(
            f"denoiser returned eps {tuple(out.eps.shape)} for input {tuple(x_in.shape)}"
        )
    eps_chunks = out.eps.split(b)
    terms = []
    for k, br in enumerate(branches):
        e = br.view.inverse(eps_chunks[k])
        if guidance is not None:
            e = cfg(e, br.view.inverse(eps_chunks[uncond_slot[k]]), guidance)
        if br.filter is not None:
            e = br.filter.inverse(e)
        terms.append(e)
    eps = reduce_terms(terms, reduce)
    if out.variance is None:
        return eps, None
    chunks = out.variance.split(b)
    used = branches[:1] if variance_combine == "first" else branches
    var = reduce_terms([br.view.inverse_variance(chunks[k]) for k, br in enumerate(used)])
    return eps, var
