"""DeepFloyd IF backend (through diffusers): loading, prompt embeddings, the Denoiser.

Workflow, as the course does it but with the text encoder used only once::

    embeddings = encode_prompts("DeepFloyd/IF-I-L-v1.0", prompts)   # T5 only (unet=None)
    save_embeddings("results/embeddings.safetensors", embeddings, model=...)
    pipe = load_stage1("DeepFloyd/IF-I-L-v1.0")                      # text_encoder=None
    denoiser = DeepFloydDenoiser.from_pipeline(pipe, load_embeddings(path))

``model`` is a hub id or a local folder written by ``save_pretrained`` (e.g.
:func:`fundiff.tiny_if.build_tiny_if`). Weights that can't be had (gated model, no token,
offline, missing folder) raise one :class:`~fundiff.errors.FundiffError` saying what to do.

The embeddings file format (``save_embeddings`` / ``load_embeddings``, re-exported here) lives
in :mod:`fundiff.prompt_embeddings`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.if_settings import OFFLOADS, cpu_fp16_message, has_accelerate, no_accelerate_message
from fundiff.if_settings import is_local as _is_local
from fundiff.prompt_embeddings import (  # noqa: F401 - the embeddings file format, re-exported
    EMBEDDINGS_FORMAT,
    embeddings_model,
    load_embeddings,
    save_embeddings,
)
from fundiff.runtime import resolve_device
from fundiff.schedules import NoiseSchedule
from fundiff.superres import upsample  # re-export: stage II sampling lives in fundiff.superres

__all__ = [
    "DEFAULT_STAGE1",
    "DEFAULT_STAGE2",
    "STAGE1_KEY",
    "STAGE2_KEY",
    "resolve_dtype",
    "preflight",
    "load_stage1",
    "load_stage2",
    "encode_prompts",
    "save_embeddings",
    "load_embeddings",
    "embeddings_model",
    "DeepFloydDenoiser",
    "upsample",
]

DEFAULT_STAGE1 = "DeepFloyd/IF-I-L-v1.0"
DEFAULT_STAGE2 = "DeepFloyd/IF-II-L-v1.0"
STAGE1_KEY = "partA.deepfloyd.stage1"
STAGE2_KEY = "partA.deepfloyd.stage2"
DTYPE_KEY = "partA.deepfloyd.dtype"
TE_DTYPE_KEY = "partA.deepfloyd.text_encoder.dtype"

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


# --------------------------------------------------------------------------- devices, dtypes
def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: fp16 on cuda, fp32 elsewhere; else ``fp32``/``fp16``/``bf16`` (or a dtype)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise FundiffError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
    return _DTYPES[dtype]


# --------------------------------------------------------------------------- access errors
def _remedy(model: str, key: str, cause: BaseException | str | None) -> str:
    why = ""
    if cause is not None:
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        name = type(cause).__name__ if isinstance(cause, BaseException) else ""
        why = f" ({name}: {text})" if name else f" ({text})"
    if _is_local(model):
        return (
            f"DeepFloyd IF weights: the local folder {model!r} (config key {key}) is missing or is "
            f"not a diffusers pipeline folder (no model_index.json){why}. Point {key} at a folder "
            "written by save_pretrained (for a test model: `python -m fundiff.tiny_if DIR`), or "
            "at a hub id such as 'DeepFloyd/IF-I-L-v1.0'."
        )
    return (
        f"DeepFloyd IF weights for {model!r} (config key {key}) cannot be loaded{why}. "
        "DeepFloyd IF is gated: (1) accept the license on https://huggingface.co/DeepFloyd/IF-I-XL-v1.0 "
        "(this covers the other IF models) while logged in; (2) give this machine a token: set "
        "HF_TOKEN or run `huggingface-cli login` (`hf auth login`); (3) be online, or unset "
        "HF_HUB_OFFLINE if the weights are not in the local cache yet. Or point config key "
        f"{key} at a local folder holding the pipeline (save_pretrained layout)."
    )


def _access_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    errs: list[type[BaseException]] = [
        HfHubHTTPError,  # includes GatedRepoError, RepositoryNotFoundError
        LocalEntryNotFoundError,
        EntryNotFoundError,
        OfflineModeIsEnabled,
        HFValidationError,
        OSError,
        ValueError,
    ]
    try:
        import httpx

        errs.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def preflight(model: str, *, key: str = STAGE1_KEY, revision: str | None = None) -> str:
    """Check that the pipeline ``model`` can be loaded, before any heavy work.

    A local folder must hold ``model_index.json``. A hub id must be reachable (or cached when
    ``HF_HUB_OFFLINE=1``) with the current token: ``model_index.json`` is fetched.

    Returns:
        ``"local"`` or ``"hub"``.

    Raises:
        FundiffError: one message naming ``key`` and the remedies (license, HF_TOKEN /
            ``huggingface-cli login``, a local folder). Never a library stack trace.
    """
    model = str(model)
    if not model.strip():
        raise FundiffError(f"config key {key} is empty: give a hub id or a local folder")
    if _is_local(model):
        folder = Path(model).expanduser()
        if not (folder / "model_index.json").is_file():
            raise FundiffError(
                _remedy(model, key, "no such folder" if not folder.exists() else None)
            )
        return "local"
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id=model, filename="model_index.json", revision=revision)
    except _access_errors() as err:
        raise FundiffError(_remedy(model, key, err)) from None
    return "hub"


def _has_variant_files(folder: Path, variant: str) -> bool:
    return any(folder.glob(f"*/*.{variant}.*"))


def _check_offload(offload: str) -> None:
    if offload not in OFFLOADS:
        raise FundiffError(
            f"config key partA.deepfloyd.offload: {offload!r} is not one of {OFFLOADS}"
        )
    if offload != "none" and not has_accelerate():
        raise FundiffError(no_accelerate_message())


def place(pipe: object, device: torch.device, offload: str = "none") -> None:
    """Put ``pipe`` on ``device``: ``none`` moves every model there; ``model`` /
    ``sequential`` keep the weights on the CPU and move whole models / single layers to
    ``device`` while they run (diffusers' ``enable_model_cpu_offload`` /
    ``enable_sequential_cpu_offload``). Code that runs the pipeline's models must then use
    ``pipe._execution_device``, not ``pipe.device`` (which is ``cpu`` or ``meta``)."""
    _check_offload(offload)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)  # type: ignore[attr-defined]
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)  # type: ignore[attr-defined]
    else:
        pipe.to(device)  # type: ignore[attr-defined]


def _load_pipeline(
    model: str,
    *,
    key: str,
    device: str | torch.device,
    dtype: str | torch.dtype,
    variant: str | None,
    offload: str = "none",
    dtype_key: str = DTYPE_KEY,
    revision: str | None = None,
    **components: object,
):
    """``DiffusionPipeline.from_pretrained`` with clear errors, placed by :func:`place`."""
    from diffusers import DiffusionPipeline

    _check_offload(offload)
    kind = preflight(model, key=key, revision=revision)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    dt = resolve_dtype(dtype, dev)
    if dt == torch.float16 and dev.type == "cpu":
        raise FundiffError(cpu_fp16_message(dtype_key))
    candidates: list[str | None]
    if variant == "auto":
        want = "fp16" if (dev.type == "cuda" and dt == torch.float16) else None
        if want and kind == "local" and not _has_variant_files(Path(model).expanduser(), want):
            want = None
        candidates = [want, None] if want else [None]
    else:
        candidates = [None if variant in (None, "none") else variant]
    last: BaseException | None = None
    for var in candidates:
        try:
            pipe = DiffusionPipeline.from_pretrained(
                model, dtype=dt, variant=var, revision=revision, **components
            )
            break
        except _access_errors() as err:
            last = err
    else:
        raise FundiffError(_remedy(model, key, last)) from None
    place(pipe, dev, offload)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_NO_EXTRAS = dict(safety_checker=None, feature_extractor=None, watermarker=None)


def load_stage1(
    model: str = DEFAULT_STAGE1,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    variant: str | None = "auto",
    offload: str = "none",
    key: str = STAGE1_KEY,
):
    """Load IF stage I (64 px) without its T5 encoder (``text_encoder=None``).

    Args:
        model: hub id or local ``save_pretrained`` folder.
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda:1"``...
        dtype: ``"auto"`` (fp16 on cuda, fp32 on cpu), ``fp32``, ``fp16`` or ``bf16``.
        variant: ``"auto"`` uses ``"fp16"`` weight files on cuda+fp16 where they exist, else
            the default files; ``None`` never; a string is passed on.
        offload: ``none``, ``model`` or ``sequential`` (see :func:`place`); the denoiser
            uses ``pipe._execution_device`` either way.
        key: config key named in error messages.

    Returns:
        The diffusers ``IFPipeline`` (safety checker, feature extractor, watermarker skipped;
        they only act on PIL output).
    """
    return _load_pipeline(
        model,
        key=key,
        device=device,
        dtype=dtype,
        variant=variant,
        offload=offload,
        text_encoder=None,
        **_NO_EXTRAS,
    )


def load_stage2(model: str = DEFAULT_STAGE2, *, key: str = STAGE2_KEY, **kwargs: Any):
    """Load IF stage II (64 -> 256 px ``IFSuperResolutionPipeline``) without T5: the same
    keywords (``device``, ``dtype``, ``variant``, ``offload``) as :func:`load_stage1`."""
    return load_stage1(model, key=key, **kwargs)


# --------------------------------------------------------------------------- embeddings
def encode_prompts(
    model: str,
    prompts: Iterable[str],
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    variant: str | None = "auto",
    offload: str = "none",
    revision: str | None = None,
    batch_size: int = 8,
    key: str = STAGE1_KEY,
    with_empty: bool = True,
) -> dict[str, Tensor]:
    """T5-encode every prompt plus ``""`` once, with the pipeline's own ``encode_prompt``.

    Loads the pipeline WITH its text encoder and ``unet=None`` (one load for all prompts),
    encodes with ``clean_caption=False``, frees it again.

    Args:
        model: hub id or local folder of the stage-I pipeline (or any IF folder with T5).
        prompts: prompts to encode (duplicates are encoded once; ``""`` is added unless
            ``with_empty`` is False).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        dtype: ``"auto"`` (float16 on cuda, as IF ships T5; float32 on cpu), ``float32``,
            ``float16`` (cuda only) or ``bfloat16``. Every embedding is checked for NaN/inf.
        variant: ``"auto"`` loads the ``fp16`` weight files when encoding in float16 (where
            they exist), ``None`` the default files, a string is passed on.
        offload: ``none`` / ``model`` / ``sequential`` (see :func:`place`).
        revision: hub branch/tag/commit.
        batch_size: prompts per encoder call.

    Returns:
        ``{prompt: (77, D) CPU tensor}`` in the encoder's dtype (D = 4096 for IF).

    Raises:
        FundiffError: weights not accessible (see :func:`preflight`), float16 on the CPU, or
            the encoder produced NaN / inf (naming ``partA.deepfloyd.text_encoder.dtype``).
    """
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    dt = resolve_dtype(dtype, dev)
    unique = list(dict.fromkeys([*(str(p) for p in prompts), *([""] if with_empty else [])]))
    pipe = _load_pipeline(
        model,
        key=key,
        device=dev,
        dtype=dt,
        variant=variant,
        offload=offload,
        dtype_key=TE_DTYPE_KEY,
        revision=revision,
        unet=None,
        **_NO_EXTRAS,
    )
    run_on = pipe._execution_device
    if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "tokenizer", None) is None:
        raise FundiffError(
            f"{model!r} (config key {key}) has no text encoder / tokenizer to encode prompts"
        )
    out: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            for s in range(0, len(unique), max(1, int(batch_size))):
                chunk = unique[s : s + max(1, int(batch_size))]
                emb, _ = pipe.encode_prompt(
                    chunk, do_classifier_free_guidance=False, device=run_on, clean_caption=False
                )
                bad = [p for p, e in zip(chunk, emb, strict=True) if not torch.isfinite(e).all()]
                if bad:
                    raise FundiffError(
                        f"config key {TE_DTYPE_KEY}: T5 embeddings contain NaN/inf in {dt} for "
                        f"prompts {bad!r}; set it to bfloat16 or float32"
                    )
                for p, e in zip(chunk, emb, strict=True):
                    out[p] = e.detach().to("cpu").clone()
    finally:
        del pipe
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------- the denoiser
class DeepFloydDenoiser:
    """IF stage I as a :class:`~fundiff.denoisers.Denoiser`.

    Args:
        unet: the pipeline's ``UNet2DConditionModel`` (output = noise + learned variance).
        scheduler: the pipeline's ``DDPMScheduler`` (its ``alphas_cumprod`` define the
            schedule; also used by samplers with ``step="scheduler"``).
        embeddings: ``{prompt: (77, D)}`` from :func:`load_embeddings`; must include ``""``
            for classifier-free guidance.
        device: where the UNet runs (default: the UNet's device). With CPU offload pass
            ``pipe._execution_device`` (``from_pipeline`` does).
        dtype: UNet input dtype (default: the UNet's dtype).

    Images are (B, 3, 64, 64) in [-1, 1]; outputs come back in the input's dtype and device.
    """

    value_range: tuple[float, float] = (-1.0, 1.0)

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler: object,
        embeddings: Mapping[str, Tensor],
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        cfg = unet.config
        self.unet = unet
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.dtype = dtype if dtype is not None else next(unet.parameters()).dtype
        self.schedule = NoiseSchedule.from_diffusers(scheduler)
        self.channels = int(cfg.in_channels)
        self.resolution = int(cfg.sample_size)
        learned = getattr(scheduler.config, "variance_type", "") in ("learned", "learned_range")
        self._has_variance = int(cfg.out_channels) == 2 * self.channels
        if learned and not self._has_variance:
            raise FundiffError(
                "the scheduler expects learned variance but the UNet has no variance channels"
            )
        self.variance_type = "learned_range" if (learned and self._has_variance) else "fixed_small"
        self._emb = dict(embeddings)
        want = getattr(cfg, "encoder_hid_dim", None) or getattr(cfg, "cross_attention_dim", None)
        for p, e in self._emb.items():
            if e.ndim != 2 or (want is not None and e.shape[-1] != int(want)):
                raise FundiffError(
                    f"embedding for {p!r} has shape {tuple(e.shape)}; this UNet needs (77, {want}). "
                    "Were the embeddings made with another model?"
                )
        self._cache: dict[str, Tensor] = {}

    @classmethod
    def from_pipeline(cls, pipe: object, embeddings: Mapping[str, Tensor]) -> DeepFloydDenoiser:
        """From a loaded IF stage-I pipeline, on its execution device and UNet dtype."""
        unet = pipe.unet  # type: ignore[attr-defined]
        return cls(
            unet,
            pipe.scheduler,  # type: ignore[attr-defined]
            embeddings,
            device=pipe._execution_device,  # type: ignore[attr-defined]
            dtype=unet.dtype,
        )

    @property
    def prompts(self) -> list[str]:
        """Prompts with an embedding."""
        return list(self._emb)

    def conditions(self, prompts: Sequence[str]) -> Tensor:
        """(B, 77, D) embeddings for the prompts, on the UNet's device and dtype."""
        rows = []
        for p in prompts:
            if p not in self._emb:
                known = ", ".join(repr(k) for k in sorted(self._emb))
                raise FundiffError(
                    f"no embedding for prompt {p!r}; add it to the configured prompts and rerun "
                    f"the prompt-encoding step. Known prompts: {known}"
                )
            if p not in self._cache:
                self._cache[p] = self._emb[p].to(self.device, self.dtype)
            rows.append(self._cache[p])
        if not rows:
            raise FundiffError("no prompts given")
        return torch.stack(rows)

    @torch.no_grad()
    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        """Noise (and raw variance) for (B, 3, H, W) ``x_t`` at (B,) timesteps ``t``."""
        out = self.unet(
            x_t.to(self.device, self.dtype),
            t.to(self.device),
            encoder_hidden_states=cond.to(self.device, self.dtype),
            return_dict=False,
        )[0]
        eps, var = out[:, : self.channels], out[:, self.channels :]
        eps = eps.to(x_t.device, x_t.dtype)
        return DenoiserOutput(eps, var.to(x_t.device, x_t.dtype) if self._has_variance else None)
