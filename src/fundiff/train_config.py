"""Hyperparameters of a Part B training run, their hash, and the learning-rate schedules.

* :class:`TrainConfig` validates itself (one error naming the key).
* :func:`config_hash` identifies a run by (objective spec, math-relevant config, data): a
  checkpoint is resumed only by a run with the same hash.
* :func:`make_lr_scheduler` maps ``lr_schedule`` onto ``torch.optim.lr_scheduler``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fundiff.errors import FundiffError

__all__ = [
    "LR_SCHEDULES",
    "PRECISIONS",
    "TrainConfig",
    "config_hash",
    "make_lr_scheduler",
    "precision_settings",
]

LR_SCHEDULES = ("exponential", "constant", "warmup_constant", "warmup_cosine")
PRECISIONS = ("fp32", "bf16", "auto")
# TrainConfig fields that do not change the math of a run (excluded from the config hash)
_HASH_EXCLUDED = ("log_every", "keep_checkpoints")


@dataclass
class TrainConfig:
    """Training hyperparameters; the course presets are in the workflow config.

    Attributes:
        epochs: passes over the data.
        batch_size: images per optimizer step (the last, smaller batch of an epoch is kept,
            like a DataLoader without ``drop_last``, unless it has a single image: BatchNorm
            cannot train on one).
        lr: Adam learning rate (peak lr for warm-up schedules).
        lr_schedule: "exponential" = course ``ExponentialLR(gamma=lr_decay ** (1/epochs))``
            stepped once per epoch; "constant"; "warmup_constant" = linear warm-up over
            ``warmup_steps`` then constant; "warmup_cosine" = linear warm-up then cosine decay
            to ``lr * min_lr_factor`` at the last step (both stepped per optimizer step).
            For the flow-matching "without the LR scheduler" retrain the recommended
            compensation is ``constant`` with a 10x lower lr (1e-3 instead of 1e-2), EMA 0.999
            and ``grad_clip=1.0``.
        lr_decay: final lr factor of the exponential schedule (course: 0.1).
        warmup_steps: optimizer steps of linear warm-up (warmup_* schedules).
        min_lr_factor: final lr factor of "warmup_cosine".
        ema_decay: EMA of the parameters with this decay (e.g. 0.999), None = off; diffusers'
            ``EMAModel``: after optimizer step n the effective decay is
            ``min(decay, n / (9 + n))`` (0 at the first step: the average starts from the
            weights after one step). Snapshots and the final model use the EMA parameters with
            the trained model's BatchNorm statistics.
        grad_clip: clip the global gradient norm to this value, None = off.
        seed: seeds the weight initialisation and the training generator.
        precision: "fp32"; "bf16" = bf16 autocast (CPU or CUDA); "auto" = bf16 where the
            device computes it natively (CUDA with bf16, a CPU with oneDNN bf16 kernels), else
            fp32 (:func:`fundiff.acceleration.resolve_precision`; the run records and hashes
            the resolved value).
        channels_last: model and batches in channels_last memory format.
        compile: train the UNet through ``torch.compile`` (inductor). Meant for GPUs; allowed
            on CPU (logged: minutes of warm-up per batch shape for ~1.3x). Weights and
            checkpoints are those of the plain module (they load without compile). Compiled
            kernels round differently from eager ones, so it is part of the config hash.
        device: "cpu", "cuda", "cuda:1" or "auto".
        log_every: write a losses.csv row every this many steps (not part of the hash).
        keep_checkpoints: how many of the newest epoch checkpoints to keep (not in the hash).
        init_weights: re-initialise the weights from ``seed`` when starting fresh, so a run is
            fully determined by (spec, config, data). Set False to fine-tune given weights.
    """

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "exponential"
    lr_decay: float = 0.1
    warmup_steps: int = 0
    min_lr_factor: float = 0.0
    ema_decay: float | None = None
    grad_clip: float | None = None
    seed: int = 0
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    device: str = "cpu"
    log_every: int = 1
    keep_checkpoints: int = 2
    init_weights: bool = True

    def validate(self) -> None:
        """Raise FundiffError naming the offending key."""
        if self.epochs < 1:
            raise FundiffError(f"train config: epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise FundiffError(f"train config: batch_size must be >= 2, got {self.batch_size}")
        if not self.lr > 0:
            raise FundiffError(f"train config: lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise FundiffError(
                f"train config: lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if not 0 < self.lr_decay <= 1:
            raise FundiffError(f"train config: lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.precision not in PRECISIONS:
            raise FundiffError(
                f"train config: precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise FundiffError(
                f"train config: ema_decay must be in (0, 1) or null, got {self.ema_decay}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise FundiffError(f"train config: grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.log_every < 1 or self.keep_checkpoints < 1 or self.warmup_steps < 0:
            raise FundiffError(
                "train config: log_every and keep_checkpoints must be >= 1, warmup_steps >= 0"
            )


def precision_settings(precision: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig keyword arguments of the workflow's ``partB.precision`` block.

    ``{bf16: true | false | "auto", channels_last: bool, compile: bool (optional, default
    false)}`` -> ``{"precision": "bf16" | "fp32" | "auto", "channels_last", "compile"}``.
    """
    bf16 = precision["bf16"]
    modes = {True: "bf16", False: "fp32", "auto": "auto"}
    if not isinstance(bf16, bool | str) or bf16 not in modes:
        raise FundiffError(f"partB.precision.bf16 must be true, false or auto, got {bf16!r}")
    return {
        "precision": modes[bf16],
        "channels_last": bool(precision["channels_last"]),
        "compile": bool(precision.get("compile", False)),
    }


def config_hash(spec: dict[str, Any], cfg: TrainConfig, data_fingerprint: str = "") -> str:
    """16-hex hash of (objective spec, math-relevant config, data) identifying a run."""
    c = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _HASH_EXCLUDED}
    if not c["compile"]:
        del c["compile"]  # runs from before the key existed keep their hash (and checkpoints)
    blob = json.dumps({"spec": spec, "cfg": c, "data": data_fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_lr_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, str]:
    """(scheduler, "epoch" | "step") for the configured lr schedule, from torch's schedulers.

    The lr of 0-based optimizer step k: exponential ``lr * lr_decay ** (epoch / epochs)``;
    warm-up ``lr * (k + 1) / warmup_steps`` for k < warmup_steps (``LinearLR``), then ``lr``
    or the cosine from ``lr`` to ``lr * min_lr_factor`` over the remaining steps
    (``CosineAnnealingLR``).
    """
    lrs = torch.optim.lr_scheduler
    if cfg.lr_schedule == "exponential":
        return lrs.ExponentialLR(opt, gamma=cfg.lr_decay ** (1.0 / cfg.epochs)), "epoch"
    warm = cfg.warmup_steps
    if cfg.lr_schedule == "constant" or (cfg.lr_schedule == "warmup_constant" and warm == 0):
        return None, "step"
    parts: list[lrs.LRScheduler] = []
    if warm > 0:
        parts.append(lrs.LinearLR(opt, start_factor=1.0 / warm, total_iters=warm - 1))
    if cfg.lr_schedule == "warmup_cosine":
        total = cfg.epochs * steps_per_epoch
        floor = cfg.lr * cfg.min_lr_factor
        parts.append(lrs.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=floor))
    if len(parts) == 1:
        return parts[0], "step"
    return lrs.SequentialLR(opt, parts, milestones=[warm]), "step"
