"""Training loop: loss goes down, resume is bit-exact, logs and files are consistent."""

from __future__ import annotations

import errno
import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fundiff import training as training_module
from fundiff.diffusion import DDPM, FlowMatching, SingleStepDenoising
from fundiff.errors import FundiffError
from fundiff.evaluation import synthetic_digits
from fundiff.storage import folder_lock
from fundiff.training import TrainConfig, load_model, read_losses, train
from fundiff.unets import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

torch.set_num_threads(1)


class Crash(RuntimeError):
    """Stands in for a killed job."""


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_digits(256, generator=torch.Generator().manual_seed(0))


OBJECTIVES: dict[str, Callable[[], object]] = {
    "single_step": lambda: SingleStepDenoising(UnconditionalUNet(1, 8), sigma=0.5),
    "pure_noise": lambda: SingleStepDenoising(UnconditionalUNet(1, 8), pure_noise=True),
    "ddpm_class": lambda: DDPM(ClassConditionalUNet(1, 10, 8)),
    "fm_time": lambda: FlowMatching(TimeConditionalUNet(1, 8, injection="mul")),
    "fm_class": lambda: FlowMatching(ClassConditionalUNet(1, 10, 8)),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_tiny_training_lowers_loss(name: str, digits, tmp_path: Path) -> None:
    images, labels = digits
    cfg = TrainConfig(epochs=3, batch_size=32, lr=5e-3, lr_schedule="constant", seed=1)
    res = train(OBJECTIVES[name](), images, labels, cfg, tmp_path, progress=False)
    rows = read_losses(tmp_path / "losses.csv")
    assert res.steps == 24 and len(rows) == 24
    first = sum(r["loss"] for r in rows[:5]) / 5
    last = sum(r["loss"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


SMALL = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "seed": 3}


def _small_run(images, labels, run_dir, cfg: TrainConfig, **kw):
    return train(
        DDPM(ClassConditionalUNet(1, 10, 4)),
        images[:96],
        labels[:96],
        cfg,
        run_dir,
        progress=False,
        **kw,
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"lr_schedule": "exponential", "ema_decay": 0.9, "grad_clip": 1.0},
        {
            "lr_schedule": "warmup_cosine",
            "warmup_steps": 2,
            "precision": "bf16",
            "channels_last": True,
        },
        {"lr_schedule": "warmup_constant", "warmup_steps": 4, "ema_decay": 0.99},
    ],
    ids=["exp_ema_clip", "cosine_bf16_cl", "warmup_constant_ema"],
)
def test_resume_after_epoch_is_bit_identical(extra: dict, digits, tmp_path: Path) -> None:
    images, labels = digits
    cfg = TrainConfig(**SMALL, **extra)
    ref = _small_run(images, labels, tmp_path / "ref", cfg, snapshot_epochs=[1, 2])

    def crash_after_epoch_1(epoch: int, step: int) -> None:
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        _small_run(
            images,
            labels,
            tmp_path / "run",
            cfg,
            snapshot_epochs=[1, 2],
            on_epoch_end=crash_after_epoch_1,
        )
    assert not (tmp_path / "run" / "model.safetensors").exists()
    res = _small_run(images, labels, tmp_path / "run", cfg, snapshot_epochs=[1, 2])
    assert res.resumed_from_epoch == 1 and ref.resumed_from_epoch == 0
    _assert_same_weights(ref.model_path, res.model_path)
    for e in (1, 2):
        _assert_same_weights(ref.snapshots[e], res.snapshots[e])
    assert (tmp_path / "ref" / "losses.csv").read_text() == (
        tmp_path / "run" / "losses.csv"
    ).read_text()
    assert "resuming from checkpoint epoch 1" in (tmp_path / "run" / "train.log").read_text()


