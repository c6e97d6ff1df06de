"""Part B networks: the course's small UNets for 28x28 MNIST (SPEC.md, "UNet architecture").

The networks know nothing of diffusion: they map tensors to tensors. Schedules, losses and
samplers live in :mod:`fundiff.diffusion`.

Shapes (D = ``num_hiddens``, input ``(B, C, 28, 28)``)::

    e1 = ConvBlock(C -> D)            (B, D, 28, 28)
    e2 = DownBlock(D -> D)            (B, D, 14, 14)
    e3 = DownBlock(D -> 2D)           (B, 2D, 7, 7)
    f  = Flatten(e3)                  (B, 2D, 1, 1)
    u0 = Unflatten(f)                 (B, 2D, 7, 7)    <- injection point 1 (t1, c1)
    u1 = UpBlock(4D -> D)(cat(e3,u0)) (B, D, 14, 14)   <- injection point 2 (t2, c2)
    u2 = UpBlock(2D -> D)(cat(e2,u1)) (B, D, 28, 28)
    h  = ConvBlock(2D -> D)(cat(e1,u2))
    out = Conv2d(D -> C, 3, 1, 1)(h)  (B, C, 28, 28)

Injection (``t1 = fc1_t(t)`` (B, 2D), ``t2 = fc2_t(t)`` (B, D), broadcast over H, W):

* ``TimeConditionalUNet(injection="add")`` (fall-2024 DDPM): ``u0 + t1``, ``u1 + t2``.
* ``TimeConditionalUNet(injection="mul")`` (fall-2025 flow matching): ``u0 * t1``, ``u1 * t2``.
* ``ClassConditionalUNet(injection="add")`` (both course versions): ``c1 * u0 + t1``,
  ``c2 * u1 + t2`` with ``c1 = fc1_c(c)``, ``c2 = fc2_c(c)``; ``injection="mul"`` is a
  non-course variant ``c1 * u0 * t1``, ``c2 * u1 * t2``.

All modules work with ``channels_last`` inputs (no ``.view`` on activations).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fundiff.errors import FundiffError

__all__ = [
    "Conv",
    "DownConv",
    "UpConv",
    "Flatten",
    "Unflatten",
    "ConvBlock",
    "DownBlock",
    "UpBlock",
    "FCBlock",
    "UnconditionalUNet",
    "TimeConditionalUNet",
    "ClassConditionalUNet",
    "UNET_CLASSES",
    "build_unet",
    "unet_spec",
]

INJECTIONS = ("add", "mul")


class Conv(nn.Sequential):
    """Conv2d(k=3, s=1, p=1) + BatchNorm + GELU: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class DownConv(nn.Sequential):
    """Conv2d(k=3, s=2, p=1) + BatchNorm + GELU: (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class UpConv(nn.Sequential):
    """ConvTranspose2d(k=4, s=2, p=1) + BatchNorm + GELU: (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class Flatten(nn.Sequential):
    """AvgPool2d(7) + GELU: (B, C, 7, 7) -> (B, C, 1, 1)."""

    def __init__(self) -> None:
        super().__init__(nn.AvgPool2d(kernel_size=7), nn.GELU())


class Unflatten(nn.Sequential):
    """ConvTranspose2d(k=7, s=7, p=0) + BatchNorm + GELU: (B, C, 1, 1) -> (B, C, 7, 7)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, in_channels, kernel_size=7, stride=7, padding=0),
            nn.BatchNorm2d(in_channels),
            nn.GELU(),
        )


class ConvBlock(nn.Sequential):
    """Conv(in -> out) -> Conv(out -> out): (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(Conv(in_channels, out_channels), Conv(out_channels, out_channels))


class DownBlock(nn.Sequential):
    """DownConv(in -> out) -> ConvBlock(out -> out): (B, in, H, W) -> (B, out, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(DownConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))


class UpBlock(nn.Sequential):
    """UpConv(in -> out) -> ConvBlock(out -> out): (B, in, H, W) -> (B, out, 2H, 2W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(UpConv(in_channels, out_channels), ConvBlock(out_channels, out_channels))


class FCBlock(nn.Sequential):
    """Linear(in -> out) -> GELU -> Linear(out -> out): (B, in) -> (B, out)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(
            nn.Linear(in_features, out_features),
            nn.GELU(),
            nn.Linear(out_features, out_features),
        )


def _check_injection(injection: str) -> str:
    if injection not in INJECTIONS:
        raise FundiffError(f"injection must be one of {INJECTIONS}, got {injection!r}")
    return injection


class _UNetBody(nn.Module):
    """Shared encoder/decoder of the three UNets; subclasses modulate u0 and u1."""

    conditioning: str = "none"

    def __init__(self, in_channels: int, num_hiddens: int) -> None:
        super().__init__()
        if in_channels < 1 or num_hiddens < 1:
            raise FundiffError(
                f"in_channels and num_hiddens must be >= 1, got {in_channels}, {num_hiddens}"
            )
        d = num_hiddens
        self.in_channels = in_channels
        self.num_hiddens = num_hiddens
        self.in_block = ConvBlock(in_channels, d)
        self.down1 = DownBlock(d, d)
        self.down2 = DownBlock(d, 2 * d)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * d)
        self.up1 = UpBlock(4 * d, d)
        self.up2 = UpBlock(2 * d, d)
        self.out_block = ConvBlock(2 * d, d)
        self.out_conv = nn.Conv2d(d, in_channels, kernel_size=3, stride=1, padding=1)

    def config(self) -> dict[str, Any]:
        """Constructor kwargs, JSON-serialisable, so :func:`build_unet` can rebuild the net."""
        return {"in_channels": self.in_channels, "num_hiddens": self.num_hiddens}

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2:] != (28, 28):
            raise FundiffError(
                f"{type(self).__name__} expects (B, {self.in_channels}, 28, 28), got {tuple(x.shape)}"
            )

    def _run(self, x: Tensor, mod0: tuple | None = None, mod1: tuple | None = None) -> Tensor:
        """Forward pass; ``mod0``/``mod1`` = (scale or None, shift or None, mode) for u0/u1.

        Scales and shifts are (B, F) and are broadcast as (B, F, 1, 1).
        """
        self._check_input(x)
        e1 = self.in_block(x)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        u0 = self.unflatten(self.flatten(e3))
        u0 = _modulate(u0, mod0)
        u1 = self.up1(torch.cat([e3, u0], dim=1))
        u1 = _modulate(u1, mod1)
        u2 = self.up2(torch.cat([e2, u1], dim=1))
        h = self.out_block(torch.cat([e1, u2], dim=1))
        return self.out_conv(h)


def _modulate(h: Tensor, mod: tuple | None) -> Tensor:
    """Apply ``scale * h + shift`` (mode "add") or ``scale * h * shift`` (mode "mul")."""
    if mod is None:
        return h
    scale, shift, mode = mod
    if scale is not None:
        h = h * scale[:, :, None, None].to(h.dtype)
    if shift is not None:
        s = shift[:, :, None, None].to(h.dtype)
        h = h + s if mode == "add" else h * s
    return h


def _time_column(t: Tensor, batch: int) -> Tensor:
    """(B,) or (B, 1) or scalar t -> (B, 1) float."""
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.expand(batch)
    t = t.reshape(-1, 1)
    if t.shape[0] != batch:
        raise FundiffError(f"t has {t.shape[0]} entries for a batch of {batch}")
    return t.float()


class UnconditionalUNet(_UNetBody):
    """Single-step denoiser UNet: forward(x (B, C, 28, 28)) -> (B, C, 28, 28), unbounded."""

    conditioning = "none"

    def __init__(self, in_channels: int = 1, num_hiddens: int = 128) -> None:
        super().__init__(in_channels, num_hiddens)

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x)


class TimeConditionalUNet(_UNetBody):
    """Time-conditioned UNet: forward(x (B, C, 28, 28), t (B,) in [0, 1]) -> (B, C, 28, 28).

    ``injection="add"`` (DDPM, fall 2024): ``u0 + t1``, ``u1 + t2``;
    ``injection="mul"`` (flow matching, fall 2025): ``u0 * t1``, ``u1 * t2``.
    """

    conditioning = "time"

    def __init__(self, in_channels: int = 1, num_hiddens: int = 64, injection: str = "add") -> None:
        super().__init__(in_channels, num_hiddens)
        self.injection = _check_injection(injection)
        self.fc1_t = FCBlock(1, 2 * num_hiddens)
        self.fc2_t = FCBlock(1, num_hiddens)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "injection": self.injection}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = _time_column(t, x.shape[0]).to(x.device)
        t1 = self.fc1_t(t)
        t2 = self.fc2_t(t)
        return self._run(x, (None, t1, self.injection), (None, t2, self.injection))


class ClassConditionalUNet(_UNetBody):
    """Class- and time-conditioned UNet.

    forward(x (B, C, 28, 28), t (B,) in [0, 1], c (B, num_classes) one-hot float, all-zero
    rows = unconditional) -> (B, C, 28, 28). Modulation ``c1 * u0 + t1``, ``c2 * u1 + t2``
    (course, ``injection="add"``) or ``c1 * u0 * t1``, ``c2 * u1 * t2`` (``"mul"``).
    """

    conditioning = "class"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        num_hiddens: int = 64,
        injection: str = "add",
    ) -> None:
        super().__init__(in_channels, num_hiddens)
        if num_classes < 1:
            raise FundiffError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.injection = _check_injection(injection)
        self.fc1_t = FCBlock(1, 2 * num_hiddens)
        self.fc2_t = FCBlock(1, num_hiddens)
        self.fc1_c = FCBlock(num_classes, 2 * num_hiddens)
        self.fc2_c = FCBlock(num_classes, num_hiddens)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_classes": self.num_classes, "injection": self.injection}

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        b = x.shape[0]
        if c.ndim != 2 or c.shape != (b, self.num_classes):
            raise FundiffError(
                f"c must be one-hot (B, {self.num_classes}) = ({b}, {self.num_classes}), "
                f"got {tuple(c.shape)}"
            )
        t = _time_column(t, b).to(x.device)
        c = c.to(device=x.device, dtype=t.dtype)
        t1, t2 = self.fc1_t(t), self.fc2_t(t)
        c1, c2 = self.fc1_c(c), self.fc2_c(c)
        return self._run(x, (c1, t1, self.injection), (c2, t2, self.injection))


UNET_CLASSES: dict[str, type[_UNetBody]] = {
    "UnconditionalUNet": UnconditionalUNet,
    "TimeConditionalUNet": TimeConditionalUNet,
    "ClassConditionalUNet": ClassConditionalUNet,
}


def unet_spec(unet: nn.Module) -> dict[str, Any]:
    """``{"class": name, "kwargs": {...}}`` describing ``unet`` (JSON-serialisable)."""
    if not isinstance(unet, _UNetBody):
        raise FundiffError(f"not a fundiff UNet: {type(unet).__name__}")
    return {"class": type(unet).__name__, "kwargs": unet.config()}


def build_unet(spec: dict[str, Any]) -> _UNetBody:
    """Rebuild a UNet from :func:`unet_spec` output (weights are freshly initialised)."""
    name = spec.get("class")
    if name not in UNET_CLASSES:
        raise FundiffError(f"unknown UNet class {name!r}; known: {sorted(UNET_CLASSES)}")
    return UNET_CLASSES[name](**spec.get("kwargs", {}))
