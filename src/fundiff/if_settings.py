"""DeepFloyd IF job settings: what each job loads, with which dtype/device/offload, and checks.

Light on purpose (no torch import): ``rules/prompts.smk`` calls it while Snakemake parses the
workflow, to validate the ``partA.deepfloyd`` settings before any job and to key the prompt
embeddings on the text encoder that made them.

Config keys (``partA.deepfloyd``)::

    dtype: auto | float32 | float16 | bfloat16     # the UNets (auto: fp16 on cuda, fp32 on cpu)
    variant: auto | fp16 | none                     # weight files of the UNets
    offload: none | model | sequential              # diffusers' CPU offload, every pipeline
    text_encoder:
      model: null        # hub id or folder holding the T5 (null = stage1)
      revision: null     # hub branch/tag/commit (null = main)
      dtype: auto        # auto: fp16 on cuda, fp32 on cpu (NaN-checked; bfloat16/float32 too)
      variant: auto      # auto: the fp16 weight files when loading in fp16
      device: auto       # auto = the global `device`; cpu encodes on the CPU (no GPU job)
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fundiff.errors import FundiffError

PREFIX = "partA.deepfloyd"
OFFLOADS = ("none", "model", "sequential")
#: sub-folders of a pipeline folder that decide its prompt embeddings
ENCODER_PARTS = ("text_encoder", "tokenizer")
#: files at most this big are content-hashed; bigger ones by name, size and mtime
SMALL_FILE = 1 << 20
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_local(model: str) -> bool:
    """A local folder (existing, or clearly a path) rather than a hub id."""
    return (
        Path(model).expanduser().exists()
        or model.startswith((".", "/", "~"))
        or not _HUB_ID.match(model)
    )


def has_accelerate() -> bool:
    """Whether ``accelerate`` (needed by diffusers' CPU offload) is importable."""
    return importlib.util.find_spec("accelerate") is not None


def text_encoder_settings(bcfg: Mapping[str, Any], device: str) -> dict[str, Any]:
    """How the embedding job loads T5: model, key, revision, dtype, variant, device, offload.

    Args:
        bcfg: the validated ``partA.deepfloyd`` section.
        device: the global ``device`` (used when ``text_encoder.device`` is ``auto``).
    """
    te = bcfg["text_encoder"]
    return {
        "model": te["model"] or bcfg["stage1"],
        "key": f"{PREFIX}.text_encoder.model" if te["model"] else f"{PREFIX}.stage1",
        "revision": te["revision"],
        "dtype": te["dtype"],
        "variant": te["variant"],
        "device": device if te["device"] == "auto" else te["device"],
        "offload": bcfg["offload"],
    }


def encoder_uses_gpu(settings: Mapping[str, Any]) -> bool:
    """False when the embedding job is set to run on the CPU (then it requests no GPU)."""
    return settings["device"] != "cpu"


def check_settings(config: Mapping[str, Any]) -> None:
    """Checks of ``partA.deepfloyd`` a schema cannot express (enabled backend only).

    Raises:
        FundiffError: one line naming the key: float16 on an explicit CPU device (UNets or
            T5), or CPU offload asked for without ``accelerate`` installed. (A missing local
            model folder is reported by the job that loads it, naming its key, since a folder
            may be built after the plan, e.g. ``python -m fundiff.tiny_if``.)
    """
    part_a = config.get("partA", {})
    bcfg = part_a.get("deepfloyd", {})
    if not (part_a.get("enabled") and bcfg.get("enabled")):
        return
    device = config.get("device", "auto")
    te = text_encoder_settings(bcfg, device)
    for key, dtype, dev in (
        (f"{PREFIX}.dtype", bcfg["dtype"], device),
        (f"{PREFIX}.text_encoder.dtype", te["dtype"], te["device"]),
    ):
        if dtype == "float16" and dev == "cpu":
            raise FundiffError(cpu_fp16_message(key))
    if bcfg["offload"] != "none" and not has_accelerate():
        raise FundiffError(no_accelerate_message())


def cpu_fp16_message(key: str) -> str:
    return (
        f"config key {key}: float16 on the CPU is not supported (slow, and T5 overflows); "
        "use float32 or bfloat16 there, or a cuda device"
    )


def no_accelerate_message() -> str:
    return (
        f"config key {PREFIX}.offload: CPU offload needs the `accelerate` package "
        "(pip install accelerate), or set offload: none"
    )


# --------------------------------------------------------------------------- fingerprints
def _hash_file(h: Any, path: Path, rel: str) -> None:
    st = path.stat()
    h.update(rel.encode() + b"\0")
    if st.st_size <= SMALL_FILE:
        h.update(path.read_bytes())
    else:
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())


def _hub_commit(model: str, revision: str) -> str | None:
    """The commit ``revision`` resolves to in the local hub cache (None if not cached yet)."""
    if _COMMIT.match(revision):
        return revision
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        return None
    ref = Path(constants.HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def model_fingerprint(model: str, revision: str | None = None, *, resolve: bool = False) -> str:
    """What identifies the text encoder of ``model``, for keying its prompt embeddings.

    A local folder: a hash of ``model_index.json`` and every file under ``text_encoder/`` and
    ``tokenizer/`` (content for files up to 1 MiB, else name + size + mtime), so a rebuilt or
    replaced folder never serves stale embeddings. A hub id: ``id@revision``, plus with
    ``resolve`` the commit the revision points to in the local hub cache (when known).
    """
    model = str(model)
    if is_local(model):
        root = Path(model).expanduser()
        h = hashlib.sha256()
        files = [root / "model_index.json"]
        for part in ENCODER_PARTS:
            files += sorted(p for p in (root / part).rglob("*") if p.is_file())
        for f in files:
            if f.is_file():
                _hash_file(h, f, f.relative_to(root).as_posix())
        return f"local:{h.hexdigest()[:20]}"
    rev = revision or "main"
    commit = _hub_commit(model, rev) if resolve else None
    return f"hub:{model}@{rev}" + (f":{commit}" if commit and commit != rev else "")


def encoder_identity(settings: Mapping[str, Any]) -> str:
    """The settings that decide embedding values: fingerprint, dtype, variant (not device).

    Used as a Snakemake param, so changing the encoder reruns the embedding jobs and, through
    the embedding files, the figures that use them.
    """
    fp = model_fingerprint(settings["model"], settings.get("revision"))
    return f"{fp}|dtype={settings['dtype']}|variant={settings['variant']}"
