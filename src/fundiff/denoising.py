"""The Part A denoising loop: every trick (CFG, views, hybrids, inpainting) is one loop.

Per step from ``t = ts[i]`` to ``t' = ts[i+1]``: one batched noise prediction
(:func:`fundiff.guidance.predict_noise`), one DDPM step (:class:`fundiff.steps.DDPMStep`, or a
diffusers scheduler's own ``step``), then optionally the inpainting projection and RePaint
resampling. The wrappers in :mod:`fundiff.samplers` call :func:`denoise`.

Images are (B, C, H, W) in the denoiser's ``value_range`` (noisy ones unbounded).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from fundiff.denoisers import Denoiser
from fundiff.errors import FundiffError
from fundiff.guidance import Branch, predict_noise
from fundiff.schedules import NoiseSchedule, course_timesteps, randn_like
from fundiff.steps import DDPMStep, Thresholding

__all__ = ["Callback", "Prompt", "denoise", "default_timesteps", "make_step"]

#: ``callback(i, t, x_t, x0_hat)``: called once per step *before* the update, with the index
#: ``i`` into the timestep list, ``t = ts[i]``, the current (B, C, H, W) ``x_t`` and the
#: one-step estimate ``x0_hat`` from the (guided, reduced) noise estimate at that step.
Callback = Callable[[int, int, Tensor, Tensor], None]

Prompt = str | Tensor


def default_timesteps(denoiser: Denoiser) -> list[int]:
    """The course's strided list ``[990, 960, ..., 0]``, scaled to the denoiser's T if != 1000."""
    return course_timesteps(denoiser.schedule.num_train_timesteps)


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


def make_step(
    denoiser: Denoiser,
    timesteps: Sequence[int],
    *,
    step: str = "a3",
    variance: str = "model",
    clip_x0: bool = False,
    scheduler: object | None = None,
    device: torch.device | str = "cpu",
):
    """The step object :func:`denoise` uses, with its timesteps set.

    ``step="a3"``: a :class:`~fundiff.steps.DDPMStep` with the given variance, x0^ clamped to
    ``value_range`` when ``clip_x0`` (the course's update). ``step="pipeline"``: the step the
    model's own pipeline takes: the same DDPMStep with the dynamic thresholding (or clipping)
    its diffusers scheduler's config asks for (``denoiser.scheduler``; none for a denoiser
    without one, e.g. the MNIST DDPM, whose pipeline is the plain A.3 step).
    ``step="scheduler"``: a copy of a diffusers scheduler (default ``denoiser.scheduler``);
    the original is not changed.
    """
    var = _resolve_variance(denoiser, variance)
    clip = tuple(denoiser.value_range) if clip_x0 else None
    if step == "a3":
        return DDPMStep(denoiser.schedule, variance=var, clip=clip, timesteps=timesteps)
    if step == "pipeline":
        sched = scheduler if scheduler is not None else getattr(denoiser, "scheduler", None)
        config = getattr(sched, "config", None)
        if clip is None and getattr(config, "clip_sample", False):
            r = float(config.clip_sample_range)
            clip = (-r, r)
        return DDPMStep(
            denoiser.schedule,
            variance=var,
            clip=clip,
            threshold=Thresholding.from_scheduler(sched),
            timesteps=timesteps,
        )
    if step == "scheduler":
        base = scheduler if scheduler is not None else getattr(denoiser, "scheduler", None)
        if base is None or not hasattr(base, "step"):
            raise FundiffError("step='scheduler' needs a diffusers scheduler (scheduler=...)")
        sched = copy.deepcopy(base)
        sched.set_timesteps(timesteps=list(timesteps), device=device)
        return sched
    raise FundiffError(f"step must be 'a3', 'pipeline' or 'scheduler', got {step!r}")


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
    step: Literal["a3", "pipeline", "scheduler"] = "a3",
    scheduler: object | None = None,
    final_step: bool = False,
    clip_x0: bool = False,
    image: Tensor | None = None,
    variance_combine: Literal["mean", "first"] = "mean",
) -> Tensor:
    """Denoise ``x_t`` (at ``timesteps[i_start]``) down the strided list.

    Args:
        denoiser: any :class:`~fundiff.denoisers.Denoiser`.
        x_t: (B, C, H, W) images at noise level ``timesteps[i_start]``; not modified.
        timesteps: strictly decreasing ints in [0, T-1]; default the course's 990..0 by 30
            (scaled to the denoiser's T).
        branches, null_cond, guidance, reduce, variance_combine: see :func:`predict_noise`.
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
        step: ``"a3"`` (the course's update, thresholding off), ``"pipeline"`` (the update
            the model's own pipeline makes: for IF, dynamic thresholding every step, as
            ``IFPipeline`` does) or ``"scheduler"`` (a diffusers scheduler's own ``step``);
            see :func:`make_step`.
        scheduler: the diffusers scheduler for ``step="scheduler"``/``"pipeline"`` (default
            ``denoiser.scheduler``); a copy is used, the original is not changed.
        final_step: also step from ``ts[-1]`` to the clean image (``abar = 1``), as a diffusers
            pipeline does; no noise is added at ``t = 0``.
        clip_x0: clamp the one-step estimate to ``denoiser.value_range`` inside the A.3 update
            (diffusers' ``clip_sample``); off by default, like the course.
        image: conditioning image concatenated to ``x_t`` for every model call (IF stage II);
            see :func:`~fundiff.guidance.predict_noise`.

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
    stepper = make_step(
        denoiser,
        ts,
        step=step,
        variance=variance,
        clip_x0=clip_x0,
        scheduler=scheduler,
        device=x_t.device,
    )
    wants_variance = getattr(getattr(stepper, "config", None), "variance_type", "") in (
        "learned",
        "learned_range",
    )

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
                image=image,
                variance_combine=variance_combine,
            )
            if var is None and wants_variance:
                raise FundiffError("the scheduler expects learned variance; the model has none")
            model_out = eps if var is None else torch.cat([eps, var], dim=1)
            x_new, x0 = stepper.step(model_out, t, x, generator=generator, return_dict=False)
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
