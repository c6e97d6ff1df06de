"""Part A deliverables as recipes over the sampler core, one function per task.

Each recipe ``recipe(job, image, mask) -> (Grid, numbers)`` takes a :class:`Job` (the denoiser
of any backend, the backend's and the task's settings from config) and the job's input image
(1, C, H, W) and mask (1, 1, H, W) (None when the task reads none), and returns its figure as
data (:class:`fundiff.figures.Grid`) and the numbers it measured (saved as JSON next to the
figure by :func:`run_task`). Which recipe a task runs is declared in :mod:`fundiff.tasks`.
Nothing here knows which backend it runs on: resolution, channels, value range and T come from
the denoiser; strided timesteps are given in DeepFloyd's 1000-step units and scaled to T.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fundiff import parta_metrics as pm
from fundiff import samplers, tasks
from fundiff.errors import FundiffError
from fundiff.figures import Grid, save_image
from fundiff.filters import gaussian_blur, hybrid_filters
from fundiff.jobs import Job, Views, to_T, upsample_kept
from fundiff.schedules import leading_timesteps
from fundiff.views import get_view

#: what a recipe returns: its figure (as data) and the numbers it measured
Result = tuple[Grid, dict[str, Any]]


def psnr_db(x: Tensor, ref: Tensor, value_range: tuple[float, float]) -> float:
    """PSNR in dB of one image batch against a reference, clipped to the value range."""
    lo, hi = value_range
    return float(samplers.psnr(x.clamp(lo, hi), ref, data_range=hi - lo).mean())


def _row(batch: Tensor) -> list[Tensor]:
    return [batch[i].detach().float().cpu() for i in range(batch.shape[0])]


def _label(p: str) -> str:
    return repr(p) if p else "'' (unconditional)"


# ----------------------------------------------------------------------------- recipes


def text_to_image(job: Job, image: Tensor | None, mask: Tensor | None) -> Result:
    """A0: CFG samples of one prompt at several step counts (+ stage II where available)."""
    prompt, s = job.settings["item"]["prompt"], job.settings
    T = job.schedule.num_train_timesteps
    rows, labels, up_rows, up_labels = [], [], [], []
    for steps in s["steps"]:
        ts = leading_timesteps(T, steps)
        x = samplers.sample(
            job.denoiser,
            prompt,
            s["n"],
            generator=job.generator,
            timesteps=ts,
            guidance=job.guidance,
            final_step=True,
            step="pipeline",  # as the model's own pipeline steps (IF: dynamic thresholding)
            **job.kw,
        )
        rows.append(_row(x))
        labels.append(f"{steps} steps")
        if job.upsampler is not None:
            up_rows.append(_row(job.upsampler(x, prompt, job.generator)))
            up_labels.append(f"{steps} steps, 256 px")
            job.native.update({f"{steps}steps_{i + 1}": im for i, im in enumerate(up_rows[-1])})
    grid = Grid(
        rows + up_rows,
        row_labels=labels + up_labels,
        col_labels=[f"sample {i + 1}" for i in range(s["n"])],
        title=f"{_label(prompt)}, CFG {job.guidance}, seed {job.backend['seed']}",
    )
    return grid, {
        "prompt": prompt,
        "steps": list(s["steps"]),
        "upsampled": job.upsampler is not None,
    }


def forward(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.1: the test image noised at t = 250/500/750 (scaled to T)."""
    ts = [to_T(t, job.schedule) for t in job.settings["timesteps"]]
    noisy = [job.schedule.forward(image, t, job.generator)[0] for t in ts]
    grid = Grid(
        [[image[0].cpu()] + [n[0].cpu() for n in noisy]],
        col_labels=["original"] + [f"t = {t}" for t in ts],
        title="Forward process",
    )
    return grid, {"timesteps": ts}


