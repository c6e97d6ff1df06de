"""DeepFloyd IF stage II (64 -> 256 px super-resolution) on the shared diffusion core.

``IFSuperResolutionPipeline`` conditions its UNet on the stage-I image: bilinearly upscaled
(``align_corners=True``), noised to ``noise_level`` by its ``image_noising_scheduler``,
concatenated to ``x_t`` along the channels and announced as ``class_labels=noise_level``.
:func:`upsample` does exactly what the pipeline's ``__call__`` does (same random draws in the
same order, CFG on the noise half, the scheduler's thresholding, leading timesteps, final
step to t = 0), but through :func:`fundiff.denoising.denoise`, so the same views / branches
as stage I can be used at 256 px (anagrams, hybrids).

Images are (B, 3, H, W) in [-1, 1]; stage-II outputs (B, 3, 4H, 4W) in about [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.schedules import NoiseSchedule, leading_timesteps, randn_like

__all__ = [
    "SuperResDenoiser",
    "noised_low_res",
    "upsample",
    "upsample_anagram",
    "upsample_hybrid",
    "stage2_filters",
]


class SuperResDenoiser:
    """IF stage II as a :class:`~fundiff.denoisers.Denoiser` whose model input is
    ``cat([x_t, low_res], dim=1)`` (pass the conditioning image as ``image=`` to the loop).

    Args:
        unet: the stage-II ``UNet2DConditionModel`` (in: 2C channels, out: noise + variance).
        scheduler: its ``DDPMScheduler`` (schedule, variance type, thresholding).
        noise_level: the timestep the low-resolution image was noised to (``class_labels``).
        device, dtype: where / in which dtype the UNet runs (default: the UNet's).
        conditions: optional ``prompts -> (B, 77, D)`` lookup (e.g. the stage-I denoiser's
            ``conditions``) so prompts can be given as strings.
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: object,
        *,
        noise_level: int = 250,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        conditions: Callable[[Sequence[str]], Tensor] | None = None,
    ) -> None:
        cfg = unet.config
        self.unet = unet
        self.scheduler = scheduler
        self.noise_level = int(noise_level)
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.dtype = dtype if dtype is not None else next(unet.parameters()).dtype
        self.schedule = NoiseSchedule.from_diffusers(scheduler)
        self.channels = int(cfg.in_channels) // 2
        self.resolution = int(cfg.sample_size)
        self._has_variance = int(cfg.out_channels) == 2 * self.channels
        learned = getattr(scheduler.config, "variance_type", "") in ("learned", "learned_range")
        self.variance_type = "learned_range" if (learned and self._has_variance) else "fixed_small"
        self._conditions = conditions

    @classmethod
    def from_pipeline(
        cls,
        pipe: object,
        *,
        noise_level: int = 250,
        conditions: Callable[[Sequence[str]], Tensor] | None = None,
    ) -> SuperResDenoiser:
        """From a loaded ``IFSuperResolutionPipeline`` (its execution device, UNet dtype)."""
        unet = pipe.unet  # type: ignore[attr-defined]
        return cls(
            unet,
            pipe.scheduler,  # type: ignore[attr-defined]
            noise_level=noise_level,
            device=pipe._execution_device,  # type: ignore[attr-defined]
            dtype=unet.dtype,
            conditions=conditions,
        )

    def conditions(self, prompts: Sequence[str]) -> Tensor:
        """(B, 77, D) embeddings through the lookup given at construction."""
        if self._conditions is None:
            raise FundiffError(
                "this stage-II denoiser has no prompt lookup: pass embedding tensors as prompts"
            )
        return self._conditions(prompts)

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        """Noise (and raw variance) for ``x_t`` = (B, 2C, H, W) noisy image + low-res image."""
        if x_t.shape[1] != 2 * self.channels:
            raise FundiffError(
                f"stage II needs the low-resolution image concatenated: {2 * self.channels} "
                f"input channels, got {x_t.shape[1]}"
            )
        level = torch.full((x_t.shape[0],), self.noise_level, device=self.device)
        out = self.unet(
            x_t.to(self.device, self.dtype),
            t.to(self.device),
            encoder_hidden_states=cond.to(self.device, self.dtype),
            class_labels=level,
            return_dict=False,
        )[0]
        c = self.channels
        eps = out[:, :c].to(x_t.device, x_t.dtype)
        var = out[:, c:].to(x_t.device, x_t.dtype) if self._has_variance else None
        return DenoiserOutput(eps, var)


