"""Part A sampling: one denoising loop that does every trick, and thin wrappers on top.

The loop (:func:`denoise`) takes, per step from ``t = ts[i]`` to ``t' = ts[i+1]``:

1. every branch's view of ``x_t`` and, with guidance, every distinct view with the null
   condition, all in **one** model call (batch ``(branches + distinct views) * B``);
2. inverse views of the noise estimates; CFG on the noise part,
   ``eps = eps_u + g (eps_c - eps_u)``; the branch's filter (hybrids); reduction over branches
   (``mean`` for anagrams, ``sum`` for hybrids); the learned variance of branch 0's
   conditional pass (inverse-viewed, never filtered or negated);
3. the course's A.3 update (identical to diffusers ``DDPMScheduler.step`` with thresholding
   off)::

       x0^   = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
       alpha = abar_t / abar_t',  beta = 1 - alpha
       x_t'  = sqrt(abar_t') beta / (1 - abar_t) x0^ + sqrt(alpha) (1 - abar_t') / (1 - abar_t) x_t
               + sigma z        (z ~ N(0, I) from the generator, only when t > 0)

   with ``log sigma^2 = f log beta + (1 - f) log beta~``, ``f = (v + 1) / 2``,
   ``beta~ = (1 - abar_t') / (1 - abar_t) beta`` for learned variance (diffusers
   ``_get_variance``, ``learned_range``), or ``sigma^2 = beta`` (the course's DDPM) without; or
   a diffusers scheduler's own ``step`` (``step="scheduler"``);
4. optionally the inpainting projection ``x_t' <- m x_t' + (1 - m) forward(x_orig, t')``
   and RePaint resampling.

Images are (B, C, H, W) in the denoiser's ``value_range`` (noisy ones unbounded). All random
draws use the ``generator`` passed in; same seed, same result.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from fundiff.denoisers import Denoiser
from fundiff.errors import FundiffError
from fundiff.schedules import NoiseSchedule, randn_like, scale_timesteps, strided_timesteps
from fundiff.views import Identity, View, gaussian_blur, get_view, hybrid_filters

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

#: ``callback(i, t, x_t, x0_hat)``: called once per step *before* the update, with the index
#: ``i`` into the timestep list, ``t = ts[i]``, the current (B, C, H, W) ``x_t`` and the
#: one-step estimate ``x0_hat`` from the (guided, reduced) noise estimate at that step.
Callback = Callable[[int, int, Tensor, Tensor], None]

Prompt = str | Tensor


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


# --------------------------------------------------------------------------- helpers
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


def default_timesteps(denoiser: Denoiser) -> list[int]:
    """The course's strided list ``[990, 960, ..., 0]``, scaled to the denoiser's T if != 1000."""
    ts = strided_timesteps()
    T = denoiser.schedule.num_train_timesteps
    return ts if T == 1000 else scale_timesteps(ts, from_T=1000, to_T=T)


def _check_timesteps(ts: Sequence[int], schedule: NoiseSchedule) -> list[int]:
    out = [int(t) for t in ts]
    if not out:
        raise FundiffError("the timestep list is empty")
    T = schedule.num_train_timesteps
    if any(t < 0 or t >= T for t in out):
        raise FundiffError(f"timesteps must lie in [0, {T - 1}], got {out}")
    if any(a <= b for a, b in zip(out, out[1:], strict=False)):
        raise FundiffError(f"timesteps must be strictly decreasing, got {out}")
    return out


def _condition(denoiser: Denoiser, prompt: Prompt) -> Tensor:
    """One sample's condition from a prompt string (looked up) or a ready tensor."""
    if isinstance(prompt, Tensor):
        return prompt
    return denoiser.conditions([str(prompt)])[0]


