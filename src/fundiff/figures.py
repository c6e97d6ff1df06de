"""Figures for the whole project (Part A and Part B): PNG grids, loss curves and GIFs.

Generic helpers: :func:`to_uint8`, :func:`tile`, :func:`image_grid` / :class:`Grid`,
:func:`wrap_label`, :func:`contact_sheet`, :func:`save_image` (from :mod:`fundiff.grids`),
:func:`save_gif`, :func:`loss_curve`. Part B figures: :func:`noising_grid`,
:func:`denoising_figure`, :func:`ood_figure`, :func:`pure_noise_figure`, :func:`sample_grid`,
:func:`trajectory_gif`.

Images are torch tensors or numpy arrays, one image per cell: (C, H, W) or (H, W) with C = 1 or
3 (numpy (H, W, C) is accepted too), values in ``value_range`` (MNIST models: (0, 1); DeepFloyd
tensors: (-1, 1)); uint8 input is taken as already 0..255. Single-channel images are drawn with a
gray colormap. Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot
global state); every function writes a PNG/GIF and returns its path. Figures are kept modest (about 1 inch = 100 px per cell).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fundiff.errors import FundiffError
from fundiff.grids import (
    Grid,
    ImageLike,
    _finish,
    contact_sheet,
    image_grid,
    save_image,
    to_uint8,
    wrap_label,
)

__all__ = [
    "to_uint8",
    "tile",
    "Grid",
    "image_grid",
    "wrap_label",
    "contact_sheet",
    "save_image",
    "save_gif",
    "loss_curve",
    "noising_grid",
    "denoising_figure",
    "ood_figure",
    "pure_noise_figure",
    "sample_grid",
    "arrange_by_class",
    "trajectory_gif",
]


def tile(batch: ImageLike, nrow: int | None = None, pad: int = 2, pad_value: float = 0.0) -> Tensor:
    """Tile a batch (B, C, H, W) into one image (C, H', W') with ``nrow`` images per row.

    ``pad_value`` is in the batch's own value range. Default ``nrow`` = ceil(sqrt(B)).
    """
    b = torch.as_tensor(batch)
    if b.ndim == 3:
        b = b[:, None]
    if b.ndim != 4:
        raise FundiffError(f"tile expects (B, C, H, W), got {tuple(b.shape)}")
    n, c, h, w = b.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncols = min(nrow, n)
    nrows = math.ceil(n / nrow)
    out = torch.full(
        (c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, dtype=b.dtype
    )
    for k in range(n):
        r, col = divmod(k, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[:, y : y + h, x : x + w] = b[k]
    return out


def save_gif(
    frames: Sequence[ImageLike],
    path: str | Path,
    duration_ms: int = 80,
    *,
    value_range: tuple[float, float] = (0.0, 1.0),
    nrow: int | None = None,
    scale: int | None = None,
    hold_last_ms: int = 0,
) -> Path:
    """Animated GIF (loops forever) from frames: each (C, H, W)/(H, W) image or a batch
    (B, C, H, W) that is tiled into a grid with ``nrow`` per row. Frames are upscaled by the
    integer ``scale`` (default: so the long side is about 480 px, at most 8x) with nearest
    neighbour. ``hold_last_ms`` extends the last frame."""
    if not frames:
        raise FundiffError("save_gif needs at least one frame")
    arrays = []
    for f in frames:
        if (isinstance(f, Tensor | np.ndarray)) and f.ndim == 4 and f.shape[0] > 1:
            f = tile(torch.as_tensor(f), nrow=nrow, pad_value=value_range[0])
        arrays.append(to_uint8(f, value_range))
    h, w = arrays[0].shape[:2]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise FundiffError("all GIF frames must have the same shape")
    s = scale or max(1, min(8, round(480 / max(h, w))))
    pil = [Image.fromarray(a).resize((w * s, h * s), Image.NEAREST) for a in arrays]
    durations = [duration_ms] * len(pil)
    durations[-1] += hold_last_ms
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=durations, loop=0)
    return path


def _read_loss_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, losses) of a ``losses.csv`` (:func:`fundiff.storage.read_losses`)."""
    from fundiff.storage import read_losses

    rows = read_losses(path)
    if not rows:
        raise FundiffError(f"{path}: no loss rows")
    return np.asarray([r["step"] for r in rows]), np.asarray([r["loss"] for r in rows])


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (same length; the first points average what exists)."""
    if window <= 1 or len(y) < 2:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_curve(
    csv_paths: str | Path | Sequence[str | Path],
    labels: Sequence[str] | None = None,
    path: str | Path | None = None,
    *,
    title: str = "Training loss",
    window: int | None = None,
) -> Path:
    """Loss vs optimizer step on a log y axis from one or more ``losses.csv`` files: the raw
    per-step loss faint, a moving average (``window`` steps, default ~2% of the run) bold."""
    if path is None:
        raise FundiffError("loss_curve needs an output path")
    paths = [Path(csv_paths)] if isinstance(csv_paths, str | Path) else [Path(p) for p in csv_paths]
    if labels is not None and len(labels) != len(paths):
        raise FundiffError(f"{len(labels)} labels for {len(paths)} loss files")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for k, p in enumerate(paths):
        steps, loss = _read_loss_csv(p)
        color = f"C{k}"
        label = labels[k] if labels is not None else p.parent.name
        ax.plot(steps, loss, color=color, alpha=0.25, linewidth=0.6)
        win = window or max(1, len(loss) // 50)
        ax.plot(steps, _smooth(loss, win), color=color, linewidth=1.6, label=f"{label} (avg {win})")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (MSE)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path)


def _batch(x: ImageLike) -> list[ImageLike]:
    return [x[i] for i in range(len(x))]


def noising_grid(
    images: Tensor,
    sigmas: Sequence[float],
    *,
    generator: torch.Generator,
    path: str | Path,
    title: str = "Noising z = x + sigma * eps",
) -> Path:
    """Rows = digits (K, 1, 28, 28) in [0, 1], columns = ``x + sigma eps`` per sigma (clipped
    to [0, 1] for display). One eps per digit is shared across the sigmas."""
    eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    rows = [[(images[k] + s * eps[k]).clamp(0, 1) for s in sigmas] for k in range(len(images))]
    return image_grid(
        rows,
        path=path,
        col_labels=[f"σ={s:g}" for s in sigmas],
        row_labels=[f"digit {k + 1}" for k in range(len(images))],
        title=title,
    )


def denoising_figure(
    clean: Tensor,
    noisy: Tensor,
    denoised: Tensor,
    *,
    path: str | Path,
    title: str = "Single-step denoising",
    row_labels: Sequence[str] = ("input", "noisy", "output"),
) -> Path:
    """Three rows (input / noisy / output) of (N, 1, 28, 28) batches; clipped to [0, 1]."""
    if not len(clean) == len(noisy) == len(denoised):
        raise FundiffError("clean, noisy and denoised must have the same batch size")
    rows = [_batch(t.clamp(0, 1)) for t in (clean, noisy, denoised)]
    return image_grid(rows, path=path, row_labels=list(row_labels), title=title)


def ood_figure(
    noisy: Tensor,
    denoised: Tensor,
    sigmas: Sequence[float],
    *,
    path: str | Path,
    title: str = "Out-of-distribution noise levels",
) -> Path:
    """Two rows: one digit noised at each sigma, and the denoiser's output; (S, 1, 28, 28)."""
    if not len(noisy) == len(denoised) == len(sigmas):
        raise FundiffError("noisy, denoised and sigmas must have the same length")
    rows = [_batch(noisy.clamp(0, 1)), _batch(denoised.clamp(0, 1))]
    return image_grid(
        rows,
        path=path,
        row_labels=["noisy", "denoised"],
        col_labels=[f"σ={s:g}" for s in sigmas],
        title=title,
    )


