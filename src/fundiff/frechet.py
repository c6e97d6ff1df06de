"""Frechet distance in a digit classifier's feature space (an FID for MNIST).

Features are the judge's penultimate layer (:meth:`fundiff.evaluation.DigitClassifier.embed`,
128-d for the reference CNN) of images quantised as the judge sees them
(:func:`fundiff.evaluation.quantize`). Gaussians are fitted to each set and compared with
the Frechet (2-Wasserstein) distance, in float64. Pure torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fundiff.errors import FundiffError
from fundiff.evaluation import batched_eval, quantize

__all__ = ["classifier_features", "frechet_distance", "frechet_to_real"]


def classifier_features(judge: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Penultimate-layer features float64 (N, D) of (quantised) images via ``judge.embed``."""
    if not hasattr(judge, "embed"):
        raise FundiffError(f"{type(judge).__name__} has no embed() feature layer")
    out = batched_eval(judge, lambda b: judge.embed(b).double(), quantize(images), batch_size)
    return torch.cat(out)


def _mean_cov(f: Tensor) -> tuple[Tensor, Tensor]:
    if f.ndim != 2 or len(f) < 2:
        raise FundiffError(
            f"a Frechet distance needs >= 2 feature vectors (N, D), got {tuple(f.shape)}"
        )
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (len(f) - 1)


def _psd_sqrt(c: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((c + c.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D), (N_b, D):
    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^1/2 C_b C_a^1/2)^1/2)``, float64, >= 0.

    Finite sets bias it upwards (~ D / N): compare numbers at the same N, or against the
    floor of real digits (:func:`frechet_to_real`)."""
    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise FundiffError(f"feature sets differ: {tuple(feats_a.shape)} vs {tuple(feats_b.shape)}")
    mu_a, c_a = _mean_cov(feats_a.double())
    mu_b, c_b = _mean_cov(feats_b.double())
    s = _psd_sqrt(c_a)
    cross = torch.linalg.eigvalsh(s @ c_b @ s).clamp(min=0).sqrt().sum()
    d = ((mu_a - mu_b) ** 2).sum() + torch.trace(c_a) + torch.trace(c_b) - 2 * cross
    return max(0.0, float(d))


def frechet_to_real(
    judge: nn.Module, images: Tensor, real_images: Tensor, floor_images: Tensor | None = None
) -> dict[str, Any]:
    """Frechet distance in the judge's feature space between ``images`` (N, 1, 28, 28) and
    real digits ``real_images`` (uint8 (M, 28, 28) or float, e.g. the MNIST test set).

    ``floor_images``: other real digits (same N as ``images``, e.g. from the training set):
    their distance to ``real_images`` is the finite-sample floor a perfect model would reach.
    Returns ``{"value", "n", "n_real", "feature_dim", "real_floor"}``.
    """
    ref = classifier_features(judge, real_images)
    feats = classifier_features(judge, images)
    floor = None
    if floor_images is not None:
        floor = frechet_distance(classifier_features(judge, floor_images), ref)
    return {
        "value": frechet_distance(feats, ref),
        "n": len(feats),
        "n_real": len(ref),
        "feature_dim": ref.shape[1],
        "real_floor": floor,
    }