def _device_of(denoiser: Denoiser) -> torch.device:
    dev = getattr(denoiser, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")


def _noise(denoiser: Denoiser, n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """x_T ~ N(0, I) of shape (n, C, R, R), drawn like diffusers' ``randn_tensor``."""
    shape = (n, denoiser.channels, denoiser.resolution, denoiser.resolution)
    return randn_like(torch.empty(shape, dtype=dtype, device=_device_of(denoiser)), generator)


# --------------------------------------------------------------------------- one prediction
def predict_noise(
    denoiser: Denoiser,
    x_t: Tensor,
    t: int | Tensor,
    *,
    branches: Sequence[Branch],
    null_cond: Tensor | None = None,
    guidance: float | None = None,
    reduce: Literal["mean", "sum"] = "mean",
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

    Returns:
        ``(eps, variance)``: (B, C, H, W) each; ``variance`` is branch 0's conditional learned
        variance mapped back by its view's ``inverse_variance``, or None.
    """
    if not branches:
        raise FundiffError("at least one branch (prompt) is needed")
    if reduce not in ("mean", "sum"):
        raise FundiffError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if guidance is not None and null_cond is None:
        raise FundiffError("classifier-free guidance needs the null ('') condition")
    b = x_t.shape[0]
    xs = [br.view.view(x_t) for br in branches]
    cs = [_expand(br.cond, b, br.per_image, "branch") for br in branches]
    uncond_slot: list[int] = []
    if guidance is not None:
        distinct: list[View] = []
        for br in branches:
            if br.view not in distinct:
                distinct.append(br.view)
            uncond_slot.append(len(branches) + distinct.index(br.view))
        xs += [v.view(x_t) for v in distinct]
        null = _expand(null_cond, b, False, "null condition")  # type: ignore[arg-type]
        cs += [null] * len(distinct)
    x_in = torch.cat(xs)
    c_in = torch.cat([c.to(cs[0].dtype) for c in cs])
    t_in = _timestep_vector(t, b, x_t.device).repeat(len(xs))
    out = denoiser(x_in, t_in, c_in)
    if out.eps.shape != x_in.shape:
        raise FundiffError(
            f"denoiser returned eps {tuple(out.eps.shape)} for input {tuple(x_in.shape)}"
        )
    eps_chunks = out.eps.split(b)
    total: Tensor | None = None
    for k, br in enumerate(branches):
        e = br.view.inverse(eps_chunks[k])
        if guidance is not None:
            e_u = br.view.inverse(eps_chunks[uncond_slot[k]])
            e = e_u + guidance * (e - e_u)
        if br.filter is not None:
            e = br.filter.inverse(e)
        total = e if total is None else total + e
    assert total is not None
    eps = total / len(branches) if reduce == "mean" else total
    var = None
    if out.variance is not None:
        var = branches[0].view.inverse_variance(out.variance[:b])
    return eps, var


# --------------------------------------------------------------------------- the update
def _x0_hat(x_t: Tensor, eps: Tensor, abar_t: float) -> Tensor:
    return (x_t - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)


def _a3_step(
    x_t: Tensor,
    eps: Tensor,
    var: Tensor | None,
    t: int,
    t_prev: int,
    schedule: NoiseSchedule,
    *,
    variance: str,
    generator: torch.Generator | None,
    clip: tuple[float, float] | None,
) -> tuple[Tensor, Tensor]:
    """Equation A.3 from ``t`` to ``t_prev`` (-1 = clean). Returns ``(x_{t'}, x0_hat)``."""
    ab_t = schedule.abar(t)
    ab_p = schedule.abar(t_prev)
    alpha = ab_t / ab_p
    beta = 1.0 - alpha
    x0 = _x0_hat(x_t, eps, ab_t)
    if clip is not None:
        x0 = x0.clamp(clip[0], clip[1])
    mean = (math.sqrt(ab_p) * beta / (1.0 - ab_t)) * x0 + (
        math.sqrt(alpha) * (1.0 - ab_p) / (1.0 - ab_t)
    ) * x_t
    if t <= 0:
        return mean, x0
    if generator is None:
        raise FundiffError("a generator is needed for the noise of the DDPM step")
    z = randn_like(x_t, generator)
    post = max((1.0 - ab_p) / (1.0 - ab_t) * beta, 1e-20)
    if variance == "learned":
        if var is None:
            raise FundiffError("variance='learned' but the denoiser returned no variance")
        frac = (var + 1.0) / 2.0
        log_var = frac * math.log(beta) + (1.0 - frac) * math.log(post)
        return mean + torch.exp(0.5 * log_var) * z, x0
    sigma2 = beta if variance == "beta" else post
    return mean + math.sqrt(sigma2) * z, x0


def _resolve_variance(denoiser: Denoiser, variance: str) -> str:
    if variance == "model":
        return "learned" if denoiser.variance_type == "learned_range" else "beta"
    if variance == "fixed":
        return "beta"
    if variance in ("learned", "beta", "posterior"):
        return variance
    raise FundiffError(
        f"variance must be 'model', 'fixed' (= 'beta'), 'posterior' or 'learned', got {variance!r}"
    )


# --------------------------------------------------------------------------- the loop
@torch.no_grad()
def denoise(
    denoiser: Denoiser,
    x_t: Tensor,
    timesteps: Sequence[int] | None = None,
    *,
    branches: Sequence[Branch],
    null_cond: Tensor | None = None,
    guidance: float | None = None,
    reduce: Literal["mean", "sum"] = "mean",
    i_start: int = 0,
    generator: torch.Generator | None,
    variance: str = "model",
    inpaint: tuple[Tensor, Tensor] | None = None,
    repaint_jumps: int = 0,
    callback: Callback | None = None,
    step: Literal["a3", "scheduler"] = "a3",
    scheduler: object | None = None,
    final_step: bool = False,
    clip_x0: bool = False,
) -> Tensor:
    """Denoise ``x_t`` (at ``timesteps[i_start]``) down the strided list.

    Args:
        denoiser: any :class:`~fundiff.denoisers.Denoiser`.
        x_t: (B, C, H, W) images at noise level ``timesteps[i_start]``; not modified.
        timesteps: strictly decreasing ints in [0, T-1]; default the course's 990..0 by 30
            (scaled to the denoiser's T).
        branches, null_cond, guidance, reduce: see :func:`predict_noise`.
        i_start: index of the first step; steps run for ``i = i_start .. len(ts) - 2``
            (the course's loop: the result is at ``ts[-1]``, i.e. t = 0).
        generator: source of every noise draw (required unless no step adds noise).
        variance: ``"model"`` (learned variance if the denoiser has ``learned_range``, else
            ``sigma^2 = beta_t`` of the strided step), ``"fixed"``/``"beta"``,
            ``"posterior"`` (``beta~``), or ``"learned"``.
        inpaint: ``(x_orig, mask)``: x_orig (B|1, C, H, W) clean image in ``value_range``,
            mask (B|1, 1|C, H, W) with 1 where new content is generated, 0 where the original
            is kept. After every step ``x <- m x + (1 - m) forward(x_orig, t')``.
        repaint_jumps: RePaint resampling: after each (projected) step re-noise ``x_{t'}`` to
            ``t`` and redo the step, this many extra times (0 = plain course inpainting).
        callback: ``callback(i, t, x_t, x0_hat)`` once per step, before the update.
        step: ``"a3"`` (the course's update, thresholding off) or ``"scheduler"`` (a diffusers
            scheduler's own ``step``, e.g. with IF's dynamic thresholding).
        scheduler: the diffusers scheduler for ``step="scheduler"`` (default
            ``denoiser.scheduler``); a copy is used, the original is not changed.
        final_step: also step from ``ts[-1]`` to the clean image (``abar = 1``), as a diffusers
            pipeline does; no noise is added at ``t = 0``.
        clip_x0: clamp the one-step estimate to ``denoiser.value_range`` inside the A.3 update
            (diffusers' ``clip_sample``); off by default, like the course.

    Returns:
        (B, C, H, W) the denoised images (not clipped).
    """
    ts = _check_timesteps(
        default_timesteps(denoiser) if timesteps is None else timesteps, denoiser.schedule
    )
    if not 0 <= i_start < len(ts):
        raise FundiffError(f"i_start must be in [0, {len(ts) - 1}], got {i_start}")
    if repaint_jumps < 0:
        raise FundiffError(f"repaint_jumps must be >= 0, got {repaint_jumps}")
    var_mode = _resolve_variance(denoiser, variance)
    clip = tuple(denoiser.value_range) if clip_x0 else None
    sched = None
    if step == "scheduler":
        base = scheduler if scheduler is not None else getattr(denoiser, "scheduler", None)
        if base is None or not hasattr(base, "step"):
            raise FundiffError("step='scheduler' needs a diffusers scheduler (scheduler=...)")
        sched = copy.deepcopy(base)
        sched.set_timesteps(timesteps=ts, device=x_t.device)
    elif step != "a3":
        raise FundiffError(f"step must be 'a3' or 'scheduler', got {step!r}")

    x_orig = mask = None
    if inpaint is not None:
        x_orig, mask = inpaint
        x_orig = x_orig.to(x_t.device, x_t.dtype)
        mask = mask.to(x_t.device, x_t.dtype)
        try:
            torch.broadcast_shapes(x_orig.shape, mask.shape, x_t.shape)
        except RuntimeError as err:
            raise FundiffError(
                f"inpainting: image {tuple(x_orig.shape)}, mask {tuple(mask.shape)} and "
                f"x_t {tuple(x_t.shape)} do not broadcast"
            ) from err
        x_orig = x_orig.expand_as(x_t)

    schedule = denoiser.schedule
    x = x_t.clone()
    last = len(ts) if final_step else len(ts) - 1
    for i in range(i_start, last):
        t = ts[i]
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        for r in range(repaint_jumps + 1):
            eps, var = predict_noise(
                denoiser,
                x,
                t,
                branches=branches,
                null_cond=null_cond,
                guidance=guidance,
                reduce=reduce,
            )
            if sched is not None:
                if var is None and getattr(sched.config, "variance_type", "") in (
                    "learned",
                    "learned_range",
                ):
                    raise FundiffError("the scheduler expects learned variance; the model has none")
                model_out = eps if var is None else torch.cat([eps, var], dim=1)
                x_new, x0 = sched.step(model_out, t, x, generator=generator, return_dict=False)
            else:
                x_new, x0 = _a3_step(
                    x,
                    eps,
                    var,
                    t,
                    t_prev,
                    schedule,
                    variance=var_mode,
                    generator=generator,
                    clip=clip,
                )
            if r == 0 and callback is not None:
                callback(i, t, x, x0)
            if x_orig is not None:
                if t_prev >= 0:
                    if generator is None:
                        raise FundiffError("inpainting needs a generator")
                    known = schedule.forward(x_orig, t_prev, generator)[0]
                else:
                    known = x_orig
                x_new = mask * x_new + (1.0 - mask) * known
            if r < repaint_jumps:
                if generator is None:
                    raise FundiffError("RePaint resampling needs a generator")
                a = schedule.abar(t) / schedule.abar(t_prev)
                x = math.sqrt(a) * x_new + math.sqrt(1.0 - a) * randn_like(x_new, generator)
            else:
                x = x_new
    return x


# --------------------------------------------------------------------------- thin wrappers
def _guided(
    denoiser: Denoiser, guidance: float | None, null_prompt: Prompt
) -> tuple[float | None, Tensor | None]:
    if guidance is None:
        return None, None
    return float(guidance), _condition(denoiser, null_prompt)


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
    g, null = _guided(denoiser, guidance, null_prompt)
    return denoise(
        denoiser,
        x_t,
        timesteps,
        branches=[Branch(_condition(denoiser, prompt))],
        null_cond=null,
        guidance=g,
        i_start=i_start,
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


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
    g, null = _guided(denoiser, guidance, null_prompt)
    x = _noise(denoiser, n, generator, dtype)
    return denoise(
        denoiser,
        x,
        timesteps,
        branches=[branch],
        null_cond=null,
        guidance=g,
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


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
    g, null = _guided(denoiser, guidance, null_prompt)
    branch = Branch(_condition(denoiser, prompt))
    results = []
    for i in i_starts:
        if not 0 <= int(i) < len(ts):
            raise FundiffError(f"i_start {i} out of range [0, {len(ts) - 1}]")
        x_t, _ = denoiser.schedule.forward(x0, ts[int(i)], generator)
        results.append(
            denoise(
                denoiser,
                x_t,
                ts,
                branches=[branch],
                null_cond=null,
                guidance=g,
                i_start=int(i),
                generator=generator,
                **kwargs,  # type: ignore[arg-type]
            )
        )
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
    g, null = _guided(denoiser, guidance, null_prompt)
    x = randn_like(x_orig, generator)
    return denoise(
        denoiser,
        x,
        timesteps,
        branches=[Branch(_condition(denoiser, prompt))],
        null_cond=null,
        guidance=g,
        generator=generator,
        inpaint=(x_orig, mask),
        repaint_jumps=repaint_jumps,
        **kwargs,  # type: ignore[arg-type]
    )


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
    """Course A.1.8: ``eps = mean_k V_k^-1 CFG(V_k x_t, p_k)``; variance of branch 0.

    ``prompts[k]`` is what the image shows under ``views[k]`` (names as in
    :func:`fundiff.views.get_view`; default: upright / vertically flipped).
    Returns (n, C, R, R) in the first view's frame.
    """
    if len(prompts) != len(views) or len(prompts) < 1:
        raise FundiffError(
            f"need one view per prompt, got {len(prompts)} prompts, {len(views)} views"
        )
    vs = [v if isinstance(v, View) else get_view(v) for v in views]
    branches = [Branch(_condition(denoiser, p), view=v) for p, v in zip(prompts, vs, strict=True)]
    g, null = _guided(denoiser, guidance, null_prompt)
    x = _noise(denoiser, n, generator, dtype)
    return denoise(
        denoiser,
        x,
        timesteps,
        branches=branches,
        null_cond=null,
        guidance=g,
        reduce="mean",
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


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
    g, null = _guided(denoiser, guidance, null_prompt)
    x = _noise(denoiser, n, generator, dtype)
    return denoise(
        denoiser,
        x,
        timesteps,
        branches=branches,
        null_cond=null,
        guidance=g,
        reduce="sum",
        generator=generator,
        **kwargs,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- classical denoising
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
