"""Synthetic results tree for the writeup tests (no models, no Snakemake run).

Writes small but realistic files following the workflow's path conventions: Part A grids, Part B
loss curves / sample grids / a GIF, ``losses.csv``, ``eval_epoch{e}.json``, Part A JSON numbers,
the classifier metrics and Snakemake benchmark files (``benchmarks/...tsv``, Snakemake's format) of
the jobs that "made" them, with :data:`BENCHMARKS` (rule -> pattern) as the workflow declares them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PART_A_ITEMS: dict[str, list[str]] = {
    "a0_text_to_image": ["steps20", "steps50"],
    "a1_1_forward": ["campanile"],
    "a1_2_blur": ["campanile"],
    "a1_3_one_step": ["campanile"],
    "a1_4_iterative": ["campanile"],
    "a1_5_sampling": ["samples"],
    "a1_6_cfg": ["samples"],
    "a1_7_sdedit": ["campanile", "own1", "own2"],
    "a1_7_1_sdedit_drawn": ["web", "drawn1", "drawn2"],
    "a1_7_2_inpaint": ["campanile", "own1"],
    "a1_7_3_translate": ["campanile"],
    "a1_8_anagrams": ["oldman_campfire", "rot90", "negate"],
    "a1_9_hybrids": ["skull_waterfall"],
    "a_logo": ["logo"],
}
PART_A_NUMBERS: dict[str, dict] = {
    # the shape fundiff.parta writes for A1.2: parallel lists, one entry per timestep
    "a1_2_blur/campanile": {
        "task": "blur",
        "seed": 180,
        "timesteps": [250, 500, 750],
        "best": [
            {"kernel_size": 5, "sigma": 1.5, "psnr": 19.8},
            {"kernel_size": 7, "sigma": 2.0, "psnr": 16.3},
            {"kernel_size": 9, "sigma": 3.0, "psnr": 13.0},
        ],
        "noisy_psnr": [14.2, 10.1, 7.9],
    },
    # a matrix: noise level -> method -> PSNR
    "a1_3_one_step/campanile": {
        "250": {"psnr_noisy": 14.2, "psnr_one_step": 24.1},
        "500": {"psnr_noisy": 10.1, "psnr_one_step": 20.3},
        "750": {"psnr_noisy": 7.9, "psnr_one_step": 16.0},
    },
    "a1_8_anagrams/oldman_campfire": {
        "prompts": ["an oil painting of an old man", "an oil painting of people around a campfire"],
        "view": "vflip",
        "success_rate": 0.62,
        "baseline_success_rate": 0.11,
        "n_seeds": 16,
        "judge": {"model": "clip", "threshold": 0.25},
    },
}
RUN_EPOCHS: dict[str, list[int]] = {
    "single_step": [1, 5],
    "pure_noise": [1, 5],
    "ddpm_time": [5, 20],
    "ddpm_class": [5, 20],
    "fm_time": [1, 5, 10],
    "fm_class": [1, 5, 10],
    "fm_class_const": [1, 5, 10],
}
CLASS_RUNS = ("ddpm_class", "fm_class", "fm_class_const")


def _digits(n: int, seed: int) -> np.ndarray:
    """``n`` MNIST-like 28x28 uint8 digits (from tests/data/mnist_small.npz when present)."""
    npz = Path(__file__).parent / "data" / "mnist_small.npz"
    if npz.is_file():
        with np.load(npz) as d:
            key = next((k for k in d.files if "image" in k), d.files[0])
            imgs = d[key]
        if imgs.ndim == 3 and imgs.shape[1:] == (28, 28) and len(imgs) >= n:
            idx = np.random.default_rng(seed).choice(len(imgs), n, replace=False)
            return imgs[idx].astype(np.uint8)
    rng = np.random.default_rng(seed)
    return (rng.random((n, 28, 28)) * 255).astype(np.uint8)


def _grid(tiles: np.ndarray, cols: int, scale: int = 1, pad: int = 2) -> Image.Image:
    """Tile (N, H, W[, 3]) uint8 images into a grid with white padding."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    rgb = tiles if tiles.ndim == 4 else np.repeat(tiles[..., None], 3, axis=3)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = rgb[i]
    im = Image.fromarray(canvas)
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def _photo(seed: int, size: int = 64) -> np.ndarray:
    """A smooth colourful 64x64 'photo' (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    chans = [
        np.sin(2 * math.pi * (rng.random() * 2 * x + rng.random() * y + rng.random())) * 0.5 + 0.5
        for _ in range(3)
    ]
    return (np.stack(chans, -1) * 255).astype(np.uint8)


def _loss_curve(path: Path, steps: int, final: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, h = 640, 360
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([50, 20, w - 20, h - 40], outline="black")
    s = np.arange(steps)
    loss = final + (1 - final) * np.exp(-s / (steps / 8)) + rng.normal(0, final / 5, steps)
    ys = np.log(np.clip(loss, 1e-4, None))
    ys = (ys - ys.min()) / (ys.max() - ys.min() + 1e-9)
    pts = [(50 + i * (w - 70) / steps, h - 40 - v * (h - 60)) for i, v in zip(s, ys, strict=True)]
    d.line(pts, fill=(31, 119, 180), width=1)
    d.text((w // 2 - 30, h - 30), "step", fill="black")
    d.text((5, h // 2), "loss", fill="black")
    im.save(path)


def write_losses_csv(path: Path, epochs: int, steps_per_epoch: int, seed: int = 0) -> None:
    """A ``losses.csv`` (epoch,step,loss,lr) with decaying loss and ExponentialLR."""
    rng = np.random.default_rng(seed)
    lines = ["epoch,step,loss,lr"]
    step = 0
    for e in range(1, epochs + 1):
        lr = 1e-3 * 0.1 ** ((e - 1) / epochs)
        for _ in range(steps_per_epoch):
            step += 1
            loss = 0.03 + 0.5 * math.exp(-step / 20) + abs(rng.normal(0, 0.003))
            lines.append(f"{e},{step},{loss:.6f},{lr:.6g}")
    path.write_text("\n".join(lines) + "\n")


#: Benchmark patterns of the synthetic workflow (rule -> ``benchmark:`` path), as rules/*.smk.
BENCHMARKS: dict[str, str] = {
    "fetch_mnist": "benchmarks/mnist.tsv",
    "train_classifier": "benchmarks/train_classifier.tsv",
    "train_partb": "benchmarks/train_unet/{run,[a-z_]+}.tsv",
    "plot_loss": "benchmarks/plot_loss_curve/{run}.tsv",
    "parta_anagrams": "benchmarks/parta/{backend}/a1_8_anagrams/{item}.tsv",
}
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"


def write_benchmark(
    path: Path, seconds: float | list[float], max_rss: float | None, finished: float
) -> None:
    """One Snakemake benchmark TSV (one row per repeat; ``max_rss`` None -> ``NA``), mtime set to
    ``finished`` (Unix seconds), as Snakemake writes it when the job ends."""
    rows = [BENCH_HEADER]
    for s in seconds if isinstance(seconds, list) else [seconds]:
        h, rest = divmod(int(s), 3600)
        hms = f"{h}:{rest // 60:02d}:{rest % 60:02d}"
        stats = ["NA"] * 8 if max_rss is None else [f"{max_rss:.2f}"] + ["1.00"] * 7
        rows.append("\t".join([f"{s:.4f}", hms, *stats]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    os.utime(path, (finished, finished))


def make_synthetic_results(
    root: Path, *, results: str = "results", backends: tuple[str, ...] = ("deepfloyd",)
) -> tuple[list[str], list[str]]:
    """Write a synthetic results tree under ``root/results`` and benchmark files under
    ``root/benchmarks`` (rules in :data:`BENCHMARKS`). Returns ``(figures, numbers)`` as paths relative to ``root``
    (the workflow's working directory)."""
    figures: list[str] = []
    numbers: list[str] = []
    seed = 0

    def add(rel: str, im: Image.Image, fmt: str | None = None) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p, format=fmt)
        figures.append(rel)

    for backend in backends:
        for task, items in PART_A_ITEMS.items():
            for item in items:
                seed += 1
                n = 7 if task in ("a1_7_sdedit", "a1_7_3_translate", "a1_7_1_sdedit_drawn") else 4
                tiles = np.stack([_photo(seed * 10 + k) for k in range(n)])
                add(f"{results}/partA/{backend}/{task}/{item}.png", _grid(tiles, n, scale=2))
        for rel, obj in PART_A_NUMBERS.items():
            p = root / f"{results}/partA/{backend}/{rel}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(obj, indent=1))
            numbers.append(p.relative_to(root).as_posix())

    add(f"{results}/partB/figures/b1_noising.png", _grid(_digits(35, 1), 7, scale=3))
    for r, (run, epochs) in enumerate(RUN_EPOCHS.items()):
        base = f"{results}/partB/{run}"
        (root / base).mkdir(parents=True, exist_ok=True)
        _loss_curve(root / base / "loss.png", 400, 0.03 + 0.01 * r, r)
        figures.append(f"{base}/loss.png")
        write_losses_csv(root / base / "losses.csv", max(epochs), 5, seed=r)
        numbers.append(f"{base}/losses.csv")
        for e in epochs:
            if run == "single_step":
                add(f"{base}/denoise_epoch{e}.png", _grid(_digits(15, e), 5, scale=3))
            elif run == "pure_noise":
                add(f"{base}/outputs_epoch{e}.png", _grid(_digits(10, e), 5, scale=3))
            else:
                add(f"{base}/samples_epoch{e}.png", _grid(_digits(40, e + r), 10, scale=3))
                ev = {
                    "n": 1000,
                    "accuracy": 0.5 + 0.045 * e,
                    "per_digit": {str(d): round(0.4 + 0.05 * d + 0.01 * e, 3) for d in range(10)},
                    "confusion": [[100 if i == j else 1 for j in range(10)] for i in range(10)],
                    "guidance": 5.0,
                    "sampler_steps": 30,
                }
                (root / base / f"eval_epoch{e}.json").write_text(json.dumps(ev))
                numbers.append(f"{base}/eval_epoch{e}.json")
        if run == "single_step":
            add(f"{base}/ood.png", _grid(_digits(14, 3), 7, scale=3))
        if run in ("ddpm_class", "fm_class"):
            frames = [_grid(_digits(10, k), 10, scale=2) for k in range(4)]
            p = root / base / "trajectory.gif"
            frames[0].save(p, save_all=True, append_images=frames[1:], duration=200, loop=0)
            figures.append(f"{base}/trajectory.gif")
    clf = root / f"{results}/partB/classifier/metrics.json"
    clf.parent.mkdir(parents=True, exist_ok=True)
    clf.write_text(
        json.dumps(
            {
                "accuracy": 0.991,
                "per_digit": {str(d): 0.98 + d / 1000 for d in range(10)},
                "n": 10000,
            }
        )
    )
    numbers.append(clf.relative_to(root).as_posix())

    t0 = 1_750_000_000.0
    jobs = [  # (benchmark file, seconds, max_rss MB, finished)
        ("benchmarks/mnist.tsv", 12.5, 310.0, t0 + 12.5),
        ("benchmarks/train_classifier.tsv", 82.0, 1200.5, t0 + 95),
        ("benchmarks/train_unet/ddpm_class.tsv", 1234.5, 2048.0, t0 + 96 + 1234.5),
        ("benchmarks/plot_loss_curve/ddpm_class.tsv", 2.0, None, t0 + 1333),
        ("benchmarks/plot_loss_curve/fm_class.tsv", 2.5, 150.0, t0 + 1336.5),
        ("benchmarks/parta/deepfloyd/a1_8_anagrams/rot90.tsv", [1.0, 3.0], 500.0, t0 + 1340),
        ("benchmarks/old_rule/gone.tsv", 99.0, 1.0, t0 + 5),  # a rule no longer in the workflow
    ]
    for rel, seconds, rss, finished in jobs:
        write_benchmark(root / rel, seconds, rss, finished)
    return figures, numbers
