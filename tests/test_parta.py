"""The Part A task registry and the recipes, on fake/oracle denoisers (no workflow run)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fundiff import parta, tasks
from fundiff.config import load_schema, load_yaml, validate_config
from fundiff.denoisers import DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.schedules import NoiseSchedule

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_TASKS = load_schema()["properties"]["partA"]["properties"]["local"]["properties"]["tasks"][
    "properties"
]
RES = 16  # fake image size: small enough for milliseconds, big enough for the views/filters


def validated(*overlays: str) -> dict[str, Any]:
    """config.yaml (+ overlays from configs/), validated from the repository root."""
    from snakemake.utils import update_config

    cfg = load_yaml(ROOT / "config.yaml")
    for name in overlays:
        update_config(cfg, load_yaml(ROOT / "configs" / name))
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # input paths in the config are relative to the repository root
        return validate_config(cfg)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return validated()


class Oracle:
    """A denoiser that knows the clean image x0 (1, C, R, R) in [0, 1] and returns the true
    noise of x_t, with conditions that are a hash of the prompt (any prompt is accepted)."""

    value_range = (0.0, 1.0)
    variance_type = "fixed_small"
    device = "cpu"

    def __init__(self, x0: torch.Tensor, T: int = 50) -> None:
        self.x0 = x0
        self.channels, self.resolution = x0.shape[1], x0.shape[-1]
        self.schedule = NoiseSchedule.linear(T=T, beta_start=1e-4, beta_end=0.02)

    def conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([[float(sum(map(ord, p)) % 7), float(len(p))] for p in prompts])

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> DenoiserOutput:
        ab = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1).to(x_t.dtype)
        return DenoiserOutput((x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt(), None)


class Tracked(dict):
    """A dict that records which keys were read."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def image(channels: int = 1) -> torch.Tensor:
    """A smooth test image (1, C, RES, RES) in [0, 1]: a bright disc on a dark gradient."""
    yy, xx = torch.meshgrid(torch.arange(RES), torch.arange(RES), indexing="ij")
    disc = ((yy - RES / 2) ** 2 + (xx - RES / 3) ** 2 < (RES / 4) ** 2).float()
    img = 0.2 + 0.6 * disc + 0.1 * xx / RES
    return img.expand(1, channels, RES, RES).clone()


def job_for(config: Mapping[str, Any], key: str, item: str, x0: torch.Tensor) -> parta.Job:
    """A Job on the oracle with exactly the params the rule would pass (local backend)."""
    params = tasks.job_params(config, "local", key, item)
    backend = Tracked(params["backend"], value_range=(0.0, 1.0))
    settings = params["settings"]
    nullable = SCHEMA_TASKS[key]["properties"].get("prompt", {}).get("type", [])
    if "null" in nullable:  # null prompt = the backend's base prompt: read it
        settings["prompt"] = None
    return parta.Job(Oracle(x0), backend, settings)


# ----------------------------------------------------------------------------- registry


def test_registry_is_complete() -> None:
    """Every task: one caption file, one schema entry, a unique folder, an existing recipe."""
    backends = load_schema()["properties"]["partA"]["properties"]
    backend_keys = {b: set(backends[b]["properties"]) for b in ("local", "deepfloyd")}
    for b in backend_keys:
        assert set(backends[b]["properties"]["tasks"]["properties"]) == set(tasks.TASKS)
        for key, task in tasks.TASKS.items():
            has = "upsample" in backends[b]["properties"]["tasks"]["properties"][key]["properties"]
            assert has == (task.upsample is not None) == (task.results is not None), key
    folders = [t.folder for t in tasks.TASKS.values()]
    assert len(set(folders)) == len(folders)
    for key, task in tasks.TASKS.items():
        assert task.caption_file.is_file(), task.folder
        assert callable(parta.recipe(key))
        assert tasks.by_folder(task.folder) is task
        for name in task.uses:
            assert name in {"forward_timesteps"} | (
                backend_keys["local"] & backend_keys["deepfloyd"]
            )
    assert [f for f, _ in tasks.writeup_sections()] == folders


