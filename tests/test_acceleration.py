"""Speed settings of training: precision "auto", torch.compile (plain weights, resume), foreach Adam."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fundiff import acceleration
from fundiff import training as training_module
from fundiff.diffusion import DDPM
from fundiff.errors import FundiffError
from fundiff.evaluation import synthetic_digits
from fundiff.train_config import config_hash, precision_settings
from fundiff.training import TrainConfig, load_model, read_losses, train
from fundiff.unets import ClassConditionalUNet

torch.set_num_threads(1)

CPU = torch.device("cpu")
SMALL = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "seed": 3}


class Crash(RuntimeError):
    """Stands in for a killed job."""


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = synthetic_digits(96, generator=torch.Generator().manual_seed(0))
    return images, labels


def _run(digits, run_dir: Path, cfg: TrainConfig, objective=None, **kw):
    images, labels = digits
    objective = objective or DDPM(ClassConditionalUNet(1, 10, 4))
    return train(objective, images, labels, cfg, run_dir, progress=False, **kw)


def _same(a: Path, b: Path) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_follows_the_hardware(native: bool, digits, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(acceleration, "native_bf16", lambda device: native)
    expected = "bf16" if native else "fp32"
    assert acceleration.resolve_precision("auto", CPU) == expected
    assert acceleration.resolve_precision("fp32", CPU) == "fp32"
    res = _run(digits, tmp_path / "auto", TrainConfig(**{**SMALL, "epochs": 1}, precision="auto"))
    meta = json.loads((tmp_path / "auto" / "model.json").read_text())
    assert meta["train_config"]["precision"] == expected  # the resolved value is recorded...
    explicit = TrainConfig(**{**SMALL, "epochs": 1}, precision=expected)
    assert meta["config_hash"] == config_hash(
        meta["spec"], explicit, training_module._data_fingerprint(*digits)
    )  # ... and hashed: "auto" and its resolution are the same run
    ref = _run(digits, tmp_path / "explicit", explicit)
    assert _same(res.model_path, ref.model_path)


def test_bf16_without_native_support_is_honoured_but_warned(digits, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(acceleration, "native_bf16", lambda device: False)
    cfg = TrainConfig(**{**SMALL, "epochs": 1}, precision="bf16")
    _run(digits, tmp_path, cfg)
    log = (tmp_path / "train.log").read_text()
    assert "without native bf16" in log and "8x slower" in log
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["train_config"]["precision"] == "bf16"


def test_native_bf16_matches_onednn() -> None:
    assert acceleration.native_bf16(CPU) == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert acceleration.native_bf16(torch.device("meta")) is False


def test_precision_settings_from_the_workflow_config() -> None:
    assert precision_settings({"bf16": "auto", "channels_last": True}) == {
        "precision": "auto",
        "channels_last": True,
        "compile": False,
    }
    assert precision_settings({"bf16": True, "channels_last": False, "compile": True}) == {
        "precision": "bf16",
        "channels_last": False,
        "compile": True,
    }
    assert precision_settings({"bf16": False, "channels_last": False})["precision"] == "fp32"
    for bad in ("yes", 1, None):
        with pytest.raises(FundiffError, match="partB.precision.bf16"):
            precision_settings({"bf16": bad, "channels_last": False})
    with pytest.raises(FundiffError, match="precision"):
        acceleration.resolve_precision("fp16", CPU)


# -- torch.compile --------------------------------------------------------------------------

# aot_eager: dynamo + AOT autograd without C++ code generation (seconds); inductor: the real
# backend, whose cold C++ build takes ~3 min on a loaded 2-core box (seconds once torch's
# on-disk cache has it)
BACKENDS = [
    "aot_eager",
    pytest.param("inductor", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_trains_saves_plain_weights_and_resumes(
    backend: str, digits, tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(acceleration.COMPILE_OPTIONS, "backend", backend)
    cfg = TrainConfig(**SMALL, compile=True)
    obj = DDPM(ClassConditionalUNet(1, 10, 4))
    ref = _run(digits, tmp_path / "ref", cfg, objective=obj, snapshot_epochs=[1])
    assert type(obj.unet) is ClassConditionalUNet  # the compiled wrapper is gone afterwards
    assert "compile on CPU" in (tmp_path / "ref" / "train.log").read_text()
    for path in (
        ref.model_path,
        ref.snapshots[1],
        *(tmp_path / "ref").glob("checkpoints/*.safetensors"),
    ):
        assert not any("_orig_mod" in k for k in load_file(str(path))), path
    loaded = load_model(ref.model_path)  # plain module, no compile needed
    torch.testing.assert_close(loaded.unet.state_dict(), obj.unet.state_dict())

    def crash_after_epoch_1(epoch: int, step: int) -> None:
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        _run(digits, tmp_path / "run", cfg, on_epoch_end=crash_after_epoch_1)
    res = _run(digits, tmp_path / "run", cfg)
    assert res.resumed_from_epoch == 1
    assert _same(ref.model_path, res.model_path)  # compiled resume is bit-identical
    assert read_losses(tmp_path / "run" / "losses.csv") == read_losses(
        tmp_path / "ref" / "losses.csv"
    )

    # against eager: same run up to kernel rounding (inductor fuses BatchNorm + GELU)
    eager = _run(digits, tmp_path / "eager", dataclasses.replace(cfg, compile=False))
    la = [r["loss"] for r in read_losses(tmp_path / "eager" / "losses.csv")]
    lb = [r["loss"] for r in read_losses(tmp_path / "ref" / "losses.csv")]
    assert la[0] == pytest.approx(lb[0], rel=1e-5)  # same init, data and noise
    assert la == pytest.approx(lb, rel=1e-2)
    if backend == "aot_eager":
        assert _same(eager.model_path, ref.model_path)


def test_compile_is_part_of_the_config_hash() -> None:
    spec = DDPM(ClassConditionalUNet(1, 10, 4)).spec()
    cfg = TrainConfig(**SMALL)
    assert config_hash(spec, cfg) != config_hash(spec, dataclasses.replace(cfg, compile=True))


def test_compiled_unet_restores_the_module_after_an_error(monkeypatch) -> None:
    monkeypatch.setitem(acceleration.COMPILE_OPTIONS, "backend", "eager")
    obj = DDPM(ClassConditionalUNet(1, 10, 4))
    plain = obj.unet
    with pytest.raises(Crash), acceleration.compiled_unet(obj) as unet:
        assert unet is plain and obj.unet is not plain
        assert set(obj.unet.state_dict()) == {f"_orig_mod.{k}" for k in plain.state_dict()}
        raise Crash
    assert obj.unet is plain
    with acceleration.compiled_unet(obj, enabled=False):
        assert obj.unet is plain


# -- optimizer ------------------------------------------------------------------------------


def test_foreach_adam_is_bit_identical_to_the_per_parameter_loop(
    digits, tmp_path, monkeypatch
) -> None:
    """The speed-only switch to foreach Adam changes no weight (fused Adam would)."""
    cfg = TrainConfig(**SMALL, ema_decay=0.9)
    fast = _run(digits, tmp_path / "foreach", cfg)
    adam = torch.optim.Adam

    def per_parameter(params, **kw):
        assert kw.pop("foreach") is True
        return adam(params, foreach=False, **kw)

    monkeypatch.setattr(training_module.torch.optim, "Adam", per_parameter)
    slow = _run(digits, tmp_path / "loop", cfg)
    assert _same(fast.model_path, slow.model_path)
