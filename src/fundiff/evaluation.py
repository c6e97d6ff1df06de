"""Judging generated digits: a small reference MNIST classifier, accuracy reports, sample files.

* :class:`DigitClassifier` -- 2 conv layers (5x5, BatchNorm, ReLU, 2x2 max-pool) + dropout +
  2 linear layers; input (B, 1, 28, 28) in [0, 1] (normalised internally with the MNIST
  mean/std), output logits (B, 10). About 99.2% test accuracy after 3 epochs (~1 min, 2 cores).
* :func:`train_classifier`, :func:`save_classifier`, :func:`load_classifier`, :func:`judge`.
* The sample file format (``.npz``): ``images`` uint8 (N, 28, 28) with 0 = background (as
  MNIST) and ``labels`` int64 (N,) = the requested digit, -1 if unconditional
  (:func:`write_samples`, :func:`read_samples`).
* :func:`save_judged`, :func:`judged_name`: a judged image set (the images exactly as the judge
  saw them, with the intended digit per image) in the same ``.npz`` format, named
  ``{task}__{item}__{view}.npz`` so anyone can re-judge it with another classifier.
* :func:`synthetic_digits`: seven-segment "digits" with random jitter -- a class-separable toy
  data set for tests and benchmarks (not MNIST).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fundiff.errors import FundiffError
from fundiff.storage import load_safetensors, save_safetensors

__all__ = [
    "DigitClassifier",
    "train_classifier",
    "evaluate_classifier",
    "save_classifier",
    "load_classifier",
    "predict",
    "batched_eval",
    "judge",
    "write_samples",
    "read_samples",
    "quantize",
    "save_judged",
    "judged_name",
    "synthetic_digits",
]

log = logging.getLogger("fundiff.evaluation")

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class DigitClassifier(nn.Module):
    """Small CNN: (B, 1, 28, 28) in [0, 1] -> logits (B, num_classes)."""

    def __init__(self, width: int = 32, num_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        self.width = width
        self.num_classes = num_classes
        self.dropout = dropout
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w // 2, 5, padding=2),
            nn.BatchNorm2d(w // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(w // 2, w, 5, padding=2),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(w * 49, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def config(self) -> dict[str, Any]:
        return {"width": self.width, "num_classes": self.num_classes, "dropout": self.dropout}

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features((x - MNIST_MEAN) / MNIST_STD))

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate-layer features (B, 128), >= 0 (after the hidden ReLU), for images
        (B, 1, 28, 28) in [0, 1]: the space of the Frechet distance (``fundiff.metrics``).

        Named ``embed`` because ``features`` is the convolutional trunk (its weights are saved
        under ``features.*``). Dropout is the identity in eval mode, so call it on an eval model.
        """
        return self.head[:-2](self.features((x - MNIST_MEAN) / MNIST_STD))


def _to_float_images(images: Tensor) -> Tensor:
    """uint8 (N, 28, 28) / (N, 1, 28, 28) 0..255 or float in [0, 1] -> float (N, 1, 28, 28)."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] != 1:
        raise FundiffError(
            f"expected (N, 28, 28) or (N, 1, 28, 28) images, got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


@torch.no_grad()
def batched_eval(
    model: nn.Module, fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 1000
) -> list[Tensor]:
    """``fn`` (a call of ``model``) on ``x`` in batches of ``batch_size`` rows on the model's
    device, in eval mode (the mode is restored after); outputs on the CPU, one per batch."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        return [fn(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)


