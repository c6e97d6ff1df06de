"""Weights files and epoch checkpoints of a training run.

* A weights file is safetensors with the objective spec (JSON) under ``fundiff_spec`` in its
  metadata, so :func:`load_model` rebuilds the model from the file alone.
* :class:`Checkpoints`: ``epoch_{e:03d}.safetensors`` (raw weights) + ``epoch_{e:03d}.pt``
  (optimizer / scheduler / EMA / generator / counters, ``torch.save``) in one folder. Both are
  written atomically, the ``.pt`` last: it marks the checkpoint complete. The newest
  ``keep`` are kept, so an unreadable newest checkpoint falls back to the previous one.
* :func:`truncate_losses` drops ``losses.csv`` rows past a checkpoint, so a resumed run never
  logs a step twice.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fundiff.diffusion import Objective, build_objective
from fundiff.errors import FundiffError
from fundiff.storage import load_safetensors, save_safetensors, write_bytes_atomic

__all__ = [
    "SPEC_KEY",
    "FORMAT",
    "save_weights",
    "load_model",
    "Checkpoint",
    "Checkpoints",
    "truncate_losses",
]

log = logging.getLogger("fundiff.training")

SPEC_KEY = "fundiff_spec"
# what to do about an unreadable weights file of a Part B run
REBUILD_WEIGHTS = (
    "delete it and rerun snakemake with the same config: the run's train_unet job publishes it "
    "again from the checkpoints in the run's training/ folder (or retrains), e.g. "
    "`rm FILE && snakemake --cores 2`"
)
# version of the checkpoint state layout (2: diffusers EMAModel and torch LR schedulers); a
# checkpoint of another format is not resumed
FORMAT = 2


def save_weights(
    module: nn.Module | dict[str, Tensor], path: str | Path, spec: dict | None = None
) -> Path:
    """Save a state dict as safetensors atomically, with ``spec`` (JSON) in the metadata."""
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    meta = {SPEC_KEY: json.dumps(spec, sort_keys=True)} if spec is not None else None
    return save_safetensors(sd, path, meta)


def load_model(
    path: str | Path, device: torch.device | str = "cpu", *, sampling: bool = False
) -> Objective:
    """Rebuild a trained objective (with its UNet) from a weights file or run directory.

    ``path`` is ``model.safetensors``, a snapshot / checkpoint ``.safetensors``, ``model.json``
    or a run directory (-> ``model.safetensors``). The architecture comes from the safetensors
    metadata, else from ``model.json`` beside the file. Returned in eval mode on ``device``.
    ``sampling=True``: with the UNet swapped for its inference copy
    (:func:`fundiff.inference.for_sampling`: BatchNorm folded, cache-sized CPU batches), for
    jobs that only sample.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.exists():
        raise FundiffError(f"model weights not found: {path}")
    state, meta = load_safetensors(path, remedy=REBUILD_WEIGHTS.replace("FILE", str(path)))
    if SPEC_KEY in meta:
        spec = json.loads(meta[SPEC_KEY])
    else:
        js = path.with_suffix(".json")
        if not js.exists():
            raise FundiffError(f"{path} has no architecture metadata and {js} is missing")
        spec = json.loads(js.read_text())["spec"]
    model = build_objective(spec)
    missing, unexpected = model.unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FundiffError(
            f"{path}: weights do not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model = model.to(device).eval()
    if sampling:
        from fundiff.inference import for_sampling

        for_sampling(model)
    return model


def truncate_losses(path: Path, max_step: int) -> None:
    """Keep the header and rows with step <= max_step (atomic rewrite)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    if not lines:
        path.unlink()
        return
    keep = [lines[0]]
    for line in lines[1:]:
        parts = line.split(",")
        if len(parts) == 4:
            try:
                if int(parts[1]) <= max_step:
                    keep.append(line)
            except ValueError:
                pass  # a half-written line from a crash
    write_bytes_atomic(path, ("\n".join(keep) + "\n").encode())


class Checkpoint(NamedTuple):
    """A readable epoch checkpoint: its state dict (``torch.save``) and raw weights (CPU)."""

    epoch: int
    state: dict[str, Any]
    weights: dict[str, Tensor]


class Checkpoints:
    """Epoch checkpoints ``epoch_{e:03d}.safetensors`` + ``epoch_{e:03d}.pt`` in one folder."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def _epochs(self) -> list[int]:
        if not self.folder.exists():
            return []
        out = []
        for p in self.folder.glob("epoch_*.pt"):
            try:
                out.append(int(p.stem.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(out)

    def paths(self, epoch: int) -> tuple[Path, Path]:
        return self.folder / f"epoch_{epoch:03d}.safetensors", self.folder / f"epoch_{epoch:03d}.pt"

    def latest(self, report: Callable[[str], None] = log.warning) -> Checkpoint | None:
        """Newest readable checkpoint, or None (then training starts over).

        A checkpoint whose weights or state file cannot be read (truncated, corrupt, weights
        missing) is reported (naming the file), deleted, and the previous one is tried.
        """
        for e in reversed(self._epochs()):
            w, s = self.paths(e)
            try:
                state = torch.load(s, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 -- any unreadable file: fall back
                self._drop(e, s, exc, report)
                continue
            try:
                weights = load_safetensors(w)[0]
            except FundiffError as exc:
                self._drop(e, w, exc.__cause__ or exc, report)
                continue
            return Checkpoint(e, state, weights)
        return None

    def _drop(
        self, epoch: int, bad: Path, exc: BaseException, report: Callable[[str], None]
    ) -> None:
        report(
            f"checkpoint file {bad} is unreadable ({type(exc).__name__}: {exc}); deleting "
            f"the epoch-{epoch} checkpoint and trying the previous one"
        )
        for p in self.paths(epoch):
            p.unlink(missing_ok=True)

    def save(
        self, epoch: int, weights: dict[str, Tensor], state: dict[str, Any], spec: dict
    ) -> None:
        w, s = self.paths(epoch)
        save_weights(weights, w, spec)
        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes_atomic(s, buf.getvalue())  # written last: marks the checkpoint complete
        for old in self._epochs()[: -self.keep]:
            for p in self.paths(old):
                p.unlink(missing_ok=True)

    def clear(self) -> None:
        if self.folder.exists():
            for p in list(self.folder.glob("epoch_*")):
                p.unlink(missing_ok=True)
