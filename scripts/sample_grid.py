"""Snakemake adapter: 4 x 10 sample grid (+ .npz) of a model after one epoch."""

import sys

from fundiff.partb import sample_grid, snapshot
from fundiff.runtime import resolve_device, start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
epoch = int(snakemake.wildcards.epoch)
model = snapshot(snakemake.input.snapshots, epoch, device=resolve_device(snakemake.params.device))
sample_grid(
    model,
    snakemake.params.spec,
    snakemake.params.seed,
    epoch,
    snakemake.output.png,
    snakemake.output.npz,
)