def noised_low_res(
    images: Tensor,
    resolution: int,
    noise_level: int,
    noising: NoiseSchedule,
    generator: torch.Generator,
) -> Tensor:
    """Upscale (bilinear, ``align_corners=True``) to ``resolution`` and noise to ``noise_level``.

    The pipeline's step 7: one N(0, I) draw from ``generator`` shaped like the upscaled image,
    then ``noising.add_noise``. Returns (B, C, resolution, resolution).
    """
    up = F.interpolate(images, (resolution, resolution), mode="bilinear", align_corners=True)
    return noising.add_noise(up, int(noise_level), randn_like(up, generator))


def upsample(
    stage2_pipe: object,
    images: Tensor,
    prompt_embeds: Tensor,
    negative_embeds: Tensor,
    *,
    steps: int = 30,
    generator: torch.Generator,
    guidance: float = 4.0,
    noise_level: int = 250,
    branches: Sequence[object] | None = None,
    reduce: str = "mean",
) -> Tensor:
    """Stage II: (B, 3, 64, 64) stage-I images in [-1, 1] -> (B, 3, 256, 256) in about [-1, 1].

    Same result as ``IFSuperResolutionPipeline.__call__(image=images, prompt_embeds=...,
    negative_prompt_embeds=..., num_inference_steps=steps, guidance_scale=guidance,
    noise_level=noise_level, generator=generator, output_type="pt")``.

    Args:
        stage2_pipe: from :func:`fundiff.deepfloyd.load_stage2` (needs ``unet``, ``scheduler``,
            ``image_noising_scheduler``).
        prompt_embeds, negative_embeds: (77, D) or (B, 77, D); the course uses the prompt's
            and ``""``'s embeddings.
        steps: ``num_inference_steps`` (leading spacing; the course notebook: 30).
        generator: all noise draws.
        guidance: CFG scale; ``<= 1`` means no unconditional pass, as in the pipeline.
        noise_level: timestep the upscaled image is noised to (the pipeline's 250).
        branches: optional :class:`~fundiff.guidance.Branch` list replacing the single
            prompt (views / filters at 256 px); ``prompt_embeds`` is then unused.
        reduce: reduction over ``branches`` (``mean`` anagrams, ``sum`` hybrids).

    Returns:
        float32 tensor on the device of ``images``.
    """
    from fundiff.denoising import denoise
    from fundiff.guidance import Branch

    pipe = stage2_pipe
    denoiser = SuperResDenoiser.from_pipeline(pipe, noise_level=noise_level)
    noising = NoiseSchedule.from_diffusers(pipe.image_noising_scheduler)  # type: ignore[attr-defined]
    dev, dt = denoiser.device, denoiser.dtype
    b = images.shape[0]

    def rows(e: Tensor) -> Tensor:
        e = e.unsqueeze(0) if e.ndim == 2 else e
        return (e.expand(b, *e.shape[1:]) if e.shape[0] == 1 else e).to(dev, dt)

    if branches is None:
        branches = [Branch(rows(prompt_embeds), per_image=True)]
    r = denoiser.resolution
    x = randn_like(torch.empty(b, denoiser.channels, r, r, device=dev, dtype=dt), generator)
    low = noised_low_res(images.to(dev, dt), r, noise_level, noising, generator)
    use_cfg = float(guidance) > 1.0
    out = denoise(
        denoiser,
        x,
        leading_timesteps(denoiser.schedule.num_train_timesteps, int(steps)),
        branches=branches,  # type: ignore[arg-type]
        null_cond=rows(negative_embeds)[0] if use_cfg else None,
        guidance=float(guidance) if use_cfg else None,
        reduce=reduce,  # type: ignore[arg-type]
        generator=generator,
        step="pipeline",
        final_step=True,
        image=low,
    )
    return out.to(images.device, torch.float32)


