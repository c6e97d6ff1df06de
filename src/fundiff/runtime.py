"""Process-level runtime settings: threads, device and seeded generators."""

from __future__ import annotations

import os

import torch

from fundiff.config import check_device


def set_threads(n: int) -> None:
    """Limit torch (and BLAS) to ``n`` threads.

    Snakemake runs several jobs at once; each must honour its ``threads:`` or small ops slow
    down by orders of magnitude from oversubscription.
    """
    n = max(1, int(n))
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # can only be set once, before any parallel work
        pass


def resolve_device(spec: str = "auto") -> torch.device:
    """Map a config device spec (``auto``, ``cpu``, ``cuda``, ``cuda:1``) to a torch.device.

    Raises:
        FundiffError naming the ``device`` key when that accelerator is missing here (e.g. a
        cluster node without the GPU), instead of an AssertionError deep inside torch.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(spec)
    return torch.device(spec)


def seed_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed``: every random draw in fundiff takes one."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
