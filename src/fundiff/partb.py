"""Part B deliverables: from a config run spec to objectives, training and figures.

A *run spec* is one entry of ``partB.runs`` in the config (objective, conditioning, hidden,
batch_size, epochs, lr, ...; see the schema). This module maps it onto
:mod:`fundiff.unets` / :mod:`fundiff.diffusion` / :mod:`fundiff.training` and holds the
recipes behind each Part B figure, so the workflow's scripts stay thin.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fundiff import figures
from fundiff.config import figure_epochs
from fundiff.data import MnistSplits
from fundiff.diffusion import Objective, build_objective
from fundiff.errors import FundiffError
from fundiff.metrics import Judged
from fundiff.runtime import seed_generator
from fundiff.storage import copy_atomic
from fundiff.train_config import precision_settings
from fundiff.training import TrainConfig, TrainResult, load_model, train

Spec = Mapping[str, Any]


def objective_spec(spec: Spec) -> dict[str, Any]:
    """The :meth:`fundiff.diffusion.Objective.spec` of a config run spec (fresh weights).

    DDPM uses additive time injection, flow matching multiplicative (course FA24 / FA25).
    """
    d, objective = spec["hidden"], spec["objective"]
    if objective in ("single_step", "pure_noise"):
        unet = {"class": "UnconditionalUNet", "kwargs": {"in_channels": 1, "num_hiddens": d}}
        kwargs = {"sigma": spec["sigma"], "pure_noise": objective == "pure_noise"}
        return {"objective": "SingleStepDenoising", "kwargs": kwargs, "unet": unet}
    if objective not in ("ddpm", "fm"):
        raise FundiffError(f"unknown objective {objective!r}")
    unet_kwargs: dict[str, Any] = {"in_channels": 1, "num_hiddens": d}
    if spec["conditioning"] == "class":
        unet_kwargs["num_classes"] = 10
    unet_kwargs["injection"] = "add" if objective == "ddpm" else "mul"
    unet_class = (
        "ClassConditionalUNet" if spec["conditioning"] == "class" else "TimeConditionalUNet"
    )
    unet = {"class": unet_class, "kwargs": unet_kwargs}
    if objective == "ddpm":
        kwargs = {
            "T": spec["T"],
            "betas": [spec["beta_start"], spec["beta_end"]],
            "p_uncond": spec["p_uncond"],
        }
        return {"objective": "DDPM", "kwargs": kwargs, "unet": unet}
    kwargs = {"num_steps": spec["sample_steps"], "p_uncond": spec["p_uncond"]}
    return {"objective": "FlowMatching", "kwargs": kwargs, "unet": unet}


def train_config(spec: Spec, precision: Mapping[str, Any], seed: int, device: str) -> TrainConfig:
    """TrainConfig of a run spec (constant lr with warm-up becomes ``warmup_constant``)."""
    schedule = spec["lr_schedule"]
    if schedule == "constant" and spec["warmup_steps"] > 0:
        schedule = "warmup_constant"
    return TrainConfig(
        epochs=spec["epochs"],
        batch_size=spec["batch_size"],
        lr=spec["lr"],
        lr_schedule=schedule,
        lr_decay=spec["lr_final"],
        warmup_steps=spec["warmup_steps"],
        ema_decay=spec["ema"],
        grad_clip=spec["grad_clip"],
        seed=seed,
        device=device,
        **precision_settings(precision),
    )


def train_run(
    spec: Spec,
    images: Tensor,
    labels: Tensor,
    *,
    precision: Mapping[str, Any],
    seed: int,
    device: str,
    work_dir: str | Path,
    model_out: str | Path,
    losses_out: str | Path,
    snapshots_out: str | Path,
) -> TrainResult:
    """Train (or resume) a run in ``work_dir``, then publish model, losses and snapshots.

    ``work_dir`` holds the checkpoints and is not a workflow output, so Snakemake never
    deletes it: a killed job rerun resumes there. The published files are copies.
    """
    objective = build_objective(objective_spec(spec))
    cfg = train_config(spec, precision, seed, device)
    epochs = figure_epochs(spec)
    result = train(objective, images, labels, cfg, work_dir, snapshot_epochs=epochs)
    copy_atomic(result.model_path, model_out)
    copy_atomic(Path(result.model_path).with_suffix(".json"), Path(model_out).with_suffix(".json"))
    copy_atomic(Path(work_dir) / "losses.csv", losses_out)
    snap_dir = Path(snapshots_out)
    snap_dir.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        src = Path(work_dir) / "snapshots" / f"epoch_{epoch:03d}.safetensors"
        if not src.exists():
            raise FundiffError(f"{src}: snapshot of epoch {epoch} missing after training")
        copy_atomic(src, snap_dir / src.name)
    return result


def snapshot(snapshots: str | Path, epoch: int, device: str = "cpu") -> Objective:
    """The model of a run after ``epoch`` from its published snapshots folder."""
    path = Path(snapshots) / f"epoch_{int(epoch):03d}.safetensors"
    return load_model(path, device=device, sampling=True)


def as_float(images_u8: Tensor) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1]."""
    return images_u8[:, None].float() / 255.0


