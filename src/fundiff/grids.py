"""Image grids: the one place where images become PNG figures (Part A and Part B).

:func:`image_grid` draws rows of images with row/column/cell labels and a title; labels wrap to
the space their cell gives them (:func:`wrap_label`). :class:`Grid` is the same figure as data
(what Part A recipes return); :func:`contact_sheet` lays several results out in rows;
:func:`save_image` writes one image at its native size. :mod:`fundiff.figures` re-exports all
of them beside the GIF, loss-curve and Part B figures.

Images are torch tensors or numpy arrays, one image per cell: (C, H, W) or (H, W) with C = 1 or
3 (numpy (H, W, C) is accepted too), values in ``value_range`` (MNIST models: (0, 1); DeepFloyd
tensors: (-1, 1)); uint8 input is taken as already 0..255. Single-channel images are drawn with a
gray colormap. Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg, no pyplot
global state); every function writes a PNG and returns its path. Figures are kept modest
(about 1 inch = 100 px per cell).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from fundiff import images
from fundiff.errors import FundiffError

ImageLike = Tensor | np.ndarray
DPI = 100


def to_uint8(x: ImageLike, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """One image -> uint8 numpy, (H, W) for 1 channel or (H, W, 3) for RGB.

    Accepts (H, W), (C, H, W), (1, C, H, W) tensors/arrays and numpy (H, W, C). Float values are
    mapped linearly from ``value_range`` to 0..255 and clipped; uint8 input is passed through
    (the values by :func:`fundiff.images.to_uint8`, then the layout).
    """
    a = images.to_uint8(x, value_range)
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
    return a


def save_image(
    x: ImageLike, path: str | Path, value_range: tuple[float, float] = (0.0, 1.0)
) -> Path:
    """One image (see :func:`to_uint8`) as a PNG at its native size (one pixel per pixel)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(x, value_range)).save(path, format="png")
    return path


def _finish(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


#: labels wrap to this fraction of a cell (an image is ~95% of its cell; a small margin)
LABEL_FIT = 0.9
#: height of one line of 8 pt label text, in inches
LINE_INCHES = 8 * 1.25 / 72


def _text_width(text: str, fontsize: float) -> float:
    """Rendered width of one line of text in inches (matplotlib's default font)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(
        text, FontProperties(size=fontsize), ismath=False
    )
    return width / 72


def wrap_label(text: str, width: float, fontsize: float) -> str:
    """``text`` with line breaks so that no line is wider than ``width`` inches at
    ``fontsize`` pt: greedy by words, a word too long for a line is split. Existing line
    breaks are kept; text that fits is returned unchanged."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and _text_width(candidate, fontsize) > width:
                lines.append(line)
                candidate = word
            while len(candidate) > 1 and _text_width(candidate, fontsize) > width:
                cut = len(candidate) - 1
                while cut > 1 and _text_width(candidate[:cut], fontsize) > width:
                    cut -= 1
                lines.append(candidate[:cut])
                candidate = candidate[cut:]
            line = candidate
        lines.append(line)
    return "\n".join(lines)


def image_grid(rows: Sequence[Sequence[ImageLike | None]], *, path: str | Path, **kw) -> Path:
    """Save :func:`grid_figure` ``(rows, **kw)`` as a PNG at ``path``."""
    return _finish(grid_figure(rows, **kw), path)


def grid_figure(
    rows: Sequence[Sequence[ImageLike | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    cmap: str | None = None,
    cell_inches: float = 1.0,
) -> Figure:
    """A grid figure: ``rows[r][c]`` is one image (or None for an empty cell; rows may differ
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
    # labels wrap to the space they have: a column/cell label to the image's width, a (rotated)
    # row label to the image's height, the left margin growing with its lines
    fit = LABEL_FIT * cell_inches
    row_labels = [wrap_label(t, fit, 8) for t in row_labels] if row_labels else row_labels
    col_labels = [wrap_label(t, fit, 8) for t in col_labels] if col_labels else col_labels
    if cell_labels:
        cell_labels = [[wrap_label(t, fit, 7) for t in r] for r in cell_labels]
    row_lines = max((str(t).count("\n") + 1 for t in row_labels or []), default=1)
    col_lines = max((str(t).count("\n") + 1 for t in col_labels or []), default=1)
    extra_w = max(0.6, 0.2 + row_lines * LINE_INCHES) if row_labels else 0.1
    if title:  # wrap to the figure's width (about 11 characters of 10 pt text per inch)
        title = "\n".join(textwrap.wrap(title, max(12, int((nc * cell_inches + extra_w) * 11))))
    title_lines = title.count("\n") + 1 if title else 0
    label_lines = max((str(t).count("\n") + 1 for r in cell_labels or [] for t in r), default=0)
    col_h = 0.25 + (col_lines - 1) * LINE_INCHES if col_labels else 0.0
    extra_h = (0.25 + 0.2 * title_lines if title else 0.1) + col_h
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
    return fig


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
