"""Snakemake adapter: one Part A deliverable (task, backend, item) -> PNG + JSON."""

import json
import sys

from fundiff import backends, images, parta, tasks
from fundiff.runtime import set_threads
from fundiff.storage import write_json

sys.stderr = open(snakemake.log[0], "w")
set_threads(snakemake.threads)

backend = snakemake.wildcards.backend
task = snakemake.params.task
settings = dict(snakemake.params.backend)
res, channels, value_range = backends.BACKEND_GEOMETRY[backend]
settings["value_range"] = value_range

spec = tasks.get(task)

files = {k: (list(v) if k == "embeddings" else str(v)) for k, v in snakemake.input.items()}
if not spec.model:
    denoiser, schedule = None, backends.schedule_for(backend, settings)
else:
    denoiser = backends.load_backend(backend, settings, files)
    schedule = denoiser.schedule
    res, channels = denoiser.resolution, denoiser.channels

image = mask = None
if "image" in files:
    image, mask = images.load_input(
        snakemake.params.image,
        resolution=res,
        channels=channels,
        value_range=value_range,
        with_mask="mask" in files,
    )

judge = None
if "judge" in files:
    from fundiff.evaluation import load_classifier

    judge = load_classifier(files["judge"])
results = getattr(snakemake.params, "results", [])  # 256 px results (registry order)
# stage II only where fundiff.tasks.upsampled (DeepFloyd): plain and views-aware
stage2 = backends.upsamplers(backend, settings, denoiser) if results else {}

job = parta.Job(
    denoiser,
    settings,
    snakemake.params.settings,
    schedule=schedule,
    judge=judge,
    digit=(snakemake.params.image or {}).get("digit"),
    **stage2,
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
