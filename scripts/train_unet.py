"""Snakemake adapter: one Part B training run (resumes from its checkpoints if killed)."""

import logging
import sys

from fundiff.data import load_mnist
from fundiff.partb import train_run
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "a")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
start_job(snakemake.threads)
mnist = load_mnist(snakemake.input.mnist)
result = train_run(
    snakemake.params.spec,
    mnist.train_images,
    mnist.train_labels,
    precision=snakemake.params.precision,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    work_dir=snakemake.params.work_dir,
    model_out=snakemake.output.model,
    losses_out=snakemake.output.losses,
    snapshots_out=snakemake.output.snapshots,
)
print(result, file=sys.stderr)
