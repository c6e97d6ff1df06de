"""Part A backends behind the :class:`fundiff.denoisers.Denoiser` interface.

* ``local``: the class-conditioned MNIST DDPM trained in Part B. A prompt names a digit
  (``"a 7"``, ``"seven"``, ``"digit 7"``, ``"7"``); ``""`` is the unconditional branch. Its
  schedule is the model's own (T = 300 linear betas in the course); data in [0, 1].
* ``local_fm``: the class-conditioned flow-matching UNet of Part B, on the same footing: its
  velocity becomes a noise estimate (:class:`FlowDenoiser`), so every trick runs unchanged.
* ``deepfloyd``: DeepFloyd IF stage I through diffusers (:mod:`fundiff.deepfloyd`), with the
  prompt embeddings precomputed by the ``encode_prompts`` / ``embed_prompt`` rules (one file
  per prompt, see :mod:`fundiff.prompt_embeddings`).

:func:`load_backend` builds either from a job's params, so scripts stay thin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.prompts import ACCEPTED_FORMS, DIGIT_WORDS, parse_digit_prompt  # noqa: F401 (re-exported)
from fundiff.schedules import NoiseSchedule
from fundiff.tasks import LOCAL_BACKENDS

if TYPE_CHECKING:
    from fundiff.jobs import Views


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
        if getattr(ddpm, "conditioning", None) != "class" or not hasattr(ddpm, "predict_eps"):
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


class FlowDenoiser(LocalDenoiser):
    """The Part B class-conditioned flow-matching UNet as a Part A (noise-predicting) denoiser.

    The flow model was trained on ``z_s = (1 - s) eps + s x`` (s in [0, 1], s = 1 is data) to
    predict the velocity ``u = x - eps``. A DDPM state at index t,
    ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps``, is the same point of that path up to a
    scale: with ``a = sqrt(abar_t)``, ``b = sqrt(1 - abar_t)``,

        z_s = x_t / (a + b)   at   s = a / (a + b),

    and the velocity at it gives the noise estimate ``eps = z_s - s u`` (exact for the true
    velocity: ``z_s - s (x - eps) = eps``). So the flow model runs every Part A trick through
    the same DDPM step, guidance and views as the DDPM model, on ``schedule`` (the course's
    T = 300 linear betas unless its Part B run says otherwise). CFG on eps equals CFG on u:
    eps is affine in u with the same ``z_s`` for every branch.
    """

    def __init__(self, flow: Any, schedule: NoiseSchedule) -> None:
        if getattr(flow, "conditioning", None) != "class" or not hasattr(flow, "velocity"):
            raise FundiffError("partA.local_fm.run must name a class-conditioned fm run")
        self.flow = flow.eval()
        self.schedule = schedule
        self.device = next(flow.parameters()).device
        a = schedule.alphas_cumprod.sqrt()
        b = (1.0 - schedule.alphas_cumprod).sqrt()
        self._scale = (1.0 / (a + b)).float()  # (T,)
        self._s = (a / (a + b)).float()  # (T,) flow time of each DDPM index

    def flow_time(self, t: Tensor) -> Tensor:
        """Flow time s in (0, 1) of DDPM indices ``t`` (any shape, 0-based)."""
        return self._s[t.long().cpu()]

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        i = t.long().cpu().expand(x_t.shape[0]) if t.ndim == 0 else t.long().cpu()
        scale = self._scale[i].to(x_t.device).view(-1, 1, 1, 1)
        s = self._s[i].to(x_t.device)
        z = x_t.float() * scale
        u = self.flow.velocity(z, s, cond.float())
        eps = z - s.view(-1, 1, 1, 1) * u
        return DenoiserOutput(eps=eps.to(x_t.dtype), variance=None)


def load_backend(backend: str, params: Mapping[str, Any], files: Mapping[str, Any]) -> Any:
    """Build the denoiser of a Part A job.

    Args:
        backend: "local" (the DDPM), "local_fm" (the flow-matching model) or "deepfloyd".
        params: the job's backend params (device, model ids, dtype, variant, ...).
        files: the job's model inputs: ``model`` (local weights path) or ``embeddings`` (IF:
            a list of per-prompt embedding files, merged).
    """
    from fundiff.runtime import resolve_device

    device = resolve_device(params.get("device", "auto"))
    if backend in LOCAL_BACKENDS:
        from fundiff.training import load_model

        model = load_model(files["model"], device=device, sampling=True)
        if hasattr(model, "velocity"):  # a flow-matching run (partA.local_fm)
            return FlowDenoiser(model, schedule_for(backend, params))
        return LocalDenoiser(model)
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
    if backend in LOCAL_BACKENDS:
        s = params["schedule"]
        return NoiseSchedule.linear(T=s["T"], beta_start=s["beta_start"], beta_end=s["beta_end"])
    from diffusers import DDPMScheduler

    from fundiff import deepfloyd

    deepfloyd.preflight(params["stage1"])
    return NoiseSchedule.from_diffusers(
        DDPMScheduler.from_pretrained(params["stage1"], subfolder="scheduler")
    )


class DeepFloydStage2:
    """IF stage II for one Part A job, loaded on first use with the job's device, dtype,
    variant and ``offload`` settings.

    Stage II on kept results runs after the recipe (:func:`fundiff.jobs.upsample_kept`), when
    the stage-I UNet is no longer needed: :meth:`free_stage1` (the job's ``free_model``) frees
    it first, so the job holds one stage at a time (the denoiser keeps its prompt lookup;
    calling it afterwards is an error). A0 (:func:`fundiff.parta.text_to_image`) instead
    alternates stage I and stage II per step count on one generator, as the course notebook
    does, so there both stages stay loaded (``offload`` still applies to each).

    Args:
        params: the job's backend params (``stage2``, ``dtype``, ``variant``, ``offload``,
            ``upsample_steps``).
        denoiser: the job's :class:`fundiff.deepfloyd.DeepFloydDenoiser` (prompt embeddings,
            execution device).

    :meth:`plain` is a :data:`fundiff.jobs.Upsampler`, :meth:`views` a
    :data:`fundiff.jobs.ViewsUpsampler`: images (B, 3, 64, 64) in [-1, 1] -> (B, 3, 256, 256).
    """

    def __init__(self, params: Mapping[str, Any], denoiser: Any) -> None:
        self.params = params
        self.denoiser = denoiser
        self._pipe: Any = None

    def free_stage1(self) -> None:
        """Drop the denoiser's stage-I UNet (the job's only reference) and its GPU memory."""
        import gc

        self.denoiser.unet = _Released()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def pipe(self) -> Any:
        """The stage-II pipeline (loaded on first use)."""
        if self._pipe is None:
            from fundiff import deepfloyd

            p = self.params
            self._pipe = deepfloyd.load_stage2(
                p["stage2"],
                device=self.denoiser.device,
                dtype=p["dtype"],
                variant=p["variant"],
                offload=p.get("offload", "none"),
            )
        return self._pipe

    def _kw(self, generator: torch.Generator) -> dict[str, Any]:
        return {"steps": self.params["upsample_steps"], "generator": generator}

    def plain(self, images: Tensor, prompt: str, generator: torch.Generator) -> Tensor:
        """Stage II conditioned on ``prompt`` (CFG against ``""``), as IF's pipeline."""
        from fundiff.superres import upsample

        cond, null = self.denoiser.conditions([prompt, ""])
        return upsample(self.pipe, images, cond, null, **self._kw(generator))

    def views(self, images: Tensor, views: Views, generator: torch.Generator) -> Tensor:
        """Stage II with an anagram's views or a hybrid's factorization (``views.filter``:
        sigma and kernel in stage-I pixels, scaled to stage II)."""
        from fundiff import superres

        embeds = list(self.denoiser.conditions(list(views.prompts)))
        null = self.denoiser.conditions([""])[0]
        if views.filter is None:
            return superres.upsample_anagram(
                self.pipe, images, embeds, null, list(views.views), **self._kw(generator)
            )
        sigma, kernel = views.filter
        return superres.upsample_hybrid(
            self.pipe, images, embeds, null, sigma=sigma, kernel_size=kernel, **self._kw(generator)
        )


class _Released:
    """Stands in for a stage-I UNet freed for stage II."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise FundiffError("stage I was freed to load stage II: run the recipe before upsampling")


def upsamplers(backend: str, params: Mapping[str, Any], denoiser: Any) -> dict[str, Any]:
    """A Part A job's stage-II keywords for :class:`fundiff.jobs.Job` (``upsampler``,
    ``views_upsampler``, ``free_model``); DeepFloyd only (other backends: a FundiffError)."""
    if backend != "deepfloyd":
        raise FundiffError(f"backend {backend!r} has no stage II (only deepfloyd)")
    stage2 = DeepFloydStage2(params, denoiser)
    return {
        "upsampler": stage2.plain,
        "views_upsampler": stage2.views,
        "free_model": stage2.free_stage1,
    }


#: (resolution, channels, value range) of each backend's images
BACKEND_GEOMETRY = {
    "local": (28, 1, (0.0, 1.0)),
    "local_fm": (28, 1, (0.0, 1.0)),
    "deepfloyd": (64, 3, (-1.0, 1.0)),
}
