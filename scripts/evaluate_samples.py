"""Snakemake adapter: judge >= 500 class-conditional samples with the reference classifier."""

import sys

from fundiff.evaluation import load_classifier
from fundiff.partb import evaluate, snapshot
from fundiff.runtime import resolve_device, set_threads
from fundiff.storage import write_json

sys.stderr = open(snakemake.log[0], "w")
set_threads(snakemake.threads)
epoch = int(snakemake.wildcards.epoch)
device = resolve_device(snakemake.params.device)
model = snapshot(snakemake.input.snapshots, epoch, device=device)
judge = load_classifier(snakemake.input.judge, device=device)
result = evaluate(
    model, snakemake.params.spec, judge, snakemake.params.evaluation, snakemake.params.seed, epoch
)
write_json(snakemake.output.json, result)
print(result, file=sys.stderr)
