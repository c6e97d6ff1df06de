"""fundiff.metrics / fundiff.frechet with a fake judge whose verdicts are computable by hand.

The fake judge reads a digit from pixels: 9 if any pixel is > 0.9, else round(10 x the mean
of the top half), clamped to 0..8. Test images use grey levels that are multiples of 0.2 (exact
on the 1/255 grid the judge sees), so every expected rate, MSE and distance is exact.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fundiff import metrics
from fundiff.errors import FundiffError
from fundiff.evaluation import DigitClassifier, predict, quantize, read_samples
from fundiff.views import get_view

torch.set_num_threads(1)


class FakeJudge(nn.Module):
    """Digit = 9 if max > 0.9 else round(10 * mean of the top 14 rows), at most 8."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        top = (10 * x[:, 0, :14].mean((1, 2))).round().clamp(0, 8).long()
        digit = torch.where(x.amax((1, 2, 3)) > 0.9, 9, top)
        return F.one_hot(digit, 10).float() + 0 * self.dummy

    def embed(self, x: Tensor) -> Tensor:
        """16 block means (4 x 4 blocks of 7 x 7 px)."""
        return F.avg_pool2d(x, 7).flatten(1)


def halves(top: float, bottom: float, n: int = 1) -> Tensor:
    """(n, 1, 28, 28): top 14 rows at ``top``, bottom 14 rows at ``bottom``."""
    x = torch.empty(n, 1, 28, 28)
    x[:, :, :14], x[:, :, 14:] = top, bottom
    return x


def checkerboard(n: int = 1) -> Tensor:
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    return ((yy + xx) % 2).float().expand(n, 1, 28, 28).clone()


@pytest.fixture
def judge() -> FakeJudge:
    return FakeJudge()


def test_fake_judge_reads_what_the_tests_assume(judge) -> None:
    x = torch.cat([halves(0.4, 0.8), halves(0.6, 0.0), checkerboard(), halves(0.5, 0.5)])
    assert predict(judge, x).tolist() == [4, 6, 9, 5]


