"""Input images and masks: load, check, and prepare them for a backend.

A backend works on tensors (1, C, H, W) at its own resolution (DeepFloyd stage I: 3 x 64 x 64;
the local MNIST model: 1 x 28 x 28) in its own value range (DeepFloyd: [-1, 1]; the MNIST
model: [0, 1], 0 = background). Preparation follows the course's ``process_pil_im``: convert
to RGB/grayscale, resize the short side to the resolution, centre-crop, scale to the value range.
The course's Campanile instead used a plain ``resize((64, 64))`` (aspect squashed): ``method="squash"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fundiff.errors import FundiffError


def load_image(path: str | Path) -> Image.Image:
    """Open an image file fully; a missing or corrupt file is a FundiffError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FundiffError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FundiffError(f"{path}: not a readable image ({err})") from err


def resize_center_crop(img: Image.Image, resolution: int) -> Image.Image:
    """Resize the short side to ``resolution`` (bicubic), then centre-crop a square."""
    w, h = img.size
    scale = resolution / min(w, h)
    new = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    img = img.resize(new, Image.BICUBIC)
    left = (new[0] - resolution) // 2
    top = (new[1] - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def prepare_image(
    img: Image.Image,
    *,
    resolution: int,
    channels: int,
    value_range: tuple[float, float] = (-1.0, 1.0),
    method: str = "center_crop",
    invert: bool = False,
) -> torch.Tensor:
    """Turn a PIL image into a model input.

    Args:
        img: any PIL image (alpha is composited on white).
        resolution: output height = width.
        channels: 3 (RGB) or 1 (grayscale).
        value_range: (lo, hi) the pixel values 0 and 255 map to.
        method: "center_crop" (short side resize + centre crop) or "squash" (plain resize).
        invert: swap dark and light first (a black-on-white drawing for MNIST's white-on-black).

    Returns:
        float32 tensor (1, channels, resolution, resolution) in ``value_range``.
    """
    if channels not in (1, 3):
        raise FundiffError(f"channels must be 1 or 3, got {channels}")
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB" if channels == 3 else "L")
    if method == "center_crop":
        img = resize_center_crop(img, resolution)
    elif method == "squash":
        img = img.resize((resolution, resolution), Image.BICUBIC)
    else:
        raise FundiffError(f"unknown resize method {method!r} (center_crop | squash)")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if invert:
        arr = 1.0 - arr
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    lo, hi = value_range
    return torch.from_numpy(np.ascontiguousarray(arr * (hi - lo) + lo))[None]


def load_mask(path: str | Path, *, image_size: tuple[int, int], resolution: int) -> torch.Tensor:
    """Load a mask (white = region to regenerate) drawn on the image's own pixel grid.

    The mask must have the same pixel size as its image, so it is cropped exactly like it.

    Returns:
        float32 tensor (1, 1, resolution, resolution) of 0/1, 1 where new content is made.

    Raises:
        FundiffError naming the file when it is unreadable, of the wrong size, or empty.
    """
    mask = load_image(path)
    if mask.size != tuple(image_size):
        raise FundiffError(
            f"{path}: mask is {mask.size[0]}x{mask.size[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}; draw the mask on the image's own pixel grid"
        )
    m = prepare_image(mask, resolution=resolution, channels=1, value_range=(0.0, 1.0))
    m = (m > 0.5).float()
    if m.sum() == 0:
        raise FundiffError(f"{path}: mask is empty at {resolution} px (nothing to inpaint)")
    return m


def box_mask(resolution: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A rectangular 0/1 mask (1, 1, R, R), e.g. the course's Campanile mask [2:20, 24:42]."""
    m = torch.zeros(1, 1, resolution, resolution)
    m[..., top : top + height, left : left + width] = 1.0
    return m


def to_pil(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Image.Image:
    """(1, C, H, W) or (C, H, W) tensor in ``value_range`` -> 8-bit PIL image (clipped)."""
    if x.ndim == 4:
        x = x[0]
    lo, hi = value_range
    arr = ((x.detach().float().cpu().clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().byte()
    arr = arr.numpy()
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))


def load_input(
    spec: dict,
    *,
    resolution: int,
    channels: int,
    value_range: tuple[float, float],
    with_mask: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load an ``inputs`` manifest entry (path, mask, invert, method) for a backend.

    Returns:
        (image (1, C, R, R) in ``value_range``, mask (1, 1, R, R) of 0/1 or None).
    """
    img = load_image(spec["path"])
    x = prepare_image(
        img,
        resolution=resolution,
        channels=channels,
        value_range=value_range,
        method=spec.get("method", "center_crop"),
        invert=spec.get("invert", False),
    )
    mask = None
    if with_mask:
        if not spec.get("mask"):
            raise FundiffError(f"{spec['path']}: no mask configured for this image")
        mask = load_mask(spec["mask"], image_size=img.size, resolution=resolution)
    return x, mask
