"""One reverse-diffusion step (the course's A.3 / diffusers' DDPM step) and the flow-matching
Euler integrator, shared by Part A's samplers and Part B's DDPM / flow-matching objectives.

The DDPM step from ``t`` to ``t'`` (``t' = -1``: the clean image, ``abar_{-1} = 1``)::

    x0^   = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)     (then thresholded or clipped)
    alpha = abar_t / abar_t',  beta = 1 - alpha               (the stride's beta)
    x_t'  = sqrt(abar_t') beta / (1 - abar_t) x0^ + sqrt(alpha) (1 - abar_t') / (1 - abar_t) x_t
            + sigma z                                        (z ~ N(0, I), only when t > 0)

with ``sigma^2`` one of ``beta`` (the course's Part B DDPM, diffusers ``fixed_large``),
``beta~ = (1 - abar_t') / (1 - abar_t) beta`` (``posterior``, diffusers ``fixed_small``) or the
learned interpolation ``log sigma^2 = f log beta + (1 - f) log beta~``, ``f = (v + 1) / 2``
(IF, diffusers ``learned_range``). This is diffusers' ``DDPMScheduler.step``; the optional
dynamic thresholding of x0^ is its ``_threshold_sample`` (Imagen, used by DeepFloyd IF).

Scalars are float64 Python floats; tensors keep their dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fundiff.errors import FundiffError
from fundiff.schedules import NoiseSchedule, randn_like

__all__ = [
    "VARIANCES",
    "Thresholding",
    "dynamic_threshold",
    "ddpm_update",
    "StepOutput",
    "DDPMStep",
    "EulerFlow",
]

#: noise variances of the DDPM step (see the module docstring)
VARIANCES: tuple[str, ...] = ("beta", "posterior", "learned")


@dataclass(frozen=True)
class Thresholding:
    """Dynamic thresholding of x0^ (diffusers ``thresholding=True``).

    Per image, ``s = clamp(quantile(|x0^|, ratio), 1, max_value)``; ``x0^ <- clamp(x0^, -s, s) /
    s``. IF stage I uses ratio 0.95 and max_value 1.5.
    """

    ratio: float = 0.95
    max_value: float = 1.5

    @classmethod
    def from_scheduler(cls, scheduler: object | None) -> Thresholding | None:
        """The thresholding a diffusers scheduler's config asks for, or None (off / absent)."""
        config = getattr(scheduler, "config", None)
        if config is None or not getattr(config, "thresholding", False):
            return None
        return cls(
            ratio=float(config.dynamic_thresholding_ratio),
            max_value=float(config.sample_max_value),
        )


def dynamic_threshold(x0: Tensor, ratio: float = 0.95, max_value: float = 1.5) -> Tensor:
    """Imagen's dynamic thresholding of (B, ...) estimates, as diffusers' ``_threshold_sample``.

    Returns a tensor of x0's shape and dtype with values in [-1, 1].
    """
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)


def ddpm_update(
    x_t: Tensor,
    eps: Tensor,
    abar_t: float,
    abar_prev: float,
    *,
    variance: str = "beta",
    learned: Tensor | None = None,
    noise: Tensor | None = None,
    clip: tuple[float, float] | None = None,
    threshold: Thresholding | None = None,
) -> tuple[Tensor, Tensor]:
    """The DDPM step as a pure function (see the module docstring).

    Args:
        x_t: (B, C, H, W) current sample; eps: its noise estimate, same shape.
        abar_t, abar_prev: ``abar`` at ``t`` and at the target ``t'`` (1.0 for the clean image).
        variance: one of ``VARIANCES``.
        learned: raw variance channels v (about [-1, 1]) for ``variance="learned"``.
        noise: z ~ N(0, I) shaped like ``x_t``; None adds no noise (the last step).
        clip: clamp x0^ to this range (diffusers ``clip_sample``); ignored with ``threshold``.
        threshold: dynamic thresholding of x0^ (diffusers ``thresholding``).

    Returns:
        ``(x_prev, x0_hat)``, both shaped like ``x_t``.
    """
    alpha = abar_t / abar_prev
    beta = 1.0 - alpha
    x0 = (x_t - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)
    if threshold is not None:
        x0 = dynamic_threshold(x0, threshold.ratio, threshold.max_value)
    elif clip is not None:
        x0 = x0.clamp(clip[0], clip[1])
    c0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
    ct = math.sqrt(alpha) * (1.0 - abar_prev) / (1.0 - abar_t)
    mean = c0 * x0 + ct * x_t
    if noise is None:
        return mean, x0
    post = max((1.0 - abar_prev) / (1.0 - abar_t) * beta, 1e-20)
    if variance == "learned":
        if learned is None:
            raise FundiffError("variance='learned' but the denoiser returned no variance")
        frac = (learned + 1.0) / 2.0
        log_var = frac * math.log(beta) + (1.0 - frac) * math.log(post)
        return mean + torch.exp(0.5 * log_var) * noise, x0
    if variance not in VARIANCES:
        raise FundiffError(f"variance must be one of {VARIANCES}, got {variance!r}")
    sigma2 = beta if variance == "beta" else post
    return mean + math.sqrt(sigma2) * noise, x0