def predict(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted classes (N,) int64 for images (N, 1, 28, 28) in [0, 1] (or uint8 0..255)."""
    x = _to_float_images(images)
    out = batched_eval(model, lambda b: model(b).argmax(1), x, batch_size)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def evaluate_classifier(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Accuracy in [0, 1] of ``model`` on images (uint8 or [0, 1] float) with int labels."""
    pred = predict(model, images)
    return float((pred == labels.cpu().long()).float().mean())


def train_classifier(
    images: Tensor,
    labels: Tensor,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    epochs: int = 3,
    seed: int = 0,
    *,
    batch_size: int = 128,
    lr: float = 2e-3,
    width: int = 32,
    device: torch.device | str = "cpu",
    max_shift: int = 0,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train the reference classifier with Adam (lr decayed linearly to 5% over the run).

    Args:
        images: uint8 (N, 28, 28) training digits; labels: int64 (N,).
        test_images, test_labels: optional held-out set for ``metrics["test_accuracy"]``.
        epochs: passes over the data (3 reach ~99.2% on MNIST).
        seed: seeds initialisation, shuffling and dropout.
        max_shift: random integer translation augmentation in pixels (0 = off).

    Returns:
        (model in eval mode, metrics dict: epochs, seed, train_images, train_loss_mean,
        test_accuracy (or None)); the same for the same inputs, bit for bit (no timings).
    """
    if images.shape[0] != labels.shape[0]:
        raise FundiffError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier(width=width).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    fork_devices = [device] if device.type == "cuda" else []
    x_all = _to_float_images(images).to(device)
    y_all = labels.to(device=device, dtype=torch.long)
    n = len(x_all)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 - 0.95 * min(1.0, s / max(1, steps))
    )
    t0 = time.perf_counter()
    model.train()
    loss_sum, loss_n = 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=device)
        for b in range(0, n, batch_size):
            idx = perm[b : b + batch_size]
            if len(idx) < 2:
                continue
            x = x_all[idx]
            if max_shift > 0:
                dx, dy = torch.randint(
                    -max_shift, max_shift + 1, (2,), generator=gen, device=device
                ).tolist()
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            # dropout draws from the global RNG: seed it from `gen` inside a fork, so the run is
            # reproducible and the caller's global RNG state is untouched
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(
                    int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=device))
                )
                loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            loss_n += 1
    model.eval()
    metrics: dict[str, Any] = {
        "epochs": epochs,
        "seed": seed,
        "train_images": n,
        "train_loss_mean": loss_sum / max(1, loss_n),
        "test_accuracy": None,
    }
    # timings go to the log (and Snakemake benchmark files), never into a result file
    log.info("classifier trained in %.1f s (%d steps)", time.perf_counter() - t0, loss_n)
    if test_images is not None and test_labels is not None:
        metrics["test_accuracy"] = evaluate_classifier(model, test_images, test_labels)
    return model, metrics


def save_classifier(model: DigitClassifier, path: str | Path, metrics: dict | None = None) -> Path:
    """Weights as safetensors with the architecture (and metrics) in the metadata."""
    meta = {"classifier_config": json.dumps(model.config())}
    if metrics is not None:
        meta["metrics"] = json.dumps(metrics)
    return save_safetensors(model.state_dict(), path, meta)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> DigitClassifier:
    """Rebuild a classifier saved by :func:`save_classifier` (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise FundiffError(f"classifier weights not found: {path}")
    remedy = (
        f"delete it (write-protected by the workflow: `rm -f {path}`) and rerun snakemake with "
        "the same config: train_classifier rebuilds it"
    )
    state, meta = load_safetensors(path, remedy=remedy)
    if "classifier_config" not in meta:
        raise FundiffError(f"{path} is not a fundiff classifier (no classifier_config metadata)")
    model = DigitClassifier(**json.loads(meta["classifier_config"]))
    model.load_state_dict(state)
    return model.to(device).eval()


def judge(model: nn.Module, samples: Tensor, requested_labels: Tensor | None) -> dict[str, Any]:
    """Classify generated samples and compare with the requested digits.

    Args:
        model: a classifier taking (B, 1, 28, 28) in [0, 1].
        samples: (N, 1, 28, 28) float in [0, 1] (or uint8 (N, 28, 28)).
        requested_labels: (N,) int64 digits, -1 = unconditional (not scored); None = all -1.

    Returns:
        ``{"n", "n_scored", "accuracy" (over scored samples, None if none), "per_digit"
        {"0": acc or None, ...}, "confusion" 10x10 list [requested][predicted] counts,
        "predicted_histogram" counts of predicted classes over all samples}``.
    """
    pred = predict(model, samples)
    n = len(pred)
    req = (
        torch.full((n,), -1, dtype=torch.long)
        if requested_labels is None
        else requested_labels.cpu().long()
    )
    if req.shape != (n,):
        raise FundiffError(f"{n} samples but requested_labels has shape {tuple(req.shape)}")
    k = getattr(model, "num_classes", 10)
    scored = req >= 0
    conf = torch.zeros(k, k, dtype=torch.long)
    if scored.any():
        conf.index_put_(
            (req[scored], pred[scored]),
            torch.ones(int(scored.sum()), dtype=torch.long),
            accumulate=True,
        )
    per_digit: dict[str, float | None] = {}
    for d in range(k):
        tot = int(conf[d].sum())
        per_digit[str(d)] = float(conf[d, d]) / tot if tot else None
    n_scored = int(scored.sum())
    return {
        "n": n,
        "n_scored": n_scored,
        "accuracy": float(conf.diag().sum()) / n_scored if n_scored else None,
        "per_digit": per_digit,
        "confusion": conf.tolist(),
        "predicted_histogram": torch.bincount(pred, minlength=k).tolist(),
    }


def write_samples(path: str | Path, images: Tensor, labels: Tensor | None = None) -> Path:
    """Write the sample ``.npz``: images (N, 1, 28, 28) or (N, 28, 28) in [0, 1] -> uint8
    (N, 28, 28) = round(255 x), 0 = background; labels (N,) int64 requested digits, -1 if
    unconditional (None = all -1)."""
    x = images.detach().cpu()
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise FundiffError(f"samples must have 1 channel, got {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 3:
        raise FundiffError(f"samples must be (N, 1, H, W), got {tuple(images.shape)}")
    u8 = (x.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    n = u8.shape[0]
    lab = np.full(n, -1, dtype=np.int64) if labels is None else labels.detach().cpu().long().numpy()
    if lab.shape != (n,):
        raise FundiffError(f"{n} samples but labels of shape {lab.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(f, images=u8, labels=lab)
    return path


def read_samples(path: str | Path) -> tuple[Tensor, Tensor]:
    """Read a sample ``.npz`` -> (images float (N, 1, 28, 28) in [0, 1], labels int64 (N,))."""
    path = Path(path)
    if not path.exists():
        raise FundiffError(f"sample file not found: {path}")
    with np.load(path) as d:
        if "images" not in d or "labels" not in d:
            raise FundiffError(f"{path}: needs arrays 'images' and 'labels', has {sorted(d.files)}")
        im, lab = d["images"], d["labels"]
    if im.dtype != np.uint8 or im.ndim != 3:
        raise FundiffError(f"{path}: images must be uint8 (N, H, W), got {im.dtype} {im.shape}")
    if lab.shape != (im.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
        raise FundiffError(
            f"{path}: labels must be integer ({im.shape[0]},), got {lab.dtype} {lab.shape}"
        )
    return torch.from_numpy(im).float().div(255)[:, None], torch.from_numpy(lab.astype(np.int64))


def quantize(images: Tensor) -> Tensor:
    """Images as the judge sees them: float (N, 1, 28, 28) on the 1/255 grid, on the CPU
    (uint8 (N, 28, 28) 0..255 or float in [0, 1] in; values clamped to [0, 1])."""
    x = images.detach().cpu()
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise FundiffError(f"judged images must be (N, 1, H, W), got {tuple(images.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    return (x.float().clamp(0, 1) * 255).round() / 255.0


def save_judged(path: str | Path, images: Tensor, labels: Tensor | int) -> Path:
    """Save a judged image set: images (N, 1, 28, 28) / (N, 28, 28) float in [0, 1] or uint8,
    exactly as the judge saw them (uint8 = round(255 x), lossless for images already on the
    1/255 grid); ``labels`` the intended digit per image (N,) or one digit for all."""
    x = quantize(images)
    lab = torch.full((len(x),), labels) if isinstance(labels, int) else torch.as_tensor(labels)
    return write_samples(path, x, lab)


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def judged_name(task: str, item: str | int, view: str) -> str:
    """File name of a judged set: ``{task}__{item}__{view}.npz``, split back by ``"__"``.

    Each part keeps letters, digits and ``._+-``; other runs of characters become ``-``, runs
    of ``_`` one ``_``, and ``-`` / ``_`` are stripped from the ends. E.g.
    ``("anagrams", "6_9 vflip", "view")`` -> ``anagrams__6_9-vflip__view.npz``.
    """
    parts = [re.sub("_{2,}", "_", _UNSAFE.sub("-", str(p))).strip("-_") for p in (task, item, view)]
    if not all(parts):
        raise FundiffError(f"judged set name needs a task, an item and a view, got {parts}")
    return "__".join(parts) + ".npz"


# Seven-segment layout on a 28x28 canvas: (y0, y1, x0, x1) rectangles, before jitter.
_SEGMENTS = {
    "a": (4, 7, 9, 19),  # top
    "b": (5, 14, 17, 20),  # top right
    "c": (14, 23, 17, 20),  # bottom right
    "d": (21, 24, 9, 19),  # bottom
    "e": (14, 23, 8, 11),  # bottom left
    "f": (5, 14, 8, 11),  # top left
    "g": (12, 15, 9, 19),  # middle
}
_DIGIT_SEGMENTS = [
    "abcdef",
    "bc",
    "abged",
    "abgcd",
    "fgbc",
    "afgcd",
    "afgedc",
    "abc",
    "abcdefg",
    "abcdfg",
]


def synthetic_digits(n: int, *, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A toy digit set: seven-segment digits with random shift (+-3 px), stroke width,
    slant-free intensity jitter and light blur.

    Returns (images uint8 (n, 28, 28), 0 = background; labels int64 (n,) balanced 0..9 in a
    random order). Class-separable, so a classifier learns it in seconds.
    """
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=generator)]
    seg_names = "abcdefg"
    table = torch.zeros(10, 7)
    for d, segs in enumerate(_DIGIT_SEGMENTS):
        for s in segs:
            table[d, seg_names.index(s)] = 1.0
    rects = torch.tensor([_SEGMENTS[s] for s in seg_names], dtype=torch.float32)  # (7, 4)
    shift = torch.randint(-3, 4, (n, 2), generator=generator).float()  # dy, dx
    grow = torch.randint(0, 2, (n, 1), generator=generator).float()  # thicker strokes
    yy = torch.arange(28).float()[None, None, :, None]
    xx = torch.arange(28).float()[None, None, None, :]
    y0 = (rects[None, :, 0] + shift[:, :1] - grow)[..., None, None]
    y1 = (rects[None, :, 1] + shift[:, :1] + grow)[..., None, None]
    x0 = (rects[None, :, 2] + shift[:, 1:] - grow)[..., None, None]
    x1 = (rects[None, :, 3] + shift[:, 1:] + grow)[..., None, None]
    masks = ((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)).float()  # (n, 7, 28, 28)
    img = (masks * table[labels][:, :, None, None]).amax(1, keepdim=True)
    img = F.avg_pool2d(F.pad(img, (1, 1, 1, 1)), 3, stride=1)
    img = img * (0.75 + 0.25 * torch.rand(n, 1, 1, 1, generator=generator))
    return (img[:, 0].clamp(0, 1) * 255).round().to(torch.uint8), labels.long()
