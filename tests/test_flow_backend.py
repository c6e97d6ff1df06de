"""Part A on the flow-matching model (backend ``local_fm``): its velocity read as a noise
estimate on the DDPM schedule, its config inherited from ``partA.local``, its jobs and files."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fundiff import tasks
from fundiff.backends import FlowDenoiser, LocalDenoiser, load_backend
from fundiff.checkpoints import save_weights
from fundiff.config import load_yaml, validate_config
from fundiff.denoisers import DenoiserOutput
from fundiff.denoising import denoise
from fundiff.diffusion import DDPM, FlowMatching
from fundiff.errors import FundiffError
from fundiff.guidance import Branch
from fundiff.schedules import NoiseSchedule
from fundiff.unets import ClassConditionalUNet

ROOT = Path(__file__).resolve().parents[1]


class PointMassFlow(nn.Module):
    """The exact velocity field of data that is one image ``target``: on
    ``z_s = (1 - s) eps + s target`` the velocity ``target - eps`` is ``(target - z_s) / (1 - s)``.
    """

    conditioning = "class"

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        self.target = nn.Parameter(target, requires_grad=False)

    def velocity(self, z: Tensor, s: Tensor, cond: Tensor) -> Tensor:
        return (self.target - z) / (1 - s.view(-1, 1, 1, 1))


def test_velocity_becomes_the_exact_noise_of_a_ddpm_state() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 28, 28, generator=gen)
    schedule = NoiseSchedule.linear(300)
    den = FlowDenoiser(PointMassFlow(target), schedule)
    eps = torch.randn(4, 1, 28, 28, generator=gen)
    t = torch.tensor([0, 50, 200, 299])
    ab = schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * target + (1 - ab).sqrt() * eps
    out = den(x_t, t, den.conditions(["a 1", "", "seven", "a 3"]))
    torch.testing.assert_close(out.eps, eps, atol=1e-3, rtol=0)  # float32 oracle
    assert out.variance is None
    # flow time s = a / (a + b): near the data (s -> 1) at t = 0, decreasing with t; the course
    # schedule (T = 300, betas to 0.02) ends at abar = 0.048, s = 0.18, not at pure noise
    s = den.flow_time(t)
    a, b = ab.view(-1).sqrt(), (1 - ab.view(-1)).sqrt()
    torch.testing.assert_close(s, a / (a + b))
    assert 0.99 < float(s[0]) < 1 and abs(float(s[-1]) - 0.1835) < 1e-3


class PointMassEps(FlowDenoiser):
    """The exact noise predictor of the same one-image data, as a DDPM would be (reference)."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor) -> DenoiserOutput:
        ab = self.schedule.alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)
        return DenoiserOutput((x_t - ab.sqrt() * self.flow.target) / (1 - ab).sqrt(), None)


