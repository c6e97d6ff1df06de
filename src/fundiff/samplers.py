"""Part A sampling: one denoising loop that does every trick, and thin wrappers on top.

The loop (:func:`denoise`) takes, per step from ``t = ts[i]`` to ``t' = ts[i+1]``:

1. one batched model call over every branch's view (and the shared unconditional passes),
   with CFG on the noise part, the branch filters (hybrids) and the reduction over branches
   (``mean`` for anagrams, ``sum`` for hybrids): :func:`fundiff.guidance.predict_noise`;
2. the DDPM step of :mod:`fundiff.steps` (the course's A.3 update, identical to diffusers
   ``DDPMScheduler.step``): noise variance ``beta``, ``posterior`` or the model's learned
   variance, optional clipping, or a diffusers scheduler's own ``step`` (``step="scheduler"``);
3. optionally the inpainting projection ``x_t' <- m x_t' + (1 - m) forward(x_orig, t')``
   and RePaint resampling.

Images are (B, C, H, W) in the denoiser's ``value_range`` (noisy ones unbounded). All random
draws use the ``generator`` passed in; same seed, same result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fundiff.classical import best_blur, psnr
from fundiff.denoisers import Denoiser
from fundiff.denoising import (
    Callback,
    Prompt,
    _check_timesteps,
    _condition,
    _noise,
    default_timesteps,
    denoise,
)
from fundiff.errors import FundiffError
from fundiff.filters import gaussian_blur, hybrid_filters
from fundiff.guidance import Branch, predict_noise
from fundiff.schedules import randn_like
from fundiff.views import View, get_view

__all__ = [
    "Branch",
    "Callback",
    "denoise",
    "predict_noise",
    "default_timesteps",
    "one_step_denoise",
    "iterative_denoise",
    "sample",
    "sample_cfg",
    "sdedit",
    "translate",
    "inpaint",
    "visual_anagram",
    "hybrid",
    "gaussian_blur",
    "psnr",
    "best_blur",
]


# --------------------------------------------------------------------------- thin wrappers
def _guided(
    denoiser: Denoiser, guidance: float | None, null_prompt: Prompt
) -> tuple[float | None, Tensor | None]:
    if guidance is None:
        return None, None
    return float(guidance), _condition(denoiser, null_prompt)


def _guided_denoise(
    denoiser: Denoiser,
    x: Tensor,
    timesteps: Sequence[int] | None,
    branches: Sequence[Branch],
    *,
    guidance: float | None,
    null_prompt: Prompt,
    generator: torch.Generator,
    **kwargs: object,
) -> Tensor:
    """:func:`denoise` with CFG against ``null_prompt`` (``guidance=None``: no unconditional
    pass); other keyword arguments go to :func:`denoise`."""
    g, null = _guided(denoiser, guidance, null_prompt)
    return denoise(
        denoiser,
        x,
        timesteps,
        branches=branches,
        null_cond=null,
        guidance=g,
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


@torch.no_grad()
def one_step_denoise(
    denoiser: Denoiser,
    x_t: Tensor,
    t: int | Tensor,
    prompt: Prompt = "a high quality photo",
    *,
    guidance: float | None = None,
    null_prompt: Prompt = "",
    clip: bool = False,
) -> Tensor:
    """One-step estimate ``x0^ = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (course A.1.3).

    Args:
        x_t: (B, C, H, W) noisy images; t: int or (B,) timesteps (one per image).
        prompt: a prompt string or a ready condition tensor (one sample).
        guidance: optional CFG scale (the course uses none here).
        clip: clamp the estimate to ``denoiser.value_range``.

    Returns:
        (B, C, H, W) estimates of the clean images.
    """
    g, null = _guided(denoiser, guidance, null_prompt)
    eps, _ = predict_noise(
        denoiser,
        x_t,
        t,
        branches=[Branch(_condition(denoiser, prompt))],
        null_cond=null,
        guidance=g,
    )
    ab = denoiser.schedule._abar_batch(t, x_t).to(x_t.dtype)
    x0 = (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()
    return x0.clamp(*denoiser.value_range) if clip else x0


def iterative_denoise(
    denoiser: Denoiser,
    x_t: Tensor,
    i_start: int,
    prompt: Prompt = "a high quality photo",
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = None,
    null_prompt: Prompt = "",
    **kwargs: object,
) -> Tensor:
    """Course A.1.4 / A.1.6: denoise ``x_t`` (at ``ts[i_start]``) with one prompt.

    ``guidance=None`` is the plain loop (1.4); a float makes it ``iterative_denoise_cfg``.
    Extra keyword arguments go to :func:`denoise` (``callback``, ``variance``, ``step``...).
    Returns (B, C, H, W).
    """
    branches = [Branch(_condition(denoiser, prompt))]
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    return _guided_denoise(denoiser, x_t, timesteps, branches, i_start=i_start, **kw, **kwargs)


def sample(
    denoiser: Denoiser,
    prompt: Prompt | Sequence[str] = "a high quality photo",
    n: int = 1,
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = None,
    null_prompt: Prompt = "",
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> Tensor:
    """Course A.1.5: sample ``n`` images from pure noise (i_start = 0), no CFG by default.

    ``prompt`` may be a list of prompts (one image each; ``n`` is then ignored). The initial
    noise is drawn first from ``generator``, exactly as diffusers' IF pipeline does.
    Returns (n, C, R, R), unclipped, in about ``value_range``.
    """
    if isinstance(prompt, (list, tuple)):
        cond = denoiser.conditions([str(p) for p in prompt])
        branch = Branch(cond, per_image=True)
        n = len(prompt)
    else:
        branch = Branch(_condition(denoiser, prompt))  # type: ignore[arg-type]
    if n < 1:
        raise FundiffError(f"number of samples must be >= 1, got {n}")
    x = _noise(denoiser, n, generator, dtype)
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    return _guided_denoise(denoiser, x, timesteps, [branch], **kw, **kwargs)


def sample_cfg(
    denoiser: Denoiser,
    prompt: Prompt | Sequence[str] = "a high quality photo",
    n: int = 1,
    *,
    generator: torch.Generator,
    guidance: float = 7.0,
    **kwargs: object,
) -> Tensor:
    """Course A.1.6: :func:`sample` with classifier-free guidance (default scale 7)."""
    return sample(denoiser, prompt, n, generator=generator, guidance=guidance, **kwargs)  # type: ignore[arg-type]


def sdedit(
    denoiser: Denoiser,
    x0: Tensor,
    i_starts: Sequence[int],
    prompt: Prompt = "a high quality photo",
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = 7.0,
    null_prompt: Prompt = "",
    **kwargs: object,
) -> list[Tensor]:
    """Course A.1.7: noise ``x0`` to ``ts[i_start]`` and denoise, once per level.

    Args:
        x0: (B, C, H, W) clean images in ``value_range``.
        i_starts: indices into the timestep list, e.g. [1, 3, 5, 7, 10, 20].

    Returns:
        One (B, C, H, W) result per entry of ``i_starts``, in that order. Levels are run in
        order from one generator, so a result depends on the levels before it.
    """
    ts = _check_timesteps(
        default_timesteps(denoiser) if timesteps is None else timesteps, denoiser.schedule
    )
    branches = [Branch(_condition(denoiser, prompt))]
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    results = []
    for i in i_starts:
        if not 0 <= int(i) < len(ts):
            raise FundiffError(f"i_start {i} out of range [0, {len(ts) - 1}]")
        x_t, _ = denoiser.schedule.forward(x0, ts[int(i)], generator)
        results.append(_guided_denoise(denoiser, x_t, ts, branches, i_start=int(i), **kw, **kwargs))
    return results


def translate(
    denoiser: Denoiser,
    x0: Tensor,
    i_starts: Sequence[int],
    prompt: Prompt,
    *,
    generator: torch.Generator,
    **kwargs: object,
) -> list[Tensor]:
    """Course A.1.7.3: text-conditional image-to-image (SDEdit towards ``prompt``)."""
    return sdedit(denoiser, x0, i_starts, prompt, generator=generator, **kwargs)  # type: ignore[arg-type]


def inpaint(
    denoiser: Denoiser,
    x_orig: Tensor,
    mask: Tensor,
    prompt: Prompt = "a high quality photo",
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = 7.0,
    null_prompt: Prompt = "",
    repaint_jumps: int = 0,
    **kwargs: object,
) -> Tensor:
    """Course A.1.7.2: regenerate where ``mask == 1``, keep the original elsewhere.

    Starts from pure noise shaped like ``x_orig`` and runs the full schedule with the
    projection ``x_t' <- m x_t' + (1 - m) forward(x_orig, t')`` after every step.

    Args:
        x_orig: (B, C, H, W) clean images in ``value_range``.
        mask: (B|1, 1|C, H, W), 1 = generate, 0 = keep.
        repaint_jumps: extra RePaint resampling passes per step.

    Returns:
        (B, C, H, W); outside the mask equal to ``forward(x_orig, ts[-1])`` (t = 0: the
        original plus noise of std ``sqrt(1 - abar_0)``).
    """
    x = randn_like(x_orig, generator)
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    branches = [Branch(_condition(denoiser, prompt))]
    inp = {"inpaint": (x_orig, mask), "repaint_jumps": repaint_jumps}
    return _guided_denoise(denoiser, x, timesteps, branches, **inp, **kw, **kwargs)


def visual_anagram(
    denoiser: Denoiser,
    prompts: Sequence[Prompt],
    views: Sequence[View | str] = ("identity", "flip"),
    n: int = 1,
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = 7.0,
    null_prompt: Prompt = "",
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> Tensor:
    """Course A.1.8: ``eps = mean_k V_k^-1 CFG(V_k x_t, p_k)``.

    ``prompts[k]`` is what the image shows under ``views[k]`` (names as in
    :func:`fundiff.views.get_view`; default: upright / vertically flipped). The learned
    variance is the mean of the branches' inverse-viewed variances (the reference's rule);
    ``variance_combine="first"`` keeps branch 0's (this project's earlier rule).
    Returns (n, C, R, R) in the first view's frame.
    """
    if len(prompts) != len(views) or len(prompts) < 1:
        raise FundiffError(
            f"need one view per prompt, got {len(prompts)} prompts, {len(views)} views"
        )
    vs = [v if isinstance(v, View) else get_view(v) for v in views]
    branches = [Branch(_condition(denoiser, p), view=v) for p, v in zip(prompts, vs, strict=True)]
    x = _noise(denoiser, n, generator, dtype)
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    return _guided_denoise(denoiser, x, timesteps, branches, reduce="mean", **kw, **kwargs)


def hybrid(
    denoiser: Denoiser,
    prompts: Sequence[Prompt],
    n: int = 1,
    *,
    generator: torch.Generator,
    timesteps: Sequence[int] | None = None,
    guidance: float | None = 7.0,
    null_prompt: Prompt = "",
    sigma: float | None = None,
    kernel_size: int | None = None,
    band_sigma: float | None = None,
    dtype: torch.dtype = torch.float32,
    **kwargs: object,
) -> Tensor:
    """Course A.1.9 (Factorized Diffusion): ``eps = low(eps_1) + high(eps_2)`` (+ band).

    Args:
        prompts: ``(far, near)`` = (low-pass prompt, high-pass prompt), or three prompts
            (low, band, high) with ``band_sigma``.
        sigma / kernel_size: Gaussian of the split (default 2.0 / 33 at 64 px, scaled to the
            denoiser's resolution).
        band_sigma: the finer sigma of a middle band (< sigma).

    Returns:
        (n, C, R, R).
    """
    filters = hybrid_filters(
        denoiser.resolution, sigma=sigma, kernel_size=kernel_size, band_sigma=band_sigma
    )
    if len(prompts) != len(filters):
        raise FundiffError(
            f"hybrid needs {len(filters)} prompts (coarse to fine), got {len(prompts)}"
        )
    branches = [
        Branch(_condition(denoiser, p), filter=f) for p, f in zip(prompts, filters, strict=True)
    ]
    x = _noise(denoiser, n, generator, dtype)
    kw = {"guidance": guidance, "null_prompt": null_prompt, "generator": generator}
    return _guided_denoise(denoiser, x, timesteps, branches, reduce="sum", **kw, **kwargs)
