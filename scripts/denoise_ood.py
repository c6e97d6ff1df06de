"""Snakemake adapter: B1.2.2 out-of-distribution sigma sweep."""

import sys

from fundiff.data import load_mnist
from fundiff.partb import denoise_ood
from fundiff.runtime import start_job
from fundiff.training import load_model

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
mnist = load_mnist(snakemake.input.mnist)
numbers = denoise_ood(
    load_model(snakemake.input.model, sampling=True),
    mnist.test_images,
    snakemake.params.sigmas,
    snakemake.params.seed,
    snakemake.output.png,
)
print(numbers, file=sys.stderr)
