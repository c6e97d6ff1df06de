"""Views (anagrams) and hybrid filters: exact inverses, Gaussianity, bands sum to identity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fundiff.errors import FundiffError
from fundiff.filters import (
    BandPass,
    HighPass,
    LowPass,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_kernel_for,
    hybrid_filters,
)
from fundiff.runtime import seed_generator
from fundiff.views import (
    VIEW_NAMES,
    Jigsaw,
    Negate,
    PatchPermute,
    VFlip,
    get_view,
)

torch.set_num_threads(1)

SPATIAL = [n for n in VIEW_NAMES if n != "negate"]


def _x(shape=(2, 3, 16, 16), seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=seed_generator(seed))


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_inverse_of_view_is_exact(name):
    v = get_view(name)
    x = _x()
    before = x.clone()
    assert torch.equal(v.inverse(v.view(x)), x)
    assert torch.equal(v.view(v.inverse(x)), x)
    assert torch.equal(x, before), "views must not modify their input"


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_view_of_gaussian_noise_stays_gaussian(name):
    v = get_view(name)
    z = _x((8, 3, 32, 32), seed=1)
    y = v.view(z)
    assert y.shape == z.shape
    assert abs(y.mean().item()) < 0.03 and abs(y.std().item() - 1.0) < 0.03
    # a permutation of the values (or their negation): same multiset up to sign
    vals = -y if name == "negate" else y
    assert torch.equal(torch.sort(vals.flatten()).values, torch.sort(z.flatten()).values)
    # and it is not an accidental identity (except for "identity")
    assert torch.equal(y, z) == (name == "identity")


@pytest.mark.parametrize("name", SPATIAL)
def test_spatial_views_move_variance_like_noise(name):
    v = get_view(name)
    var = _x(seed=2).tanh()
    assert torch.equal(v.inverse_variance(v.view(var)), var)
    assert torch.equal(v.inverse_variance(var), v.inverse(var))


def test_negation_does_not_negate_variance():
    v = Negate()
    var = _x(seed=3).tanh()
    assert torch.equal(v.inverse_variance(var), var)
    assert torch.equal(v.inverse(var), -var)


def test_flip_conventions():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert isinstance(get_view("flip"), VFlip)  # default "flip" = vertical flip (reference code)
    assert torch.equal(get_view("flip").view(x), torch.flip(x, dims=[2]))
    assert torch.equal(get_view("hflip").view(x), torch.flip(x, dims=[3]))
    assert torch.equal(get_view("rot180").view(x), torch.rot90(x, 2, dims=(2, 3)))
    cw = get_view("rot90cw").view(x)
    # clockwise: the top-left pixel ends up top-right, the bottom-left top-left
    assert cw[0, 0, 0, 3] == x[0, 0, 0, 0] and cw[0, 0, 0, 0] == x[0, 0, 3, 0]
    assert torch.equal(get_view("rot90ccw").view(cw), x)
    with pytest.raises(FundiffError):
        get_view("rot90cw").view(torch.zeros(1, 1, 4, 6))


def test_patch_permute_is_a_permutation_of_whole_patches():
    j = PatchPermute(grid=4, seed=0)
    assert sorted(j.perm.tolist()) == list(range(16))
    assert not torch.equal(j.perm, torch.arange(16))
    assert torch.equal(j.perm[j.inv_perm], torch.arange(16))
    # label every 4x4 patch of a 16x16 image with its index: the view moves labels by perm
    labels = torch.arange(16.0).view(1, 1, 4, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    out = j.view(labels)
    pieces = out[0, 0].unfold(0, 4, 4).unfold(1, 4, 4).reshape(16, 16)
    assert torch.equal(pieces[:, 0], j.perm.float())
    assert bool((pieces == pieces[:, :1]).all()), "patches are moved whole"
    assert PatchPermute(4, seed=0) == j and not torch.equal(PatchPermute(4, seed=1).perm, j.perm)
    with pytest.raises(FundiffError, match="patch_permute"):
        j.view(torch.zeros(1, 1, 18, 18))  # 4 patches don't tile 18 px
    with pytest.raises(FundiffError):
        PatchPermute(grid=1)


@pytest.mark.parametrize("name", ["patch_permute", "jigsaw"])
@pytest.mark.parametrize("size", [28, 64])
def test_permutation_views_round_trip_at_course_sizes(name, size):
    v = get_view(name, seed=3) if name == "jigsaw" else get_view(name, grid=4)
    x = _x((2, 3, size, size), seed=size)
    y = v.view(x)
    assert torch.equal(v.inverse(y), x) and torch.equal(v.view(v.inverse(x)), x)
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    assert not torch.equal(y, x)


def test_jigsaw_moves_interlocking_pieces_and_rotates_them():
    from fundiff.jigsaw import LAYOUT, piece_labels

    labels = piece_labels(64)
    # the layout is symmetric under a quarter turn: each piece maps onto one of its kind
    turned = torch.rot90(labels, k=-1)
    assert torch.equal(4 * (turned // 4) + (turned % 4 + 1) % 4, labels)
    # pieces interlock: no piece is its square cell (knobs cross every internal edge)
    cells = torch.tensor(LAYOUT).repeat_interleave(16, 0).repeat_interleave(16, 1)
    for k in range(16):
        assert not torch.equal(labels == k, cells == k)
    j = Jigsaw(seed=0)
    moved = j.view(labels[None, None].float())[0, 0].long()
    # every piece lands whole on the footprint of a piece of the same kind
    targets = set()
    for k in range(16):
        dest = labels[moved == k]
        assert (
            dest.unique().numel() == 1
            and int(dest[0]) // 4 == k // 4
            or (k // 4 >= 2 and int(dest[0]) // 4 >= 2)
        )
        targets.add(int(dest[0]))
    assert len(targets) == 16
    # pieces are rotated: an image holding each pixel's column index, seen through the view,
    # is constant along rows inside every piece turned by an odd number of quarter turns
    cols = torch.arange(64.0).expand(64, 64)[None, None]
    seen = j.view(cols)[0, 0]
    odd = 0
    for k in range(16):
        dest = int(labels[moved == k][0])
        if (dest % 4 - k % 4) % 2:
            odd += 1
            inside = labels == dest
            for row in range(64):
                vals = seen[row][inside[row]]
                assert vals.numel() == 0 or bool((vals == vals[0]).all())
    assert odd > 0
    assert Jigsaw(seed=0) == j and Jigsaw(seed=1) != j
    with pytest.raises(FundiffError, match="30 px"):
        j.view(torch.zeros(1, 1, 30, 30))
    with pytest.raises(FundiffError, match="12 px"):
        j.view(torch.zeros(1, 1, 12, 12))


def test_get_view_rejects_unknown_names():
    with pytest.raises(FundiffError, match="known views: identity"):
        get_view("swirl")
    with pytest.raises(FundiffError):
        get_view("vflip", grid=3)
    assert get_view("patch_permute", grid=2, seed=5) == PatchPermute(2, 5)
    assert get_view("jigsaw", seed=5) == Jigsaw(5)


def test_gaussian_blur_matches_reference_2d_conv():
    x = _x((2, 3, 20, 20), seed=4)
    k1 = gaussian_kernel1d(7, 1.3)
    assert abs(k1.sum().item() - 1.0) < 1e-12 and torch.equal(k1, k1.flip(0))
    k2 = torch.outer(k1, k1).float()
    ref = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), k2.expand(3, 1, 7, 7), groups=3)
    assert torch.allclose(gaussian_blur(x, 7, 1.3), ref, atol=1e-6)
    const = torch.full((1, 1, 10, 10), 0.7)
    assert torch.allclose(gaussian_blur(const, 9, 2.0), const, atol=1e-6)
    assert gaussian_blur(x[0], 3, 1.0).shape == x[0].shape  # (C, H, W) works too
    with pytest.raises(FundiffError):
        gaussian_blur(x, 41, 2.0)  # reflect padding needs pad < size
    with pytest.raises(FundiffError):
        gaussian_blur(x, 4, 2.0)  # even kernel


def test_low_plus_high_is_identity_and_lowpass_smooths():
    z = _x((4, 3, 64, 64), seed=5)
    lo, hi = LowPass(33, 2.0), HighPass(33, 2.0)
    assert torch.allclose(lo.inverse(z) + hi.inverse(z), z, atol=1e-6)
    assert lo.inverse(z).std() < 0.3 * z.std()  # white noise loses most power
    assert torch.equal(lo.view(z), z)  # identity on the input
    assert torch.equal(lo.inverse_variance(z), z)  # variance not filtered
    low, band, high = hybrid_filters(64, band_sigma=1.0)
    assert isinstance(band, BandPass)
    total = low.inverse(z) + band.inverse(z) + high.inverse(z)
    assert torch.allclose(total, z, atol=1e-5)
    # the reference's 3 bands: m = G_1 eps, low = G_2 m (blurred twice), band = m - low
    m = gaussian_blur(z, 33, 1.0)
    assert torch.allclose(low.inverse(z), gaussian_blur(m, 33, 2.0), atol=1e-6)
    assert torch.allclose(band.inverse(z), m - gaussian_blur(m, 33, 2.0), atol=1e-6)
    assert torch.allclose(high.inverse(z), z - m, atol=1e-6)
    with pytest.raises(FundiffError):
        BandPass(33, sigma=2.0, sigma_coarse=1.0)


def test_kernel_scales_with_resolution():
    assert gaussian_kernel_for(64) == (33, 2.0)
    k, s = gaussian_kernel_for(28)
    assert k == 15 and abs(s - 0.875) < 1e-9
    k, s = gaussian_kernel_for(16)
    assert k % 2 == 1 and k <= 31 and s == 0.5
    k, s = gaussian_kernel_for(28, sigma=2.0)  # explicit sigma: kernel covers +-3 sigma
    assert s == 2.0 and k >= 13 and k % 2 == 1
    f = hybrid_filters(28)
    assert [type(x) for x in f] == [LowPass, HighPass] and f[0].kernel_size == 15
