"""Judged metrics of the Part A recipes: glue from a recipe's results to :mod:`fundiff.metrics`.

A recipe makes ``count(job)`` results in one batched sampler call, shows the first few in its
figure, and passes them all here. Each function returns the JSON numbers of the trick (under the
key ``judged`` of the task's JSON) and leaves the judged image sets on ``job.judged`` (saved as
``.npz`` by :func:`fundiff.parta.run_task`). Without a judge (DeepFloyd photos, or no Part B
classifier) or without a source digit, the numbers are :func:`fundiff.metrics.not_judged`:
n/a, never a proxy.

Images reach the judge mapped from the backend's value range to [0, 1] (the judge's input,
(N, 1, 28, 28)); distances to the source are mean squared errors in that [0, 1] scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fundiff import metrics, samplers
from fundiff.jobs import Job
from fundiff.prompts import parse_digit_prompt

#: why a job on a backend without a digit judge reports n/a
NO_JUDGE = "no digit judge here (photos on DeepFloyd, or no Part B reference classifier)"


def count(job: Job, shown: int) -> int:
    """How many results to make: ``judge_samples`` (default 64) when judged, else ``shown``."""
    if job.judge is None:
        return shown
    return max(shown, int(job.settings.get("judge_samples", 64)))


def unit(job: Job, x: Tensor) -> Tensor:
    """Images (N, C, H, W) in the backend's value range -> float CPU in [0, 1]."""
    lo, hi = job.value_range
    return ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)


def _digit(prompt: str) -> int | None:
    return parse_digit_prompt(prompt)


def _source_missing(job: Job) -> dict[str, Any] | None:
    """not_judged numbers when the job cannot be judged against its source digit, else None."""
    if job.judge is None:
        return metrics.not_judged(NO_JUDGE)
    if job.digit is None:
        return metrics.not_judged("the input image has no `digit` in the inputs manifest")
    return None


def levels(job: Job, i_starts: Sequence[int]) -> list[float]:
    """The noise level t / T of each i_start (1 = pure noise)."""
    T = job.schedule.num_train_timesteps
    return [job.timesteps[i] / T for i in i_starts]


def distances(job: Job, outputs: Sequence[Tensor], source: Tensor) -> list[float]:
    """Mean squared distance ([0, 1] scale) of each level's batch to the source image."""
    src = unit(job, source)
    return [float(((unit(job, o) - src) ** 2).mean()) for o in outputs]


def sdedit(job: Job, outputs: Sequence[Tensor], source: Tensor, i_starts: Sequence[int]) -> dict:
    """SDEdit curve: per level, fraction keeping the source digit and distance to it."""
    missing = _source_missing(job)
    if missing is not None:
        return missing
    outs = [unit(job, o) for o in outputs]
    r = metrics.sdedit_curve(job.judge, outs, unit(job, source), job.digit, levels(job, i_starts))
    job.judged = r
    return r.numbers


def translation(
    job: Job, outputs: Sequence[Tensor], source: Tensor, i_starts: Sequence[int], prompt: str
) -> dict:
    """Translation to ``prompt``'s digit: fraction reaching it at the noisiest level, vs plain
    samples of that digit (same count, same loop), plus the per-level curve (``curve``)."""
    if job.judge is None:
        return metrics.not_judged(NO_JUDGE)
    target = _digit(prompt)
    lv = levels(job, i_starts)
    outs = [unit(job, o) for o in outputs]
    src = job.digit if job.digit is not None else target
    curve = metrics.sdedit_curve(job.judge, outs, unit(job, source), src, lv, target)
    first = max(range(len(lv)), key=lambda k: lv[k])  # the noisiest level
    plain = samplers.sample(job.denoiser, prompt, len(outs[first]), **job.loop())
    r = metrics.translation(job.judge, outs[first], target, baseline=unit(job, plain))
    job.judged = metrics.Judged(r.numbers, {**curve.sets, **r.sets})
    return {**r.numbers, "level": lv[first], "curve": curve.numbers}


def inpainting(job: Job, results: Tensor, image: Tensor, mask: Tensor) -> dict:
    """Inpainting: fraction judged the source digit (baseline: the hole image alone) and the
    change outside the mask."""
    missing = _source_missing(job)
    if missing is not None:
        return missing
    src, m = unit(job, image), mask.detach().float().cpu()
    hole = src * (1 - m)
    r = metrics.inpainting(job.judge, unit(job, results), src, m, job.digit, baseline=hole)
    job.judged = r
    return r.numbers


def anagram(job: Job, x: Tensor, view: Any, prompts: Sequence[str]) -> dict:
    """Anagram: both views right, vs plain samples of prompt 1 seen through the view as 2."""
    if job.judge is None:
        return metrics.not_judged(NO_JUDGE)
    plain = samplers.sample(job.denoiser, prompts[0], len(x), **job.loop())
    d1, d2 = (_digit(p) for p in prompts)
    r = metrics.anagram(job.judge, unit(job, x), view.view, d1, d2, unit(job, plain))
    job.judged = r
    return r.numbers


def hybrid(job: Job, x: Tensor, low: str, high: str, sigma: float, kernel: int) -> dict:
    """Hybrid: far reading = low digit and near reading = high digit, vs plain samples of the
    high digit judged by the same both-readings criterion."""
    if job.judge is None:
        return metrics.not_judged(NO_JUDGE)
    plain = samplers.sample(job.denoiser, high, len(x), **job.loop())
    r = metrics.hybrid(
        job.judge,
        unit(job, x),
        _digit(low),
        _digit(high),
        sigma,
        kernel,
        baseline_images=unit(job, plain),
    )
    job.judged = r
    return r.numbers


def first(batches: Sequence[Tensor]) -> Tensor:
    """The first result of each batch, concatenated (what the figure shows per level)."""
    return torch.cat([b[:1] for b in batches])
