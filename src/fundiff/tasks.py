"""The Part A task registry: every trick declared once, read by the rules, scripts and writeup.

One :class:`Task` per deliverable says what the workflow needs to know about it: its config key
(``partA.<backend>.tasks.<key>``, settings and defaults in ``schemas/config.schema.yaml``), how
its jobs are named (one job per item), the input image it reads, whether it loads the model, the
backend settings its recipe reads, its figure folder (= caption file stem = writeup section id),
its writeup title and the numbers it measures. The recipe itself (the maths) is the function
``fundiff.parta.<recipe>``.

This module is torch-free (``rules/common.smk`` imports it at parse time). The functions take
the validated config (``validate_config`` filled every default) and return plain data:

* :func:`items` / :func:`item_settings` / :func:`image_name`: a job's name, its settings (only
  that item's: editing one illusion reruns only its job) and its input image;
* :func:`backend_params`: only the backend settings the task reads (+ seed and device);
* :func:`writeup_sections` / :func:`caption`: section order, titles and config-generated
  captions for the writeup (the same templates the Snakemake report renders).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fundiff.errors import FundiffError
from fundiff.prompts import slug

CAPTIONS = Path(__file__).resolve().parents[2] / "report" / "captions"

Config = Mapping[str, Any]

#: the backends that run a Part B model (a prompt names a digit; judged by the classifier)
LOCAL_BACKENDS: tuple[str, ...] = ("local", "local_fm")
#: backend settings a job that runs the model needs to load it (its weights are file inputs;
#: the flow model also needs the DDPM schedule its velocity is read on)
MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "local": (),
    "local_fm": ("schedule",),
    "deepfloyd": ("stage1", "dtype", "variant", "offload"),
}
#: backend settings a job that only noises images needs for the noise schedule
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "local": ("schedule",),
    "local_fm": ("schedule",),
    "deepfloyd": ("stage1",),
}
#: DeepFloyd stage-II settings, for tasks whose results can be upsampled to 256 px
UPSAMPLE_KEYS: tuple[str, ...] = ("stage2", "upsample", "upsample_steps")
#: the backend whose stage II upsamples results to 256 px
UPSAMPLER = "deepfloyd"
#: whether a views-aware stage II exists (anagrams/hybrids at 256 px): it does,
#: ``fundiff.backends.DeepFloydStage2.views`` as ``fundiff.jobs.Job.views_upsampler``
VIEWS_STAGE2 = True
#: what every sampling loop reads: strided timesteps and the step's noise variance
LOOP = ("timesteps", "variance")


@dataclass(frozen=True)
class Task:
    """One Part A deliverable.

    Attributes:
        key: config key under ``partA.<backend>.tasks``.
        folder: figure folder under ``results/partA/<backend>/``, caption file stem
            (``report/captions/<folder>.rst``) and writeup section id.
        title: writeup section title (course numbering).
        recipe: name of the function in :mod:`fundiff.parta` that runs it.
        each: what one job is: ``"prompts"`` (one per prompt of ``prompts``, named by its
            slug), ``"test_image"`` (the backend's test image), ``"samples"`` (one job named
            ``samples``), ``"images"`` (one per name in ``images``), ``"image"`` (the name in
            ``image``), or ``"map:<field>"`` (one per key of the mapping ``<field>``).
        image: where its input image comes from: None, ``"test_image"``, ``"item"`` (the job's
            name is an input name) or ``"item.image"`` (the item's ``image`` entry).
        mask: also reads the image's mask (inpainting).
        model: runs the denoiser (False: only the noise schedule).
        judge: its local-backend results are judged by the Part B digit classifier (JSON key
            ``judged``, image sets as ``.npz`` in the job's folder ``<item>_judged/``; n/a on
            DeepFloyd); ``judge_samples`` in its settings says how many.
        curve: its jobs also plot the SDEdit curve ``<item>_curve.png`` (per noise level).
        measures: what its judged numbers mean (the writeup's Evaluation section).
        uses: backend settings its recipe reads (beyond seed and device).
        metrics: keys of its JSON that the writeup tabulates (empty: JSON not tabulated).
        prompts: fields of its settings that hold prompts (of each item for ``map:`` jobs; a
            list field holds several; null means the backend's base prompt).
        upsample: how its results go through DeepFloyd stage II (256 px) when its config sets
            ``upsample: true``: ``"plain"`` (stage II with the task's prompt), ``"views"``
            (stage II with the same views/factorization: anagrams, hybrids) or None (never).
        results: names of a job's single result images from the task's settings (the same for
            every item: a rule's outputs are fixed when the workflow is parsed); each
            upsampled result is saved as ``<item>-256px-<name>.png`` beside the figure.
    """

    key: str
    folder: str
    title: str
    recipe: str
    each: str
    image: str | None = None
    mask: bool = False
    model: bool = True
    judge: bool = False
    uses: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    upsample: str | None = None
    results: Callable[[Mapping[str, Any]], list[str]] | None = None
    curve: bool = False
    measures: str = ""

    @property
    def numbers(self) -> bool:
        """Whether the writeup tabulates this task's JSON."""
        return bool(self.metrics)

    @property
    def caption_file(self) -> Path:
        return CAPTIONS / f"{self.folder}.rst"


def _per_step_count(settings: Mapping[str, Any]) -> list[str]:
    """A0's results: sample i (1-based) of each step count, e.g. ``20steps_1``."""
    return [f"{s}steps_{i + 1}" for s in settings["steps"] for i in range(settings["n"])]


def _per_level(settings: Mapping[str, Any]) -> list[str]:
    """SDEdit-like results: one per noise level, e.g. ``i_start_5``."""
    return [f"i_start_{i}" for i in settings["i_starts"]]


def _numbered(prefix: str) -> Callable[[Mapping[str, Any]], list[str]]:
    """Results ``<prefix>_1`` .. ``<prefix>_n``, n from the task's settings."""
    return lambda settings: [f"{prefix}_{i + 1}" for i in range(settings["n"])]


_SAMPLE = ("guidance", *LOOP)

_SDEDIT = (
    "per noise level t/T: the fraction of edits the reference classifier still reads as the "
    "source digit (keep source) and their mean squared distance to the source ([0, 1] scale)"
)
_INPAINT = (
    "fraction of inpainted digits read as the source digit (baseline: the hole image alone) "
    "and the mean squared change outside the mask (should be about 0)"
)
_TRANSLATE = (
    "fraction of edits at the noisiest level read as the target digit (baseline: plain "
    "samples of the target prompt)"
)
_ANAGRAM = (
    "fraction read as digit a upright AND as digit b through the view (baseline: plain "
    "samples of a seen through the view and read as b)"
)
_HYBRID = (
    "fraction read as the low digit from far (blurred at sigma) AND as the high digit up "
    "close (baseline: plain samples of the high digit, same two readings)"
)
_EDIT = ("base_prompt", *_SAMPLE)

#: every Part A task, in course order (the writeup's section order)
TASKS: dict[str, Task] = {
    t.key: t
    for t in (
        Task("text_to_image", "a0_text_to_image", "0. Setup: sampling from text prompts",
             "text_to_image", "prompts", uses=("guidance", "variance"), prompts=("prompts",),
             upsample="plain", results=_per_step_count),
        Task("forward", "a1_1_forward", "1.1 Implementing the forward process",
             "forward", "test_image", image="test_image", model=False),
        Task("blur", "a1_2_blur", "1.2 Classical denoising", "blur", "test_image",
             image="test_image", model=False, uses=("forward_timesteps",),
             metrics=("best", "noisy_psnr")),
        Task("one_step", "a1_3_one_step", "1.3 One-step denoising", "one_step", "test_image",
             image="test_image", uses=("base_prompt", "forward_timesteps"),
             metrics=("psnr_one_step",)),
        Task("iterative", "a1_4_iterative", "1.4 Iterative denoising", "iterative",
             "test_image", image="test_image", uses=("base_prompt", *LOOP),
             metrics=("psnr_iterative", "psnr_one_step", "psnr_blur")),
        Task("sampling", "a1_5_sampling", "1.5 Diffusion model sampling", "sampling",
             "samples", uses=("base_prompt", *LOOP), upsample="plain",
             results=_numbered("sample")),
        Task("cfg", "a1_6_cfg", "1.6 Classifier-free guidance (CFG)", "cfg", "samples",
             uses=_EDIT, prompts=("prompt",), upsample="plain", results=_numbered("sample")),
        Task("sdedit", "a1_7_sdedit", "1.7 Image-to-image translation (SDEdit)", "sdedit",
             "images", image="item", uses=_EDIT, prompts=("prompt",), upsample="plain",
             results=_per_level, judge=True, metrics=("judged",), curve=True, measures=_SDEDIT),
        Task("sdedit_drawn", "a1_7_1_sdedit_drawn", "1.7.1 Editing hand-drawn and web images",
             "sdedit", "images", image="item", uses=_EDIT, prompts=("prompt",),
             upsample="plain", results=_per_level, judge=True, metrics=("judged",), curve=True,
             measures=_SDEDIT),
        Task("inpaint", "a1_7_2_inpaint", "1.7.2 Inpainting", "inpaint", "images",
             image="item", mask=True, uses=_EDIT, prompts=("prompt",), upsample="plain",
             results=_numbered("result"), judge=True, metrics=("judged",), measures=_INPAINT),
        Task("translate", "a1_7_3_translate", "1.7.3 Text-conditional image-to-image translation",
             "translate", "map:items", image="item.image", uses=_SAMPLE, prompts=("prompt",),
             upsample="plain", results=_per_level, judge=True, metrics=("judged",),
             measures=_TRANSLATE),
        Task("anagrams", "a1_8_anagrams", "1.8 Visual anagrams", "anagrams", "map:illusions",
             judge=True, uses=_SAMPLE, prompts=("prompts",), upsample="views",
             results=_numbered("seed"), metrics=("judged",), measures=_ANAGRAM),
        Task("hybrids", "a1_9_hybrids", "1.9 Hybrid images", "hybrids", "map:pairs",
             judge=True, uses=_SAMPLE, prompts=("low", "high"), upsample="views",
             results=_numbered("seed"), metrics=("judged",), measures=_HYBRID),
        Task("logo", "a_logo", "Bells & whistles: course logo", "translate", "image",
             image="item", uses=_SAMPLE, prompts=("prompt",), upsample="plain",
             results=_per_level, judge=True, metrics=("judged",), measures=_TRANSLATE),
    )
}  # fmt: skip


def get(key: str) -> Task:
    """The task with config key ``key``; a FundiffError names the unknown key."""
    if key not in TASKS:
        raise FundiffError(f"unknown Part A task {key!r} (known: {', '.join(TASKS)})")
    return TASKS[key]


def by_folder(folder: str) -> Task:
    """The task whose figures live in ``folder`` (e.g. ``a1_8_anagrams``)."""
    for task in TASKS.values():
        if task.folder == folder:
            return task
    raise FundiffError(f"no Part A task has the figure folder {folder!r}")


def _map_field(task: Task) -> str | None:
    return task.each.removeprefix("map:") if task.each.startswith("map:") else None


def items(bcfg: Config, key: str) -> list[str]:
    """Job names (one job each) of task ``key`` on a backend (``partA.<backend>``); [] if off."""
    task, tcfg = get(key), bcfg["tasks"][key]
    if not tcfg["enabled"]:
        return []
    field = _map_field(task)
    if field is not None:
        return list(tcfg[field])
    if task.each == "prompts":
        return [slug(p) for p in tcfg["prompts"]]
    if task.each == "test_image":
        return [bcfg["test_image"]]
    if task.each == "samples":
        return ["samples"]
    if task.each == "images":
        return list(tcfg["images"])
    if task.each == "image":
        return [tcfg["image"]]
    raise FundiffError(f"task {key}: unknown job kind {task.each!r}")


def item_settings(bcfg: Config, key: str, item: str) -> dict[str, Any]:
    """The task's settings for one job: the item's own entry as ``item``, other items dropped.

    Snakemake reruns a job when its params change, so a job sees only its own item: editing
    one illusion reruns that illusion only.
    """
    task = get(key)
    tcfg = copy.deepcopy(dict(bcfg["tasks"][key]))
    field = _map_field(task)
    if field is not None:
        tcfg["item"] = tcfg.pop(field)[item]
    elif task.each == "prompts":
        by_slug = {slug(p): p for p in tcfg.pop("prompts")}
        tcfg["item"] = {"prompt": by_slug[item]}
    elif task.each == "images":
        del tcfg["images"]
    return tcfg


def image_name(bcfg: Config, key: str, item: str) -> str | None:
    """The inputs-manifest name of the image a job reads (None for pure sampling)."""
    task = get(key)
    if task.image is None:
        return None
    if task.image == "test_image":
        return bcfg["test_image"]
    if task.image == "item.image":
        return bcfg["tasks"][key][_map_field(task)][item]["image"]
    return item


def image_refs(bcfg: Config, key: str) -> list[tuple[str, str | None]]:
    """(config key under ``partA.<backend>``, input name) of the image each job of the task
    reads ([] when the task is off or reads none), e.g. ``("tasks.sdedit.images[1]", "house")``.
    """
    task = get(key)
    if task.image is None:
        return []
    refs = []
    for i, item in enumerate(items(bcfg, key)):
        if task.image == "test_image":
            where = "test_image"
        elif task.image == "item.image":
            where = f"tasks.{key}.{_map_field(task)}.{item}.image"
        elif task.each == "images":
            where = f"tasks.{key}.images[{i}]"
        else:
            where = f"tasks.{key}.{task.each}"
        refs.append((where, image_name(bcfg, key, item)))
    return refs


def prompt_refs(bcfg: Config, key: str, item: str | None = None) -> list[tuple[str, str | None]]:
    """(config key under ``partA.<backend>``, prompt) of the prompts in the task's settings,
    whether it is enabled or not; only job ``item``'s when given. None: the base prompt."""
    task, tcfg = get(key), bcfg["tasks"][key]
    field = _map_field(task)
    if field is None:
        scopes = [(f"tasks.{key}", tcfg)]
    else:
        names = list(tcfg[field]) if item is None else [item]
        scopes = [(f"tasks.{key}.{field}.{name}", tcfg[field][name]) for name in names]
    refs: list[tuple[str, str | None]] = []
    for at, entry in scopes:
        for name in task.prompts:
            value = entry[name]
            if isinstance(value, list):
                refs += [(f"{at}.{name}[{j}]", p) for j, p in enumerate(value)]
            else:
                refs.append((f"{at}.{name}", value))
    if item is not None and task.each == "prompts":
        refs = [(where, p) for where, p in refs if slug(p) == item]
    return refs


def task_prompts(bcfg: Config, key: str, item: str | None) -> list[str]:
    """The prompts one Part A job conditions on: '' (CFG), the base prompt, and its own."""
    base = bcfg["base_prompt"]
    own = [base if p is None else p for _, p in prompt_refs(bcfg, key, item)]
    return sorted({"", base, *own})


def all_prompts(bcfg: Config) -> list[str]:
    """Every prompt the enabled tasks of a backend condition on (sorted, with '')."""
    prompts = {"", bcfg["base_prompt"]}
    for key in TASKS:
        if bcfg["tasks"][key]["enabled"]:
            for item in items(bcfg, key) or [None]:
                prompts |= set(task_prompts(bcfg, key, item))
    return sorted(prompts)


def backend_params(config: Config, backend: str, key: str) -> dict[str, Any]:
    """The backend settings task ``key`` reads (+ seed and device), nothing else.

    So editing, e.g., the guidance scale reruns only the tasks that sample with guidance.
    ``forward_timesteps`` is ``tasks.forward.timesteps`` (A1.2/A1.3 reuse A1.1's levels);
    ``schedule`` is the local model's (T, beta_start, beta_end) from its Part B run.
    """
    task, bcfg = get(key), config["partA"][backend]
    names = [*task.uses, *(MODEL_KEYS if task.model else SCHEDULE_KEYS)[backend]]
    if own_guidance(bcfg, key):  # the task's own scale: the backend's is not read
        names = [n for n in names if n != "guidance"]
    if upsampled(config, backend, key):
        names += UPSAMPLE_KEYS
    params: dict[str, Any] = {"seed": config["seed"], "device": config["device"]}
    for name in names:
        if name == "forward_timesteps":
            params[name] = bcfg["tasks"]["forward"]["timesteps"]
        elif name == "schedule":
            spec = config["partB"]["runs"][bcfg["run"]]
            params[name] = {k: spec[k] for k in ("T", "beta_start", "beta_end")}
        else:
            params[name] = bcfg[name]
    return params


def own_guidance(bcfg: Config, key: str) -> bool:
    """Whether task ``key`` sets its own CFG scale (``guidance`` not null at the task level), so
    none of its jobs reads the backend's (an item's own scale beats the task's)."""
    return bcfg["tasks"].get(key, {}).get("guidance") is not None


def upsampled(config: Config, backend: str, key: str) -> bool:
    """Whether the jobs of task ``key`` on ``backend`` also save each result at 256 px.

    On when the task's ``upsample`` is true (for A0 also the older backend-level
    ``partA.deepfloyd.upsample``). Only DeepFloyd has a stage II (elsewhere: one error naming
    the key); anagrams and hybrids go through it with their views (``VIEWS_STAGE2``).
    """
    task, bcfg = get(key), config["partA"][backend]
    tcfg = bcfg["tasks"][key]
    on = bool(tcfg.get("upsample")) or (key == "text_to_image" and bool(bcfg.get("upsample")))
    if not (on and bcfg["enabled"] and tcfg["enabled"]):
        return False
    where = f"config key partA.{backend}.tasks.{key}.upsample"
    if task.upsample is None or backend != UPSAMPLER:
        raise FundiffError(f"{where}: only DeepFloyd results of generating tasks have a stage II")
    if task.upsample == "views" and not VIEWS_STAGE2:
        raise FundiffError(
            f"{where}: stage II with the views of {key} is not available yet; set it to false"
        )
    return True


def check(config: Config) -> None:
    """Registry-level config checks (run at parse time): FundiffError naming the key."""
    for backend in config["partA"]:
        if isinstance(config["partA"][backend], Mapping):
            for key in TASKS:
                upsampled(config, backend, key)


def result_names(config: Config, backend: str, key: str) -> list[str]:
    """Names of the 256 px result images each job of a task saves ([] when it upsamples none)."""
    task = get(key)
    if task.results is None or not upsampled(config, backend, key):
        return []
    return task.results(config["partA"][backend]["tasks"][key])


def image_spec(config: Config, backend: str, key: str, item: str) -> dict[str, Any] | None:
    """The inputs-manifest entry of a job's image (None when it reads none)."""
    name = image_name(config["partA"][backend], key, item)
    return None if name is None else config["inputs"][name]


def job_params(config: Config, backend: str, key: str, item: str) -> dict[str, Any]:
    """Everything a job's rule passes as params: task, backend settings, settings, image."""
    return {
        "task": key,
        "backend": backend_params(config, backend, key),
        "settings": item_settings(config["partA"][backend], key, item),
        "image": image_spec(config, backend, key, item),
    }


# ---------------------------------------------------------------------------- writeup


def writeup_sections() -> list[tuple[str, str]]:
    """(folder, title) of every Part A task in course order: the writeup's section tree."""
    return [(t.folder, t.title) for t in TASKS.values()]


class _Attrs(dict):
    """A dict whose keys also read as attributes (Snakemake's wildcards/params in templates)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def caption(config: Config, backend: str, key: str, item: str) -> str:
    """The caption of one Part A figure, generated from the config values of its job.

    Renders ``report/captions/<folder>.rst`` (the template the Snakemake report renders for
    the same figure) with the job's own params, so the writeup and the report say the same.
    """
    import jinja2

    task = get(key)
    snakemake = _Attrs(
        wildcards=_Attrs(backend=backend, item=item),
        params=_Attrs(job_params(config, backend, key, item)),
        config=config,
    )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    text = env.from_string(task.caption_file.read_text()).render(snakemake=snakemake)
    return " ".join(text.split())