def test_unknown_task_names_the_key() -> None:
    with pytest.raises(FundiffError, match="unknown Part A task 'nope'"):
        tasks.get("nope")
    with pytest.raises(FundiffError, match="unknown Part A task"):
        parta.recipe("nope")


def test_items_settings_and_images_per_job_kind(config: dict[str, Any]) -> None:
    local = config["partA"]["local"]
    assert tasks.items(local, "text_to_image") == ["a_3", "seven", "digit_8"]
    assert tasks.item_settings(local, "text_to_image", "seven")["item"] == {"prompt": "seven"}
    assert "prompts" not in tasks.item_settings(local, "text_to_image", "seven")
    assert tasks.items(local, "forward") == ["mnist_7"]
    assert tasks.items(local, "cfg") == ["samples"]
    assert tasks.items(local, "sdedit") == ["mnist_7", "mnist_2"]
    assert tasks.image_name(local, "sdedit", "mnist_2") == "mnist_2"
    illusion = tasks.item_settings(local, "anagrams", "six_nine_flip")
    assert illusion["item"]["view"] == "vflip" and "illusions" not in illusion
    assert tasks.image_name(local, "translate", "two_to_three") == "mnist_2"
    assert tasks.image_name(local, "anagrams", "six_nine_flip") is None
    assert tasks.items(local, "logo") == ["drawn_4"]
    off = {
        **local,
        "tasks": {**local["tasks"], "blur": {**local["tasks"]["blur"], "enabled": False}},
    }
    assert tasks.items(off, "blur") == []


def test_backend_params_hold_only_what_the_task_reads(config: dict[str, Any]) -> None:
    fwd = tasks.backend_params(config, "local", "forward")
    assert set(fwd) == {"seed", "device", "schedule"} and fwd["schedule"]["T"] == 300
    cfg = tasks.backend_params(config, "deepfloyd", "cfg")
    assert cfg["guidance"] == 7.0 and {"stage1", "dtype", "variant"} <= set(cfg)
    assert "stage2" not in cfg and "test_image" not in cfg
    assert "stage2" not in tasks.backend_params(config, "deepfloyd", "text_to_image")
    a0 = tasks.backend_params(validated("ci.yaml"), "deepfloyd", "text_to_image")
    assert {"stage2", "upsample", "upsample_steps"} <= set(a0) and "timesteps" not in a0


