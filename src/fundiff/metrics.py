"""Judged metrics of the diffusion tricks on MNIST digits, with intervals and baselines.

Every metric judges images with a digit classifier (``judge``: an ``nn.Module`` taking
(B, 1, 28, 28) in [0, 1] and returning logits, e.g. :class:`fundiff.evaluation.DigitClassifier`)
in one batched :func:`fundiff.evaluation.predict` call per image set, and returns a
:class:`Judged`: JSON-ready ``numbers`` plus the judged image ``sets`` (one per view/reading),
which :meth:`Judged.save` writes as ``.npz`` for re-judging by another classifier.

Conventions:

* Images are (N, 1, 28, 28) float in [0, 1] (or uint8 (N, 28, 28) 0..255). The judge sees
  them quantised to uint8 (:func:`fundiff.evaluation.quantize`), so a saved set re-judged gives
  the same verdicts.
* A *rate* is ``{"value": k / n, "k", "n", "ci95": [lo, hi]}`` with the 95% Wilson score
  interval (:func:`rate`); ``value`` is None when n = 0.
* A metric with a baseline reports ``baseline`` (a rate judged by the same criterion or as
  documented) and ``lift`` = value / baseline value (None when the baseline is 0 or missing).
* The Frechet distance (:mod:`fundiff.frechet`, re-exported here) lives in the judge's
  penultimate-layer feature space (:meth:`DigitClassifier.embed`), against real test digits.

Pure torch: no Snakemake; files only from :meth:`Judged.save` and :func:`plot_sdedit_curve`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fundiff.errors import FundiffError
from fundiff.evaluation import judged_name, predict, quantize, save_judged
from fundiff.filters import gaussian_blur, gaussian_kernel_for
from fundiff.frechet import classifier_features, frechet_distance, frechet_to_real

__all__ = [
    "Judged",
    "wilson_interval",
    "rate",
    "not_judged",
    "quantize",
    "judged_rate",
    "inpainting",
    "sdedit_curve",
    "plot_sdedit_curve",
    "translation",
    "anagram",
    "hybrid",
    "far_view",
    "classifier_features",
    "frechet_distance",
    "frechet_to_real",
]

Labels = Tensor | int | Sequence[int]  # one digit for all images, or one per image


@dataclass
class Judged:
    """A metric's JSON-ready ``numbers`` and the image sets it judged.

    ``sets`` maps a view/reading name (e.g. ``"upright"``, ``"view"``, ``"far"``) to
    (images float (N, 1, 28, 28) on the 1/255 grid, exactly as judged; labels int64 (N,) the
    digit each image should be judged as).
    """

    numbers: dict[str, Any]
    sets: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def save(self, folder: str | Path, task: str, item: str | int) -> list[Path]:
        """Write every set as ``folder/{task}__{item}__{view}.npz``; returns the paths."""
        return [
            save_judged(Path(folder) / judged_name(task, item, view), images, labels)
            for view, (images, labels) in self.sets.items()
        ]


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate k / n (default 95%), clipped to [0, 1].

    n = 0 gives (0.0, 1.0) (nothing is known). E.g. k = 8, n = 10 -> (0.490, 0.943).
    """
    if n < 0 or k < 0 or k > n:
        raise FundiffError(f"a rate needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict[str, Any]:
    """``{"value": k / n (None if n = 0), "k", "n", "ci95": [lo, hi]}`` (Wilson, 95%)."""
    lo, hi = wilson_interval(int(k), int(n))
    return {"value": k / n if n else None, "k": int(k), "n": int(n), "ci95": [lo, hi]}


def _rate_of(ok: Tensor) -> dict[str, Any]:
    return rate(int(ok.sum()), ok.numel())


def _lift(value: float | None, baseline: Mapping[str, Any] | None) -> float | None:
    base = None if baseline is None else baseline.get("value")
    return value / base if value is not None and base else None


def not_judged(reason: str) -> dict[str, Any]:
    """Numbers of a metric that has no judge here (e.g. photos on DeepFloyd): value n/a."""
    return {"value": None, "n": 0, "judged": False, "note": reason}


def _labels(labels: Labels, n: int) -> Tensor:
    """One digit (int or 1-element tensor) -> (n,) filled; one per image -> int64 (n,), CPU."""
    lab = torch.as_tensor(labels).detach().cpu().long().reshape(-1)
    if lab.numel() == 1:
        return lab.expand(n).clone()
    if lab.shape != (n,):
        raise FundiffError(f"{n} images but {lab.numel()} labels")
    return lab


def _correct(judge: nn.Module, images: Tensor, labels: Labels) -> tuple[Tensor, Tensor, Tensor]:
    """(quantised images, labels (N,), per-image correctness bool (N,)) in one predict call."""
    x = quantize(images)
    lab = _labels(labels, len(x))
    return x, lab, predict(judge, x) == lab


def judged_rate(judge: nn.Module, images: Tensor, labels: Labels, view: str = "samples") -> Judged:
    """Fraction of ``images`` judged as ``labels`` (one digit or one per image)."""
    x, lab, ok = _correct(judge, images, labels)
    return Judged(_rate_of(ok), {view: (x, lab)})


def _baseline(
    judge: nn.Module, baseline: Tensor | Mapping[str, Any] | None, labels: Labels
) -> tuple[dict[str, Any] | None, dict[str, tuple[Tensor, Tensor]]]:
    """A baseline rate: judged from images (then also a set named ``baseline``) or given."""
    if baseline is None:
        return None, {}
    if isinstance(baseline, Mapping):
        return dict(baseline), {}
    r = judged_rate(judge, baseline, labels, view="baseline")
    return r.numbers, r.sets


def inpainting(
    judge: nn.Module,
    results: Tensor,
    source: Tensor,
    mask: Tensor,
    source_label: Labels,
    baseline: Tensor | Mapping[str, Any] | None = None,
) -> Judged:
    """Inpainting: fraction of results judged the source digit; change outside the mask.

    Args:
        results: (N, 1, 28, 28) in [0, 1] inpainted images.
        source: (1 or N, 1, 28, 28) in [0, 1] the original digit(s).
        mask: (1 or N, 1, 28, 28), 1 = regenerated (the hole), 0 = kept.
        source_label: the source digit (int) or one per result.
        baseline: e.g. the holes alone or unconditional inpaints (images judged as the source
            digit), or a precomputed rate.

    Returns numbers ``{"source_class": rate, "mse_outside_mask", "max_abs_outside_mask",
    "baseline", "lift"}`` (outside-mask numbers on the results as given, ~0 when the
    known pixels are projected back every step) and the set ``inpainted``.
    """
    x, lab, ok = _correct(judge, results, source_label)
    keep = (1 - mask.float().cpu()).expand_as(x)
    diff = (results.detach().float().cpu() - source.float().cpu()) * keep
    n_kept = float(keep.sum())
    base, base_sets = _baseline(judge, baseline, source_label)
    hit = _rate_of(ok)
    numbers = {
        "source_class": hit,
        "mse_outside_mask": float((diff**2).sum()) / n_kept if n_kept else 0.0,
        "max_abs_outside_mask": float(diff.abs().max()) if diff.numel() else 0.0,
        "baseline": base,
        "lift": _lift(hit["value"], base),
    }
    return Judged(numbers, {"inpainted": (x, lab), **base_sets})


def sdedit_curve(
    judge: nn.Module,
    outputs: Sequence[Tensor],
    source: Tensor,
    source_label: Labels,
    levels: Sequence[float],
    target_label: Labels | None = None,
) -> Judged:
    """SDEdit: per noise level, fraction keeping the source class and mean distance to it.

    Args:
        outputs: one (N_i, 1, 28, 28) batch in [0, 1] per level (edits of ``source``).
        source: (1 or N_i, 1, 28, 28) in [0, 1]; source_label its digit(s).
        levels: the noise levels (e.g. t0 / T), same length as ``outputs``.
        target_label: when denoising towards another class, also report the fraction reaching it.

    Returns numbers ``{"levels", "keep_source": [rate], "mse_to_source": [float],
    ("reach_target": [rate])}`` (all images judged in one call) and a set per level
    ``level{t}`` (labels: the target digit if given, else the source's). Plot with
    :func:`plot_sdedit_curve`.
    """
    if len(outputs) != len(levels) or not outputs:
        raise FundiffError(f"{len(outputs)} output batches for {len(levels)} noise levels")
    sizes = [len(o) for o in outputs]
    x = quantize(torch.cat([o.detach().float().cpu() for o in outputs]))
    pred = predict(judge, x)
    src = source.detach().float().cpu()
    numbers: dict[str, Any] = {"levels": [float(t) for t in levels], "keep_source": []}
    numbers["mse_to_source"] = []
    if target_label is not None:
        numbers["reach_target"] = []
    sets = {}
    for t, xs, ps in zip(levels, x.split(sizes), pred.split(sizes), strict=True):
        lab = _labels(source_label, len(xs))
        numbers["keep_source"].append(_rate_of(ps == lab))
        numbers["mse_to_source"].append(float(((xs - src) ** 2).mean()))
        if target_label is not None:
            lab = _labels(target_label, len(xs))  # the intended digit of this set
            numbers["reach_target"].append(_rate_of(ps == lab))
        sets[f"level{float(t):g}"] = (xs, lab)
    return Judged(numbers, sets)


def plot_sdedit_curve(numbers: Mapping[str, Any], path: str | Path, title: str = "SDEdit") -> Path:
    """PNG of an :func:`sdedit_curve`: judged rates (keep source, reach target) with their 95%
    intervals as bands on the left axis, mean squared distance to the source on the right."""
    from matplotlib.figure import Figure  # lazy: plotting is optional for the metrics

    levels = numbers["levels"]
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for key, label, color in (
        ("keep_source", "keeps source class", "C0"),
        ("reach_target", "reaches target class", "C2"),
    ):
        if key not in numbers:
            continue
        rates = numbers[key]
        val = [r["value"] if r["value"] is not None else math.nan for r in rates]
        ax.plot(levels, val, "o-", color=color, label=label)
        ax.fill_between(
            levels,
            [r["ci95"][0] for r in rates],
            [r["ci95"][1] for r in rates],
            color=color,
            alpha=0.2,
        )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("noise level")
    ax.set_ylabel("judged fraction (95% Wilson band)")
    ax2 = ax.twinx()
    ax2.plot(levels, numbers["mse_to_source"], "s--", color="C3", label="MSE to source")
    ax2.set_ylabel("mean squared distance to source", color="C3")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="center right")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def translation(
    judge: nn.Module,
    outputs: Tensor,
    target_label: Labels,
    baseline: Tensor | Mapping[str, Any] | None = None,
) -> Judged:
    """Image-to-image translation: fraction of ``outputs`` judged the target digit, vs a
    baseline: plain samples of the target digit (images, judged the same way) or a given rate.

    Returns numbers ``{"target_class": rate, "baseline", "lift"}``; sets ``translated``
    (and ``baseline``)."""
    x, lab, ok = _correct(judge, outputs, target_label)
    hit = _rate_of(ok)
    base, base_sets = _baseline(judge, baseline, target_label)
    numbers = {"target_class": hit, "baseline": base, "lift": _lift(hit["value"], base)}
    return Judged(numbers, {"translated": (x, lab), **base_sets})


