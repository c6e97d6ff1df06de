"""Image preparation: resize/crop, channels, value ranges, masks and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundiff.errors import FundiffError
from fundiff.images import box_mask, load_image, load_mask, prepare_image, to_pil

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_rgb_center_crop_range() -> None:
    img = Image.new("RGB", (300, 600), (255, 0, 0))
    x = prepare_image(img, resolution=64, channels=3, value_range=(-1.0, 1.0))
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.ones(64, 64)) and torch.allclose(
        x[0, 1], -torch.ones(64, 64)
    )


def test_center_crop_keeps_the_middle() -> None:
    arr = np.zeros((600, 300), np.uint8)
    arr[250:350] = 255  # a bright band in the middle of a tall image
    x = prepare_image(Image.fromarray(arr), resolution=30, channels=1, value_range=(0.0, 1.0))
    band = x[0, 0, :, 15]
    assert band[15] > 0.9 and band[0] < 0.1 and band[-1] < 0.1
    squashed = prepare_image(
        Image.fromarray(arr), resolution=30, channels=1, value_range=(0, 1), method="squash"
    )
    assert squashed[0, 0, 0, 15] < 0.1 and squashed[0, 0, 15, 15] > 0.9


def test_grayscale_invert_and_alpha() -> None:
    img = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # transparent -> white paper
    x = prepare_image(img, resolution=28, channels=1, value_range=(0.0, 1.0))
    assert torch.allclose(x, torch.ones_like(x))
    inv = prepare_image(img, resolution=28, channels=1, value_range=(0.0, 1.0), invert=True)
    assert torch.allclose(inv, torch.zeros_like(inv))


def test_round_trip_to_pil() -> None:
    img = load_image(ROOT / "inputs/digits/mnist_test_0000_label7.png")
    x = prepare_image(img, resolution=28, channels=1, value_range=(0.0, 1.0))
    assert np.array_equal(np.asarray(to_pil(x, (0.0, 1.0))), np.asarray(img.convert("L")))


def test_missing_and_corrupt_images_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FundiffError, match="nope.png: image file not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(FundiffError, match="bad.png: not a readable image"):
        load_image(bad)


def test_mask_size_must_match_image(tmp_path: Path) -> None:
    Image.new("L", (100, 50), 255).save(tmp_path / "m.png")
    with pytest.raises(FundiffError, match="m.png: mask is 100x50 but its image is 64x64"):
        load_mask(tmp_path / "m.png", image_size=(64, 64), resolution=32)
    Image.new("L", (64, 64), 0).save(tmp_path / "empty.png")
    with pytest.raises(FundiffError, match="empty.png: mask is empty"):
        load_mask(tmp_path / "empty.png", image_size=(64, 64), resolution=32)


def test_shipped_masks_load() -> None:
    photo = load_image(ROOT / "inputs/photos/astronaut.png")
    m = load_mask(ROOT / "inputs/masks/astronaut.png", image_size=photo.size, resolution=64)
    assert m.shape == (1, 1, 64, 64) and set(m.unique().tolist()) == {0.0, 1.0}
    half = load_mask(ROOT / "inputs/masks/digit_right_half.png", image_size=(28, 28), resolution=28)
    assert half[..., :14].sum() == 0 and half[..., 14:].sum() == 14 * 28


def test_box_mask_is_the_course_campanile_mask() -> None:
    m = box_mask(64, 2, 24, 18, 18)
    assert m.sum() == 18 * 18 and m[0, 0, 2, 24] == 1 and m[0, 0, 20, 24] == 0
