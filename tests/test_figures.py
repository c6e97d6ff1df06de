"""Figures: valid, non-constant PNG/GIF files of the expected size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundiff.errors import FundiffError
from fundiff.figures import (
    Grid,
    arrange_by_class,
    contact_sheet,
    denoising_figure,
    image_grid,
    loss_curve,
    noising_grid,
    ood_figure,
    pure_noise_figure,
    sample_grid,
    save_gif,
    tile,
    to_uint8,
    trajectory_gif,
    wrap_label,
)
from fundiff.grids import grid_figure, save_image

torch.set_num_threads(1)


def _digits(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    for k in range(n):
        y0 = int(torch.randint(3, 12, (1,), generator=g))
        x[k, 0, y0 : y0 + 14, 10 + k % 5 : 14 + k % 5] = 1.0
    return x


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _not_constant(arr: np.ndarray) -> None:
    assert arr.std() > 5, "image is (nearly) constant"


def test_to_uint8() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0, 2.0]])
    assert to_uint8(x).tolist() == [[0, 128, 255, 255]]
    assert to_uint8(torch.tensor([[-1.0, 0.0, 1.0]]), value_range=(-1, 1)).tolist() == [
        [0, 128, 255]
    ]
    rgb = torch.zeros(3, 4, 5)
    rgb[0] = 1.0
    out = to_uint8(rgb)
    assert out.shape == (4, 5, 3) and out[..., 0].min() == 255 and out[..., 1].max() == 0
    assert to_uint8(torch.zeros(1, 4, 5)).shape == (4, 5)
    assert to_uint8(np.zeros((4, 5, 3), np.float32)).shape == (4, 5, 3)
    u8 = np.full((2, 2), 7, np.uint8)
    assert to_uint8(u8).tolist() == u8.tolist()
    with pytest.raises(FundiffError):
        to_uint8(torch.zeros(2, 2, 4, 4))


def test_tile() -> None:
    t = tile(torch.ones(5, 1, 4, 4), nrow=3, pad=1)
    assert t.shape == (1, 2 * 5 + 1, 3 * 5 + 1)
    assert t[0, 0, 0] == 0 and t[0, 1, 1] == 1


def test_image_grid_size_and_content(tmp_path: Path) -> None:
    rows = [list(_digits(3)), list(_digits(3, seed=1))]
    p = image_grid(
        rows, path=tmp_path / "g.png", row_labels=["a", "b"], col_labels=["x", "y", "z"], title="T"
    )
    arr = _png(p)
    # 3 cells of 1 in + 0.6 in labels; 2 rows + title 0.45 in + column labels 0.25 in, at 100 dpi
    assert arr.shape == (270, 360, 3)
    _not_constant(arr)
    # RGB in (-1, 1), ragged rows, empty cell
    rgb = torch.rand(3, 16, 16) * 2 - 1
    p2 = image_grid([[rgb, rgb], [rgb]], path=tmp_path / "rgb.png", value_range=(-1, 1))
    _not_constant(_png(p2))
    with pytest.raises(FundiffError):
        image_grid([[]], path=tmp_path / "empty.png")


def test_save_gif(tmp_path: Path) -> None:
    frames = [torch.full((1, 28, 28), v) for v in (0.0, 0.5, 1.0)]
    p = save_gif(frames, tmp_path / "a.gif", duration_ms=50, scale=2)
    with Image.open(p) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.size == (56, 56)
        vals = []
        for k in range(3):
            im.seek(k)
            vals.append(np.asarray(im.convert("L")).mean())
    assert vals[0] < vals[1] < vals[2]
    # batches are tiled into one grid per frame; RGB works too
    batch_frames = [torch.rand(4, 3, 8, 8) for _ in range(2)]
    p2 = save_gif(batch_frames, tmp_path / "b.gif", nrow=2, scale=1)
    with Image.open(p2) as im:
        assert im.n_frames == 2 and im.size == (2 * 10 + 2, 2 * 10 + 2)


def test_loss_curve(tmp_path: Path) -> None:
    paths = []
    for k in range(2):
        d = tmp_path / f"run{k}"
        d.mkdir()
        lines = ["epoch,step,loss,lr"] + [
            f"1,{s},{1.0 / (s + k) + 0.01 * (s % 3)},0.001" for s in range(1, 200)
        ]
        (d / "losses.csv").write_text("\n".join(lines) + "\n")
        paths.append(d / "losses.csv")
    p = loss_curve(paths, ["a", "b"], tmp_path / "loss.png", title="demo")
    arr = _png(p)
    assert arr.shape == (400, 640, 3)
    _not_constant(arr)
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FundiffError, match=r"bad\.csv lacks column"):  # storage.read_losses
        loss_curve(tmp_path / "bad.csv", None, tmp_path / "bad.png")
    (tmp_path / "empty.csv").write_text("epoch,step,loss,lr\n")
    with pytest.raises(FundiffError, match="no loss rows"):
        loss_curve(tmp_path / "empty.csv", None, tmp_path / "empty.png")


def test_part_b_figures(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = _digits(5)
    sig = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0]
    figs = [
        noising_grid(x, sig, generator=g, path=tmp_path / "sigma.png"),
        denoising_figure(x, x + 0.3, x * 0.8, path=tmp_path / "den.png"),
        ood_figure(
            x[:1].expand(7, -1, -1, -1),
            x[:1].expand(7, -1, -1, -1) * 0.5,
            sig,
            path=tmp_path / "ood.png",
        ),
        pure_noise_figure(x, x.mean(0), path=tmp_path / "pure.png"),
        contact_sheet(
            list(x), labels=[f"seed {k}" for k in range(5)], ncols=3, path=tmp_path / "sheet.png"
        ),
    ]
    for f in figs:
        arr = _png(f)
        assert 100 < arr.shape[0] < 1500 and 100 < arr.shape[1] < 1500, (f, arr.shape)
        _not_constant(arr)
    sigma_arr = _png(figs[0])
    assert sigma_arr.shape[1] == 760  # 7 sigma columns + row labels


def test_sample_grid_places_digits_by_column(tmp_path: Path) -> None:
    # the sample for digit d is a bright block at x = 2d+4..2d+6: column d of the grid holds it
    labels = torch.arange(10).repeat(4)
    samples = torch.zeros(40, 1, 28, 28)
    for k, d in enumerate(labels.tolist()):
        samples[k, 0, 10:18, 2 * d + 4 : 2 * d + 7] = 1.0
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    samples, labels = samples[order], labels[order]
    grid = arrange_by_class(samples, labels, rows=4)
    for r in range(4):
        for d in range(10):
            assert grid[r][d][0, 12, 2 * d + 5] == 1.0 and grid[r][d].sum() == 24
    assert arrange_by_class(samples[:5], labels[:5], rows=4)[3] == [None] * 10
    p = sample_grid(samples, labels, path=tmp_path / "grid.png", title="4 x 10")
    arr = _png(p)
    assert arr.shape[1] == 1010  # 10 columns
    _not_constant(arr)
    p2 = sample_grid(samples[:12], None, path=tmp_path / "uncond.png", rows=3)
    _not_constant(_png(p2))
    with pytest.raises(FundiffError):
        sample_grid(samples, labels[:5], path=tmp_path / "bad.png")


def test_trajectory_gif(tmp_path: Path) -> None:
    traj = [torch.rand(20, 1, 28, 28) * k / 4 for k in range(5)]
    p = trajectory_gif(traj, tmp_path / "traj.gif", nrow=10)
    with Image.open(p) as im:
        assert im.n_frames == 5
        w, h = im.size
    assert (w, h) == (2 * (10 * 30 + 2), 2 * (2 * 30 + 2))  # 10 x 2 tiles (28 px + 2 pad), x2


LONG = "an oil painting of people around a campfire at night"


def test_long_labels_wrap_inside_their_cells() -> None:
    """Row, column and cell labels stay within their image's extent (measured after drawing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    img = torch.rand(3, 16, 16)
    fig = grid_figure(
        [[img, img, img], [img, img, img]],
        row_labels=[f"vflip: '{LONG}'", "'a lithograph of waterfalls' upright"],
        col_labels=[LONG, "seed 2", "supercalifragilisticexpialidocious_and_more"],
        cell_labels=[[LONG, "x", ""], ["", "", LONG]],
        title="Visual anagram",
    )
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    checked = 0
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for text, axis in ((ax.title, "x"), (ax.xaxis.label, "x"), (ax.yaxis.label, "y")):
            if not text.get_text():
                continue
            tb = text.get_window_extent(renderer)
            lo, hi = (tb.x0, tb.x1) if axis == "x" else (tb.y0, tb.y1)
            blo, bhi = (box.x0, box.x1) if axis == "x" else (box.y0, box.y1)
            assert blo - 1 <= lo and hi <= bhi + 1, (text.get_text(), (lo, hi), (blo, bhi))
            assert tb.x0 >= 0 and tb.y1 <= fig.bbox.y1, text.get_text()
            checked += 1
    assert checked == 8
    assert fig.axes[0].title.get_text().count("\n") >= 2  # it did wrap
    assert fig.axes[1].title.get_text() == "seed 2"  # short labels stay as they are


def test_wrap_label() -> None:
    assert wrap_label("seed 1", 1.0, 8) == "seed 1"
    assert wrap_label("k 3, σ 1\n20.1 dB", 1.0, 7) == "k 3, σ 1\n20.1 dB"
    wrapped = wrap_label(LONG, 1.0, 8)
    assert wrapped.replace("\n", " ") == LONG and wrapped.count("\n") >= 2
    assert all(len(line) > 1 for line in wrap_label("x" * 80, 0.5, 8).split("\n"))


def test_grid_as_data_and_native_size_images(tmp_path: Path) -> None:
    img = torch.rand(3, 40, 40) * 2 - 1
    grid = Grid([[img, None], [img, img]], row_labels=["a", "b"], title="t")
    path = grid.save(tmp_path / "g.png", value_range=(-1.0, 1.0))
    assert Image.open(path).size[0] > 150
    one = save_image(img, tmp_path / "one.png", value_range=(-1.0, 1.0))
    with Image.open(one) as im:
        assert im.size == (40, 40) and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), to_uint8(img, (-1.0, 1.0)))