def noising_figure(images: Tensor, sigmas: list[float], seed: int, path: str | Path) -> None:
    """B1.2: five training digits at every sigma."""
    figures.noising_grid(as_float(images[:5]), sigmas, generator=seed_generator(seed), path=path)


def denoise_test_set(
    model: Objective, test_images: Tensor, sigma: float, seed: int, epoch: int, path: str | Path
) -> dict:
    """B1.2.1: test digits, noised at sigma, denoised; returns the MSE."""
    clean = as_float(test_images[:8])
    noisy = clean + sigma * torch.randn(clean.shape, generator=seed_generator(seed))
    with torch.no_grad():
        out = model.denoise(noisy)
    figures.denoising_figure(
        clean,
        noisy,
        out,
        path=path,
        title=f"Single-step denoising at sigma {sigma}, after epoch {epoch}",
    )
    return {"epoch": epoch, "sigma": sigma, "mse": float(((out.clamp(0, 1) - clean) ** 2).mean())}


def denoise_ood(
    model: Objective, test_images: Tensor, sigmas: list[float], seed: int, path: str | Path
) -> dict:
    """B1.2.2: one test digit at every sigma, denoised by a model trained at one sigma."""
    clean = as_float(test_images[:1]).expand(len(sigmas), -1, -1, -1)
    eps = torch.randn(clean[:1].shape, generator=seed_generator(seed))
    noisy = clean + torch.tensor(sigmas, dtype=torch.float32)[:, None, None, None] * eps
    with torch.no_grad():
        out = model.denoise(noisy)
    figures.ood_figure(noisy, out, sigmas, path=path)
    mse = ((out.clamp(0, 1) - clean) ** 2).flatten(1).mean(1)
    return {"sigmas": list(sigmas), "mse": [float(m) for m in mse]}


def pure_noise_outputs(
    model: Objective, train_images: Tensor, seed: int, epoch: int, path: str | Path
) -> dict:
    """B1.2.3: outputs for pure-noise inputs beside the training-set mean image."""
    with torch.no_grad():
        out, _ = model.sample(n=9, generator=seed_generator(seed))
    mean = as_float(train_images).mean(0)
    rows = [[out[i] for i in range(9)] + [mean]]
    cell = [[f"sample {i + 1}" for i in range(9)] + ["training mean"]]
    figures.image_grid(
        rows, path=path, cell_labels=cell, title=f"Denoising pure noise, after epoch {epoch}"
    )
    dist = float(((out - mean) ** 2).mean())
    return {"epoch": epoch, "mse_to_training_mean": dist}


def sample_labels(spec: Spec, per_digit: int) -> Tensor | None:
    """Requested digits, digit-major (0,0,..,1,1,..) for class runs; None for time-only runs."""
    if spec["conditioning"] != "class":
        return None
    return torch.arange(10).repeat_interleave(per_digit)


def sample_grid(
    model: Objective, spec: Spec, seed: int, epoch: int, png: str | Path, npz: str | Path
) -> dict:
    """4 x 10 samples (a column per digit for class runs) + the samples as ``.npz``."""
    from fundiff.evaluation import write_samples

    labels = sample_labels(spec, 4)
    gen = seed_generator(seed, model.device)
    with torch.no_grad():
        if labels is None:
            x, _ = model.sample(n=40, generator=gen, steps=spec["sample_steps"])
        else:
            x, _ = model.sample(
                labels, guidance=spec["guidance"], generator=gen, steps=spec["sample_steps"]
            )
    x = x.float().cpu()
    if labels is None:
        rows = [[x[r * 10 + c] for c in range(10)] for r in range(4)]
        cols = None
    else:
        rows = [[x[c * 4 + r] for c in range(10)] for r in range(4)]
        cols = [str(c) for c in range(10)]
    kind = "class-conditioned" if labels is not None else "time-conditioned"
    figures.image_grid(
        rows, path=png, col_labels=cols, title=f"{spec['objective'].upper()} {kind}, epoch {epoch}"
    )
    write_samples(npz, x, labels)
    return {"epoch": epoch, "n": len(x)}


