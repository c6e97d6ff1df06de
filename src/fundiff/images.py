"""Input images and masks: load, check, and prepare them for a backend.

A backend works on tensors (1, C, H, W) at its own resolution (DeepFloyd stage I: 3 x 64 x 64;
the local MNIST model: 1 x 28 x 28) in its own value range (DeepFloyd: [-1, 1]; the MNIST
model: [0, 1], 0 = background). Preparation follows the course's ``process_pil_im``: convert
to RGB/grayscale, resize the short side to the resolution, centre-crop, scale to the value range.
The course's Campanile instead used a plain ``resize((64, 64))`` (aspect squashed): ``method="squash"``.

This module is the one place that reads and checks input images (:func:`load_image`) and
converts between uint8 pixels and float tensors (:func:`to_float`, :func:`to_uint8`). Accepted
files: anything Pillow reads with 8 bits per channel (RGB, grayscale, palette, CMYK, ...) or
16-bit grayscale (scaled by 1/65535, never clipped at 255); transparency (RGBA, LA, palette
with a transparent colour) is composited on **white**, the paper colour of drawings. Refused,
with the file named: images smaller than ``MIN_SIZE`` px on a side, decompression bombs
(more pixels than Pillow's ``Image.MAX_IMAGE_PIXELS``), floating-point images and 32-bit
integer images beyond the 16-bit range.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fundiff.errors import FundiffError

#: Smallest accepted width/height of an input image, in pixels.
MIN_SIZE = 8
#: 16-bit integer modes Pillow gives (16-bit PNG grayscale opens as "I;16" or "I").
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str | Path) -> Image.Image:
    """Open and check an image file fully.

    Raises:
        FundiffError naming the file when it is missing, unreadable, a decompression bomb,
        smaller than ``MIN_SIZE`` px, or of a pixel format that cannot be scaled faithfully.
    """
    path = Path(path)
    if not path.is_file():
        raise FundiffError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = img.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise FundiffError(
            f"{path}: too many pixels, refused as a possible decompression bomb ({err})"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise FundiffError(f"{path}: not a readable image ({err})") from err
    if min(img.size) < MIN_SIZE:
        raise FundiffError(
            f"{path}: image is {img.size[0]}x{img.size[1]} px; at least {MIN_SIZE}x{MIN_SIZE} needed"
        )
    lo, hi = img.getextrema() if img.mode in ("F", "I") else (0, 0)
    if img.mode == "F" or not 0 <= lo <= hi <= 65535:
        kind = "floating-point" if img.mode == "F" else "32-bit integer"
        raise FundiffError(
            f"{path}: {kind} pixels have no fixed white level; save it as an 8- or 16-bit PNG"
        )
    return img


def _to_l_rgb_or_f(img: Image.Image, channels: int) -> Image.Image:
    """``img`` as an 8-bit "L"/"RGB" image, or as an "F" image on the 0..255 scale (16-bit input).

    Transparency is composited on white; 16-bit grayscale is scaled by 255/65535.
    """
    if img.mode in HIGH_DEPTH_MODES:
        return Image.fromarray((np.asarray(img, np.float64) * (255.0 / 65535.0)).astype(np.float32))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La", "P"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB" if channels == 3 else "L")


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
    img = _to_l_rgb_or_f(img, channels)
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
        arr = arr[None].repeat(channels, axis=0)  # 16-bit grayscale ("F") shown in RGB
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


def to_float(
    images: torch.Tensor,
    value_range: tuple[float, float] = (0.0, 1.0),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """uint8 pixels (N, H, W) or (N, C, H, W), 0..255 -> float32 (N, C, H, W) in ``value_range``.

    (N, H, W) gets C = 1 (MNIST). 0 maps to ``value_range[0]`` and 255 to ``value_range[1]``;
    for (0, 1) this is exactly ``x / 255``.
    """
    if images.dtype != torch.uint8:
        raise FundiffError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise FundiffError(f"images must be (N, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    x = images.to(device=device if device is not None else images.device, dtype=torch.float32)
    x = x.div_(255.0)
    lo, hi = value_range
    return x if (lo, hi) == (0.0, 1.0) else x.mul_(hi - lo).add_(lo)


def to_uint8(
    x: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Pixels in ``value_range`` -> uint8 numpy of the same shape (clipped, rounded).

    Linear: ``value_range[0]`` -> 0, ``value_range[1]`` -> 255, computed in float64 (tensors,
    bf16/fp16 included, are read as float32 first). uint8 input is returned unchanged.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        a = t.numpy() if t.dtype == torch.uint8 else t.float().numpy()
    else:
        a = np.asarray(x)
    if a.dtype == np.uint8:
        return a
    lo, hi = value_range
    scaled = (a.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_pil(x: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Image.Image:
    """(1, C, H, W) or (C, H, W) tensor in ``value_range`` -> 8-bit PIL image (clipped)."""
    arr = to_uint8(x[0] if x.ndim == 4 else x, value_range)
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