def _run(den: FlowDenoiser, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return denoise(
        den,
        torch.randn(3, 1, 28, 28, generator=gen),
        list(range(299, -1, -13)),  # 24 strided steps, 299 .. 0
        branches=[Branch(cond=den.conditions(["a 6"])[0])],
        null_cond=den.conditions([""])[0],
        guidance=5.0,
        generator=gen,
        variance="posterior",
    )


def test_strided_ddpm_loop_on_the_flow_model_is_the_ddpm_loop() -> None:
    """The whole Part A loop (strided steps, CFG branches, posterior noise) on the flow model
    gives what it gives on a DDPM with the same (exact) model of the data, and ends near it."""
    target = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    schedule = NoiseSchedule.linear(300)
    flow = _run(FlowDenoiser(PointMassFlow(target), schedule), seed=2)
    eps = _run(PointMassEps(PointMassFlow(target), schedule), seed=2)
    torch.testing.assert_close(flow, eps, atol=1e-3, rtol=0)
    # the course loop stops at index 0 (abar = 1 - 1e-4): 1% of noise left
    assert float((flow - target).abs().mean()) < 0.02


def _save(tmp_path: Path, objective: nn.Module, name: str) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_weights(objective.unet, path, objective.spec())
    return path


def test_load_backend_picks_the_denoiser_by_the_saved_objective(tmp_path: Path) -> None:
    flow = FlowMatching(ClassConditionalUNet(1, 10, 4))
    ddpm = DDPM(ClassConditionalUNet(1, 10, 4), T=50)
    params = {"device": "cpu", "schedule": {"T": 300, "beta_start": 1e-4, "beta_end": 0.02}}
    fm = load_backend("local_fm", params, {"model": _save(tmp_path, flow, "fm")})
    dd = load_backend("local", {"device": "cpu"}, {"model": _save(tmp_path, ddpm, "ddpm")})
    assert isinstance(fm, FlowDenoiser) and type(dd) is LocalDenoiser
    assert len(fm.schedule.betas) == 300 and len(dd.schedule.betas) == 50
    x = torch.randn(2, 1, 28, 28)
    assert fm(x, torch.tensor([10, 200]), fm.conditions(["a 1", ""])).eps.shape == x.shape
    with pytest.raises(FundiffError, match="class-conditioned fm run"):
        FlowDenoiser(ddpm, NoiseSchedule.linear(300))
    with pytest.raises(FundiffError, match="class-conditioned DDPM run"):
        LocalDenoiser(flow)


def _config(**local_fm: object) -> dict:
    cfg = load_yaml(ROOT / "config.yaml")
    cfg["partA"]["local_fm"] = {"enabled": True, **local_fm}
    return cfg


def test_local_fm_inherits_every_local_setting_but_run() -> None:
    cfg = validate_config(_config())
    local, fm = cfg["partA"]["local"], cfg["partA"]["local_fm"]
    assert fm["run"] == "fm_class" and local["run"] == "ddpm_class"
    assert {k: v for k, v in fm.items() if k not in ("run", "enabled")} == {
        k: v for k, v in local.items() if k not in ("run", "enabled")
    }
    # a key given under local_fm wins, key by key, and touches nothing of local
    cfg = validate_config(_config(guidance=3.0, tasks={"anagrams": {"n": 2}}))
    fm = cfg["partA"]["local_fm"]
    assert fm["guidance"] == 3.0 and cfg["partA"]["local"]["guidance"] == 5.0
    assert fm["tasks"]["anagrams"]["n"] == 2
    assert (
        fm["tasks"]["anagrams"]["illusions"]
        == cfg["partA"]["local"]["tasks"]["anagrams"]["illusions"]
    )
    # validating twice changes nothing (the config the rules see is validated again in jobs)
    again = validate_config(copy.deepcopy(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    ("local_fm", "match"),
    [
        ({"run": "ddpm_class"}, "partA.local_fm.run: 'ddpm_class' must be a class-conditioned fm"),
        ({"run": "fm_time"}, "partA.local_fm.run: 'fm_time' must be a class-conditioned fm"),
        ({"run": "nope"}, "partA.local_fm.run: Part B run 'nope' is not configured"),
        ({"guidance": "high"}, "partA.local_fm.guidance"),
    ],
)
def test_bad_local_fm_settings_name_the_key(local_fm: dict, match: str) -> None:
    with pytest.raises(FundiffError, match=match):
        validate_config(_config(**local_fm))


def test_flow_jobs_read_the_schedule_and_only_their_settings() -> None:
    cfg = validate_config(_config())
    params = tasks.backend_params(cfg, "local_fm", "inpaint")
    assert params["schedule"] == {"T": 300, "beta_start": 0.0001, "beta_end": 0.02}
    assert params["guidance"] == 5.0
    assert "schedule" not in tasks.backend_params(cfg, "local", "inpaint")
    # a task setting given under partA.local_fm (config.yaml: the FM hybrids' CFG 3) is its own
    fm = tasks.job_params(
        validate_config(load_yaml(ROOT / "config.yaml")), "local_fm", "hybrids", "eight_three"
    )
    dd = tasks.job_params(
        validate_config(load_yaml(ROOT / "config.yaml")), "local", "hybrids", "eight_three"
    )
    assert fm["settings"]["guidance"] == 3.0 and dd["settings"]["guidance"] == 10.0
    assert fm["settings"]["item"] == dd["settings"]["item"]  # the same pair (sigma 2)