def blur(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.2: the best Gaussian blur (by PSNR to the clean image) of each noisy image."""
    ts = [to_T(t, job.schedule) for t in job.backend["forward_timesteps"]]
    noisy = torch.cat([job.schedule.forward(image, t, job.generator)[0] for t in ts])
    lo, hi = job.value_range
    blurred, best = samplers.best_blur(
        noisy,
        image.expand_as(noisy),
        kernel_sizes=job.settings["kernel_sizes"],
        sigmas=job.settings["sigmas"],
        data_range=hi - lo,
    )
    cells = [f"k {b['kernel_size']}, σ {b['sigma']:g}\n{b['psnr']:.1f} dB" for b in best]
    grid = Grid(
        [_row(noisy), _row(blurred)],
        row_labels=["noisy", "best blur"],
        col_labels=[f"t = {t}" for t in ts],
        cell_labels=[[""] * len(ts), cells],
        title="Classical denoising: best Gaussian blur",
    )
    return grid, {
        "timesteps": ts,
        "best": best,
        "noisy_psnr": [psnr_db(n[None], image, job.value_range) for n in noisy],
    }


def one_step(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.3: original / noisy / one-step estimate at each forward timestep."""
    ts = [to_T(t, job.schedule) for t in job.backend["forward_timesteps"]]
    prompt = job.backend["base_prompt"]
    rows, psnrs = [[], [], []], []
    for t in ts:
        x_t = job.schedule.forward(image, t, job.generator)[0]
        x0 = samplers.one_step_denoise(job.denoiser, x_t, t, prompt)
        rows[0].append(image[0].cpu())
        rows[1].append(x_t[0].cpu())
        rows[2].append(x0[0].float().cpu())
        psnrs.append(psnr_db(x0, image, job.value_range))
    grid = Grid(
        rows,
        row_labels=["original", "noisy", "one-step"],
        col_labels=[f"t = {t}" for t in ts],
        title=f"One-step denoising, prompt {_label(prompt)}",
    )
    return grid, {"timesteps": ts, "prompt": prompt, "psnr_one_step": psnrs}


def iterative(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.4: iterative denoising from i_start beside one-step and blur."""
    s, ts = job.settings, job.timesteps
    i_start = s["i_start"]
    if not 0 <= i_start < len(ts) - 1:
        raise FundiffError(
            f"config key tasks.iterative.i_start: {i_start} is outside 0..{len(ts) - 2}"
        )
    prompt = job.backend["base_prompt"]
    x_t = job.schedule.forward(image, ts[i_start], job.generator)[0]
    shown: list[tuple[int, Tensor]] = []

    def keep(i: int, t: int, x: Tensor, x0: Tensor) -> None:
        if (i - i_start) % s["show_every"] == 0:
            shown.append((t, x[0].float().cpu()))

    result = samplers.iterative_denoise(
        job.denoiser,
        x_t,
        i_start,
        prompt,
        generator=job.generator,
        timesteps=ts,
        callback=keep,
        **job.kw,
    )
    single = samplers.one_step_denoise(job.denoiser, x_t, ts[i_start], prompt)
    lo, hi = job.value_range
    blurred, best = samplers.best_blur(x_t, image, data_range=hi - lo)
    top = [x for _, x in shown]
    bottom = [image[0].cpu(), result[0].float().cpu(), single[0].float().cpu(), blurred[0].cpu()]
    grid = Grid(
        [top, bottom],
        cell_labels=[[f"t = {t}" for t, _ in shown], ["original", "iterative", "one-step", "blur"]],
        title=f"Iterative denoising from t = {ts[i_start]} (i_start {i_start})",
    )
    return grid, {
        "i_start": i_start,
        "t_start": ts[i_start],
        "shown_timesteps": [t for t, _ in shown],
        "psnr_iterative": psnr_db(result, image, job.value_range),
        "psnr_one_step": psnr_db(single, image, job.value_range),
        "psnr_blur": best[0]["psnr"],
    }


def _samples(job: Job, prompt: str, guidance: float | None, title: str) -> Result:
    """Samples from pure noise in one row (A1.5 without, A1.6 with CFG)."""
    n = job.settings["n"]
    x = samplers.sample(job.denoiser, prompt, n, **job.loop(guidance=False), guidance=guidance)
    job.keep([f"sample_{i + 1}" for i in range(n)], x, prompt)
    grid = Grid([_row(x)], col_labels=[f"sample {i + 1}" for i in range(len(x))], title=title)
    return grid, {"prompt": prompt, "guidance": guidance, "n": len(x)}


def sampling(job: Job, image: Tensor | None, mask: Tensor | None) -> Result:
    """A1.5: samples from pure noise with the base prompt, no CFG."""
    prompt = job.backend["base_prompt"]
    return _samples(job, prompt, None, f"Samples of {_label(prompt)}, no CFG")


def cfg(job: Job, image: Tensor | None, mask: Tensor | None) -> Result:
    """A1.6: classifier-free guidance samples."""
    prompt, g = job.prompt(), job.guidance
    return _samples(job, prompt, g, f"CFG samples of {_label(prompt)}, scale {g}")


def _levels(job: Job, image: Tensor, prompt: str, title: str, judged: str) -> Result:
    """SDEdit-like results at each ``i_starts`` level: ``count(job, 1)`` per level in one
    batch (the figure shows the first), judged as ``judged`` (``"sdedit"``/``"translation"``)."""
    levels = job.settings["i_starts"]
    n = pm.count(job, 1)
    results = samplers.sdedit(
        job.denoiser, image.expand(n, -1, -1, -1), levels, prompt, **job.loop()
    )
    job.keep([f"i_start_{i}" for i in levels], pm.first(results), prompt)
    row = [r[0].float().cpu() for r in results] + [image[0].cpu()]
    cols = [f"i_start {i} (t {job.timesteps[i]})" for i in levels] + ["original"]
    grid = Grid([row], col_labels=cols, title=title)
    if judged == "translation":
        verdict = pm.translation(job, results, image, levels, prompt)
    else:
        verdict = pm.sdedit(job, results, image, levels)
    return grid, {
        "prompt": prompt,
        "i_starts": list(levels),
        "t_starts": [job.timesteps[i] for i in levels],
        "levels": pm.levels(job, levels),
        "mse_to_source": pm.distances(job, results, image),
        "judged": verdict,
    }


def sdedit(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.7 / A1.7.1: SDEdit at several noise levels."""
    prompt = job.prompt()
    return _levels(
        job,
        image,
        prompt,
        f"SDEdit towards {_label(prompt)}, CFG {job.guidance}",
        "sdedit",
    )


def translate(job: Job, image: Tensor, mask: Tensor | None) -> Result:
    """A1.7.3 and the logo extra: text-conditional image-to-image."""
    item = job.settings.get("item") or {}
    prompt = item.get("prompt") or job.settings["prompt"]
    title = f"Text-conditional translation to {_label(prompt)}"
    return _levels(job, image, prompt, title, "translation")


def inpaint(job: Job, image: Tensor, mask: Tensor) -> Result:
    """A1.7.2: original / mask / hole / results (one per seed)."""
    prompt, s = job.prompt(), job.settings
    lo, _ = job.value_range
    n = pm.count(job, s["n"])
    batch = samplers.inpaint(
        job.denoiser,
        image.expand(n, -1, -1, -1),
        mask,
        prompt,
        **job.loop(),
        repaint_jumps=s["repaint_jumps"],
    )
    results = [batch[k : k + 1] for k in range(s["n"])]  # the figure's
    job.keep([f"result_{k + 1}" for k in range(len(results))], torch.cat(results), prompt)
    m = mask[0].cpu()
    mask_img = m.expand(image.shape[1], -1, -1) * (job.value_range[1] - lo) + lo
    hole = image[0].cpu() * (1 - m) + lo * m
    row = [image[0].cpu(), mask_img, hole] + [r[0].float().cpu() for r in results]
    cols = ["original", "mask", "hole"] + [f"result {i + 1}" for i in range(len(results))]
    grid = Grid([row], col_labels=cols, title=f"Inpainting with {_label(prompt)}")
    outside = [float(((r - image).abs() * (1 - mask)).amax()) for r in results]
    return grid, {
        "prompt": prompt,
        "n": len(results),
        "repaint_jumps": s["repaint_jumps"],
        "max_change_outside_mask": outside,
        "judged": pm.inpainting(job, batch, image, mask),
    }


def anagrams(job: Job, image: Tensor | None, mask: Tensor | None) -> Result:
    """A1.8: visual anagrams, several seeds; upright row and row seen through the view."""
    item, n = job.settings["item"], job.settings["n"]
    p1, p2 = item["prompts"]
    view = get_view(item["view"])
    views = ["identity", view]
    batch = samplers.visual_anagram(job.denoiser, [p1, p2], views, pm.count(job, n), **job.loop())
    x = batch[:n]  # the figure's
    seeds = [f"seed_{k + 1}" for k in range(n)]
    job.keep(seeds, x, p1, Views((p1, p2), ("identity", item["view"])))
    seen = view.view(x)
    grid = Grid(
        [_row(x), _row(seen)],
        row_labels=[_label(p1), f"{item['view']}: {_label(p2)}"],
        col_labels=[f"seed {i + 1}" for i in range(n)],
        title=f"Visual anagram ({item['view']})",
    )
    numbers: dict[str, Any] = {"prompts": [p1, p2], "view": item["view"], "n": n}
    numbers["judged"] = pm.anagram(job, batch, view, (p1, p2))
    return grid, numbers


def hybrids(job: Job, image: Tensor | None, mask: Tensor | None) -> Result:
    """A1.9: hybrid images, several seeds; full size beside the far-away (low-pass) look."""
    item, n = job.settings["item"], job.settings["n"]
    low, high = item["low"], item["high"]
    batch = samplers.hybrid(
        job.denoiser,
        [low, high],
        pm.count(job, n),
        **job.loop(),
        sigma=item["sigma"],
        kernel_size=item["kernel"],
    )
    x = batch[:n]  # the figure's
    lp = hybrid_filters(job.denoiser.resolution, sigma=item["sigma"], kernel_size=item["kernel"])[0]
    seeds = [f"seed_{k + 1}" for k in range(n)]
    job.keep(seeds, x, low, Views((low, high), ("lowpass", "highpass"), (lp.sigma, lp.kernel_size)))
    far = gaussian_blur(x.float(), lp.kernel_size, lp.sigma)
    small = torch.nn.functional.interpolate(x.float(), scale_factor=0.25, mode="area")
    grid = Grid(
        [_row(x), _row(far), _row(small)],
        row_labels=["up close", "from far (blurred)", "downscaled 4x"],
        col_labels=[f"seed {i + 1}" for i in range(n)],
        title=f"Hybrid: {_label(low)} far, {_label(high)} near",
    )
    numbers: dict[str, Any] = dict(low=low, high=high, sigma=lp.sigma, kernel=lp.kernel_size, n=n)
    numbers["judged"] = pm.hybrid(job, batch, low, high, lp.sigma, lp.kernel_size)
    return grid, numbers


def recipe(task: str) -> Callable[[Job, Tensor | None, Tensor | None], Result]:
    """The recipe function of a registered task (e.g. ``logo`` runs :func:`translate`)."""
    return globals()[tasks.get(task).recipe]


@torch.no_grad()
def prepare_job(
    backend: str,
    params: Mapping[str, Any],
    denoiser: Any,
    *,
    schedule: Any = None,
    judge: Any = None,
    with_mask: bool = False,
    upsample: bool = False,
) -> tuple[Job, Tensor | None, Tensor | None]:
    """A Part A job as its rule runs it, and the job's input image.

    Args:
        backend: "local", "local_fm" or "deepfloyd".
        params: the rule's params, :func:`fundiff.tasks.job_params`: ``backend`` (the keys the
            task reads), ``settings`` (task + item), ``image`` (inputs manifest entry or None).
        denoiser: the loaded backend, or None for a task without a model (then ``schedule``).
        judge: the reference classifier of judged tasks, or None.
        with_mask: also load the image's mask.
        upsample: attach DeepFloyd's stage II (tasks with 256 px results).

    Returns:
        (job, image (1, C, R, R) in the backend's value range or None, mask (1, 1, R, R) in
        [0, 1] or None), R and C the denoiser's (else the backend's) resolution and channels.
    """
    from fundiff import backends, images

    res, channels, value_range = backends.BACKEND_GEOMETRY[backend]
    if denoiser is not None:
        res, channels = denoiser.resolution, denoiser.channels
    settings = {**params["backend"], "value_range": value_range}
    spec = params["image"]
    image = mask = None
    if spec is not None:
        image, mask = images.load_input(
            spec, resolution=res, channels=channels, value_range=value_range, with_mask=with_mask
        )
    stage2 = backends.upsamplers(backend, settings, denoiser) if upsample else {}
    job = Job(
        denoiser,
        settings,
        params["settings"],
        schedule=schedule,
        judge=judge,
        digit=(spec or {}).get("digit"),
        **stage2,
    )
    return job, image, mask


def run_task(
    task: str,
    job: Job,
    image: Tensor | None,
    mask: Tensor | None,
    out_png: str | Path,
    native: Mapping[str, str | Path] | None = None,
    *,
    item: str = "item",
    judged_dir: str | Path | None = None,
    curve_png: str | Path | None = None,
) -> dict:
    """Run one Part A deliverable and save its figure, plus each single result named in
    ``native`` (name -> PNG path) at its native size; returns the numbers (JSON for the caller).

    ``judged_dir``: folder (made, may stay empty) for the judged image sets as
    ``{task}__{item}__{view}.npz``; ``curve_png``: the SDEdit curve (judged rates and distance
    to the source per noise level; only the distance where nothing was judged).
    """
    run = recipe(task)
    if image is not None:
        image = image.to(job.device)
    if mask is not None:
        mask = mask.to(job.device)
    grid, numbers = run(job, image, mask)
    upsample_kept(job)
    grid.save(out_png, value_range=job.value_range)
    for name, path in (native or {}).items():
        if name not in job.native:
            raise FundiffError(f"task {task}: no result {name!r} (made: {sorted(job.native)})")
        save_image(job.native[name], path, value_range=job.value_range)
    if judged_dir is not None:
        Path(judged_dir).mkdir(parents=True, exist_ok=True)
        if job.judged is not None:
            job.judged.save(judged_dir, task, item)
    if curve_png is not None:
        _plot_curve(numbers, curve_png, f"{tasks.get(task).title}: {item}")
    # the scale the job sampled with, wherever it was set (item, task or backend)
    used = {"guidance": job.guidance_set} if job.guidance_set is not None else {}
    return {"task": task, "seed": job.backend["seed"], **used, **numbers}


def _plot_curve(numbers: Mapping[str, Any], path: str | Path, title: str) -> None:
    """The SDEdit curve of a level task's numbers (judged rates where judged)."""
    from fundiff.metrics import plot_sdedit_curve

    judged = numbers.get("judged") or {}
    curve = {"levels": numbers["levels"], "mse_to_source": numbers["mse_to_source"]}
    for key in ("keep_source", "reach_target"):
        if key in judged:
            curve[key] = judged[key]
    plot_sdedit_curve(curve, path, title=title)
