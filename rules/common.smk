"""Config validation, wildcard constraints, target lists and input/param functions.

Everything here only *wires files*: the logic lives in the fundiff library.
"""

import sys

from fundiff.config import (
    BACKENDS,
    LOCAL_BACKENDS,
    all_prompts,
    check_device,
    figure_epochs,
    load_schema,
    prompt_key,
    slug,
    task_prompts,
    validate_config,
)
from fundiff.configfiles import assemble_config, workflow_config_sources
from fundiff.errors import FundiffError
from fundiff import tasks as parta_registry

# Snakemake's own merge keeps duplicate YAML keys and reads nested --config values as strings:
# rebuild config from the same sources (fundiff.configfiles), then validate it.
SCHEMA = f"{workflow.basedir}/schemas/config.schema.yaml"
try:
    rebuilt = assemble_config(*workflow_config_sources(workflow), load_schema(SCHEMA))
    config.clear()
    config.update(rebuilt)
    validate_config(config, SCHEMA)
    if workflow.local_exec:  # cluster jobs find their GPU on the compute nodes
        check_device(config["device"])
    parta_registry.check(config)
except FundiffError as err:
    sys.exit(f"fundiff: invalid configuration: {err}")

R = "results"
PA = f"{R}/partA/{{backend}}"
PB = f"{R}/partB"

RUN_NAMES = (
    "single_step|pure_noise|ddpm_time|ddpm_class|fm_time|fm_class|fm_class_const"
)


wildcard_constraints:
    backend="|".join(BACKENDS),
    run=RUN_NAMES,
    epoch=r"\d+",
    item=r"[A-Za-z0-9_]+",
    prompt=r"[a-z0-9_]+",


# ---------------------------------------------------------------------------- Part B


def enabled_runs():
    """Training runs switched on in config (name -> spec)."""
    if not config["partB"]["enabled"]:
        return {}
    return {n: s for n, s in config["partB"]["runs"].items() if s["enabled"]}


def train_priority(wildcards):
    """Models the Part A jobs load train first: they are on the run's critical path."""
    models = {
        config["partA"][b]["run"]
        for b in LOCAL_BACKENDS
        if config["partA"]["enabled"] and config["partA"][b]["enabled"]
    }
    return 10 if wildcards.run in models else 0


def run_spec(wildcards):
    return config["partB"]["runs"][wildcards.run]


def partb_figures():
    runs = enabled_runs()
    figs = [f"{PB}/figures/b1_noising.png"] if runs else []
    for run, spec in runs.items():
        figs.append(f"{PB}/{run}/loss.png")
        epochs = figure_epochs(spec)
        if spec["objective"] == "single_step":
            figs += [f"{PB}/{run}/denoise_epoch{e}.png" for e in epochs]
            figs.append(f"{PB}/{run}/ood.png")
        elif spec["objective"] == "pure_noise":
            figs += [f"{PB}/{run}/outputs_epoch{e}.png" for e in epochs]
        else:
            figs += [f"{PB}/{run}/samples_epoch{e}.png" for e in epochs]
            figs.append(f"{PB}/{run}/trajectory.gif")
    return figs


def partb_numbers():
    runs = enabled_runs()
    nums = [f"{PB}/classifier/metrics.json"] if runs else []
    for run, spec in runs.items():
        nums.append(f"{PB}/{run}/losses.csv")
        if spec["objective"] in ("ddpm", "fm"):
            nums += [f"{PB}/{run}/samples_epoch{e}.npz" for e in figure_epochs(spec)]
        if spec["conditioning"] == "class":
            nums += [f"{PB}/{run}/eval_epoch{e}.json" for e in figure_epochs(spec)]
    return nums


# ---------------------------------------------------------------------------- Part A
# What each task needs and does is declared once, in the task registry (fundiff.tasks);
# the functions below only turn it into file paths and params for Snakemake.

# task key in config -> folder name of its figures (course numbering)
PARTA_TASKS = {key: task.folder for key, task in parta_registry.TASKS.items()}
# tasks whose job also writes measured numbers that the writeup tabulates
PARTA_NUMBERS = {key for key, task in parta_registry.TASKS.items() if task.numbers}


def enabled_backends():
    if not config["partA"]["enabled"]:
        return []
    return [b for b in BACKENDS if config["partA"][b]["enabled"]]


def task_items(backend, task):
    """Item names (one job each) of a Part A task on a backend."""
    return parta_registry.items(config["partA"][backend], task)


def parta_outputs(ext, tasks=PARTA_TASKS):
    return [
        f"{R}/partA/{b}/{PARTA_TASKS[t]}/{item}.{ext}"
        for b in enabled_backends()
        for t in tasks
        for item in task_items(b, t)
    ]


def parta_variants(task):
    """(name, backends, 256 px result names) of each Snakemake rule of a Part A task, one for the
    backends that keep only the figure, one for the backend that upsamples (if it does).
    """
    up = [b for b in BACKENDS if parta_registry.upsampled(config, b, task)]
    plain = [b for b in BACKENDS if b not in up]
    variants = [(f"parta_{task}", plain, [])] if plain else []
    for b in up:
        variants.append(
            (f"parta_{task}_256", [b], parta_registry.result_names(config, b, task))
        )
    return variants


