"""Discrete DDPM noise schedules, timestep lists and the forward process (Parts A and B).

A schedule of ``T`` training timesteps ``t = 0 .. T-1`` is given by its betas; everything else
follows::

    alpha_t     = 1 - beta_t
    abar_t      = prod_{s <= t} alpha_s                 (``alphas_cumprod``)
    x_t         = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,   eps ~ N(0, I)

By convention ``abar_{-1} = 1`` (the clean image), which is what diffusers uses for the step
after the last listed timestep.

Tensors are float64 internally; results are returned in the dtype of the input images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fundiff.errors import FundiffError

__all__ = [
    "NoiseSchedule",
    "ddpm_schedule",
    "randn_like",
    "strided_timesteps",
    "scale_timesteps",
    "scale_timestep",
    "course_timesteps",
    "leading_timesteps",
    "spaced_timesteps",
]


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete DDPM schedule with ``T = num_train_timesteps`` steps.

    Attributes:
        betas: (T,) float64, in (0, 1).
        alphas: (T,) float64, ``1 - betas``.
        alphas_cumprod: (T,) float64, ``abar_t``, decreasing from ~1 to ~0.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_betas(cls, betas: Tensor | Sequence[float]) -> NoiseSchedule:
        """A schedule from its (T,) betas (each in (0, 1))."""
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
        if b.ndim != 1 or b.numel() == 0:
            raise FundiffError(
                f"betas must be a non-empty 1-D sequence, got shape {tuple(b.shape)}"
            )
        if not bool(((b > 0) & (b < 1)).all()):
            raise FundiffError("every beta must lie in (0, 1)")
        a = 1.0 - b
        return cls(betas=b, alphas=a, alphas_cumprod=torch.cumprod(a, dim=0))

    @classmethod
    def linear(
        cls, T: int = 300, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """The course's Part B schedule: ``betas = linspace(beta_start, beta_end, T)``."""
        if T < 1:
            raise FundiffError(f"T must be >= 1, got {T}")
        return cls.from_betas(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))

    @classmethod
    def from_ddpm_linear(cls, beta1: float, beta2: float, T: int) -> NoiseSchedule:
        """Part B's schedule (:func:`ddpm_schedule`): linear betas, validated like the course."""
        s = ddpm_schedule(beta1, beta2, T)
        return cls(betas=s["betas"], alphas=s["alphas"], alphas_cumprod=s["alpha_bars"])

    @classmethod
    def squaredcos_cap_v2(cls, T: int = 1000, max_beta: float = 0.999) -> NoiseSchedule:
        """The cosine schedule DeepFloyd IF uses (diffusers ``beta_schedule="squaredcos_cap_v2"``).

        ``abar(s) = cos((s + 0.008) / 1.008 * pi / 2)^2`` with ``beta_t = min(1 - abar((t+1)/T) /
        abar(t/T), max_beta)``. Computed in float64 (diffusers rounds betas to float32 first; use
        :meth:`from_diffusers` to match a scheduler bit for bit).
        """

        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)]
        return cls.from_betas(betas)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor | Sequence[float]) -> NoiseSchedule:
        """A schedule from its (T,) ``abar_t`` (strictly decreasing, in (0, 1])."""
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu().clone()
        if ac.ndim != 1 or ac.numel() == 0:
            raise FundiffError("alphas_cumprod must be a non-empty 1-D sequence")
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        alphas = ac / prev
        return cls(betas=1.0 - alphas, alphas=alphas, alphas_cumprod=ac)

    @classmethod
    def from_diffusers(cls, scheduler: object) -> NoiseSchedule:
        """The schedule of a diffusers scheduler (anything with an ``alphas_cumprod`` tensor).

        Uses the scheduler's own float32 ``alphas_cumprod`` so the A.3 update matches
        ``scheduler.step`` to float rounding.
        """
        ac = getattr(scheduler, "alphas_cumprod", None)
        if ac is None:
            raise FundiffError(f"{type(scheduler).__name__} has no alphas_cumprod")
        return cls.from_alphas_cumprod(ac)

    # ----------------------------------------------------------------- accessors
    @property
    def num_train_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return int(self.betas.numel())

    def abar(self, t: int) -> float:
        """``abar_t`` as a Python float; ``t = -1`` (or any negative t) gives 1.0 (clean)."""
        t = int(t)
        if t >= self.num_train_timesteps:
            raise FundiffError(f"timestep {t} out of range [0, {self.num_train_timesteps - 1}]")
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def _abar_batch(self, t: int | Tensor, x: Tensor) -> Tensor:
        """``abar_t`` shaped to broadcast against ``x`` (B, ...), float64 on x's device."""
        if isinstance(t, Tensor) and t.ndim > 0:
            tt = t.detach().to("cpu", torch.long)
            if tt.ndim != 1 or tt.numel() != x.shape[0]:
                raise FundiffError(
                    f"t must be an int or a (B,) tensor with B = {x.shape[0]}, got {tuple(t.shape)}"
                )
            if int(tt.max()) >= self.num_train_timesteps:
                raise FundiffError(f"timestep out of range [0, {self.num_train_timesteps - 1}]")
            padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
            ab = padded[tt.clamp(min=-1) + 1]  # t = -1 -> 1.0
        else:
            ab = torch.full((x.shape[0],), self.abar(int(t)), dtype=torch.float64)
        return ab.to(x.device).view(-1, *([1] * (x.ndim - 1)))

    # ----------------------------------------------------------------- forward process
    def add_noise(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.

        Args:
            x0: (B, C, H, W) clean images in the model's value range.
            t: an int (same for all) or a (B,) long tensor of timesteps in [-1, T-1].
            noise: same shape as ``x0``.

        Returns:
            (B, C, H, W) noisy images, dtype of ``x0``.
        """
        if noise.shape != x0.shape:
            raise FundiffError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        ab = self._abar_batch(t, x0)
        out = ab.sqrt() * x0.to(torch.float64) + (1.0 - ab).sqrt() * noise.to(torch.float64)
        return out.to(x0.dtype)

    def forward(
        self, x0: Tensor, t: int | Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Noise ``x0`` to timestep ``t`` with fresh noise drawn from ``generator``.

        Returns:
            ``(x_t, noise)``, both (B, C, H, W) in x0's dtype; noise ~ N(0, I).
        """
        noise = randn_like(x0, generator)
        return self.add_noise(x0, t, noise), noise


def ddpm_schedule(beta1: float = 1e-4, beta2: float = 0.02, num_ts: int = 300) -> dict[str, Tensor]:
    """Linear DDPM schedule (float64, each (T,)): betas, alphas = 1 - betas, alpha_bars.

    The same numbers as :meth:`NoiseSchedule.linear`; this dict form is Part B's.
    """
    if not (0 < beta1 < beta2 < 1) or num_ts < 1:
        raise FundiffError(f"need 0 < beta1 < beta2 < 1 and T >= 1, got {beta1}, {beta2}, {num_ts}")
    betas = torch.linspace(beta1, beta2, num_ts, dtype=torch.float64)
    alphas = 1.0 - betas
    return {"betas": betas, "alphas": alphas, "alpha_bars": torch.cumprod(alphas, 0)}


def randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator``.

    Drawn the way diffusers' ``randn_tensor`` does: on the generator's device (a CPU generator
    with a CUDA tensor draws on CPU and moves the result), in x's dtype. So the same seed gives
    the same noise as a diffusers pipeline given the same generator.
    """
    gen_device = generator.device
    if gen_device.type == x.device.type:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)


def strided_timesteps(start: int = 990, stride: int = 30, end: int = 0) -> list[int]:
    """The course's strided list ``[start, start - stride, ..., end]`` (inclusive), decreasing.

    The default gives ``[990, 960, ..., 30, 0]`` (34 entries). ``end`` must be reachable:
    ``(start - end) % stride == 0``.
    """
    if stride <= 0 or start < end or end < 0:
        raise FundiffError(
            f"strided timesteps need start >= end >= 0 and stride > 0, got {start}, {stride}, {end}"
        )
    if (start - end) % stride:
        raise FundiffError(f"(start - end) = {start - end} is not a multiple of stride {stride}")
    return list(range(start, end - 1, -stride))


def scale_timesteps(ts: Sequence[int], from_T: int = 1000, to_T: int = 300) -> list[int]:
    """Map timesteps of a ``from_T``-step model onto a ``to_T``-step model.

    ``round(t * to_T / from_T)`` (halves up), clamped to ``[0, to_T - 1]``, duplicates dropped (keeping the
    first), so the result stays strictly decreasing for a decreasing input. E.g. the course's
    ``[990, 960, ..., 0]`` for T = 300 becomes ``[297, 288, ..., 9, 0]``.
    """
    if from_T < 1 or to_T < 1:
        raise FundiffError(f"from_T and to_T must be >= 1, got {from_T}, {to_T}")
    out: list[int] = []
    for t in ts:
        s = min(max(math.floor(int(t) * to_T / from_T + 0.5), 0), to_T - 1)
        if not out or s != out[-1]:
            if out and s > out[-1]:
                raise FundiffError(f"timesteps must be decreasing, got {list(ts)}")
            out.append(s)
    return out


def scale_timestep(t: int, T: int, from_T: int = 1000) -> int:
    """One timestep of a ``from_T``-step model on a ``T``-step model: ``round(t * T / from_T)``.

    Python rounding (halves to even), clamped to ``[0, T - 1]``; e.g. 250 -> 75 for T = 300.
    """
    return min(T - 1, max(0, round(int(t) * T / from_T)))


def course_timesteps(T: int, start: int = 990, stride: int = 30) -> list[int]:
    """The course's strided list (``start`` down to 0 by ``stride``, in 1000-step units) on T.

    Unchanged for T = 1000; otherwise mapped with :func:`scale_timesteps`.
    """
    ts = strided_timesteps(start, stride)
    return ts if T == 1000 else scale_timesteps(ts, from_T=1000, to_T=T)


def leading_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps spaced like diffusers' default (``timestep_spacing="leading"``).

    ``[k * (T // steps) for k = steps-1 .. 0]``, what ``DDPMScheduler.set_timesteps(steps)``
    gives; all ``T`` timesteps when ``steps >= T``.
    """
    if steps < 1:
        raise FundiffError(f"steps must be >= 1, got {steps}")
    if steps >= T:
        return list(range(T - 1, -1, -1))
    ratio = T // steps
    return sorted({i * ratio for i in range(steps)}, reverse=True)


def spaced_timesteps(T: int, steps: int | None) -> list[int]:
    """Descending timesteps for a sampler with ``steps`` model calls (Part B's strided sampler).

    ``steps=None`` or ``steps >= T`` gives ``[T-1, ..., 0]`` (the full course sampler); fewer
    steps give ``round(linspace(T-1, 0, steps))`` (deduplicated, always ends at 0).
    """
    if steps is None or steps >= T:
        return list(range(T - 1, -1, -1))
    if steps < 1:
        raise FundiffError(f"steps must be >= 1, got {steps}")
    raw = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().long().tolist()
    out: list[int] = []
    for i in raw:
        if not out or i < out[-1]:
            out.append(int(i))
    return out
