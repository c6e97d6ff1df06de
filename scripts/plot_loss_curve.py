"""Snakemake adapter: training loss curve (log y) of one run."""

import sys

from fundiff.figures import loss_curve
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
loss_curve(
    [snakemake.input.losses],
    [snakemake.wildcards.run],
    snakemake.output.png,
    title=f"Training loss: {snakemake.wildcards.run}",
)
