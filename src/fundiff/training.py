"""Training loop for the Part B objectives: resumable, deterministic, fast on CPU.

* The whole data set is ONE float tensor on the device, (N, 1, 28, 28) in [0, 1]; each epoch
  draws a seeded permutation and indexes batches from it (no DataLoader, no per-sample Python).
* One ``torch.Generator`` (seeded from ``cfg.seed``, on the device) drives the permutation and
  every noise / timestep / class-drop draw; its state is checkpointed.
* A checkpoint is written after every epoch to ``run_dir/checkpoints/`` (weights as
  safetensors, optimizer / LR scheduler / EMA / generator / counters with ``torch.save``),
  atomically (tmp file + ``os.replace``; the ``.pt`` state file is written last and marks the
  checkpoint complete). Rerunning :func:`train` with the same objective spec, config and data
  resumes from the newest checkpoint with the same *config hash* and, on CPU, ends with weights
  bit-identical to an uninterrupted run. Checkpoints with another hash are ignored, deleted and
  overwritten; an unreadable one is deleted and the previous one used (both logged to
  ``run_dir/train.log``). (Test hook: ``FUNDIFF_TEST_SIGKILL_AFTER_EPOCH``.)
* One training per ``run_dir`` at a time (an flock on ``run_dir/.lock``): a concurrent second
  one waits, then resumes. A failed write (full disk) names the file; nothing written before
  is damaged (see :mod:`fundiff.storage`).
* Speed (:mod:`fundiff.acceleration`): ``precision="auto"`` is bf16 only on devices with native
  bf16; ``compile=True`` trains through ``torch.compile``, saving the plain module's weights.
* ``run_dir/losses.csv`` (columns ``epoch,step,loss,lr``; epoch 1-based, step = 1-based global
  optimizer step) gets one row per ``log_every`` steps; on resume rows past the checkpoint are
  dropped, so the file never has duplicate steps.
* ``run_dir/snapshots/epoch_{e:03d}.safetensors`` for each epoch in ``snapshot_epochs``, and
  ``run_dir/model.safetensors`` + ``run_dir/model.json`` at the end (EMA weights when EMA is on).
  Every weights file carries the objective spec in its safetensors metadata, so
  :func:`load_model` rebuilds the model from any of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import torch
from torch import Tensor, nn

from fundiff.acceleration import autocast, compiled_unet, resolve_precision, speed_warnings
from fundiff.checkpoints import FORMAT, Checkpoints, load_model, save_weights, truncate_losses
from fundiff.diffusion import Objective
from fundiff.errors import FundiffError
from fundiff.storage import (
    folder_lock,
    naming_write_errors,
    read_losses,
    remove_stale_temporaries,
    write_json,
)
from fundiff.train_config import TrainConfig, config_hash, make_lr_scheduler

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "config_hash",
    "images_to_float",
    "save_weights",
    "load_model",
    "read_losses",
]

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel

log = logging.getLogger("fundiff.training")

KILL_ENV = "FUNDIFF_TEST_SIGKILL_AFTER_EPOCH"


@dataclass
class TrainResult:
    """What :func:`train` did. ``final_loss`` is the mean loss over the last epoch."""

    run_dir: Path
    model_path: Path
    epochs: int
    steps: int
    final_loss: float
    resumed_from_epoch: int
    train_seconds: float
    images_per_second: float
    snapshots: dict[int, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# helpers


def images_to_float(images: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (N, 28, 28) or (N, 1, 28, 28) in 0..255 -> float32 (N, 1, 28, 28) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise FundiffError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise FundiffError(f"images must be (N, 28, 28), got {tuple(images.shape)}")
    return images.to(device=device, dtype=torch.float32).div_(255.0)


def _data_fingerprint(images: Tensor, labels: Tensor | None) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _make_ema(unet: nn.Module, cfg: TrainConfig, state: dict | None) -> EMAModel | None:
    """diffusers' EMA of ``unet``'s parameters (None when off), restored from ``state``."""
    if cfg.ema_decay is None:
        return None
    from diffusers.training_utils import EMAModel  # heavy import: only when EMA is on

    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, foreach=True)
    if state is not None:
        ema.load_state_dict(state)
        ema.to(device=next(unet.parameters()).device)
    return ema


def _reinit(module: nn.Module, seed: int) -> None:
    """Deterministically re-initialise every submodule with ``reset_parameters``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def _kill_switch(epoch: int) -> None:
    """Test hook: with ``FUNDIFF_TEST_SIGKILL_AFTER_EPOCH=k`` in the environment, SIGKILL this
    process group right after epoch k's checkpoint is written (a node lost at a known point:
    the workflow's resume test uses it instead of racing a timer)."""
    if os.environ.get(KILL_ENV) == str(epoch):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _write_loss_rows(
    csv_f: IO[str], path: Path, rows: list[tuple[int, int, Tensor, float]]
) -> None:
    """Append (epoch, step, loss, lr) rows to the open ``losses.csv`` and flush it."""
    values = torch.stack([r[2] for r in rows]).float().cpu().tolist() if rows else []
    with naming_write_errors(path):
        for (epoch, step, _, lr), v in zip(rows, values, strict=True):
            csv_f.write(f"{epoch},{step},{v:.8g},{lr:.8g}\n")
        csv_f.flush()


