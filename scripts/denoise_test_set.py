"""Snakemake adapter: B1.2.1 test-set denoising after one epoch."""

import sys

from fundiff.data import load_mnist
from fundiff.partb import denoise_test_set, snapshot
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
epoch = int(snakemake.wildcards.epoch)
mnist = load_mnist(snakemake.input.mnist)
model = snapshot(snakemake.input.snapshots, epoch)
numbers = denoise_test_set(
    model,
    mnist.test_images,
    snakemake.params.spec["sigma"],
    snakemake.params.seed,
    epoch,
    snakemake.output.png,
)
print(numbers, file=sys.stderr)