def _two_readings(
    judge: nn.Module, first: Tensor, second: Tensor, label_1: Labels, label_2: Labels
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both readings judged in ONE call -> (x1, lab1, x2, lab2, ok (2, N))."""
    x1, x2 = quantize(first), quantize(second)
    if len(x1) != len(x2):
        raise FundiffError(f"{len(x1)} images but {len(x2)} in the second reading")
    lab1, lab2 = _labels(label_1, len(x1)), _labels(label_2, len(x2))
    pred = predict(judge, torch.cat([x1, x2]))
    ok = (pred == torch.cat([lab1, lab2])).view(2, -1)
    return x1, lab1, x2, lab2, ok


def _both(ok: Tensor, names: tuple[str, str]) -> dict[str, Any]:
    return {"both": _rate_of(ok[0] & ok[1]), names[0]: _rate_of(ok[0]), names[1]: _rate_of(ok[1])}


def anagram(
    judge: nn.Module,
    images: Tensor,
    view: Callable[[Tensor], Tensor],
    label_a: Labels,
    label_b: Labels,
    baseline_images: Tensor | None = None,
) -> Judged:
    """Visual anagram: fraction judged ``label_a`` upright AND ``label_b`` through ``view``.

    Args:
        images: (N, 1, 28, 28) in [0, 1] anagrams.
        view: the pixel permutation, e.g. ``fundiff.views.get_view("vflip").view``.
        baseline_images: plain samples of ``label_a`` (no anagram sampling).

    Returns numbers ``{"success", "upright", "view", "baseline", "baseline_both", "lift"}``:
    ``baseline`` = plain samples of a seen through the view and judged b (issue 14's
    definition), ``baseline_both`` = the same both-readings criterion on them; ``lift`` =
    success / baseline. Sets ``upright``, ``view`` (+ ``baseline_upright``, ``baseline_view``).
    """
    x = quantize(images)
    x1, lab1, x2, lab2, ok = _two_readings(judge, x, view(x), label_a, label_b)
    r = _both(ok, ("upright", "view"))
    numbers = {"success": r["both"], "upright": r["upright"], "view": r["view"]}
    numbers.update(baseline=None, baseline_both=None)
    sets = {"upright": (x1, lab1), "view": (x2, lab2)}
    if baseline_images is not None:
        b = quantize(baseline_images)
        b1, bl1, b2, bl2, bok = _two_readings(judge, b, view(b), label_a, label_b)
        numbers.update(baseline=_rate_of(bok[1]), baseline_both=_rate_of(bok[0] & bok[1]))
        sets.update(baseline_upright=(b1, bl1), baseline_view=(b2, bl2))
    numbers["lift"] = _lift(numbers["success"]["value"], numbers["baseline"])
    return Judged(numbers, sets)


def far_view(images: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """A hybrid seen from far away: Gaussian blur at the hybrid's ``sigma`` (px); kernel
    from :func:`fundiff.filters.gaussian_kernel_for` (covers +-3 sigma) unless given."""
    k = kernel_size or gaussian_kernel_for(images.shape[-1], sigma=sigma)[0]
    return gaussian_blur(images.float(), k, sigma)


def hybrid(
    judge: nn.Module,
    images: Tensor,
    low_label: Labels,
    high_label: Labels,
    sigma: float,
    kernel_size: int | None = None,
    baseline_images: Tensor | None = None,
) -> Judged:
    """Hybrid image: far reading (blurred at ``sigma``) judged ``low_label`` AND near reading
    (the image itself) judged ``high_label``.

    ``baseline_images``: images not made as hybrids (e.g. plain samples of the high digit: how
    often blur alone turns it into the low one), judged by the same both-readings criterion.
    Returns numbers ``{"success", "far", "near", "sigma", "kernel_size", "baseline", "lift"}``
    and sets ``far``, ``near`` (+ ``baseline_far``, ``baseline_near``).
    """
    k = kernel_size or gaussian_kernel_for(images.shape[-1], sigma=sigma)[0]

    def readings(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        x = x.detach().float().cpu().clamp(0, 1)
        return _two_readings(judge, far_view(x, sigma, k), x, low_label, high_label)

    f, fl, n, nl, ok = readings(images)
    r = _both(ok, ("far", "near"))
    numbers = {"success": r["both"], "far": r["far"], "near": r["near"], "sigma": float(sigma)}
    numbers.update(kernel_size=k, baseline=None)
    sets = {"far": (f, fl), "near": (n, nl)}
    if baseline_images is not None:
        bf, bfl, bn, bnl, bok = readings(baseline_images)
        numbers["baseline"] = _rate_of(bok[0] & bok[1])
        sets.update(baseline_far=(bf, bfl), baseline_near=(bn, bnl))
    numbers["lift"] = _lift(numbers["success"]["value"], numbers["baseline"])
    return Judged(numbers, sets)