def test_captions_come_from_config_values(config: dict[str, Any]) -> None:
    """Captions render the job's own settings (no template left, no None); edits show up."""
    ci = validated("ci.yaml")
    for key in tasks.TASKS:
        for backend in ("local", "deepfloyd"):
            for item in tasks.items(ci["partA"][backend], key)[:1]:
                text = tasks.caption(ci, backend, key, item)
                assert text and "{" not in text and "None" not in text, (key, text)
                assert f"({backend} backend, seed 0)" in text
    a0 = tasks.caption(ci, "deepfloyd", "text_to_image", "a_rocket_ship")
    assert "3 and 5 denoising steps" in a0 and "256 px by stage II in 3 steps" in a0
    assert "scale 5.0" in tasks.caption(config, "local", "cfg", "samples")
    edited = {**config, "partA": {**config["partA"]}}
    edited["partA"]["local"] = {**config["partA"]["local"], "guidance": 2.5}
    assert "scale 2.5" in tasks.caption(edited, "local", "cfg", "samples")
    assert "t = 250, 500, 750" in tasks.caption(config, "local", "forward", "mnist_7")


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("key", list(tasks.TASKS))
def test_each_recipe_reads_exactly_its_declared_backend_settings(
    config: dict[str, Any], key: str
) -> None:
    """Rules pass only ``Task.uses`` (+ seed): the recipe reads all of them and nothing else."""
    task = tasks.get(key)
    local = config["partA"]["local"]
    item = tasks.items(local, key)[0]
    name = tasks.image_name(local, key, item)
    x0 = image()
    job = job_for(config, key, item, x0)
    if not task.model:
        job.denoiser = None
    mask = torch.zeros(1, 1, RES, RES)
    mask[..., RES // 2 :] = 1
    grid, numbers = parta.recipe(key)(job, x0 if name else None, mask if task.mask else None)
    assert grid.rows and all(len(r) for r in grid.rows)
    declared = set(task.uses) | {"seed"}
    if tasks.own_guidance(local, key):  # e.g. the anagrams' CFG 10: the backend's is not passed
        declared -= {"guidance"}
    assert job.backend.read - {"value_range"} == declared, key
    if task.upsample and key != "text_to_image":  # A0 upsamples inline (tiny IF test below)
        tcfg = tasks.item_settings(local, key, item)
        assert [k.name for k in job.kept] == task.results(tcfg)
        assert all(k.image.shape == x0.shape[1:] for k in job.kept)
    for metric in task.metrics[:1]:
        if key not in ("anagrams", "hybrids"):  # judged only with the digit classifier
            assert metric in numbers


def test_one_step_with_an_oracle_recovers_the_image(config: dict[str, Any]) -> None:
    x0 = image()
    job = job_for(config, "one_step", "mnist_7", x0)
    grid, numbers = parta.one_step(job, x0, None)
    assert all(p > 60 for p in numbers["psnr_one_step"]), numbers
    assert torch.allclose(grid.rows[2][-1], x0[0], atol=1e-4)
    # the noisy row is not the image
    assert (grid.rows[1][-1] - x0[0]).abs().mean() > 0.1


def test_iterative_with_an_oracle_beats_one_step_blur(config: dict[str, Any]) -> None:
    x0 = image()
    job = job_for(config, "iterative", "mnist_7", x0)
    job.settings = {**job.settings, "i_start": 3}
    _, numbers = parta.iterative(job, x0, None)
    assert numbers["psnr_iterative"] > 35 and numbers["psnr_iterative"] > numbers["psnr_blur"]


def test_forward_noise_has_the_schedules_statistics(config: dict[str, Any]) -> None:
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: mean and std per level (on a 3x64x64 image)."""
    x0 = torch.full((1, 3, 64, 64), 0.5)
    schedule = NoiseSchedule.linear(T=300)
    backend = {"seed": 0, "value_range": (0.0, 1.0)}
    job = parta.Job(None, backend, {"timesteps": [250, 500, 750]}, schedule=schedule)
    grid, numbers = parta.forward(job, x0, None)
    assert numbers["timesteps"] == [75, 150, 225]
    for t, noisy in zip(numbers["timesteps"], grid.rows[0][1:], strict=True):
        ab = float(schedule.alphas_cumprod[t])
        assert float(noisy.mean()) == pytest.approx(0.5 * ab**0.5, abs=0.02)
        assert float(noisy.std()) == pytest.approx((1 - ab) ** 0.5, rel=0.03)


def test_run_task_draws_the_figure_and_tags_the_numbers(
    config: dict[str, Any], tmp_path: Path
) -> None:
    x0 = image()
    job = job_for(config, "cfg", "samples", x0)
    numbers = parta.run_task("cfg", job, None, None, tmp_path / "cfg.png")
    assert numbers["task"] == "cfg" and numbers["seed"] == 180 and numbers["n"] == 5
    from PIL import Image

    assert Image.open(tmp_path / "cfg.png").size[0] > 5 * 50
    assert numbers["prompt"] == ""  # prompt None -> the base prompt ''


# ----------------------------------------------------------------------------- A0 at 256 px


def test_a0_saves_every_stage_two_result_as_its_own_png(tmp_path: Path) -> None:
    """On the tiny random IF pair (16 px stage I -> 32 px stage II): one PNG per step count and
    sample, at stage II's native size, equal to the 256 px rows of the figure."""
    pytest.importorskip("diffusers")
    import huggingface_hub.constants as hc
    from PIL import Image

    from fundiff import backends, deepfloyd
    from fundiff.figures import to_uint8
    from fundiff.tiny_if import build_tiny_if

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hc, "HF_HUB_OFFLINE", True)
        tiny = build_tiny_if(tmp_path / "tiny_if", seed=0)
        prompt = "a rocket ship"
        emb = deepfloyd.encode_prompts(str(tiny["stage1"]), [prompt], device="cpu")
        pipe = deepfloyd.load_stage1(str(tiny["stage1"]), device="cpu")
        denoiser = deepfloyd.DeepFloydDenoiser.from_pipeline(pipe, emb)
        params = {"stage2": str(tiny["stage2"]), "dtype": "auto", "variant": "none"}
        stage2 = backends.upsamplers("deepfloyd", {**params, "upsample_steps": 2}, denoiser)
        backend = {"seed": 0, "guidance": 7.0, "variance": "model", "value_range": (-1.0, 1.0)}
        settings = {"item": {"prompt": prompt}, "steps": [2, 3], "n": 2}
        job = parta.Job(denoiser, backend, settings, **stage2)
        names = tasks.get("text_to_image").results(settings)
        assert names == ["2steps_1", "2steps_2", "3steps_1", "3steps_2"]
        native = {n: tmp_path / "256px" / f"a_rocket_ship_{n}.png" for n in names}
        numbers = parta.run_task("text_to_image", job, None, None, tmp_path / "a0.png", native)
    assert numbers["upsampled"] is True
    pixels = []
    for n in names:
        with Image.open(native[n]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
            pixels.append(np.asarray(im))
        assert np.array_equal(pixels[-1], to_uint8(job.native[n], (-1.0, 1.0)))
    assert not np.array_equal(pixels[0], pixels[1])  # two samples, two images
    assert isinstance(denoiser.unet, torch.nn.Module)  # A0 alternates the stages: both kept
    with pytest.raises(FundiffError, match="no result 'nope'"):
        job2 = parta.Job(denoiser, backend, {**settings, "steps": [2], "n": 1})
        parta.run_task("text_to_image", job2, None, None, tmp_path / "b.png", {"nope": "x.png"})


def test_only_deepfloyd_a0_is_upsampled(config: dict[str, Any]) -> None:
    ci = validated("ci.yaml")
    assert tasks.result_names(ci, "deepfloyd", "text_to_image") == ["3steps_1", "5steps_1"]
    assert tasks.result_names(ci, "local", "text_to_image") == []
    assert tasks.result_names(ci, "deepfloyd", "cfg") == []
    assert tasks.result_names(config, "deepfloyd", "text_to_image") == []  # upsample: false


def with_task(config: dict[str, Any], backend: str, key: str, **change: Any) -> dict[str, Any]:
    """A copy of ``config`` with ``partA.<backend>.tasks.<key>`` changed."""
    import copy

    out = copy.deepcopy(config)
    out["partA"][backend]["tasks"][key].update(change)
    return out


def test_upsample_per_task_and_its_errors() -> None:
    ci = validated("ci.yaml")
    on = with_task(ci, "deepfloyd", "cfg", upsample=True)
    assert tasks.result_names(on, "deepfloyd", "cfg") == ["sample_1", "sample_2"]
    assert "stage2" in tasks.backend_params(on, "deepfloyd", "cfg")
    assert "stage2" not in tasks.backend_params(ci, "deepfloyd", "cfg")
    sd = with_task(ci, "deepfloyd", "sdedit", upsample=True)
    assert tasks.result_names(sd, "deepfloyd", "sdedit") == ["i_start_1", "i_start_3", "i_start_5"]
    tasks.check(on)
    bad = with_task(ci, "local", "cfg", upsample=True)
    with pytest.raises(FundiffError, match=r"partA\.local\.tasks\.cfg\.upsample: only DeepFloyd"):
        tasks.check(bad)
    views = with_task(ci, "deepfloyd", "anagrams", upsample=True)
    tasks.check(views)  # the views-aware stage II exists
    assert tasks.result_names(views, "deepfloyd", "anagrams") == ["seed_1"]
    local_views = with_task(ci, "local", "hybrids", upsample=True)
    with pytest.raises(FundiffError, match=r"partA\.local\.tasks\.hybrids\.upsample"):
        tasks.check(local_views)


def test_kept_results_go_through_stage_two(config: dict[str, Any], tmp_path: Path) -> None:
    """A plain upsampler gets each prompt's results in one batch; views need their own."""
    from PIL import Image

    calls = []

    def up4(x: torch.Tensor, prompt: str, generator: torch.Generator) -> torch.Tensor:
        calls.append((len(x), prompt))
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    x0 = image()
    job = job_for(config, "cfg", "samples", x0)
    job.upsampler = up4
    native = {f"sample_{i}": tmp_path / f"s{i}.png" for i in (1, 2, 3, 4, 5)}
    parta.run_task("cfg", job, None, None, tmp_path / "cfg.png", native)
    assert calls == [(5, "")]
    with Image.open(native["sample_3"]) as im:
        assert im.size == (4 * RES, 4 * RES)
    ana = job_for(config, "anagrams", "six_nine_flip", x0)
    ana.upsampler = up4
    with pytest.raises(FundiffError, match="views-aware upsampler"):
        parta.run_task("anagrams", ana, None, None, tmp_path / "ana.png", {})


def test_anagram_and_hybrid_stage_two_at_256_px(tmp_path: Path) -> None:
    """On the tiny random IF pair at the course's 64 / 256 px: an anagram and a hybrid with
    ``upsample: true`` save each seed as a 256 px PNG, made by stage II with the same views /
    factorization; stage I is freed before stage II loads (one stage at a time)."""
    pytest.importorskip("diffusers")
    import gc
    import weakref

    import huggingface_hub.constants as hc
    from PIL import Image

    from fundiff import backends, deepfloyd, superres
    from fundiff.figures import to_uint8
    from fundiff.tiny_if import build_tiny_if

    p1, p2 = "an oil painting of an old man", "a lithograph of waterfalls"
    backend = {
        "seed": 0,
        "guidance": 7.0,
        "variance": "model",
        "timesteps": {"start": 990, "stride": 495},
        "value_range": (-1.0, 1.0),
        "dtype": "auto",
        "variant": "none",
        "offload": "none",
        "upsample_steps": 2,
    }
    anagram = {"n": 1, "item": {"prompts": [p1, p2], "view": "vflip"}}
    hybrid = {"n": 1, "item": {"low": p1, "high": p2, "sigma": None, "kernel": None}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hc, "HF_HUB_OFFLINE", True)
        tiny = build_tiny_if(tmp_path / "tiny_if", seed=0, course=True)
        emb = deepfloyd.encode_prompts(str(tiny["stage1"]), [p1, p2], device="cpu")
        params = {**backend, "stage2": str(tiny["stage2"])}
        for key, settings in (("anagrams", anagram), ("hybrids", hybrid)):
            pipe = deepfloyd.load_stage1(str(tiny["stage1"]), device="cpu")
            denoiser = deepfloyd.DeepFloydDenoiser.from_pipeline(pipe, emb)
            unet = weakref.ref(pipe.unet)
            del pipe
            stage2 = backends.upsamplers("deepfloyd", params, denoiser)
            calls = []

            def spy(images, views, generator, real=stage2["views_upsampler"], calls=calls):
                calls.append((images.clone(), views, generator.get_state()))
                return real(images, views, generator)

            job = parta.Job(denoiser, params, settings, **{**stage2, "views_upsampler": spy})
            native = {"seed_1": tmp_path / f"{key}-256px-seed_1.png"}
            parta.run_task(key, job, None, None, tmp_path / f"{key}.png", native)
            gc.collect()
            assert unet() is None, key  # stage I freed before stage II ran
            with pytest.raises(FundiffError, match="stage I was freed"):
                denoiser(torch.zeros(1, 3, 64, 64), torch.zeros(1), denoiser.conditions([p1]))
            with Image.open(native["seed_1"]) as im:
                assert im.size == (256, 256) and im.mode == "RGB"
                assert np.array_equal(np.asarray(im), to_uint8(job.native["seed_1"], (-1, 1)))
            # the same result as stage II called with the task's own views / filters
            [(images, views, state)] = calls
            kw = {"steps": 2, "generator": torch.Generator().set_state(state)}
            pipe2, embeds = stage2["upsampler"].__self__.pipe, [emb[p1], emb[p2]]
            if key == "anagrams":
                assert views.views == ("identity", "vflip")
                ref = superres.upsample_anagram(pipe2, images, embeds, emb[""], views.views, **kw)
            else:
                ref = superres.upsample_hybrid(pipe2, images, embeds, emb[""], **kw)
            assert torch.allclose(job.native["seed_1"], ref[0], atol=1e-5), key


def test_guidance_of_a_job_is_the_items_else_the_tasks_else_the_backends() -> None:
    """Per-illusion / per-task CFG scales (chosen by bench/sweep_parta.py) reach the sampler,
    the baseline and the caption; null falls back to the backend's scale."""
    cfg = load_yaml(ROOT / "config.yaml")
    anagrams = cfg["partA"]["local"]["tasks"]["anagrams"]
    anagrams["guidance"] = 6.0
    anagrams["illusions"]["six_nine_flip"]["guidance"] = 9.0
    cfg["partA"]["local"]["tasks"]["hybrids"]["guidance"] = None
    cfg["partA"]["local"]["guidance"] = 4.0
    cfg = validate_config(cfg)

    def job(task: str, item: str) -> parta.Job:
        params = tasks.job_params(cfg, "local", task, item)
        backend = {**params["backend"], "value_range": (0.0, 1.0)}
        return parta.Job(None, backend, params["settings"], schedule=NoiseSchedule.linear(300))

    assert job("anagrams", "six_nine_flip").guidance == 9.0
    assert job("anagrams", "two_five_rot180").guidance == 6.0
    assert job("hybrids", "eight_three").guidance == 4.0
    assert job("anagrams", "six_nine_flip").loop()["guidance"] == 9.0
    assert "guidance 9.0;" in tasks.caption(cfg, "local", "anagrams", "six_nine_flip")
    assert "guidance 6.0;" in tasks.caption(cfg, "local", "anagrams", "two_five_rot180")
    assert "guidance 4.0," in tasks.caption(cfg, "local", "hybrids", "eight_three")
    # a task with its own scale does not get the backend's: editing that reruns only the others
    assert "guidance" not in tasks.backend_params(cfg, "local", "anagrams")
    assert tasks.backend_params(cfg, "local", "hybrids")["guidance"] == 4.0


def test_prepare_job_builds_the_rules_job_with_its_image_and_mask(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What scripts/run_parta_task.py and bench/sweep_parta.py both run: the backend's value
    range in the settings, the inputs manifest's image, mask and digit at the backend's size."""
    monkeypatch.chdir(ROOT)  # the manifest's paths are relative to the workflow
    schedule = NoiseSchedule.linear(300)
    params = tasks.job_params(config, "local", "inpaint", "mnist_4")
    job, x0, mask = parta.prepare_job("local", params, None, schedule=schedule, with_mask=True)
    assert x0.shape == mask.shape == (1, 1, 28, 28)
    assert 0.0 <= float(x0.min()) and float(x0.max()) <= 1.0 and float(x0.max()) > 0.5
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert job.digit == 4 and job.judge is None and job.settings == params["settings"]
    assert job.backend == {**params["backend"], "value_range": (0.0, 1.0)}
    _, _, no_mask = parta.prepare_job("local", params, None, schedule=schedule)
    assert no_mask is None
    ana = tasks.job_params(config, "local", "anagrams", "six_nine_flip")
    judge = torch.nn.Identity()
    job, x0, mask = parta.prepare_job("local", ana, None, schedule=schedule, judge=judge)
    assert x0 is None and mask is None and job.digit is None and job.judge is judge
    with pytest.raises(FundiffError, match="no stage II"):
        parta.prepare_job("local", params, None, schedule=schedule, upsample=True)
