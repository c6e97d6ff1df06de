"""T5 prompt embeddings of the DeepFloyd jobs: one encoder load per run, one file per prompt.

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
from typing import Any

from fundiff.errors import FundiffError

#: metadata key of a per-prompt file: the encoder identity that made it
IDENTITY = "encoder_identity"


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
            deepfloyd.save_embeddings(_cached(folder, p), {p: encoded[p]}, model=encoder["model"])
    table = {}
    for p in wanted:
        table.update(deepfloyd.load_embeddings(_cached(folder, p)))
    deepfloyd.save_embeddings(batch, table, model=encoder["model"])
    return missing


def extract_prompt(batch: str | Path, prompt: str, out: str | Path, *, identity: str = "") -> None:
    """Write ``prompt``'s embedding from the ``batch`` file to its own file ``out``.

    ``identity`` (:func:`fundiff.if_settings.encoder_identity`) is recorded in the file, for
    :func:`is_current`.
    """
    from fundiff import deepfloyd

    table = deepfloyd.load_embeddings(batch)
    if prompt not in table:
        raise FundiffError(
            f"prompt {prompt!r} is not in {str(batch)!r}; rerun the encoding job "
            "(snakemake --forcerun encode_prompts)"
        )
    model = deepfloyd.embeddings_model(batch)
    deepfloyd.save_embeddings(out, {prompt: table[prompt]}, model=model, extra={IDENTITY: identity})


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
