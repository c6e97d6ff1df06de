"""Image preparation: resize/crop, channels, value ranges, masks and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundiff.errors import FundiffError
from fundiff.images import (
    box_mask,
    load_image,
    load_mask,
    prepare_image,
    to_float,
    to_pil,
    to_uint8,
)

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


def test_16_bit_grayscale_is_scaled_not_saturated(tmp_path: Path) -> None:
    levels = np.array([[0, 16384, 40000, 65535]], np.uint16).repeat(8, 0).repeat(8, 1)
    Image.fromarray(levels).save(tmp_path / "deep.png")  # a 16-bit PNG
    img = load_image(tmp_path / "deep.png")
    x = prepare_image(img, resolution=32, channels=1, value_range=(0.0, 1.0), method="squash")
    cols = x[0, 0, 4, [2, 10, 18, 26]]  # band centres, away from bicubic overshoot
    assert torch.allclose(cols, torch.tensor([0.0, 16384, 40000, 65535]) / 65535, atol=1e-3)
    rgb = prepare_image(img, resolution=32, channels=3, value_range=(-1.0, 1.0), method="squash")
    assert rgb.shape == (1, 3, 32, 32) and torch.equal(rgb[0, 0], rgb[0, 2])
    assert abs(rgb[0, 1, 4, 18].item() - (2 * 40000 / 65535 - 1)) < 2e-3


def test_palette_images_keep_their_colours_and_transparency(tmp_path: Path) -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 30, 90)
    rgb[:, 8:] = (10, 250, 40)
    pal = Image.fromarray(rgb).quantize(colors=4)
    transparent = pal.getpixel((12, 0))  # the green index becomes transparent
    pal.save(tmp_path / "pal.png", transparency=transparent)
    img = load_image(tmp_path / "pal.png")
    assert img.mode == "P"
    x = prepare_image(img, resolution=16, channels=3, value_range=(0.0, 1.0), method="squash")
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([200, 30, 90]) / 255.0)
    assert torch.allclose(x[0, :, 0, 15], torch.ones(3))  # transparent -> white


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 128))  # half-transparent black
    x = prepare_image(img, resolution=16, channels=1, value_range=(0.0, 1.0))
    assert torch.allclose(x, torch.full_like(x, 127 / 255), atol=1 / 255)


@pytest.mark.parametrize("size", [(1, 1), (64, 3)])
def test_tiny_images_are_refused_naming_the_file(tmp_path: Path, size: tuple[int, int]) -> None:
    Image.new("RGB", size).save(tmp_path / "tiny.png")
    with pytest.raises(FundiffError, match=r"tiny.png: image is \d+x\d+ px; at least 8x8"):
        load_image(tmp_path / "tiny.png")


def test_decompression_bombs_are_refused_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    Image.new("L", (40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 px: over the limit (warning)
    with pytest.raises(FundiffError, match="bomb.png: too many pixels"):
        load_image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit (error)
    with pytest.raises(FundiffError, match="bomb.png: too many pixels"):
        load_image(tmp_path / "bomb.png")


def test_float_images_are_refused_naming_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(FundiffError, match="float.tiff: floating-point pixels"):
        load_image(tmp_path / "float.tiff")


def test_uint8_float_conversions_round_trip() -> None:
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    x = to_float(u8)
    assert x.shape == (1, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, u8[:, None].float() / 255.0)  # exactly x / 255 in [0, 1]
    assert np.array_equal(to_uint8(x), u8[:, None].numpy())
    signed = to_float(u8, (-1.0, 1.0))
    assert signed.min() == -1 and signed.max() == 1
    assert np.array_equal(to_uint8(signed, (-1.0, 1.0)), u8[:, None].numpy())
    assert np.array_equal(to_uint8(torch.tensor([-0.5, 0.5, 2.0])), [0, 128, 255])  # clipped
    with pytest.raises(FundiffError, match="must be uint8"):
        to_float(x)