def pure_noise_figure(
    outputs: Tensor,
    mean_image: Tensor,
    *,
    path: str | Path,
    title: str = "Denoising pure noise",
) -> Path:
    """Row 1: denoiser outputs for pure-noise inputs (N, 1, 28, 28); row 2: the training-set
    mean image (1, 28, 28) for comparison (the MSE optimum)."""
    rows = [
        _batch(outputs.clamp(0, 1)),
        [mean_image.reshape(1, *mean_image.shape[-2:]).clamp(0, 1)],
    ]
    return image_grid(rows, path=path, row_labels=["outputs", "train mean"], title=title)


def arrange_by_class(
    samples: Tensor, labels: Tensor | Sequence[int], rows: int = 4, num_classes: int = 10
) -> list[list[Tensor | None]]:
    """``grid[r][d]`` = the r-th sample (in order) requested as digit d, None if too few."""
    lab = torch.as_tensor(labels).reshape(-1).cpu()
    if len(lab) != len(samples):
        raise FundiffError(f"{len(samples)} samples but {len(lab)} labels")
    cols = [torch.nonzero(lab == d).flatten()[:rows].tolist() for d in range(num_classes)]
    return [
        [samples[cols[d][r]] if r < len(cols[d]) else None for d in range(num_classes)]
        for r in range(rows)
    ]


def sample_grid(
    samples: Tensor,
    labels: Tensor | Sequence[int] | None,
    *,
    path: str | Path,
    title: str = "Samples",
    rows: int = 4,
    num_classes: int = 10,
) -> Path:
    """Generated digits (N, 1, 28, 28) in [0, 1]: with labels, column d shows the first ``rows``
    samples requested as digit d (course 4 x 10 grid); without (or all -1), fill row-major."""
    lab = None if labels is None else torch.as_tensor(labels).reshape(-1).cpu()
    if lab is not None and len(lab) != len(samples):
        raise FundiffError(f"{len(samples)} samples but {len(lab)} labels")
    if lab is None or bool((lab < 0).all()):
        ncols = max(1, math.ceil(len(samples) / rows))
        grid = [list(samples[r * ncols : (r + 1) * ncols]) for r in range(rows)]
        grid = [g for g in grid if g]
        return image_grid(grid, path=path, title=title)
    grid = arrange_by_class(samples, lab, rows, num_classes)
    return image_grid(grid, path=path, col_labels=[str(d) for d in range(num_classes)], title=title)


def trajectory_gif(
    trajectory: Sequence[Tensor],
    path: str | Path,
    *,
    nrow: int = 10,
    duration_ms: int = 80,
    hold_last_ms: int = 1500,
) -> Path:
    """GIF of a sampling run: each frame (N, 1, 28, 28) in [0, 1] tiled ``nrow`` per row."""
    frames = [tile(f.clamp(0, 1), nrow=nrow) for f in trajectory]
    return save_gif(frames, path, duration_ms, hold_last_ms=hold_last_ms)
