"""Regenerate the default inputs shipped in this folder (no download needed).

Photos come from scikit-image's bundled data, the "web" image from matplotlib's bundled sample
data, drawings are rendered as pen strokes with PIL. Run: ``python inputs/make_default_inputs.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).parent


def photos() -> None:
    import skimage.data

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = Image.fromarray(getattr(skimage.data, name)())
        scale = 256 / min(img.size)
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BICUBIC)
        img.save(HERE / "photos" / f"{name}.png", optimize=True)


def web() -> None:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB")
    img.thumbnail((256, 256))
    img.save(HERE / "web" / "grace_hopper.jpg", quality=90)


def strokes(size: int, paths: list[list[tuple[float, float]]], width: int, fg, bg) -> Image.Image:
    """Draw polylines given in unit coordinates, with round joints, like a pen."""
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    for path in paths:
        pts = [(x * size, y * size) for x, y in path]
        draw.line(pts, fill=fg, width=width, joint="curve")
        for x, y in pts:
            r = width / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fg)
    return img


def arc(cx, cy, r, a0, a1, n=24):
    return [
        (cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
        for a in np.linspace(a0, a1, n)
    ]


def drawings() -> None:
    black, white = (20, 20, 20), (255, 255, 255)
    house = [
        [(0.2, 0.85), (0.2, 0.45), (0.8, 0.45), (0.8, 0.85), (0.2, 0.85)],
        [(0.15, 0.48), (0.5, 0.15), (0.85, 0.48)],
        [(0.42, 0.85), (0.42, 0.65), (0.58, 0.65), (0.58, 0.85)],
        [(0.27, 0.52), (0.37, 0.52), (0.37, 0.6), (0.27, 0.6), (0.27, 0.52)],
    ]
    strokes(300, house, 6, black, white).save(HERE / "drawings" / "house.png")
    tree = [
        [(0.5, 0.9), (0.5, 0.55)],
        arc(0.5, 0.38, 0.22, 0, 360, 40),
        arc(0.8, 0.15, 0.07, 0, 360, 20),
    ]
    strokes(300, tree, 6, (30, 90, 30), white).save(HERE / "drawings" / "tree.png")
    # course "logo" extra: a pen drawing of a camera-like logo to translate with a text prompt
    logo = [
        [(0.15, 0.35), (0.85, 0.35), (0.85, 0.8), (0.15, 0.8), (0.15, 0.35)],
        [(0.35, 0.35), (0.42, 0.22), (0.58, 0.22), (0.65, 0.35)],
        arc(0.5, 0.57, 0.15, 0, 360, 40),
    ]
    strokes(300, logo, 8, (0, 50, 98), white).save(HERE / "drawings" / "logo.png")
    # hand-drawn digits, white ink on black like MNIST (for the local backend)
    digits = {
        "digit_3": [arc(0.5, 0.33, 0.17, 200, 450, 20) + arc(0.5, 0.66, 0.19, 270, 520, 20)],
        "digit_7": [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)], [(0.38, 0.52), (0.65, 0.52)]],
        "digit_4": [[(0.6, 0.85), (0.6, 0.15), (0.22, 0.62), (0.78, 0.62)]],
    }
    for name, paths in digits.items():
        strokes(280, paths, 26, white, (0, 0, 0)).convert("L").save(
            HERE / "drawings" / f"{name}.png"
        )


def masks() -> None:
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        w, h = Image.open(HERE / "photos" / f"{name}.png").size
        m = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(m)
        box = {
            "astronaut": (0.35, 0.05, 0.7, 0.42),  # the head
            "coffee": (0.3, 0.2, 0.7, 0.7),  # the cup
            "chelsea": (0.3, 0.0, 0.75, 0.45),  # the cat's face
            "rocket": (0.3, 0.0, 0.7, 0.45),  # the rocket's tip
        }[name]
        d.rectangle((box[0] * w, box[1] * h, box[2] * w, box[3] * h), fill=255)
        m.save(HERE / "masks" / f"{name}.png")
    # MNIST digits: regenerate the right half
    m = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(m).rectangle((14, 0, 27, 27), fill=255)
    m.save(HERE / "masks" / "digit_right_half.png")


if __name__ == "__main__":
    photos()
    web()
    drawings()
    masks()
