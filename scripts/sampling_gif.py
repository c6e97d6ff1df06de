"""Snakemake adapter: animated sampling trajectory of the final model."""

import sys

from fundiff.partb import sampling_gif
from fundiff.runtime import resolve_device, start_job
from fundiff.training import load_model

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
model = load_model(
    snakemake.input.model, device=resolve_device(snakemake.params.device), sampling=True
)
sampling_gif(model, snakemake.params.spec, snakemake.params.seed, snakemake.output.gif)
