"""Snakemake adapter: one Part A deliverable (task, backend, item) -> PNG + JSON."""

import json
import sys

from fundiff import backends, parta, tasks
from fundiff.runtime import start_job
from fundiff.storage import write_json

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)

backend = snakemake.wildcards.backend
task = snakemake.params.task
params = {
    "backend": snakemake.params.backend,
    "settings": snakemake.params.settings,
    "image": snakemake.params.image,
}
files = {k: (list(v) if k == "embeddings" else str(v)) for k, v in snakemake.input.items()}
denoiser = schedule = None
if tasks.get(task).model:
    denoiser = backends.load_backend(backend, params["backend"], files)
else:
    schedule = backends.schedule_for(backend, params["backend"])

judge = None
if "judge" in files:
    from fundiff.evaluation import load_classifier

    judge = load_classifier(files["judge"])
results = getattr(snakemake.params, "results", [])  # 256 px results (registry order)
# stage II only where fundiff.tasks.upsampled (DeepFloyd): plain and views-aware
job, image, mask = parta.prepare_job(
    backend,
    params,
    denoiser,
    schedule=schedule,
    judge=judge,
    with_mask="mask" in files,
    upsample=bool(results),
)
native = dict(zip(results, getattr(snakemake.output, "up", []), strict=True))
numbers = parta.run_task(
    task,
    job,
    image,
    mask,
    snakemake.output.png,
    native=native,
    item=snakemake.wildcards.item,
    judged_dir=getattr(snakemake.output, "judged", None),
    curve_png=getattr(snakemake.output, "curve", None),
)
write_json(snakemake.output.json, numbers)  # NaN/inf refused, naming the file and key
print(json.dumps(numbers), file=sys.stderr)
