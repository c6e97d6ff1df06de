"""Snakemake adapter: train the reference digit classifier that judges samples."""

import logging
import sys

from fundiff.data import load_mnist
from fundiff.evaluation import save_classifier, train_classifier
from fundiff.runtime import resolve_device, start_job
from fundiff.storage import write_json

sys.stderr = open(snakemake.log[0], "w")
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
start_job(snakemake.threads)
cfg = snakemake.params.classifier
mnist = load_mnist(snakemake.input.mnist)
model, metrics = train_classifier(
    mnist.train_images,
    mnist.train_labels,
    mnist.test_images,
    mnist.test_labels,
    epochs=cfg["epochs"],
    seed=snakemake.params.seed,
    batch_size=cfg["batch_size"],
    lr=cfg["lr"],
    device=resolve_device(snakemake.params.device),
)
save_classifier(model.cpu(), snakemake.output.model, metrics)
write_json(snakemake.output.metrics, metrics)
print(metrics, file=sys.stderr)
