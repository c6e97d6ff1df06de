"""Snakemake adapter: judge class-conditional samples after one epoch (accuracy + Frechet
distance to the real test digits); the judged image sets go next to the JSON as .npz."""

import sys

from fundiff.data import load_mnist
from fundiff.evaluation import load_classifier, save_judged
from fundiff.partb import evaluate, snapshot
from fundiff.runtime import resolve_device, start_job
from fundiff.storage import write_json

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
epoch = int(snakemake.wildcards.epoch)
device = resolve_device(snakemake.params.device)
model = snapshot(snakemake.input.snapshots, epoch, device=device)
judge = load_classifier(snakemake.input.judge, device=device)
mnist = load_mnist(snakemake.input.mnist)
result = evaluate(
    model,
    snakemake.params.spec,
    judge,
    snakemake.params.evaluation,
    snakemake.params.seed,
    epoch,
    mnist,
)
for view, (images, labels) in result.sets.items():
    save_judged(getattr(snakemake.output, view), images, labels)
write_json(snakemake.output.json, result.numbers)
print(result.numbers, file=sys.stderr)
