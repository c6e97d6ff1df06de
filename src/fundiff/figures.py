"""Figures for the whole project (Part A and Part B): PNG grids, loss curves and GIFs.

Generic helpers: :func:`to_uint8`, :func:`tile`, :func:`image_grid`, :func:`contact_sheet`,
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

import csv
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fundiff.errors import FundiffError

__all__ = [
    "to_uint8",
    "tile",
    "Grid",
    "image_grid",
    "contact_sheet",
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

ImageLike = Tensor | np.ndarray
DPI = 100


def to_uint8(x: ImageLike, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """One image -> uint8 numpy, (H, W) for 1 channel or (H, W, 3) for RGB.

    Accepts (H, W), (C, H, W), (1, C, H, W) tensors/arrays and numpy (H, W, C). Float values are
    mapped linearly from ``value_range`` to 0..255 and clipped; uint8 input is passed through.
    """
    if isinstance(x, Tensor):
        a = x.detach().cpu()
        a = a.float().numpy() if a.dtype != torch.uint8 else a.numpy()
    else:
        a = np.asarray(x)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)  # CHW -> HWC
        elif a.shape[0] in (1, 3, 4) and isinstance(x, Tensor):
            a = np.moveaxis(a, 0, -1)  # tensors are always CHW
        if a.shape[-1] == 4:
            a = a[..., :3]
        if a.shape[-1] == 1:
            a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise FundiffError(f"cannot show an image of shape {np.shape(x)} (want (C,H,W) or (H,W))")
    if a.dtype == np.uint8:
        return a
    lo, hi = value_range
    scaled = (a.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


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


def _finish(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def image_grid(
    rows: Sequence[Sequence[ImageLike | None]],
    *,
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    cmap: str | None = None,
    cell_inches: float = 1.0,
) -> Path:
    """Save a PNG grid: ``rows[r][c]`` is one image (or None for an empty cell; rows may differ
    in length). Row labels go left of each row, column labels above the first row, optional
    ``cell_labels[r][c]`` under each image. ``cmap`` defaults to gray for 1-channel images."""
    if not rows or not any(len(r) for r in rows):
        raise FundiffError("image_grid needs at least one image")
    nr = len(rows)
    nc = max(len(r) for r in rows)
    if row_labels is not None and len(row_labels) != nr:
        raise FundiffError(f"{len(row_labels)} row labels for {nr} rows")
    if col_labels is not None and len(col_labels) > nc:
        raise FundiffError(f"{len(col_labels)} column labels for {nc} columns")
    extra_w = 0.6 if row_labels else 0.1
    if title:  # wrap to the figure's width (about 11 characters of 10 pt text per inch)
        title = "\n".join(textwrap.wrap(title, max(12, int((nc * cell_inches + extra_w) * 11))))
    title_lines = title.count("\n") + 1 if title else 0
    label_lines = max((str(t).count("\n") + 1 for r in cell_labels or [] for t in r), default=0)
    extra_h = (0.25 + 0.2 * title_lines if title else 0.1) + (0.25 if col_labels else 0.0)
    cell_pad = 0.15 * label_lines + (0.05 if label_lines else 0.0)
    cell_h = cell_inches + cell_pad
    fig_w, fig_h = nc * cell_inches + extra_w, nr * cell_h + extra_h
    fig = Figure(figsize=(fig_w, fig_h))
    axes = fig.subplots(nr, nc, squeeze=False)
    for r in range(nr):
        for c in range(nc):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = rows[r][c] if c < len(rows[r]) else None
            if img is None:
                ax.axis("off")
                continue
            u8 = to_uint8(img, value_range)
            ax.imshow(
                u8,
                cmap=cmap or ("gray" if u8.ndim == 2 else None),
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            for s in ax.spines.values():
                s.set_visible(False)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8)
            if r == 0 and col_labels is not None and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
            if cell_labels is not None and r < len(cell_labels) and c < len(cell_labels[r]):
                ax.set_xlabel(cell_labels[r][c], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(
        left=extra_w / fig_w,
        right=1 - 0.05 / fig_w,
        bottom=0.05 / fig_h + cell_pad / fig_h,
        top=1 - extra_h / fig_h,
        wspace=0.05,
        hspace=cell_pad / cell_inches + 0.05 if cell_labels else 0.05,
    )
    return _finish(fig, path)


@dataclass
class Grid:
    """A figure as data: the arguments of :func:`image_grid` without path and value range.

    Part A recipes return one, so their images and labels can be checked without drawing;
    :meth:`save` draws it.
    """

    rows: Sequence[Sequence[ImageLike | None]]
    row_labels: Sequence[str] | None = None
    col_labels: Sequence[str] | None = None
    cell_labels: Sequence[Sequence[str]] | None = None
    title: str | None = None

    def save(self, path: str | Path, value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
        """Draw the grid as a PNG at ``path`` with images in ``value_range``."""
        return image_grid(
            self.rows,
            path=path,
            row_labels=self.row_labels,
            col_labels=self.col_labels,
            cell_labels=self.cell_labels,
            title=self.title,
            value_range=value_range,
        )


def contact_sheet(
    images: Sequence[ImageLike],
    *,
    path: str | Path,
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    cell_inches: float = 1.4,
) -> Path:
    """Several results (e.g. one per seed) side by side, each captioned with ``labels[i]``."""
    if not images:
        raise FundiffError("contact_sheet needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise FundiffError(f"{len(labels)} labels for {len(images)} images")
    ncols = ncols or min(len(images), 6)
    rows = [list(images[i : i + ncols]) for i in range(0, len(images), ncols)]
    cells = (
        [list(labels[i : i + ncols]) for i in range(0, len(labels), ncols)]
        if labels is not None
        else None
    )
    return image_grid(
        rows,
        path=path,
        cell_labels=cells,
        title=title,
        value_range=value_range,
        cell_inches=cell_inches,
    )


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
    steps, losses = [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"step", "loss"} <= set(reader.fieldnames):
            raise FundiffError(f"{path}: a losses.csv needs columns step and loss")
        for row in reader:
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
    if not steps:
        raise FundiffError(f"{path}: no loss rows")
    return np.asarray(steps), np.asarray(losses)


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