@dataclass
class StepOutput:
    """What :meth:`DDPMStep.step` returns (diffusers' ``DDPMSchedulerOutput`` fields)."""

    prev_sample: Tensor
    pred_original_sample: Tensor


class DDPMStep:
    """The DDPM step with diffusers' scheduler interface, over a :class:`NoiseSchedule`.

    ``set_timesteps(ts)`` fixes the decreasing list; ``step(model_output, t, sample,
    generator=g)`` moves from ``t`` to the next listed timestep (``-1``, the clean image,
    after the last one). ``model_output`` is the noise estimate (B, C, H, W), or noise and
    learned variance concatenated (B, 2C, H, W) as IF's UNet returns them.

    Args:
        schedule: the model's schedule (timesteps index its ``alphas_cumprod``).
        variance: ``beta`` | ``posterior`` | ``learned`` (see the module docstring).
        clip: clamp x0^ to this range each step (diffusers ``clip_sample``).
        threshold: dynamic thresholding each step (diffusers ``thresholding``; wins over clip).
        timesteps: optional list for :meth:`set_timesteps`.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        *,
        variance: str = "beta",
        clip: tuple[float, float] | None = None,
        threshold: Thresholding | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        if variance not in VARIANCES:
            raise FundiffError(f"variance must be one of {VARIANCES}, got {variance!r}")
        self.schedule = schedule
        self.variance = variance
        self.clip = clip
        self.threshold = threshold
        self.timesteps: list[int] = []
        self._prev: dict[int, int] = {}
        if timesteps is not None:
            self.set_timesteps(timesteps)

    def set_timesteps(self, timesteps: Sequence[int]) -> None:
        """Fix the strictly decreasing timesteps in ``[0, T-1]`` the step walks down."""
        ts = [int(t) for t in timesteps]
        T = self.schedule.num_train_timesteps
        if not ts or any(t < 0 or t >= T for t in ts):
            raise FundiffError(f"timesteps must be a non-empty list in [0, {T - 1}], got {ts}")
        if any(a <= b for a, b in zip(ts, ts[1:], strict=False)):
            raise FundiffError(f"timesteps must be strictly decreasing, got {ts}")
        self.timesteps = ts
        self._prev = dict(zip(ts, [*ts[1:], -1], strict=True))

    def previous_timestep(self, t: int) -> int:
        """The timestep after ``t`` in the list (``-1`` after the last)."""
        if int(t) not in self._prev:
            raise FundiffError(f"timestep {t} is not in the step's list {self.timesteps}")
        return self._prev[int(t)]

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> StepOutput | tuple[Tensor, Tensor]:
        """One step from ``timestep`` to :meth:`previous_timestep`; noise only when t > 0.

        Returns:
            :class:`StepOutput` (or ``(prev_sample, pred_original_sample)`` with
            ``return_dict=False``), each shaped like ``sample``.
        """
        t = int(timestep)
        t_prev = self.previous_timestep(t)
        c = sample.shape[1]
        learned = None
        eps = model_output
        if model_output.shape[1] == 2 * c:
            eps, learned = model_output[:, :c], model_output[:, c:]
        noise = None
        if t > 0:
            if generator is None:
                raise FundiffError("a generator is needed for the noise of the DDPM step")
            noise = randn_like(sample, generator)
        x_prev, x0 = ddpm_update(
            sample,
            eps,
            self.schedule.abar(t),
            self.schedule.abar(t_prev),
            variance=self.variance,
            learned=learned,
            noise=noise,
            clip=self.clip,
            threshold=self.threshold,
        )
        return StepOutput(x_prev, x0) if return_dict else (x_prev, x0)


@dataclass(frozen=True)
class EulerFlow:
    """Euler integration of ``dx/dt = u(x, t)`` from t = 0 (noise) to t = 1 (data).

    ``num_steps`` equal steps: ``x <- x + (1 / n) u(x, k / n)`` for ``k = 0 .. n-1``.
    """

    num_steps: int

    def __post_init__(self) -> None:
        if int(self.num_steps) < 1:
            raise FundiffError(f"steps must be >= 1, got {self.num_steps}")

    @property
    def times(self) -> list[float]:
        """The n times ``k / n`` at which the velocity is evaluated."""
        return [k / self.num_steps for k in range(self.num_steps)]

    def step(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """``sample + (1 / n) model_output`` (model_output = the velocity at this time)."""
        return sample + (1.0 / self.num_steps) * model_output
