"""DeepFloyd IF backend (through diffusers): loading, prompt embeddings, the Denoiser.

Workflow, as the course does it but with the text encoder used only once::

    embeddings = encode_prompts("DeepFloyd/IF-I-L-v1.0", prompts)   # T5 only (unet=None)
    save_embeddings("results/embeddings.safetensors", embeddings, model=...)
    pipe = load_stage1("DeepFloyd/IF-I-L-v1.0")                      # text_encoder=None
    denoiser = DeepFloydDenoiser.from_pipeline(pipe, load_embeddings(path))

``model`` is a hub id or a local folder written by ``save_pretrained`` (e.g.
:func:`fundiff.tiny_if.build_tiny_if`). Weights that can't be had (gated model, no token,
offline, missing folder) raise one :class:`~fundiff.errors.FundiffError` saying what to do.

Embeddings file format: one safetensors file; tensor ``emb_00000``.. is prompt ``i`` of the
JSON list in the metadata key ``prompts``, each (77, D) (D = 4096 for IF's T5-XXL); metadata
``model`` holds the model id/folder and ``format`` = ``fundiff.embeddings/1``. No pickle.
The course's ``prompt_embeds_dict.pth`` (a torch dict of (1, 77, 4096)) loads as well.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
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
EMBEDDINGS_FORMAT = "fundiff.embeddings/1"

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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


def _is_local(model: str) -> bool:
    """A local folder (existing, or clearly a path) rather than a hub id."""
    p = Path(model).expanduser()
    return p.exists() or model.startswith((".", "/", "~")) or not _REPO_ID.match(model)


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


def preflight(model: str, *, key: str = STAGE1_KEY) -> str:
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

        hf_hub_download(repo_id=model, filename="model_index.json")
    except _access_errors() as err:
        raise FundiffError(_remedy(model, key, err)) from None
    return "hub"


def _has_variant_files(folder: Path, variant: str) -> bool:
    return any(folder.glob(f"*/*.{variant}.*"))


def _load_pipeline(
    model: str,
    *,
    key: str,
    device: str | torch.device,
    dtype: str | torch.dtype,
    variant: str | None,
    cpu_offload: bool,
    **components: object,
):
    """``DiffusionPipeline.from_pretrained`` with clear errors; placed on the best device."""
    from diffusers import DiffusionPipeline

    kind = preflight(model, key=key)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    dt = resolve_dtype(dtype, dev)
    candidates: list[str | None]
    if variant == "auto":
        want = "fp16" if (dev.type == "cuda" and dt == torch.float16) else None
        if want and kind == "local" and not _has_variant_files(Path(model).expanduser(), want):
            want = None
        candidates = [want, None] if want else [None]
    else:
        candidates = [variant or None]
    last: BaseException | None = None
    for var in candidates:
        try:
            pipe = DiffusionPipeline.from_pretrained(model, dtype=dt, variant=var, **components)
            break
        except _access_errors() as err:
            last = err
    else:
        raise FundiffError(_remedy(model, key, last)) from None
    if cpu_offload and dev.type == "cuda":
        pipe.enable_model_cpu_offload(device=dev)
    else:
        pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


_NO_EXTRAS = dict(safety_checker=None, feature_extractor=None, watermarker=None)


def load_stage1(
    model: str = DEFAULT_STAGE1,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    variant: str | None = "auto",
    cpu_offload: bool = False,
    key: str = STAGE1_KEY,
):
    """Load IF stage I (64 px) without its T5 encoder (``text_encoder=None``).

    Args:
        model: hub id or local ``save_pretrained`` folder.
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda:1"``...
        dtype: ``"auto"`` (fp16 on cuda, fp32 on cpu), ``fp32``, ``fp16`` or ``bf16``.
        variant: ``"auto"`` uses ``"fp16"`` weight files on cuda+fp16 where they exist, else
            the default files; ``None`` never; a string is passed on.
        cpu_offload: ``enable_model_cpu_offload`` (cuda only); the denoiser then uses
            ``pipe._execution_device``.
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
        cpu_offload=cpu_offload,
        text_encoder=None,
        **_NO_EXTRAS,
    )


def load_stage2(
    model: str = DEFAULT_STAGE2,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    variant: str | None = "auto",
    cpu_offload: bool = False,
    key: str = STAGE2_KEY,
):
    """Load IF stage II (64 -> 256 px ``IFSuperResolutionPipeline``) without T5; see load_stage1."""
    return _load_pipeline(
        model,
        key=key,
        device=device,
        dtype=dtype,
        variant=variant,
        cpu_offload=cpu_offload,
        text_encoder=None,
        **_NO_EXTRAS,
    )


