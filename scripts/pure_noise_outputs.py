"""Snakemake adapter: B1.2.3 outputs of the pure-noise denoiser with the training-set mean."""

import sys

from fundiff.data import load_mnist
from fundiff.partb import pure_noise_outputs, snapshot
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
epoch = int(snakemake.wildcards.epoch)
mnist = load_mnist(snakemake.input.mnist)
numbers = pure_noise_outputs(
    snapshot(snakemake.input.snapshots, epoch),
    mnist.train_images,
    snakemake.params.seed,
    epoch,
    snakemake.output.png,
)
print(numbers, file=sys.stderr)
