"""Config validation, wildcard constraints, target lists and input/param functions.

Everything here only *wires files*: the logic lives in the fundiff library.
"""

import sys

from fundiff.config import (
    BACKENDS,
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

# task key in config -> folder name of its figures (course numbering)
PARTA_TASKS = {
    "text_to_image": "a0_text_to_image",
    "forward": "a1_1_forward",
    "blur": "a1_2_blur",
    "one_step": "a1_3_one_step",
    "iterative": "a1_4_iterative",
    "sampling": "a1_5_sampling",
    "cfg": "a1_6_cfg",
    "sdedit": "a1_7_sdedit",
    "sdedit_drawn": "a1_7_1_sdedit_drawn",
    "inpaint": "a1_7_2_inpaint",
    "translate": "a1_7_3_translate",
    "anagrams": "a1_8_anagrams",
    "hybrids": "a1_9_hybrids",
    "logo": "a_logo",
}
# tasks whose job also writes measured numbers next to the figure
PARTA_NUMBERS = {"blur", "one_step", "iterative", "anagrams", "hybrids"}


def enabled_backends():
    if not config["partA"]["enabled"]:
        return []
    return [b for b in BACKENDS if config["partA"][b]["enabled"]]


def task_items(backend, task):
    """Item names (one job each) of a Part A task on a backend."""
    bcfg = config["partA"][backend]
    tcfg = bcfg["tasks"][task]
    if not tcfg["enabled"]:
        return []
    if task == "text_to_image":
        return [slug(p) for p in tcfg["prompts"]]
    if task in ("forward", "blur", "one_step", "iterative"):
        return [bcfg["test_image"]]
    if task in ("sampling", "cfg"):
        return ["samples"]
    if task in ("sdedit", "sdedit_drawn", "inpaint"):
        return list(tcfg["images"])
    if task == "translate":
        return list(tcfg["items"])
    if task == "anagrams":
        return list(tcfg["illusions"])
    if task == "hybrids":
        return list(tcfg["pairs"])
    if task == "logo":
        return [tcfg["image"]]
    raise ValueError(task)


def parta_outputs(ext, tasks=PARTA_TASKS):
    return [
        f"{R}/partA/{b}/{PARTA_TASKS[t]}/{item}.{ext}"
        for b in enabled_backends()
        for t in tasks
        for item in task_items(b, t)
    ]


def backend_params(wildcards):
    """What every Part A job of a backend needs: model, schedule, guidance, seed."""
    bcfg = config["partA"][wildcards.backend]
    keep = ("guidance", "timesteps", "base_prompt", "test_image", "variance")
    params = {k: bcfg[k] for k in keep}
    params["forward_timesteps"] = bcfg["tasks"]["forward"]["timesteps"]
    params["seed"] = config["seed"]
    params["device"] = config["device"]
    if wildcards.backend == "deepfloyd":
        for k in ("stage1", "stage2", "dtype", "variant", "upsample", "upsample_steps"):
            params[k] = bcfg[k]
    else:
        spec = config["partB"]["runs"][bcfg["run"]]
        params["run"] = bcfg["run"]
        params["schedule"] = {k: spec[k] for k in ("T", "beta_start", "beta_end")}
    return params


def task_params(task):
    """Params function for one task: only this item's settings (so edits rerun only it)."""

    def params(wildcards):
        tcfg = dict(config["partA"][wildcards.backend]["tasks"][task])
        for key, field in (
            ("items", "translate"),
            ("illusions", "anagrams"),
            ("pairs", "hybrids"),
        ):
            if task == field:
                tcfg["item"] = tcfg.pop(key)[wildcards.item]
        if task == "text_to_image":
            tcfg["item"] = {"prompt": prompt_for_slug(wildcards)}
            del tcfg["prompts"]
        if task in ("sdedit", "sdedit_drawn", "inpaint"):
            del tcfg["images"]
        return tcfg

    return params


def prompt_for_slug(wildcards):
    prompts = config["partA"][wildcards.backend]["tasks"]["text_to_image"]["prompts"]
    return {slug(p): p for p in prompts}[wildcards.item]


def image_name(task):
    """Which input image a job of ``task`` reads (None for pure sampling)."""

    def name(wildcards):
        bcfg = config["partA"][wildcards.backend]
        if task in ("forward", "blur", "one_step", "iterative"):
            return bcfg["test_image"]
        if task == "translate":
            return bcfg["tasks"]["translate"]["items"][wildcards.item]["image"]
        return wildcards.item

    return name


NO_IMAGE = {"text_to_image", "sampling", "cfg", "anagrams", "hybrids"}
NO_MODEL = {"forward", "blur"}


def image_spec(task):
    """Params function: the inputs-manifest entry of the job's image (None if it has none)."""

    def spec(wildcards):
        if task in NO_IMAGE:
            return None
        return config["inputs"][image_name(task)(wildcards)]

    return spec


def parta_inputs(task):
    """Input function of a Part A job: model files, its image (+ mask), the judge."""

    def inputs(wildcards):
        files = {}
        if task not in NO_MODEL:
            files.update(model_inputs(task, wildcards))
        if task not in NO_IMAGE:
            entry = config["inputs"][image_name(task)(wildcards)]
            files["image"] = entry["path"]
            if task == "inpaint":
                files["mask"] = entry["mask"]
        if task in ("anagrams", "hybrids"):
            files.update(judge_inputs(wildcards))
        return files

    return inputs


def model_inputs(task, wildcards):
    """The model files a Part A job loads: local weights, or its prompts' embeddings."""
    if wildcards.backend == "local":
        run = config["partA"]["local"]["run"]
        return {"model": f"{PB}/{run}/model.safetensors"}
    bcfg = config["partA"]["deepfloyd"]
    return {
        "embeddings": [
            f"{R}/partA/deepfloyd/prompts/{prompt_key(p)}.safetensors"
            for p in task_prompts(bcfg, task, wildcards.item)
        ]
    }


def judge_inputs(wildcards):
    """The reference classifier, for judging digit anagrams/hybrids on the local backend."""
    if wildcards.backend == "local" and enabled_runs():
        return {"judge": f"{PB}/classifier/model.safetensors"}
    return {}


def prompt_text(wildcards):
    """The DeepFloyd prompt behind an embedding file name."""
    prompts = all_prompts(config["partA"]["deepfloyd"])
    return {prompt_key(p): p for p in prompts}[wildcards.prompt]


# ---------------------------------------------------------------------------- targets


def all_figures():
    """Every figure of this configuration (the writeup fails if one is missing)."""
    return parta_outputs("png") + partb_figures()


def all_numbers():
    """Every file of measured numbers the writeup tabulates."""
    return parta_outputs("json", tasks=PARTA_NUMBERS) + partb_numbers()


def final_targets():
    return all_figures() + all_numbers() + [f"{R}/writeup/index.html"]


def res(kind, key):
    """A portable resource estimate from config (threads/gpu/mem_mb/runtime)."""
    return config["resources"][kind][key]
