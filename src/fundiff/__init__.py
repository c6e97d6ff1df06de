"""fundiff: the "Fun With Diffusion Models" experiments as a reproducible library + workflow."""

__version__ = "0.1.0"