def test_crash_mid_epoch_truncates_losses(digits, tmp_path: Path) -> None:
    images, labels = digits
    cfg = TrainConfig(**SMALL)
    ref = _small_run(images, labels, tmp_path / "ref", cfg)

    def crash_at_last_step(epoch: int, step: int, loss: float) -> None:
        if step == 6:  # rows of epoch 2 are already in losses.csv, its checkpoint is not written
            raise Crash

    with pytest.raises(Crash):
        _small_run(images, labels, tmp_path / "run", cfg, on_step=crash_at_last_step)
    steps_before = [r["step"] for r in read_losses(tmp_path / "run" / "losses.csv")]
    assert steps_before == [1, 2, 3, 4, 5, 6]  # rows beyond the epoch-1 checkpoint exist
    res = _small_run(images, labels, tmp_path / "run", cfg)
    assert res.resumed_from_epoch == 1
    rows = read_losses(tmp_path / "run" / "losses.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # no duplicates
    assert [r["epoch"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert rows == read_losses(tmp_path / "ref" / "losses.csv")
    _assert_same_weights(ref.model_path, res.model_path)


def test_changed_config_is_not_resumed(digits, tmp_path: Path) -> None:
    images, labels = digits
    run = tmp_path / "run"
    _small_run(images, labels, run, TrainConfig(**{**SMALL, "epochs": 1}), snapshot_epochs=[1])
    assert (run / "snapshots" / "epoch_001.safetensors").exists()
    cfg2 = TrainConfig(**{**SMALL, "lr": 1e-3})
    res = _small_run(images, labels, run, cfg2)
    assert res.resumed_from_epoch == 0
    assert "config hash" in (run / "train.log").read_text()
    assert not (run / "snapshots" / "epoch_001.safetensors").exists()  # stale snapshot removed
    fresh = _small_run(images, labels, tmp_path / "fresh", cfg2)
    _assert_same_weights(fresh.model_path, res.model_path)
    assert [r["step"] for r in read_losses(run / "losses.csv")] == [1, 2, 3, 4, 5, 6]
    # other data -> another hash too
    res3 = _small_run(images.flip(0), labels.flip(0), run, cfg2)
    assert res3.resumed_from_epoch == 0


def test_outputs_schedule_and_load_model(digits, tmp_path: Path) -> None:
    images, labels = digits
    cfg = TrainConfig(**SMALL)
    res = _small_run(images, labels, tmp_path, cfg, snapshot_epochs=[1])
    assert (tmp_path / "snapshots" / "epoch_001.safetensors").exists()
    assert not (tmp_path / "snapshots" / "epoch_002.safetensors").exists()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == [
        "epoch_001.pt",
        "epoch_001.safetensors",
        "epoch_002.pt",
        "epoch_002.safetensors",
    ]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert (
        meta["spec"]["objective"] == "DDPM" and meta["spec"]["unet"]["kwargs"]["num_hiddens"] == 4
    )
    assert meta["train_config"]["lr"] == 2e-3 and meta["steps"] == 6
    rows = read_losses(tmp_path / "losses.csv")
    gamma = 0.1 ** (1 / 2)
    assert [r["lr"] for r in rows[:3]] == [pytest.approx(2e-3)] * 3  # ExponentialLR per epoch
    assert [r["lr"] for r in rows[3:]] == [pytest.approx(2e-3 * gamma)] * 3
    model = load_model(tmp_path)
    assert isinstance(model, DDPM) and not model.unet.training
    for k, v in _weights(res.model_path).items():
        assert torch.equal(model.unet.state_dict()[k], v)
    snap = load_model(tmp_path / "snapshots" / "epoch_001.safetensors")
    assert not torch.equal(snap.unet.out_conv.weight, model.unet.out_conv.weight)
    out, _ = model.sample(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0), steps=3)
    assert out.shape == (2, 1, 28, 28)
    # a finished run is not retrained
    again = _small_run(images, labels, tmp_path, cfg, snapshot_epochs=[1])
    assert again.resumed_from_epoch == 2 and again.final_loss == pytest.approx(res.final_loss)
    _assert_same_weights(res.model_path, again.model_path)


@pytest.mark.parametrize("warm", [0, 1, 2])
def test_warmup_cosine_schedule(warm: int, digits, tmp_path: Path) -> None:
    """lr of 0-based step k: (k + 1) / warm during warm-up, then a cosine down to the floor."""
    images, labels = digits
    cfg = TrainConfig(
        **{**SMALL, "lr_schedule": "warmup_cosine", "warmup_steps": warm, "min_lr_factor": 0.1}
    )
    _small_run(images, labels, tmp_path, cfg)
    total, lr = 6, SMALL["lr"]
    expect = [
        lr * (k + 1) / warm
        if k < warm
        else lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm))))
        for k in range(total)
    ]
    got = [r["lr"] for r in read_losses(tmp_path / "losses.csv")]
    assert got == pytest.approx(expect, rel=1e-7)