def _log(run_dir: Path, msg: str, level: int = logging.INFO) -> None:
    log.log(level, msg)
    with naming_write_errors(run_dir / "train.log"), open(run_dir / "train.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


# ------------------------------------------------------------------------------------------
# the loop


def train(
    objective: Objective,
    images: Tensor,
    labels: Tensor | None,
    cfg: TrainConfig,
    run_dir: str | Path,
    snapshot_epochs: Iterable[int] = (),
    progress: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch_end: Callable[[int, int], None] | None = None,
    lock_timeout: float | None = None,
) -> TrainResult:
    """Train ``objective`` in place (moved to ``cfg.device``), resuming if possible.

    Args:
        objective: a :class:`fundiff.diffusion.Objective` (its UNet is trained).
        images: uint8 (N, 28, 28) in 0..255 (background 0); not modified.
        labels: int64 (N,) digits, or None (class-conditional objectives then train unconditional).
        cfg: hyperparameters.
        run_dir: output folder (created); see the module docstring for its layout.
        snapshot_epochs: 1-based epochs after which to save ``snapshots/epoch_{e:03d}.safetensors``.
        progress: tqdm bar on stderr (epoch, step, loss, images/s).
        on_step: ``f(epoch, step, loss)`` after each optimizer step (tests use it to "crash").
        on_epoch_end: ``f(epoch, step)`` after each epoch's checkpoint is written.
        lock_timeout: one training per ``run_dir`` at a time (``fundiff.storage.folder_lock``):
            a second one waits for the first (logging that it waits), at most this many
            seconds (None = as long as the first runs), then resumes from its checkpoints.

    Returns:
        :class:`TrainResult`. Threads are the caller's business (``fundiff.runtime.set_threads``).
    """
    cfg.validate()
    run_dir = Path(run_dir)

    def waiting(message: str) -> None:
        _log(run_dir, message, logging.WARNING)

    with folder_lock(run_dir, timeout=lock_timeout, on_wait=waiting):
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "snapshots"):
            remove_stale_temporaries(folder)
        return _train(
            objective,
            images,
            labels,
            cfg,
            run_dir,
            snapshot_epochs,
            progress,
            on_step,
            on_epoch_end,
        )