def test_wilson_interval_known_values() -> None:
    lo, hi = metrics.wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    # k = 0: [0, z^2 / (n + z^2)]; k = n: [n / (n + z^2), 1]
    z2 = 1.96**2
    assert metrics.wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2)))
    assert metrics.wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2)), 1.0)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)
    # narrows as n grows, always contains k / n
    widths = [metrics.wilson_interval(n // 2, n) for n in (10, 100, 1000)]
    assert all(lo < 0.5 < hi for lo, hi in widths)
    assert [hi - lo for lo, hi in widths] == sorted((hi - lo for lo, hi in widths), reverse=True)
    for k, n in ((11, 10), (-1, 10), (1, -1)):
        with pytest.raises(FundiffError, match="0 <= k <= n"):
            metrics.wilson_interval(k, n)


def test_rate_is_json_ready() -> None:
    r = metrics.rate(8, 10)
    assert r["value"] == 0.8 and (r["k"], r["n"]) == (8, 10) and len(r["ci95"]) == 2
    assert metrics.rate(0, 0)["value"] is None
    assert metrics.not_judged("photos")["value"] is None


def test_judged_rate_one_call_and_labels(judge) -> None:
    x = torch.cat([halves(0.4, 0.0, 3), halves(0.6, 0.0)])
    r = metrics.judged_rate(judge, x, 4)
    assert (r.numbers["k"], r.numbers["n"]) == (3, 4) and judge.calls == 1
    per_image = metrics.judged_rate(judge, x, torch.tensor([4, 4, 0, 6])).numbers
    assert per_image["k"] == 3
    assert metrics.judged_rate(judge, x, torch.tensor(6)).numbers["k"] == 1
    with pytest.raises(FundiffError, match="4 images but 2 labels"):
        metrics.judged_rate(judge, x, [4, 4])


def test_inpainting(judge) -> None:
    source = halves(0.4, 0.8)
    mask = torch.zeros(1, 1, 28, 28)
    mask[..., 14:, :] = 1  # bottom half regenerated
    results = torch.cat([halves(0.4, 0.2, 3), halves(0.6, 0.2)])  # the last changed the top
    holes = torch.cat([halves(0.4, 0.0), halves(0.2, 0.0)])
    r = metrics.inpainting(judge, results, source, mask, 4, baseline=holes)
    n = r.numbers
    assert n["source_class"]["value"] == 0.75
    # 0.2 off on the 392 kept pixels of one image out of 4 x 392 kept pixels
    assert n["mse_outside_mask"] == pytest.approx(0.04 / 4)
    assert n["max_abs_outside_mask"] == pytest.approx(0.2)
    assert n["baseline"]["value"] == 0.5 and n["lift"] == pytest.approx(1.5)
    assert set(r.sets) == {"inpainted", "baseline"}
    exact = metrics.inpainting(judge, halves(0.4, 0.2, 2), source, mask, 4).numbers
    assert exact["mse_outside_mask"] == 0.0 and exact["baseline"] is None and exact["lift"] is None


def test_sdedit_curve(judge, tmp_path: Path) -> None:
    source = halves(0.4, 0.8)
    outputs = [source.repeat(2, 1, 1, 1), torch.cat([source, halves(0.6, 0.8)])]
    r = metrics.sdedit_curve(judge, outputs, source, 4, [0.1, 0.5], target_label=6)
    n = r.numbers
    assert judge.calls == 1  # every level in one classifier call
    assert n["levels"] == [0.1, 0.5]
    assert [k["value"] for k in n["keep_source"]] == [1.0, 0.5]
    assert [k["value"] for k in n["reach_target"]] == [0.0, 0.5]
    # one image of two off by 0.2 on half its pixels
    assert n["mse_to_source"] == [0.0, pytest.approx(0.04 / 2 / 2)]
    assert set(r.sets) == {"level0.1", "level0.5"} and r.sets["level0.5"][1].tolist() == [6, 6]
    assert "reach_target" not in metrics.sdedit_curve(judge, outputs, source, 4, [1, 2]).numbers
    png = metrics.plot_sdedit_curve(n, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FundiffError, match="2 output batches for 3 noise levels"):
        metrics.sdedit_curve(judge, outputs, source, 4, [0.1, 0.2, 0.3])


def test_translation_vs_plain_samples(judge) -> None:
    outputs = torch.cat([halves(0.6, 0.0, 3), halves(0.2, 0.0)])
    r = metrics.translation(judge, outputs, 6, baseline=halves(0.6, 0.0, 2))
    assert r.numbers["target_class"]["value"] == 0.75
    assert r.numbers["baseline"]["value"] == 1.0 and r.numbers["lift"] == 0.75
    given = metrics.translation(judge, outputs, 6, baseline=metrics.rate(1, 4)).numbers
    assert given["baseline"]["k"] == 1 and given["lift"] == 3.0
    assert set(r.sets) == {"translated", "baseline"}


def test_anagram_both_views_and_baseline(judge) -> None:
    # top 0.4 / bottom 0.6 reads 4 upright and 6 flipped upside down
    images = torch.cat([halves(0.4, 0.6, 3), halves(0.4, 0.4)])
    plain = torch.cat([halves(0.4, 0.4, 3), halves(0.4, 0.6)])
    r = metrics.anagram(judge, images, get_view("vflip").view, 4, 6, baseline_images=plain)
    n = r.numbers
    assert n["success"]["value"] == 0.75 and n["upright"]["value"] == 1.0
    assert n["view"]["value"] == 0.75
    assert n["baseline"]["value"] == 0.25 and n["baseline_both"]["value"] == 0.25
    assert n["lift"] == pytest.approx(3.0)
    assert judge.calls == 2  # anagrams (both readings) + baseline
    assert set(r.sets) == {"upright", "view", "baseline_upright", "baseline_view"}
    assert torch.equal(r.sets["view"][0], torch.flip(r.sets["upright"][0], dims=[-2]))
    assert r.sets["view"][1].tolist() == [6] * 4


def test_hybrid_far_and_near(judge) -> None:
    # a checkerboard reads 9 near, and ~0.5 grey (5) once blurred; flat grey reads 5 both ways
    images = torch.cat([checkerboard(2), halves(0.5, 0.5, 2)])
    dot = torch.zeros(2, 1, 28, 28)
    dot[..., 20, 20] = 1.0  # plain 9s: blur does not turn them into 5s
    r = metrics.hybrid(judge, images, 5, 9, sigma=1.5, baseline_images=dot)
    n = r.numbers
    assert n["success"]["value"] == 0.5 and n["far"]["value"] == 1.0 and n["near"]["value"] == 0.5
    assert n["sigma"] == 1.5 and n["kernel_size"] % 2 == 1 and n["kernel_size"] >= 9
    assert n["baseline"]["value"] == 0.0 and n["lift"] is None
    far = r.sets["far"][0]
    assert far[:2].amax() < 0.6 and far[:2].amin() > 0.4  # the blur removed the checkerboard
    assert torch.equal(r.sets["near"][0], quantize(images))  # as judged: 0.5 -> 128 / 255


def test_judged_sets_saved_and_rejudged(judge, tmp_path: Path) -> None:
    images = torch.cat([halves(0.4, 0.6, 3), halves(0.4, 0.4)]) + 0.001  # off the 1/255 grid
    r = metrics.anagram(judge, images, get_view("vflip").view, 4, 6)
    paths = r.save(tmp_path, "anagrams", "4_6_vflip")
    assert sorted(p.name for p in paths) == [
        "anagrams__4_6_vflip__upright.npz",
        "anagrams__4_6_vflip__view.npz",
    ]
    for p in paths:
        x, lab = read_samples(p)
        view = p.stem.split("__")[-1]
        assert torch.equal(x, r.sets[view][0])  # exactly what the judge saw
        assert torch.equal(lab, r.sets[view][1])
    ok = [predict(judge, read_samples(p)[0]) == read_samples(p)[1] for p in paths]
    assert float((ok[0] & ok[1]).float().mean()) == r.numbers["success"]["value"]


def test_frechet_distance_by_hand() -> None:
    # 1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2 with unbiased variances 2 and 8
    a, b = torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert metrics.frechet_distance(a, b) == pytest.approx(1 + (math.sqrt(2) - math.sqrt(8)) ** 2)
    # 2-D, diagonal covariances 2/3 I and 8/3 I
    c = torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    assert metrics.frechet_distance(c, 2 * c) == pytest.approx(2 * (2 / 3) * (1 - 2) ** 2)


def test_frechet_distance_of_a_set_with_itself_and_a_shift() -> None:
    f = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) @ torch.randn(
        16, 16, generator=torch.Generator().manual_seed(1)
    )
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # a shift moves only the mean: FD = |shift|^2 = 16 c^2
    dists = [metrics.frechet_distance(f, f + c) for c in (0.1, 0.5, 1.0)]
    assert dists == [pytest.approx(16 * c**2, rel=1e-6, abs=1e-6) for c in (0.1, 0.5, 1.0)]
    with pytest.raises(FundiffError, match="feature sets differ"):
        metrics.frechet_distance(f, f[:, :8])
    with pytest.raises(FundiffError, match=">= 2 feature vectors"):
        metrics.frechet_distance(f[:1], f)


def test_frechet_distance_matches_scipy_on_non_commuting_covariances() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(2)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(
        6, 6, generator=g, dtype=torch.float64
    )
    b = torch.randn(150, 6, generator=g, dtype=torch.float64) * torch.arange(1, 7) + 0.3
    ca, cb = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    root = linalg.sqrtm(ca @ cb).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + (ca + cb - 2 * root).trace()
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_to_real_and_floor(judge) -> None:
    g = torch.Generator().manual_seed(3)
    real = (torch.rand(400, 28, 28, generator=g) * 255).to(torch.uint8)
    same = real[:200]
    shifted = (real[200:].float() / 255 * 0.5 + 0.5)[:, None]  # brighter: far from real
    near = metrics.frechet_to_real(judge, same, real, floor_images=real[200:])
    far = metrics.frechet_to_real(judge, shifted, real)
    assert (near["n"], near["n_real"], near["feature_dim"]) == (200, 400, 16)
    assert near["value"] < 0.01 and near["real_floor"] < 0.01
    assert far["value"] > 100 * near["value"] and far["real_floor"] is None


def test_classifier_features_of_the_reference_cnn() -> None:
    torch.manual_seed(0)
    model = DigitClassifier(width=8).eval()
    x = torch.rand(5, 1, 28, 28)
    f = metrics.classifier_features(model, x)
    assert f.shape == (5, 128) and f.dtype == torch.float64 and (f >= 0).all()
    with pytest.raises(FundiffError, match="no embed"):
        metrics.classifier_features(nn.Linear(2, 2), x)
