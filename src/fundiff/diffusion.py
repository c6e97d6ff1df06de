"""Part B objectives: each owns its noise model / schedule, its loss and its sampler.

Data convention (as the course): MNIST in [0, 1] (``ToTensor``, no normalisation), images
``(B, 1, 28, 28)`` float. Labels are ``(B,)`` int64 digits; ``-1`` means "no class"
(unconditional). Class conditions reach the network as one-hot ``(B, 10)`` rows, all-zero for
unconditional / dropped classes.

Objectives (all ``nn.Module`` wrapping a UNet from :mod:`fundiff.unets`):

* :class:`SingleStepDenoising` -- ``z = x + sigma * eps``, loss ``||D(z) - x||^2``; with
  ``pure_noise=True`` the fall-2025 variant ``z = eps`` (target still ``x``).
* :class:`DDPM` -- fall-2024 epsilon-prediction DDPM, linear betas, CFG sampler (B.2 / B.4),
  optional strided sampling.
* :class:`FlowMatching` -- fall-2025 rectified-flow objective, Euler sampler with CFG.

``loss`` returns the mean-squared error over all elements (``nn.MSELoss()`` default), as a
0-dim tensor. Every random draw takes the explicit ``generator`` (same device as the data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fundiff.errors import FundiffError
from fundiff.guidance import cfg
from fundiff.schedules import NoiseSchedule, ddpm_schedule, spaced_timesteps
from fundiff.steps import DDPMStep, EulerFlow, ddpm_update
from fundiff.unets import build_unet, unet_spec

__all__ = [
    "Objective",
    "SingleStepDenoising",
    "DDPM",
    "FlowMatching",
    "OBJECTIVE_CLASSES",
    "build_objective",
    "class_condition",
    "ddpm_schedule",
    "strided_indices",
]


def class_condition(
    labels: Tensor | None,
    batch: int,
    num_classes: int,
    *,
    p_uncond: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """One-hot class conditions (B, num_classes) float32; label -1 (or ``labels=None``) -> zeros.

    With ``p_uncond > 0`` each row is independently zeroed with that probability (classifier-free
    guidance training), using ``generator``.
    """
    if labels is None:
        return torch.zeros(batch, num_classes, device=device)
    labels = labels.to(device) if device is not None else labels
    if labels.shape != (batch,):
        raise FundiffError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    if labels.numel() and int(labels.max()) >= num_classes:
        raise FundiffError(f"label {int(labels.max())} out of range for {num_classes} classes")
    keep = labels >= 0
    c = F.one_hot(labels.clamp(min=0).long(), num_classes).float() * keep[:, None].float()
    if p_uncond > 0:
        drop = torch.rand(batch, generator=generator, device=c.device) < p_uncond
        c = c * (~drop)[:, None].float()
    return c


def _as_labels(labels: Tensor | Sequence[int] | None, device: torch.device) -> Tensor | None:
    if labels is None:
        return None
    return torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)


class Objective(nn.Module):
    """Base class: holds ``self.unet`` and knows how to describe itself for rebuilding."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    # -- description ----------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Objective constructor kwargs except ``unet`` (JSON-serialisable)."""
        return {}

    def spec(self) -> dict[str, Any]:
        """``{"objective": name, "kwargs": {...}, "unet": unet_spec}`` for :func:`build_objective`."""
        return {
            "objective": type(self).__name__,
            "kwargs": self.config(),
            "unet": unet_spec(self.unet),
        }

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def conditioning(self) -> str:
        return getattr(self.unet, "conditioning", "none")

    @property
    def num_classes(self) -> int:
        return getattr(self.unet, "num_classes", 0)

    def loss(self, x0: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        """Scalar training loss for a batch ``x0`` (B, 1, 28, 28) in [0, 1]."""
        raise NotImplementedError

    def forward(self, x0: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        return self.loss(x0, labels, generator)

    # -- shared sampling helpers ----------------------------------------------------------
    def _prepare_sampling(
        self, labels: Tensor | Sequence[int] | None, n: int | None, guidance: float | None
    ) -> tuple[int, Tensor | None, bool]:
        """Validate sampler arguments -> (batch size, one-hot cond or None, use CFG)."""
        dev = self.device
        lab = _as_labels(labels, dev)
        if lab is None:
            if n is None or n < 1:
                raise FundiffError("sample() needs labels or a positive n")
            batch = n
        else:
            if n is not None and n != lab.numel():
                raise FundiffError(f"n={n} disagrees with {lab.numel()} labels")
            batch = lab.numel()
        if self.conditioning == "class":
            cond = class_condition(lab, batch, self.num_classes, device=dev)
            use_cfg = guidance is not None and lab is not None
            return batch, cond, use_cfg
        if lab is not None and bool((lab >= 0).any()):
            raise FundiffError(
                f"{type(self.unet).__name__} is not class-conditional: pass labels=None"
            )
        return batch, None, False

    def _guided(
        self, fn, x: Tensor, t: Tensor, cond: Tensor | None, guidance: float | None, use_cfg: bool
    ) -> Tensor:
        """Network output with optional CFG ``u + g (c - u)``; cond+uncond in ONE batched call."""
        if cond is None:
            return fn(x, t, None)
        if not use_cfg:
            return fn(x, t, cond)
        b = x.shape[0]
        out = fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
        return cfg(out[:b], out[b:], guidance)

    def _sample_loop(
        self,
        labels: Tensor | Sequence[int] | None,
        n: int | None,
        guidance: float | None,
        generator: torch.Generator,
        times: Sequence[int] | Sequence[float],
        update: Any,
        *,
        trajectory_every: int = 0,
        time_dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """The loop both samplers share (eval mode): ``x ~ N(0, I)`` (N, C, 28, 28) from
        ``generator``, then per time ``x = update(guided net output, time, x)``, the net seeing
        ``time`` as an (N,) tensor of ``time_dtype``. Returns (x in [0, 1], trajectory)."""
        batch, cond, use_cfg = self._prepare_sampling(labels, n, guidance)
        dev = self.device
        was_training = self.unet.training
        self.unet.eval()
        try:
            shape = (batch, self.unet.in_channels, 28, 28)
            x = torch.randn(shape, generator=generator, device=dev)
            traj = [x.clamp(0, 1).cpu()] if trajectory_every > 0 else []
            for k, time in enumerate(times):
                t = torch.full((batch,), time, device=dev, dtype=time_dtype)
                x = update(self._guided(self._net, x, t, cond, guidance, use_cfg), time, x)
                if trajectory_every > 0 and (
                    (k + 1) % trajectory_every == 0 or k + 1 == len(times)
                ):
                    traj.append(x.clamp(0, 1).cpu())
        finally:
            self.unet.train(was_training)
        return x.clamp(0, 1), traj


class SingleStepDenoising(Objective):
    """One-step denoiser (B.1): ``z = x + sigma * eps``; loss ``mean (D(z) - x)^2``.

    ``pure_noise=True`` is the fall-2025 "denoising pure noise" variant: ``z = eps``, target
    ``x``; its MSE optimum is the training-set mean image.
    """

    def __init__(self, unet: nn.Module, sigma: float = 0.5, pure_noise: bool = False) -> None:
        super().__init__(unet)
        if getattr(unet, "conditioning", "none") != "none":
            raise FundiffError("SingleStepDenoising needs an UnconditionalUNet")
        if sigma < 0:
            raise FundiffError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.pure_noise = bool(pure_noise)

    def config(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "pure_noise": self.pure_noise}

    @staticmethod
    def add_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
        """``x + sigma * eps`` for x (B, C, H, W); result unbounded (not clipped)."""
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + sigma * eps

    def make_input(self, x0: Tensor, generator: torch.Generator) -> Tensor:
        """The network input for clean ``x0``: noisy ``x0`` or (pure-noise variant) ``eps``."""
        if self.pure_noise:
            return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.add_noise(x0, self.sigma, generator)

    def loss(self, x0: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        z = self.make_input(x0, generator)
        return F.mse_loss(self.unet(z).float(), x0.float())

    @torch.no_grad()
    def denoise(self, z: Tensor) -> Tensor:
        """D(z) for z (B, 1, 28, 28) in eval mode; output unbounded (clip for display)."""
        was_training = self.unet.training
        self.unet.eval()
        try:
            return self.unet(z.to(self.device)).float()
        finally:
            self.unet.train(was_training)

    @torch.no_grad()
    def sample(
        self,
        labels: Tensor | Sequence[int] | None = None,
        n: int | None = None,
        guidance: float | None = None,
        *,
        generator: torch.Generator,
        steps: int | None = None,
        trajectory_every: int = 0,
    ) -> tuple[Tensor, list[Tensor]]:
        """Denoise pure noise ``eps`` in one step: (N, 1, 28, 28) clipped to [0, 1], [].

        Meaningful for the pure-noise variant; ``labels`` must be None, ``guidance``/``steps``
        are ignored (kept for a uniform signature).
        """
        batch, _, _ = self._prepare_sampling(labels, n, None)
        c = self.unet.in_channels
        eps = torch.randn((batch, c, 28, 28), generator=generator, device=self.device)
        return self.denoise(eps).clamp(0, 1), []


#: Part B's names for the shared schedule helpers (kept for existing callers)
strided_indices = spaced_timesteps


class DDPM(Objective):
    """Epsilon-prediction DDPM (fall 2024, B.2-B.5) with classifier-free guidance.

    **Indexing.** Internally timesteps are 0-based indices ``i in {0, ..., T-1}`` into
    ``betas``/``alphas``/``alpha_bars`` (each (T,)); index ``i`` is the course's ``t = i + 1``
    (``t in {1..T}``). The network sees ``t / T = (i + 1) / T in (0, 1]``. ``alpha_bar`` of
    "index -1" (before any noise) is 1. Index-based methods (``add_noise``, ``predict_eps``)
    use the same 0-based convention as :class:`fundiff.schedules.NoiseSchedule`.

    Training (B.1/B.3): ``i ~ U{0..T-1}``, ``eps ~ N(0, I)``,
    ``x_t = sqrt(abar_i) x0 + sqrt(1 - abar_i) eps``, loss ``mean (eps_theta - eps)^2``;
    class-conditional UNets get one-hot classes, zeroed with probability ``p_uncond``.
    """

    def __init__(
        self,
        unet: nn.Module,
        T: int = 300,
        betas: tuple[float, float] = (1e-4, 0.02),
        p_uncond: float = 0.1,
    ) -> None:
        super().__init__(unet)
        if getattr(unet, "conditioning", "none") == "none":
            raise FundiffError("DDPM needs a TimeConditionalUNet or ClassConditionalUNet")
        if not 0 <= p_uncond <= 1:
            raise FundiffError(f"p_uncond must be in [0, 1], got {p_uncond}")
        self.T = int(T)
        self.beta_range = (float(betas[0]), float(betas[1]))
        self.p_uncond = float(p_uncond)
        sched = ddpm_schedule(self.beta_range[0], self.beta_range[1], self.T)
        # float64 buffers (not in state_dict: fully determined by the config)
        self.register_buffer("betas", sched["betas"], persistent=False)
        self.register_buffer("alphas", sched["alphas"], persistent=False)
        self.register_buffer("alpha_bars", sched["alpha_bars"], persistent=False)

    def config(self) -> dict[str, Any]:
        return {"T": self.T, "betas": list(self.beta_range), "p_uncond": self.p_uncond}

    @property
    def schedule(self) -> NoiseSchedule:
        """The linear schedule as a :class:`~fundiff.schedules.NoiseSchedule` (0-based t)."""
        return NoiseSchedule(
            betas=self.betas.cpu(), alphas=self.alphas.cpu(), alphas_cumprod=self.alpha_bars.cpu()
        )

    def _abar(self, i: Tensor, dtype: torch.dtype) -> Tensor:
        """alpha_bar at 0-based indices ``i`` (B,), with ``abar[-1] = 1``; -> (B, 1, 1, 1)."""
        ab = torch.where(
            i >= 0, self.alpha_bars[i.clamp(min=0)], torch.ones_like(self.alpha_bars[0])
        )
        return ab.to(dtype)[:, None, None, None]

    def add_noise(self, x0: Tensor, i: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_i) x0 + sqrt(1 - abar_i) noise`` for 0-based indices ``i`` (B,)."""
        ab = self._abar(i.to(x0.device), torch.float64)
        return (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).to(x0.dtype)

    def _net(self, x: Tensor, i: Tensor, cond: Tensor | None) -> Tensor:
        t = (i.to(torch.float32) + 1.0) / self.T
        out = self.unet(x, t) if cond is None else self.unet(x, t, cond)
        return out.float()

    def predict_eps(self, x_t: Tensor, i: Tensor, cond: Tensor | None = None) -> Tensor:
        """eps_theta(x_t, i) for 0-based indices ``i`` (B,) long; ``cond`` (B, 10) or None.

        For class-conditional UNets ``cond=None`` means unconditional (zeros).
        """
        if self.conditioning == "class" and cond is None:
            cond = torch.zeros(x_t.shape[0], self.num_classes, device=x_t.device)
        return self._net(x_t, i.to(x_t.device), cond)

    def loss(self, x0: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        b = x0.shape[0]
        i = torch.randint(0, self.T, (b,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        cond = None
        if self.conditioning == "class":
            cond = class_condition(
                labels,
                b,
                self.num_classes,
                p_uncond=self.p_uncond,
                generator=generator,
                device=x0.device,
            )
        x_t = self.add_noise(x0, i, eps)
        return F.mse_loss(self._net(x_t, i, cond), eps.float())

    def step(self, x_t: Tensor, eps: Tensor, i: int, i_prev: int, noise: Tensor | None) -> Tensor:
        """A.3 update from index ``i`` to ``i_prev < i`` (``i_prev = -1``: clean image).

        ``x0_hat = (x_t - sqrt(1-abar_i) eps) / sqrt(abar_i)``; with ``alpha = abar_i / abar_prev``
        and ``beta = 1 - alpha`` (the stride's beta; ``beta_i`` for a unit stride):
        ``x_prev = sqrt(abar_prev) beta / (1-abar_i) x0_hat + sqrt(alpha) (1-abar_prev) / (1-abar_i)
        x_t + sqrt(beta) z`` (fixed variance ``sigma^2 = beta`` as Algorithm B.2; no noise when
        ``i_prev = -1`` or ``noise`` is None).
        """
        ab = float(self.alpha_bars[i])
        ab_prev = float(self.alpha_bars[i_prev]) if i_prev >= 0 else 1.0
        noise = noise if i_prev >= 0 else None
        return ddpm_update(x_t, eps, ab, ab_prev, variance="beta", noise=noise)[0]

    @torch.no_grad()
    def sample(
        self,
        labels: Tensor | Sequence[int] | None = None,
        n: int | None = None,
        guidance: float | None = 5.0,
        *,
        generator: torch.Generator,
        steps: int | None = None,
        trajectory_every: int = 0,
        clip_denoised: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Ancestral sampling (Algorithm B.2; with labels and ``guidance`` B.4 CFG).

        Args:
            labels: (N,) digits (-1 = unconditional) for a class-conditional UNet; None for a
                time-only UNet (then ``n`` samples).
            guidance: CFG scale g in ``eps_u + g (eps_c - eps_u)`` (course 5); None = one
                conditional pass, no unconditional branch.
            generator: source of x_T and every z.
            steps: number of model calls; None = T (the exact course sampler), fewer = strided
                indices :func:`fundiff.schedules.spaced_timesteps` with the A.3 update
                (:class:`fundiff.steps.DDPMStep`, ``sigma^2 = beta`` of the stride).
            trajectory_every: if > 0, keep ``x`` clipped to [0, 1] before the first step, after
                every k-th step and at the end (each (N, 1, 28, 28), on CPU).
            clip_denoised: clamp x0_hat to [0, 1] inside each step (diffusers ``clip_sample``;
                not in the course; default off).

        Returns:
            (images (N, 1, 28, 28) in [0, 1] float32 on the model device, trajectory).
        """
        idx = spaced_timesteps(self.T, steps)
        stepper = DDPMStep(
            self.schedule,
            variance="beta",
            clip=(0.0, 1.0) if clip_denoised else None,
            timesteps=idx,
        )
        return self._sample_loop(
            labels, n, guidance, generator, idx,
            lambda eps, i, x: stepper.step(eps, i, x, generator=generator).prev_sample,
            trajectory_every=trajectory_every, time_dtype=torch.long,
        )  # fmt: skip


class FlowMatching(Objective):
    """Rectified-flow / flow-matching objective (fall 2025, B.3-B.5).

    ``x0 ~ N(0, I)`` (noise), ``x1`` = data in [0, 1], ``t ~ U[0, 1]``,
    ``x_t = (1 - t) x0 + t x1``, target velocity ``x1 - x0``, loss ``mean (u_theta - (x1-x0))^2``.
    Sampling integrates ``dx/dt = u_theta(x, t)`` from t = 0 (noise) to t = 1 (data) with
    ``num_steps`` Euler steps (the course's T; default 300, configurable per call).
    """

    def __init__(self, unet: nn.Module, num_steps: int = 300, p_uncond: float = 0.1) -> None:
        super().__init__(unet)
        if getattr(unet, "conditioning", "none") == "none":
            raise FundiffError("FlowMatching needs a TimeConditionalUNet or ClassConditionalUNet")
        if num_steps < 1 or not 0 <= p_uncond <= 1:
            raise FundiffError(
                f"need num_steps >= 1 and p_uncond in [0, 1], got {num_steps}, {p_uncond}"
            )
        self.num_steps = int(num_steps)
        self.p_uncond = float(p_uncond)

    def config(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps, "p_uncond": self.p_uncond}

    def _net(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        out = self.unet(x, t) if cond is None else self.unet(x, t, cond)
        return out.float()

    def velocity(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """u_theta(x_t, t) for t (B,) in [0, 1]; ``cond`` (B, 10) or None (= unconditional)."""
        if self.conditioning == "class" and cond is None:
            cond = torch.zeros(x_t.shape[0], self.num_classes, device=x_t.device)
        return self._net(x_t, t.to(x_t.device).float(), cond)

    def loss(self, x0: Tensor, labels: Tensor | None, generator: torch.Generator) -> Tensor:
        """``x0`` here is the *data* batch (B, 1, 28, 28) in [0, 1] (the course's x1)."""
        x1 = x0
        b = x1.shape[0]
        noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = torch.rand((b,), generator=generator, device=x1.device)
        cond = None
        if self.conditioning == "class":
            cond = class_condition(
                labels,
                b,
                self.num_classes,
                p_uncond=self.p_uncond,
                generator=generator,
                device=x1.device,
            )
        tt = t.to(x1.dtype)[:, None, None, None]
        x_t = (1 - tt) * noise + tt * x1
        return F.mse_loss(self._net(x_t, t, cond), (x1 - noise).float())

    @torch.no_grad()
    def sample(
        self,
        labels: Tensor | Sequence[int] | None = None,
        n: int | None = None,
        guidance: float | None = 5.0,
        *,
        generator: torch.Generator,
        steps: int | None = None,
        trajectory_every: int = 0,
    ) -> tuple[Tensor, list[Tensor]]:
        """Euler sampler (B.2-FM; with labels and ``guidance`` B.4-FM CFG ``u_u + g (u_c - u_u)``).

        ``steps`` Euler steps (default ``num_steps``): ``x <- x + (1/steps) u(x, k/steps)`` for
        k = 0..steps-1, starting from ``x ~ N(0, I)`` drawn from ``generator``. Returns
        (images (N, 1, 28, 28) clipped to [0, 1], trajectory as in :meth:`DDPM.sample`).
        """
        euler = EulerFlow(self.num_steps if steps is None else int(steps))
        return self._sample_loop(
            labels, n, guidance, generator, euler.times, lambda u, t, x: euler.step(u, x),
            trajectory_every=trajectory_every,
        )  # fmt: skip


OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "SingleStepDenoising": SingleStepDenoising,
    "DDPM": DDPM,
    "FlowMatching": FlowMatching,
}


def build_objective(spec: dict[str, Any]) -> Objective:
    """Rebuild an objective (fresh weights) from :meth:`Objective.spec` output."""
    name = spec.get("objective")
    if name not in OBJECTIVE_CLASSES:
        raise FundiffError(f"unknown objective {name!r}; known: {sorted(OBJECTIVE_CLASSES)}")
    kwargs = dict(spec.get("kwargs", {}))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OBJECTIVE_CLASSES[name](build_unet(spec["unet"]), **kwargs)
