"""Snakemake adapter: training loss curve (log y) of one run."""

import sys

from fundiff.figures import loss_curve

sys.stderr = open(snakemake.log[0], "w")
loss_curve(
    [snakemake.input.losses],
    [snakemake.wildcards.run],
    snakemake.output.png,
    title=f"Training loss: {snakemake.wildcards.run}",
)