def sampling_gif(
    model: Objective, spec: Spec, seed: int, path: str | Path, frames: int = 30
) -> None:
    """Animated trajectory of 10 samples (one per digit for class runs)."""
    labels = sample_labels(spec, 1)
    steps = spec["sample_steps"]
    gen = seed_generator(seed, model.device)
    every = max(1, steps // frames)
    with torch.no_grad():
        if labels is None:
            _, traj = model.sample(n=10, generator=gen, steps=steps, trajectory_every=every)
        else:
            _, traj = model.sample(
                labels,
                guidance=spec["guidance"],
                generator=gen,
                steps=steps,
                trajectory_every=every,
            )
    figures.save_gif(traj, path, nrow=10, hold_last_ms=1500)


def _class_samples(
    model: Objective, labels: Tensor, guidance: float | None, seed: int, steps: int
) -> Tensor:
    """Samples (N, 1, 28, 28) in [0, 1] on the CPU for ``labels``, 250 per sampler call."""
    gen = seed_generator(seed, model.device)
    with torch.no_grad():
        return torch.cat(
            [
                model.sample(part, guidance=guidance, generator=gen, steps=steps)[0].float().cpu()
                for part in labels.split(250)
            ]
        )


def _matching_real(images: Tensor, labels: Tensor, want: Tensor, seed: int) -> Tensor:
    """Real digits with the same digit counts as ``want`` (seeded draw without replacement)."""
    gen = seed_generator(seed)
    picks = []
    for d in want.unique().tolist():
        pool = (labels == d).nonzero().flatten()
        k = int((want == d).sum())
        if len(pool) < k:
            raise FundiffError(f"only {len(pool)} real digits {d} for {k} judged samples")
        picks.append(pool[torch.randperm(len(pool), generator=gen)[:k]])
    return images[torch.cat(picks)]


def evaluate(
    model: Objective,
    spec: Spec,
    judge: Any,
    evaluation: Mapping[str, Any],
    seed: int,
    epoch: int,
    mnist: MnistSplits | None = None,
) -> Judged:
    """Judge class-conditional samples (strided sampler) with the reference CNN; with
    ``mnist``, also their Frechet distance to the real test digits in the CNN's feature space.

    Accuracy: ``evaluation["samples_per_digit"]`` x 10 samples at the run's CFG scale (as in
    the figures), with a 95% Wilson interval. Frechet distance: as many samples at
    ``evaluation["fd_guidance"]`` (default 1.0: the conditional estimate alone, one network
    pass -- the model's own p(x | digit); CFG 5 trades diversity for accuracy and worsens the
    distance, see CALIBRATION.md), or the accuracy samples when it is None or equal to the
    run's scale. ``real_floor`` is the distance of as many real training digits (same digit
    counts) to the test set: what a perfect model reaches at this n.

    Returns a :class:`fundiff.metrics.Judged`: numbers = :func:`fundiff.evaluation.judge`'s
    dict + ``accuracy_ci95``, ``epoch``, ``guidance``, ``sampler_steps`` (+
    ``frechet_distance`` {value, n, n_real, feature_dim, real_floor, guidance}); sets
    ``accuracy`` (and ``fd``): the judged images with their requested digits.
    """
    from fundiff.evaluation import judge as judge_samples
    from fundiff.metrics import frechet_to_real, quantize, wilson_interval

    labels = sample_labels(spec, evaluation["samples_per_digit"])
    if labels is None:
        raise FundiffError("evaluation needs a class-conditioned run")
    steps = min(evaluation["steps"], spec["sample_steps"])
    x = quantize(_class_samples(model, labels, spec["guidance"], seed + 1, steps))
    result = judge_samples(judge, x, labels)
    hits = sum(row[i] for i, row in enumerate(result["confusion"]))
    result.update(accuracy_ci95=list(wilson_interval(hits, result["n_scored"])))
    result.update(epoch=epoch, guidance=spec["guidance"], sampler_steps=steps)
    sets = {"accuracy": (x, labels)}
    if mnist is not None:
        g = evaluation.get("fd_guidance", 1.0)
        if g is None or g == spec["guidance"]:
            g, fd_x = spec["guidance"], x
        else:  # guidance 1 is the conditional estimate: sample it in one pass (no CFG)
            fd_x = quantize(_class_samples(model, labels, None if g == 1 else g, seed + 2, steps))
        floor = _matching_real(mnist.train_images, mnist.train_labels, labels, seed + 3)
        fd = frechet_to_real(judge, fd_x, mnist.test_images, floor_images=floor)
        result["frechet_distance"] = {**fd, "guidance": g}
        sets["fd"] = (fd_x, labels)
    return Judged(result, sets)
