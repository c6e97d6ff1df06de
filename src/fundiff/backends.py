"""Part A backends behind the :class:`fundiff.denoisers.Denoiser` interface.

* ``local``: the class-conditioned MNIST DDPM trained in Part B. A prompt names a digit
  (``"a 7"``, ``"seven"``, ``"digit 7"``, ``"7"``); ``""`` is the unconditional branch. Its
  schedule is the model's own (T = 300 linear betas in the course); data in [0, 1].
* ``deepfloyd``: DeepFloyd IF stage I through diffusers (:mod:`fundiff.deepfloyd`), with the
  prompt embeddings precomputed by the ``encode_prompts`` / ``embed_prompt`` rules (one file
  per prompt, see :mod:`fundiff.prompt_embeddings`).

:func:`load_backend` builds either from a job's params, so scripts stay thin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.prompts import ACCEPTED_FORMS, DIGIT_WORDS, parse_digit_prompt  # noqa: F401 (re-exported)
from fundiff.schedules import NoiseSchedule


class LocalDenoiser:
    """The Part B class-conditioned DDPM as a Part A denoiser.

    Timesteps are the schedule's 0-based indices t in [0, T-1] (course t = index + 1), the
    same convention as :class:`fundiff.diffusion.DDPM`. Conditions are one-hot (B, 10) rows,
    zeros for ``""``. Images (B, 1, 28, 28), data range [0, 1].
    """

    channels = 1
    resolution = 28
    value_range = (0.0, 1.0)
    variance_type = "fixed_small"

    def __init__(self, ddpm: Any) -> None:
        if getattr(ddpm, "conditioning", None) != "class":
            raise FundiffError("partA.local.run must name a class-conditioned DDPM run")
        self.ddpm = ddpm.eval()
        self.schedule = NoiseSchedule.from_betas(ddpm.betas.double().cpu())
        self.device = next(ddpm.parameters()).device

    def conditions(self, prompts: Sequence[str]) -> Tensor:
        """One-hot rows (len(prompts), 10) for digit prompts, zeros for ``""``."""
        c = torch.zeros(len(prompts), 10, device=self.device)
        for row, prompt in enumerate(prompts):
            digit = parse_digit_prompt(prompt)
            if digit is not None:
                c[row, digit] = 1.0
        return c

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        eps = self.ddpm.predict_eps(x_t.float(), t.long(), cond.float())
        return DenoiserOutput(eps=eps.to(x_t.dtype), variance=None)


def load_backend(backend: str, params: Mapping[str, Any], files: Mapping[str, Any]) -> Any:
    """Build the denoiser of a Part A job.

    Args:
        backend: "local" or "deepfloyd".
        params: the job's backend params (device, model ids, dtype, variant, ...).
        files: the job's model inputs: ``model`` (local weights path) or ``embeddings`` (IF:
            a list of per-prompt embedding files, merged).
    """
    from fundiff.runtime import resolve_device

    device = resolve_device(params.get("device", "auto"))
    if backend == "local":
        from fundiff.training import load_model

        return LocalDenoiser(load_model(files["model"], device=device))
    if backend == "deepfloyd":
        from fundiff import deepfloyd

        # stage I only: no T5 (the embeddings are files), no stage II
        pipe = deepfloyd.load_stage1(
            params["stage1"],
            device=device,
            dtype=params["dtype"],
            variant=params["variant"],
            offload=params.get("offload", "none"),
        )
        embeddings: dict[str, Tensor] = {}
        for path in files["embeddings"]:
            embeddings.update(deepfloyd.load_embeddings(path))
        return deepfloyd.DeepFloydDenoiser.from_pipeline(pipe, embeddings)
    raise FundiffError(f"unknown backend {backend!r} (local | deepfloyd)")


def schedule_for(backend: str, params: Mapping[str, Any]) -> NoiseSchedule:
    """The backend's noise schedule without loading the network (forward noising, blur)."""
    if backend == "local":
        s = params["schedule"]
        return NoiseSchedule.linear(T=s["T"], beta_start=s["beta_start"], beta_end=s["beta_end"])
    from diffusers import DDPMScheduler

    from fundiff import deepfloyd

    deepfloyd.preflight(params["stage1"])
    return NoiseSchedule.from_diffusers(
        DDPMScheduler.from_pretrained(params["stage1"], subfolder="scheduler")
    )


def deepfloyd_upsampler(params: Mapping[str, Any], denoiser: Any):
    """A function (images (B, 3, 64, 64), prompt, generator) -> (B, 3, 256, 256) via stage II."""
    from fundiff import deepfloyd

    variant = None if params["variant"] == "none" else params["variant"]
    stage2 = deepfloyd.load_stage2(
        params["stage2"], device=denoiser.device, dtype=params["dtype"], variant=variant
    )

    def upsample(images: Tensor, prompt: str, generator: torch.Generator) -> Tensor:
        cond, null = denoiser.conditions([prompt, ""])
        return deepfloyd.upsample(
            stage2, images, cond, null, steps=params["upsample_steps"], generator=generator
        )

    return upsample


#: (resolution, channels, value range) of each backend's images
BACKEND_GEOMETRY = {"local": (28, 1, (0.0, 1.0)), "deepfloyd": (64, 3, (-1.0, 1.0))}