def upsample_anagram(
    stage2_pipe: object,
    images: Tensor,
    prompt_embeds: Sequence[Tensor],
    negative_embeds: Tensor,
    views: Sequence[object],
    **kwargs: object,
) -> Tensor:
    """Stage II of a visual anagram: the same views at 256 px, so the illusion holds.

    As visual_anagrams' ``sample_stage_2``: each step views ``cat([x_t, low_res])`` per
    branch, guides, inverts and averages the noise (and the variances). ``prompt_embeds[k]``
    (77, D) is what the image shows under ``views[k]`` (View objects or names of
    :func:`fundiff.views.get_view`). Other keyword arguments as :func:`upsample`.
    Returns (B, 3, 256, 256) float32.
    """
    from fundiff.guidance import Branch
    from fundiff.views import View, get_view

    if len(prompt_embeds) != len(views) or not views:
        raise FundiffError(
            f"need one view per prompt, got {len(prompt_embeds)} prompts, {len(views)} views"
        )
    vs = [v if isinstance(v, View) else get_view(str(v)) for v in views]
    branches = [Branch(e, view=v) for e, v in zip(prompt_embeds, vs, strict=True)]
    kw = {"branches": branches, "reduce": "mean", **kwargs}
    return upsample(stage2_pipe, images, prompt_embeds[0], negative_embeds, **kw)  # type: ignore[arg-type]


def stage2_filters(
    factor: int,
    *,
    sigma: float = 2.0,
    kernel_size: int = 33,
    band_sigma: float | None = None,
) -> list[object]:
    """The hybrid filters of stage I (sigmas / kernel in stage-I pixels) scaled by ``factor``.

    As the reference: ``sigma * factor`` and kernel ``kernel_size * factor`` made odd (33 at
    64 px -> 133 / sigma 8 at 256 px).
    """
    from fundiff.filters import hybrid_filters

    k = int(kernel_size) * factor + (factor + 1) % 2
    band = None if band_sigma is None else float(band_sigma) * factor
    return hybrid_filters(64 * factor, sigma=float(sigma) * factor, kernel_size=k, band_sigma=band)


def upsample_hybrid(
    stage2_pipe: object,
    images: Tensor,
    prompt_embeds: Sequence[Tensor],
    negative_embeds: Tensor,
    *,
    sigma: float = 2.0,
    kernel_size: int = 33,
    band_sigma: float | None = None,
    **kwargs: object,
) -> Tensor:
    """Stage II of a hybrid image: the same factorization (scaled to 256 px) every step.

    ``prompt_embeds`` coarse to fine (low, [band,] high); ``sigma`` / ``kernel_size`` /
    ``band_sigma`` in stage-I pixels as for :func:`fundiff.samplers.hybrid`, scaled by the
    upsampling factor (:func:`stage2_filters`). Other keyword arguments as :func:`upsample`.
    Returns (B, 3, 256, 256) float32.
    """
    from fundiff.guidance import Branch

    factor = int(stage2_pipe.unet.config.sample_size) // images.shape[-1]  # type: ignore[attr-defined]
    filters = stage2_filters(
        max(1, factor), sigma=sigma, kernel_size=kernel_size, band_sigma=band_sigma
    )
    if len(prompt_embeds) != len(filters):
        raise FundiffError(
            f"hybrid needs {len(filters)} prompts (coarse to fine), got {len(prompt_embeds)}"
        )
    branches = [Branch(e, filter=f) for e, f in zip(prompt_embeds, filters, strict=True)]
    kw = {"branches": branches, "reduce": "sum", **kwargs}
    return upsample(stage2_pipe, images, prompt_embeds[0], negative_embeds, **kw)  # type: ignore[arg-type]
