"""Snakemake adapter: training loss curve (log y) of one run."""

import sys

from fundiff.figures import loss_curve
from fundiff.runtime import set_threads

sys.stderr = open(snakemake.log[0], "w")
set_threads(snakemake.threads)
loss_curve(
    [snakemake.input.losses],
    [snakemake.wildcards.run],
    snakemake.output.png,
    title=f"Training loss: {snakemake.wildcards.run}",
)