def test_ema_weights_follow_diffusers_ema_model(digits, tmp_path: Path) -> None:
    """EMA of the parameters with decay min(d, n / (9 + n)) after step n (0 at step 1), BatchNorm
    statistics from the trained model; the raw weights stay in the checkpoints."""
    images, labels = digits
    objective = DDPM(ClassConditionalUNet(1, 10, 4))
    params_after_step: list[dict[str, torch.Tensor]] = []

    def record(epoch: int, step: int, loss: float) -> None:
        params_after_step.append(
            {k: v.detach().clone() for k, v in objective.unet.named_parameters()}
        )

    cfg = TrainConfig(**{**SMALL, "epochs": 1, "ema_decay": 0.9})
    res = train(objective, images[:96], labels[:96], cfg, tmp_path, progress=False, on_step=record)
    assert res.steps == 3 == len(params_after_step)
    ema = dict(params_after_step[0])
    for n, params in enumerate(params_after_step[1:], start=2):
        d = min(0.9, n / (9 + n))
        ema = {k: d * ema[k] + (1 - d) * params[k] for k in ema}
    saved = _weights(res.model_path)
    raw = _weights(tmp_path / "checkpoints" / "epoch_001.safetensors")
    for k, v in objective.unet.state_dict().items():
        if k in ema:
            assert torch.allclose(saved[k], ema[k], rtol=1e-5, atol=1e-7), k
            assert torch.equal(raw[k], v), k
        else:  # BatchNorm running statistics and counters
            assert torch.equal(saved[k], v) and torch.equal(raw[k], v), k
    assert not torch.equal(saved["out_conv.weight"], raw["out_conv.weight"])


def test_same_seed_same_run_and_inputs_untouched(digits, tmp_path: Path) -> None:
    images, labels = digits
    before = images.clone()
    a = _small_run(images, labels, tmp_path / "a", TrainConfig(**{**SMALL, "epochs": 1}))
    b = _small_run(images, labels, tmp_path / "b", TrainConfig(**{**SMALL, "epochs": 1}))
    c = _small_run(images, labels, tmp_path / "c", TrainConfig(**{**SMALL, "epochs": 1, "seed": 4}))
    _assert_same_weights(a.model_path, b.model_path)
    assert not torch.equal(
        _weights(a.model_path)["out_conv.weight"], _weights(c.model_path)["out_conv.weight"]
    )
    assert torch.equal(images, before)


def test_config_validation(digits, tmp_path: Path) -> None:
    images, labels = digits
    for bad in ({"lr_schedule": "step"}, {"precision": "fp8"}, {"epochs": 0}, {"ema_decay": 1.5}):
        with pytest.raises(FundiffError, match=next(iter(bad))):
            _small_run(images, labels, tmp_path, TrainConfig(**{**SMALL, **bad}))
    with pytest.raises(FundiffError, match="precision must be one of"):
        _small_run(images, labels, tmp_path, TrainConfig(**{**SMALL, "precision": "fp16"}))
    with pytest.raises(FundiffError):
        train(
            DDPM(ClassConditionalUNet(1, 10, 4)),
            images.float(),
            labels,
            TrainConfig(**SMALL),
            tmp_path,
            progress=False,
        )


def test_second_training_of_a_run_waits_or_stops(digits, tmp_path: Path) -> None:
    """One training per run folder (flock): a concurrent second one waits, or stops with a
    message naming the lock file after ``lock_timeout``; a killed writer's temporaries go."""
    images, labels = digits
    run = tmp_path / "run"
    cfg = TrainConfig(**{**SMALL, "epochs": 1})
    with folder_lock(run):
        with pytest.raises(FundiffError, match=rf"run/\.lock is held by .*pid {os.getpid()}"):
            _small_run(images, labels, run, cfg, lock_timeout=0.3)
    assert not (run / "checkpoints").exists()
    assert "waiting for" in (run / "train.log").read_text()

    stale = run / "checkpoints" / ".epoch_001.pt.4242.0123abcd.tmp"
    stale.parent.mkdir()
    stale.write_bytes(b"half a checkpoint")
    release = threading.Event()
    holder_ready = threading.Event()

    def hold_then_release() -> None:
        with folder_lock(run):
            holder_ready.set()
            release.wait(timeout=30)

    holder = threading.Thread(target=hold_then_release)
    holder.start()
    holder_ready.wait(timeout=30)
    threading.Timer(0.5, release.set).start()
    res = _small_run(images, labels, run, cfg)  # waits for the holder, then trains
    holder.join()
    assert res.resumed_from_epoch == 0 and res.steps == 3
    log = (run / "train.log").read_text()
    assert log.rindex("waiting for") < log.rindex("starting fresh")
    assert not stale.exists()


