"""T5 prompt embeddings of the DeepFloyd jobs: the file format, one encoder load per run, one
file per prompt.

Embeddings file format: one safetensors file; tensor ``emb_00000``.. is prompt ``i`` of the
JSON list in the metadata key ``prompts``, each (77, D) (D = 4096 for IF's T5-XXL); metadata
``model`` holds the model id/folder and ``format`` = ``fundiff.embeddings/1``. No pickle.
The course's ``prompt_embeds_dict.pth`` (a torch dict of (1, 77, 4096)) loads as well.

The workflow (``rules/prompts.smk``) does it in two steps:

1. :func:`encode_all` (rule ``encode_prompts``, ONE job, the only one that loads T5): every
   configured prompt's embedding into one batch file. Prompts already in the cache are not
   encoded again, so editing one prompt encodes exactly that prompt, and T5 is loaded only
   when something is missing (once, for all of it).
2. :func:`extract_prompt` (rule ``embed_prompt``, per prompt, no model): the prompt's own
   small file, which the sampling jobs read. Only a new or changed prompt gets a new file, so
   only the figures using it rerun.

The cache (``results/partA/deepfloyd/prompt_cache/<key>/``) is keyed by what decides the
values: the encoder's fingerprint (hub id + revision and its resolved commit, or a hash of a
local folder's ``model_index.json``, ``text_encoder/`` and ``tokenizer/`` files, see
:func:`fundiff.if_settings.model_fingerprint`), the dtype and the weight variant. A rebuilt
local folder therefore never serves stale embeddings.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fundiff.errors import FundiffError

if TYPE_CHECKING:  # torch is imported where used: the workflow imports this while planning
    from torch import Tensor

#: metadata key of a per-prompt file: the encoder identity that made it
IDENTITY = "encoder_identity"
EMBEDDINGS_FORMAT = "fundiff.embeddings/1"


# --------------------------------------------------------------------------- the file format
def save_embeddings(
    path: str | Path,
    embeddings: Mapping[str, Tensor],
    *,
    model: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write ``{prompt: (L, D) tensor}`` as one safetensors file (see the module docstring).

    ``extra`` adds string metadata. The write is atomic (:func:`fundiff.storage.save_safetensors`).
    """
    from fundiff.storage import save_safetensors

    prompts = list(embeddings)
    tensors = {}
    for i, p in enumerate(prompts):
        e = embeddings[p]
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2:
            raise FundiffError(f"embedding for {p!r} must be (L, D), got {tuple(e.shape)}")
        tensors[f"emb_{i:05d}"] = e
    meta = {**(extra or {}), "format": EMBEDDINGS_FORMAT, "prompts": json.dumps(prompts)}
    meta["model"] = model or ""
    save_safetensors(tensors, path, metadata=meta)


def _read_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_embeddings(path: str | Path) -> dict[str, Tensor]:
    """Read an embeddings file: ``{prompt: (L, D) CPU tensor}``.

    Accepts this module's safetensors format and the course's ``prompt_embeds_dict.pth``
    (a torch dict of (1, 77, 4096); loaded with ``weights_only=True``).
    """
    import torch

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
        if not isinstance(raw, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in raw.values()
        ):
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


# --------------------------------------------------------------------------- encoding


def cache_folder(cache_dir: str | Path, encoder: Mapping[str, Any]) -> Path:
    """The cache folder of one text encoder setting (see the module docstring).

    Resolves ``auto`` device/dtype here (at job time) and fingerprints the model; a hub model
    is preflighted first, so its revision resolves to a commit in the local hub cache.
    """
    from fundiff import deepfloyd
    from fundiff.if_settings import model_fingerprint
    from fundiff.runtime import resolve_device

    deepfloyd.preflight(encoder["model"], key=encoder["key"], revision=encoder.get("revision"))
    dtype = deepfloyd.resolve_dtype(encoder["dtype"], resolve_device(encoder["device"]))
    fields = {
        "model": str(encoder["model"]),
        "fingerprint": model_fingerprint(encoder["model"], encoder.get("revision"), resolve=True),
        "dtype": str(dtype).removeprefix("torch."),
        "variant": encoder["variant"],
    }
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(fields, indent=2))
    return folder


def _cached(folder: Path, prompt: str) -> Path:
    return folder / f"{hashlib.sha256(prompt.encode()).hexdigest()[:24]}.safetensors"


def encode_all(
    prompts: Iterable[str],
    batch: str | Path,
    *,
    encoder: Mapping[str, Any],
    cache_dir: str | Path,
) -> list[str]:
    """Write every prompt's (77, D) embedding (and ``""``'s) to the one file ``batch``.

    Args:
        prompts: every prompt of the configuration.
        batch: output safetensors file (:func:`fundiff.deepfloyd.save_embeddings` format).
        encoder: from :func:`fundiff.if_settings.text_encoder_settings` (model, key,
            revision, dtype, variant, device, offload).
        cache_dir: root of the embedding cache.

    Returns:
        The prompts encoded by this call (T5 was loaded once if non-empty, else not at all).
    """
    from fundiff import deepfloyd
    from fundiff.runtime import resolve_device

    wanted = list(dict.fromkeys([*(str(p) for p in prompts), ""]))
    folder = cache_folder(cache_dir, encoder)
    missing = [p for p in wanted if not _cached(folder, p).is_file()]
    if missing:
        encoded = deepfloyd.encode_prompts(
            encoder["model"],
            missing,
            device=resolve_device(encoder["device"]),
            dtype=encoder["dtype"],
            variant=encoder["variant"],
            offload=encoder["offload"],
            revision=encoder.get("revision"),
            key=encoder["key"],
            with_empty=False,  # "" is in ``wanted``: encoded only when missing like the rest
        )
        for p in missing:
            save_embeddings(_cached(folder, p), {p: encoded[p]}, model=encoder["model"])
    table = {}
    for p in wanted:
        table.update(load_embeddings(_cached(folder, p)))
    save_embeddings(batch, table, model=encoder["model"])
    return missing


def extract_prompt(batch: str | Path, prompt: str, out: str | Path, *, identity: str = "") -> None:
    """Write ``prompt``'s embedding from the ``batch`` file to its own file ``out``.

    ``identity`` (:func:`fundiff.if_settings.encoder_identity`) is recorded in the file, for
    :func:`is_current`.
    """

    table = load_embeddings(batch)
    if prompt not in table:
        raise FundiffError(
            f"prompt {prompt!r} is not in {str(batch)!r}; rerun the encoding job "
            "(snakemake --forcerun encode_prompts)"
        )
    model = embeddings_model(batch)
    save_embeddings(out, {prompt: table[prompt]}, model=model, extra={IDENTITY: identity})


def is_current(path: str | Path, identity: str) -> bool:
    """Whether the per-prompt file ``path`` exists and was made by the encoder ``identity``.

    Reads only the safetensors header (no torch), so the workflow can ask while it plans.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return False
    return header.get("__metadata__", {}).get(IDENTITY) == identity
