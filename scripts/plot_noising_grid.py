"""Snakemake adapter: B1.2 noising grid."""

import sys

from fundiff.data import load_mnist
from fundiff.partb import noising_figure
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
mnist = load_mnist(snakemake.input.mnist)
noising_figure(
    mnist.train_images, snakemake.params.sigmas, snakemake.params.seed, snakemake.output.png
)