# --------------------------------------------------------------------------- embeddings
def encode_prompts(
    model: str,
    prompts: Iterable[str],
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    batch_size: int = 8,
    key: str = STAGE1_KEY,
) -> dict[str, Tensor]:
    """T5-encode every prompt plus ``""`` once, with the pipeline's own ``encode_prompt``.

    Loads the pipeline WITH its text encoder and ``unet=None``, encodes with
    ``clean_caption=False``, frees it again.

    Args:
        model: hub id or local folder of the stage-I pipeline.
        prompts: prompts to encode (duplicates are encoded once; ``""`` is always added).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        dtype: ``"auto"`` (bf16 on cuda where supported, else fp32), ``fp32`` or ``bf16``.
            fp16 is refused: T5 overflows to NaN in fp16.
        batch_size: prompts per encoder call.

    Returns:
        ``{prompt: (77, D) CPU tensor}`` in the encoder's dtype (D = 4096 for IF).

    Raises:
        FundiffError: weights not accessible (see :func:`preflight`), fp16 asked for, or the
            encoder produced NaN / inf.
    """
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if dtype == "auto":
        cuda_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        dt = torch.bfloat16 if cuda_bf16 else torch.float32
    else:
        dt = resolve_dtype(dtype, dev)
    if dt == torch.float16:
        raise FundiffError(
            "T5 prompt encoding in fp16 gives NaN; use dtype fp32 or bf16 (partA.deepfloyd.encode_dtype)"
        )
    unique = list(dict.fromkeys([*(str(p) for p in prompts), ""]))
    pipe = _load_pipeline(
        model,
        key=key,
        device=dev,
        dtype=dt,
        variant=None,
        cpu_offload=False,
        unet=None,
        **_NO_EXTRAS,
    )
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
                    chunk, do_classifier_free_guidance=False, device=dev, clean_caption=False
                )
                bad = [p for p, e in zip(chunk, emb, strict=True) if not torch.isfinite(e).all()]
                if bad:
                    raise FundiffError(
                        f"T5 embeddings contain NaN/inf in {dt} for prompts {bad!r}; "
                        "encode in fp32 (or bf16)"
                    )
                for p, e in zip(chunk, emb, strict=True):
                    out[p] = e.detach().to("cpu").clone()
    finally:
        del pipe
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def save_embeddings(
    path: str | Path, embeddings: Mapping[str, Tensor], *, model: str | None = None
) -> None:
    """Write ``{prompt: (L, D) tensor}`` as one safetensors file (see the module docstring).

    The write is atomic (temporary file + rename).
    """
    from safetensors.torch import save_file

    path = Path(path)
    prompts = list(embeddings)
    tensors = {}
    for i, p in enumerate(prompts):
        e = embeddings[p]
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2:
            raise FundiffError(f"embedding for {p!r} must be (L, D), got {tuple(e.shape)}")
        tensors[f"emb_{i:05d}"] = e.detach().to("cpu").contiguous()
    meta = {"format": EMBEDDINGS_FORMAT, "prompts": json.dumps(prompts), "model": model or ""}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _read_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_embeddings(path: str | Path) -> dict[str, Tensor]:
    """Read an embeddings file: ``{prompt: (L, D) CPU tensor}``.

    Accepts this module's safetensors format and the course's ``prompt_embeds_dict.pth``
    (a torch dict of (1, 77, 4096); loaded with ``weights_only=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise FundiffError(
            f"embeddings file {str(path)!r} not found (run the prompt-encoding step)"
        )
    if path.suffix in (".pth", ".pt"):
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise FundiffError(f"cannot read embeddings file {str(path)!r}: {err}") from None
        if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
            raise FundiffError(f"{str(path)!r} is not a dict of prompt -> tensor")
        return {str(k): (v[0] if v.ndim == 3 and v.shape[0] == 1 else v) for k, v in raw.items()}
    from safetensors.torch import load_file

    try:
        meta = _read_meta(path)
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
        raise FundiffError(f"cannot read embeddings file {str(path)!r}: {err}") from None
    if meta.get("format") != EMBEDDINGS_FORMAT:
        raise FundiffError(
            f"{str(path)!r} is not a fundiff embeddings file (format {meta.get('format')!r})"
        )
    prompts = json.loads(meta["prompts"])
    return {p: tensors[f"emb_{i:05d}"] for i, p in enumerate(prompts)}


def embeddings_model(path: str | Path) -> str | None:
    """The model id/folder recorded in a safetensors embeddings file (None if unknown)."""
    path = Path(path)
    if path.suffix in (".pth", ".pt") or not path.is_file():
        return None
    return _read_meta(path).get("model") or None


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
