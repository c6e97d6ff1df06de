"""fundiff.partb recipes on tiny data: run spec -> objective / TrainConfig, training and
publishing, and each Part B figure recipe (files written, numbers returned)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fundiff import partb
from fundiff.config import load_schema
from fundiff.data import MnistSplits
from fundiff.diffusion import DDPM, FlowMatching, SingleStepDenoising
from fundiff.errors import FundiffError
from fundiff.evaluation import read_samples, synthetic_digits, train_classifier
from fundiff.unets import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

torch.set_num_threads(1)
FP32 = {"bf16": False, "channels_last": False}


def run_spec(objective: str, **over: Any) -> dict[str, Any]:
    """A config run spec: the schema defaults, a tiny UNet, then ``over``."""
    runs = load_schema()["properties"]["partB"]["properties"]["runs"]
    props = runs["additionalProperties"]["properties"]
    spec = {k: v["default"] for k, v in props.items() if "default" in v}
    conditioning = "none" if objective in ("single_step", "pure_noise") else "class"
    spec.update(objective=objective, conditioning=conditioning, hidden=4, epochs=1)
    spec.update(batch_size=32, T=20, sample_steps=4, snapshot_epochs=[1])
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_digits(64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("objective", "conditioning", "kind", "unet", "injection"),
    [
        ("single_step", "none", SingleStepDenoising, UnconditionalUNet, None),
        ("pure_noise", "none", SingleStepDenoising, UnconditionalUNet, None),
        ("ddpm", "time", DDPM, TimeConditionalUNet, "add"),
        ("ddpm", "class", DDPM, ClassConditionalUNet, "add"),
        ("fm", "time", FlowMatching, TimeConditionalUNet, "mul"),
        ("fm", "class", FlowMatching, ClassConditionalUNet, "mul"),
    ],
)
def test_objective_spec_builds_the_course_objective(
    objective, conditioning, kind, unet, injection
) -> None:
    spec = run_spec(objective, conditioning=conditioning, hidden=6, sigma=0.3, T=40)
    model = partb.build_objective(partb.objective_spec(spec))
    assert type(model) is kind and type(model.unet) is unet
    assert model.unet.num_hiddens == 6
    assert getattr(model.unet, "injection", None) == injection
    assert model.spec() == partb.objective_spec(spec)  # the file metadata rebuilds it
    if kind is SingleStepDenoising:
        assert model.sigma == 0.3 and model.pure_noise == (objective == "pure_noise")
    if kind is DDPM:
        assert model.T == 40 and model.p_uncond == spec["p_uncond"]


def test_objective_spec_rejects_unknown_objective() -> None:
    with pytest.raises(FundiffError, match="unknown objective 'gan'"):
        partb.objective_spec(run_spec("gan"))


def test_train_config_mapping() -> None:
    spec = run_spec("fm", lr_schedule="constant", warmup_steps=7, ema=0.99, grad_clip=1.0)
    cfg = partb.train_config(spec, {"bf16": True, "channels_last": True}, seed=5, device="cpu")
    assert (cfg.lr_schedule, cfg.warmup_steps, cfg.ema_decay, cfg.grad_clip) == (
        "warmup_constant",
        7,
        0.99,
        1.0,
    )
    assert (cfg.precision, cfg.channels_last, cfg.seed) == ("bf16", True, 5)
    plain = partb.train_config(run_spec("ddpm", lr_final=0.2), FP32, seed=0, device="cpu")
    assert (plain.lr_schedule, plain.lr_decay, plain.precision) == ("exponential", 0.2, "fp32")


def test_train_run_publishes_copies_and_snapshot_loads(digits, tmp_path: Path) -> None:
    images, labels = digits
    spec = run_spec("ddpm", epochs=2, snapshot_epochs=[1])
    out = tmp_path / "out"
    out.mkdir()
    result = partb.train_run(
        spec,
        images,
        labels,
        precision=FP32,
        seed=0,
        device="cpu",
        work_dir=tmp_path / "work",
        model_out=out / "model.safetensors",
        losses_out=out / "losses.csv",
        snapshots_out=out / "snapshots",
    )
    assert result.steps == 4
    work = tmp_path / "work"
    for published, source in [
        (out / "model.safetensors", work / "model.safetensors"),
        (out / "model.json", work / "model.json"),
        (out / "losses.csv", work / "losses.csv"),
        (out / "snapshots" / "epoch_001.safetensors", work / "snapshots" / "epoch_001.safetensors"),
        (out / "snapshots" / "epoch_002.safetensors", work / "snapshots" / "epoch_002.safetensors"),
    ]:
        assert published.read_bytes() == source.read_bytes(), published
    assert sorted(p.name for p in out.iterdir()) == [
        "losses.csv",
        "model.json",
        "model.safetensors",
        "snapshots",
    ]
    model = partb.snapshot(out / "snapshots", 2)
    assert isinstance(model, DDPM) and not model.training
    with pytest.raises(FundiffError, match="epoch_003"):
        partb.snapshot(out / "snapshots", 3)


@pytest.fixture(scope="module")
def class_model() -> DDPM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return partb.build_objective(partb.objective_spec(run_spec("ddpm"))).eval()


@pytest.fixture(scope="module")
def denoiser() -> SingleStepDenoising:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return partb.build_objective(partb.objective_spec(run_spec("single_step"))).eval()


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_noising_and_denoising_figures(denoiser, digits, tmp_path: Path) -> None:
    images, _ = digits
    partb.noising_figure(images, [0.0, 0.5, 1.0], seed=0, path=tmp_path / "noising.png")
    assert min(_png_size(tmp_path / "noising.png")) > 50
    a = partb.denoise_test_set(denoiser, images, 0.5, seed=1, epoch=1, path=tmp_path / "d.png")
    b = partb.denoise_test_set(denoiser, images, 0.5, seed=1, epoch=1, path=tmp_path / "e.png")
    assert a == b and a["epoch"] == 1 and 0 <= a["mse"] <= 1  # seeded
    ood = partb.denoise_ood(denoiser, images, [0.0, 0.5, 1.0], seed=0, path=tmp_path / "ood.png")
    assert ood["sigmas"] == [0.0, 0.5, 1.0] and len(ood["mse"]) == 3
    out = partb.pure_noise_outputs(denoiser, images, seed=0, epoch=1, path=tmp_path / "pn.png")
    assert out["epoch"] == 1 and out["mse_to_training_mean"] >= 0
    for name in ("d.png", "ood.png", "pn.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_sample_labels() -> None:
    assert partb.sample_labels(run_spec("fm", conditioning="time"), 3) is None
    assert partb.sample_labels(run_spec("fm"), 2).tolist() == [d for d in range(10) for _ in "ab"]


def test_sample_grid_writes_digit_major_samples(class_model, tmp_path: Path) -> None:
    spec = run_spec("ddpm")
    out = partb.sample_grid(class_model, spec, 0, 1, tmp_path / "g.png", tmp_path / "g.npz")
    assert out == {"epoch": 1, "n": 40}
    x, labels = read_samples(tmp_path / "g.npz")
    assert x.shape == (40, 1, 28, 28) and labels.tolist() == [d for d in range(10) for _ in "abcd"]
    assert _png_size(tmp_path / "g.png")[0] > _png_size(tmp_path / "g.png")[1]  # 10 wide, 4 high
    partb.sample_grid(class_model, spec, 0, 1, tmp_path / "h.png", tmp_path / "h.npz")
    with np.load(tmp_path / "g.npz") as g, np.load(tmp_path / "h.npz") as h:
        assert np.array_equal(g["images"], h["images"])  # seeded


def test_sampling_gif(class_model, tmp_path: Path) -> None:
    partb.sampling_gif(class_model, run_spec("ddpm"), 0, tmp_path / "s.gif", frames=2)
    with Image.open(tmp_path / "s.gif") as im:
        assert im.n_frames >= 2


def test_evaluate_judges_class_runs_only(class_model, digits) -> None:
    images, labels = digits
    judge, _ = train_classifier(images, labels, epochs=1, seed=0, width=8, batch_size=32)
    spec = run_spec("ddpm", guidance=2.0)
    evaluation = {"samples_per_digit": 1, "steps": 3}
    judged = partb.evaluate(class_model, spec, judge, evaluation, seed=0, epoch=1)
    result = judged.numbers
    assert result["n"] == result["n_scored"] == 10
    assert (result["epoch"], result["guidance"], result["sampler_steps"]) == (1, 2.0, 3)
    assert 0 <= result["accuracy"] <= 1 and len(result["confusion"]) == 10
    lo, hi = result["accuracy_ci95"]
    assert lo <= result["accuracy"] <= hi and hi - lo > 0.2  # 10 samples: a wide interval
    assert "frechet_distance" not in result and set(judged.sets) == {"accuracy"}
    x, lab = judged.sets["accuracy"]
    assert torch.equal(lab, torch.arange(10)) and torch.equal((x * 255).round() / 255, x)
    with pytest.raises(FundiffError, match="class-conditioned"):
        partb.evaluate(class_model, run_spec("ddpm", conditioning="time"), judge, evaluation, 0, 1)


def test_evaluate_frechet_distance_at_its_own_guidance(class_model, digits) -> None:
    images, labels = digits
    mnist = MnistSplits(images, labels, images[:40], labels[:40])
    judge, _ = train_classifier(images, labels, epochs=1, seed=0, width=8, batch_size=32)
    spec = run_spec("ddpm", guidance=3.0)
    evaluation = {"samples_per_digit": 2, "steps": 3, "fd_guidance": 1.0}
    judged = partb.evaluate(class_model, spec, judge, evaluation, 0, 1, mnist)
    fd = judged.numbers["frechet_distance"]
    assert (fd["n"], fd["n_real"], fd["feature_dim"], fd["guidance"]) == (20, 40, 128, 1.0)
    assert fd["value"] > fd["real_floor"] >= 0  # an untrained model is far from real digits
    x_acc, x_fd = judged.sets["accuracy"][0], judged.sets["fd"][0]
    assert not torch.equal(x_acc, x_fd)  # sampled separately, without CFG
    again = partb.evaluate(class_model, spec, judge, evaluation, 0, 1, mnist).numbers
    assert again["frechet_distance"] == fd  # seeded
    # null (or the run's own scale) reuses the accuracy samples
    for g in (None, 3.0):
        same = partb.evaluate(
            class_model, spec, judge, {**evaluation, "fd_guidance": g}, 0, 1, mnist
        )
        assert same.numbers["frechet_distance"]["guidance"] == 3.0
        assert torch.equal(same.sets["fd"][0], same.sets["accuracy"][0])
    with pytest.raises(FundiffError, match="only 0 real digits"):
        partb.evaluate(
            class_model,
            spec,
            judge,
            evaluation,
            0,
            1,
            MnistSplits(images[:0], labels[:0], images, labels),
        )