@pytest.mark.parametrize(
    ("corrupt", "resumed_from"),
    [
        ({"epoch_002.safetensors"}, 1),  # truncated weights of the newest checkpoint
        ({"epoch_002.pt"}, 1),  # truncated state of the newest checkpoint
        ({"epoch_001.pt", "epoch_002.safetensors"}, 0),  # nothing readable: start over
    ],
)
def test_corrupt_checkpoint_falls_back(corrupt, resumed_from, digits, tmp_path: Path) -> None:
    """An unreadable checkpoint is reported naming the file, then the previous one is resumed
    (or training starts over); the result matches an uninterrupted run."""
    images, labels = digits
    cfg = TrainConfig(**{**SMALL, "epochs": 3})
    ref = _small_run(images, labels, tmp_path / "ref", cfg)

    def crash_after_epoch_2(epoch: int, step: int) -> None:
        if epoch == 2:
            raise Crash

    run = tmp_path / "run"
    with pytest.raises(Crash):
        _small_run(images, labels, run, cfg, on_epoch_end=crash_after_epoch_2)
    for name in corrupt:
        p = run / "checkpoints" / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    res = _small_run(images, labels, run, cfg)
    assert res.resumed_from_epoch == resumed_from
    log = (run / "train.log").read_text()
    for name in corrupt:
        assert f"checkpoint file {run / 'checkpoints' / name} is unreadable" in log
    _assert_same_weights(ref.model_path, res.model_path)
    assert read_losses(run / "losses.csv") == read_losses(tmp_path / "ref" / "losses.csv")


def test_truncated_model_names_the_file_and_the_rebuild(digits, tmp_path: Path) -> None:
    images, labels = digits
    cfg = TrainConfig(**{**SMALL, "epochs": 1})
    res = _small_run(images, labels, tmp_path, cfg)
    good = res.model_path.read_bytes()
    res.model_path.write_bytes(good[: len(good) // 3])
    with pytest.raises(FundiffError) as info:
        load_model(tmp_path)
    msg = str(info.value)
    assert f"{res.model_path} is truncated or corrupt" in msg
    assert f"rm {res.model_path} && snakemake" in msg and "\n" not in msg
    res.model_path.unlink()  # what the message says; the rerun publishes it from a checkpoint
    again = _small_run(images, labels, tmp_path, cfg)
    assert again.resumed_from_epoch == 1 and again.model_path.read_bytes() == good


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_at_a_checkpoint_names_it_and_keeps_the_previous(
    digits, tmp_path: Path, monkeypatch
) -> None:
    images, labels = digits
    cfg = TrainConfig(**SMALL)
    ref = _small_run(images, labels, tmp_path / "ref", cfg)
    run = tmp_path / "run"

    def fill_disk_after_epoch_1(epoch: int, step: int) -> None:
        monkeypatch.setattr(os, "write", _disk_full)  # every later file write fails

    with pytest.raises(FundiffError) as info:
        _small_run(images, labels, run, cfg, on_epoch_end=fill_disk_after_epoch_1)
    msg = str(info.value)
    assert f"cannot write {run / 'checkpoints' / 'epoch_002.safetensors'}" in msg
    assert "the disk is full" in msg
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_001.pt",
        "epoch_001.safetensors",
    ]  # the previous checkpoint intact, no temporary file left
    res = _small_run(images, labels, run, cfg)  # space freed: resume from epoch 1
    assert res.resumed_from_epoch == 1
    _assert_same_weights(ref.model_path, res.model_path)


def test_full_disk_while_logging_losses_names_the_file(digits, tmp_path: Path, monkeypatch) -> None:
    import builtins

    images, labels = digits
    real_open = builtins.open

    class FullDisk:
        def __init__(self, f) -> None:
            self.f = f

        def write(self, text: str) -> int:
            return _disk_full() if text[0].isdigit() else self.f.write(text)

        def __getattr__(self, name: str):
            return getattr(self.f, name)

    def open_losses_on_a_full_disk(file, *args, **kwargs):
        f = real_open(file, *args, **kwargs)
        return FullDisk(f) if Path(file).name == "losses.csv" else f

    monkeypatch.setattr(training_module, "open", open_losses_on_a_full_disk, raising=False)
    with pytest.raises(FundiffError, match=r"cannot write .*losses\.csv: the disk is full"):
        _small_run(images, labels, tmp_path, TrainConfig(**SMALL))