def _train(
    objective: Objective,
    images: Tensor,
    labels: Tensor | None,
    cfg: TrainConfig,
    run_dir: Path,
    snapshot_epochs: Iterable[int],
    progress: bool,
    on_step: Callable[[int, int, float], None] | None,
    on_epoch_end: Callable[[int, int], None] | None,
) -> TrainResult:
    """:func:`train` while holding the run folder's lock."""
    from fundiff.runtime import resolve_device

    device = resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    n = images.shape[0]
    if labels is not None and labels.shape != (n,):
        raise FundiffError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if n < 2:
        raise FundiffError(f"need at least 2 training images, got {n}")
    snapshot_epochs = sorted({int(e) for e in snapshot_epochs})

    spec = objective.spec()
    chash = config_hash(spec, cfg, _data_fingerprint(images, labels))
    ckpts = Checkpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    losses_path = run_dir / "losses.csv"

    # data: one tensor on the device
    x_all = images_to_float(images, device)
    if cfg.channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    y_all = labels.to(device=device, dtype=torch.long) if labels is not None else None
    bs = cfg.batch_size
    steps_per_epoch = math.ceil(n / bs) if n % bs != 1 else n // bs

    # model, optimizer, scheduler, EMA, generator
    objective.to(device)
    unet = objective.unet
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    # foreach: a few multi-tensor ops per step instead of ~10 per parameter (torch's default
    # off CUDA is the per-parameter loop); same arithmetic, bit-identical weights
    opt = torch.optim.Adam(unet.parameters(), lr=cfg.lr, foreach=True)
    sched, sched_unit = make_lr_scheduler(opt, cfg, steps_per_epoch)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    start_epoch, step = 0, 0
    found = ckpts.latest(report=lambda msg: _log(run_dir, msg, logging.WARNING))
    if found is not None and (found.state.get("config_hash"), found.state.get("format")) != (
        chash,
        FORMAT,
    ):
        _log(
            run_dir,
            f"checkpoint epoch {found.epoch} in {ckpts.folder} has config hash "
            f"{found.state.get('config_hash')} (format {found.state.get('format')}), this run "
            f"{chash} (format {FORMAT}): spec, config, data or fundiff changed; not resuming, "
            "deleting old checkpoints and starting fresh",
            logging.WARNING,
        )
        ckpts.clear()
        found = None
    ema: EMAModel | None = None
    if found is None:
        if cfg.init_weights:
            _reinit(unet, cfg.seed)
        losses_path.unlink(missing_ok=True)
        for stale in (run_dir / "snapshots").glob("epoch_*.safetensors"):
            stale.unlink()  # from an earlier, different run
        ema = _make_ema(unet, cfg, None)
        _log(
            run_dir,
            f"starting fresh: config hash {chash}, {n} images, {steps_per_epoch} steps/epoch",
        )
    else:
        start_epoch, state = found.epoch, found.state
        unet.load_state_dict(found.weights)
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        step = int(state["step"])
        ema = _make_ema(unet, cfg, state["ema"])
        truncate_losses(losses_path, step)
        _log(
            run_dir,
            f"resuming from checkpoint epoch {start_epoch} (step {step}), config hash {chash}",
        )

    def model_weights() -> dict[str, Tensor]:
        weights = unet.state_dict()
        if ema is not None:
            names = [name for name, _ in unet.named_parameters()]
            weights.update(zip(names, ema.shadow_params, strict=True))
        return weights

    snapshots: dict[int, Path] = {}
    for e in snapshot_epochs:
        p = run_dir / "snapshots" / f"epoch_{e:03d}.safetensors"
        if e <= start_epoch:
            if p.exists():
                snapshots[e] = p
            else:
                _log(
                    run_dir,
                    f"snapshot epoch {e} missing but already trained past it",
                    logging.WARNING,
                )

    bar = None
    if progress and start_epoch < cfg.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs * steps_per_epoch,
            initial=start_epoch * steps_per_epoch,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0,
        )

    for warning in speed_warnings(cfg.precision, cfg.compile, device):
        _log(run_dir, warning, logging.WARNING)
    new_file = not losses_path.exists()
    with naming_write_errors(losses_path):
        csv_f = open(losses_path, "a", newline="")
        if new_file:
            csv_f.write("epoch,step,loss,lr\n")
            csv_f.flush()
    unet.train()
    t_start = time.perf_counter()
    images_seen = 0
    last_epoch_losses: list[float] = []
    try:
        with compiled_unet(objective, cfg.compile):
            for epoch in range(start_epoch + 1, cfg.epochs + 1):
                perm = torch.randperm(n, generator=gen, device=device)
                epoch_losses: list[Tensor] = []
                pending: list[tuple[int, int, Tensor, float]] = []
                for b in range(steps_per_epoch):
                    idx = perm[b * bs : (b + 1) * bs]
                    if b == steps_per_epoch - 1:
                        idx = perm[b * bs :]  # last batch may absorb a single leftover image
                    x = x_all[idx]
                    if cfg.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = y_all[idx] if y_all is not None else None
                    lr_now = opt.param_groups[0]["lr"]
                    with autocast(device, cfg.precision):
                        loss = objective.loss(x, y, gen)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
                    opt.step()
                    if sched is not None and sched_unit == "step":
                        sched.step()
                    if ema is not None:
                        ema.step(unet.parameters())
                    step += 1
                    images_seen += x.shape[0]
                    ld = loss.detach()
                    epoch_losses.append(ld)
                    if step % cfg.log_every == 0:
                        pending.append((epoch, step, ld, lr_now))
                    if len(pending) >= 50 or b == steps_per_epoch - 1:
                        _write_loss_rows(csv_f, losses_path, pending)
                        pending = []
                    if bar is not None and (step % 10 == 0 or b == steps_per_epoch - 1):
                        el = time.perf_counter() - t_start
                        bar.set_postfix(
                            epoch=f"{epoch}/{cfg.epochs}",
                            loss=f"{float(ld):.4f}",
                            img_s=f"{images_seen / max(el, 1e-9):.0f}",
                            refresh=False,
                        )
                    if bar is not None:
                        bar.update(1)
                    if on_step is not None:
                        on_step(epoch, step, float(ld))
                if sched is not None and sched_unit == "epoch":
                    sched.step()
                last_epoch_losses = torch.stack(epoch_losses).float().cpu().tolist()
                state = {
                    "config_hash": chash,
                    "format": FORMAT,
                    "epoch": epoch,
                    "step": step,
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "generator": gen.get_state(),
                    "epoch_mean_loss": sum(last_epoch_losses) / len(last_epoch_losses),
                }
                ckpts.save(epoch, unet.state_dict(), state, spec)
                if epoch in snapshot_epochs:
                    snapshots[epoch] = save_weights(
                        model_weights(),
                        run_dir / "snapshots" / f"epoch_{epoch:03d}.safetensors",
                        spec,
                    )
                if on_epoch_end is not None:
                    on_epoch_end(epoch, step)
                _kill_switch(epoch)
    finally:
        csv_f.close()
        if bar is not None:
            bar.close()
    train_seconds = time.perf_counter() - t_start

    if not last_epoch_losses:  # already complete: report the stored last-epoch loss
        final_loss = float(found.state["epoch_mean_loss"])
    else:
        final_loss = sum(last_epoch_losses) / len(last_epoch_losses)

    model_path = save_weights(model_weights(), run_dir / "model.safetensors", spec)
    meta = {
        "spec": spec,
        "train_config": dataclasses.asdict(cfg),
        "config_hash": chash,
        "epochs": cfg.epochs,
        "steps": step,
        "weights": "ema" if ema is not None else "raw",
        "final_loss": final_loss,
    }
    write_json(run_dir / "model.json", meta)
    ips = images_seen / train_seconds if images_seen else 0.0
    _log(run_dir, f"done: {step} steps, final epoch loss {final_loss:.5g}, {ips:.0f} images/s")
    return TrainResult(
        run_dir=run_dir,
        model_path=model_path,
        epochs=cfg.epochs,
        steps=step,
        final_loss=final_loss,
        resumed_from_epoch=start_epoch,
        train_seconds=train_seconds,
        images_per_second=ips,
        snapshots=snapshots,
    )
