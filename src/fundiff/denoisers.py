"""The denoiser interface the Part A samplers run on.

A denoiser wraps one noise-prediction network and its schedule. The samplers only see this
protocol and never import a backend (DeepFloyd IF via diffusers in :mod:`fundiff.deepfloyd`,
the course's MNIST DDPM in Part B, or a fake in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from fundiff.schedules import NoiseSchedule

__all__ = ["DenoiserOutput", "Denoiser", "VARIANCE_TYPES"]

#: ``learned_range``: the model outputs raw variance channels v in [-1, 1] and the step uses
#: ``log var = (v+1)/2 log beta_t + (1-(v+1)/2) log beta~_t`` (IF, diffusers).
#: ``fixed_small``: no learned variance; the course's DDPM uses ``sigma_t^2 = beta_t`` of the
#: (strided) step. (Named as in DESIGN.md; diffusers would call sigma^2 = beta "fixed_large".)
VARIANCE_TYPES: tuple[str, ...] = ("learned_range", "fixed_small")


@dataclass
class DenoiserOutput:
    """What one model call returns.

    Attributes:
        eps: (B, C, H, W) noise estimate, in the dtype/device of the input ``x_t``.
        variance: (B, C, H, W) raw learned-variance channels (IF: roughly in [-1, 1]), or None
            for models without learned variance.
    """

    eps: Tensor
    variance: Tensor | None = None


@runtime_checkable
class Denoiser(Protocol):
    """A conditional noise-prediction model plus its schedule.

    Attributes:
        schedule: the model's training schedule (T = ``schedule.num_train_timesteps``).
        channels: image channels C (3 for IF, 1 for MNIST).
        resolution: image side H = W (64 for IF stage I, 28 for MNIST).
        value_range: data range of x0, e.g. (-1, 1) for IF, (0, 1) for the MNIST model.
        variance_type: one of ``VARIANCE_TYPES``.

    Optional: ``scheduler``, the model's diffusers scheduler; its config (thresholding,
    clipping) is what ``step="pipeline"`` in :mod:`fundiff.denoising` follows.
    """

    schedule: NoiseSchedule
    channels: int
    resolution: int
    value_range: tuple[float, float]
    variance_type: str

    def conditions(self, prompts: Sequence[str]) -> Tensor:
        """Conditions for a list of prompts, batch first: (len(prompts), ...).

        ``""`` is the null (unconditional) condition. Unknown prompts raise FundiffError that
        lists the accepted forms / known prompts.
        """
        ...

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        """Predict the noise in ``x_t``.

        Args:
            x_t: (B, C, H, W) noisy images.
            t: (B,) long timesteps in [0, T-1].
            cond: (B, ...) conditions as returned by :meth:`conditions` (rows may be mixed).

        Returns:
            :class:`DenoiserOutput` with tensors shaped like ``x_t``.
        """
        ...