def judged_outputs(task, folder):
    """Outputs of a judged task's job: its judged image sets (a folder of .npz, empty where
    nothing is judged, e.g. DeepFloyd) and, for SDEdit, the curve per noise level (report).
    """
    spec = parta_registry.get(task)
    out = {"judged": directory(f"{PA}/{folder}/{{item}}_judged")} if spec.judge else {}
    if spec.curve:
        out["curve"] = report(
            f"{PA}/{folder}/{{item}}.curve.png",
            caption=f"{workflow.basedir}/report/captions/sdedit_curve.rst",
            category="Evaluation",
            subcategory=folder,
            labels={"backend": "{backend}", "item": "{item}", "figure": "curve"},
        )
    return out


def parta_curves():
    """Every SDEdit curve figure (judged keep-source rate and distance per noise level)."""
    curved = [k for k, t in parta_registry.TASKS.items() if t.curve]
    return [
        p.removesuffix(".png") + ".curve.png"
        for p in parta_outputs("png", tasks=curved)
    ]


def upsampled_path(folder, name):
    """Where a job saves one of its results at 256 px (``{backend}``/``{item}`` wildcards)."""
    return f"{PA}/{folder}/{{item}}-256px-{name}.png"


def upsampled_outputs(folder, names):
    """The named output ``up`` of a rule that saves 256 px results ({} if it saves none)."""
    if not names:
        return {}
    return {"up": [upsampled_report(folder, n) for n in names]}


def upsampled_report(folder, name):
    """One 256 px result as a Snakemake report item (shown at its native size)."""
    return report(
        upsampled_path(folder, name),
        caption=f"{workflow.basedir}/report/captions/{folder}.rst",
        category="Part A",
        subcategory=f"{folder} (256 px)",
        labels={"backend": "{backend}", "item": "{item}", "result": name},
    )


def parta_upsampled_figures():
    """Every 256 px result image of this configuration."""
    return [
        upsampled_path(PARTA_TASKS[t], n).format(backend=b, item=item)
        for b in enabled_backends()
        for t in PARTA_TASKS
        for n in parta_registry.result_names(config, b, t)
        for item in task_items(b, t)
    ]


def backend_params(task):
    """Params function: only the backend settings ``task`` reads (+ seed, device)."""

    def params(wildcards):
        return parta_registry.backend_params(config, wildcards.backend, task)

    return params


def task_params(task):
    """Params function for one task: only this item's settings (so edits rerun only it)."""

    def params(wildcards):
        bcfg = config["partA"][wildcards.backend]
        return parta_registry.item_settings(bcfg, task, wildcards.item)

    return params


def image_spec(task):
    """Params function: the inputs-manifest entry of the job's image (None if it has none)."""

    def spec(wildcards):
        return parta_registry.image_spec(
            config, wildcards.backend, task, wildcards.item
        )

    return spec


def parta_inputs(task):
    """Input function of a Part A job: model files, its image (+ mask), the judge."""
    spec = parta_registry.get(task)

    def inputs(wildcards):
        files = {}
        if spec.model:
            files.update(model_inputs(task, wildcards))
        entry = parta_registry.image_spec(
            config, wildcards.backend, task, wildcards.item
        )
        if entry is not None:
            files["image"] = entry["path"]
            if spec.mask:
                files["mask"] = entry["mask"]
        if spec.judge:
            files.update(judge_inputs(wildcards))
        return files

    return inputs


def model_inputs(task, wildcards):
    """The model files a Part A job loads: local weights, or its prompts' embeddings."""
    if wildcards.backend in LOCAL_BACKENDS:
        run = config["partA"][wildcards.backend]["run"]
        return {"model": f"{PB}/{run}/model.safetensors"}
    bcfg = config["partA"]["deepfloyd"]
    return {
        "embeddings": [
            f"{R}/partA/deepfloyd/prompts/{prompt_key(p)}.safetensors"
            for p in task_prompts(bcfg, task, wildcards.item)
        ]
    }


def judge_inputs(wildcards):
    """The reference classifier, for judging the digit tricks on the local backend."""
    if wildcards.backend in LOCAL_BACKENDS and enabled_runs():
        return {"judge": f"{PB}/classifier/model.safetensors"}
    return {}


def prompt_text(wildcards):
    """The DeepFloyd prompt behind an embedding file name."""
    prompts = all_prompts(config["partA"]["deepfloyd"])
    return {prompt_key(p): p for p in prompts}[wildcards.prompt]


# ---------------------------------------------------------------------------- targets


def all_figures():
    """Every figure of this configuration (the writeup fails if one is missing)."""
    return (
        parta_outputs("png")
        + parta_curves()
        + parta_upsampled_figures()
        + partb_figures()
    )


def all_numbers():
    """Every file of measured numbers the writeup tabulates."""
    return parta_outputs("json", tasks=PARTA_NUMBERS) + partb_numbers()


def final_targets():
    return all_figures() + all_numbers() + [f"{R}/writeup/index.html"]


def benchmark_patterns(wildcards):
    """Rule name -> `benchmark:` path pattern of every rule that writes one (the writeup reads
    the files under them at run time, so jobs of earlier invocations count too)."""
    return {
        r.name: str(r.benchmark)
        for r in workflow.rules
        if r.benchmark and r.name != "writeup"
    }


def res(kind, key):
    """A portable resource estimate from config (threads/gpu/mem_mb/runtime)."""
    return config["resources"][kind][key]
