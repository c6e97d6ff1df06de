"""The shared step object (:mod:`fundiff.steps`) and guidance (:mod:`fundiff.guidance`)
against diffusers' DDPMScheduler: variances, clipping, dynamic thresholding, CFG."""

from __future__ import annotations

import pytest
import torch

from fundiff.errors import FundiffError
from fundiff.guidance import cfg, reduce_terms
from fundiff.runtime import seed_generator
from fundiff.schedules import NoiseSchedule
from fundiff.steps import DDPMStep, EulerFlow, Thresholding, ddpm_update, dynamic_threshold

from _schedulers import TS, if_scheduler

torch.set_num_threads(1)


def _compare(ours: DDPMStep, sched, channels_out: int, seed: int, scale: float = 1.0) -> None:
    sched.set_timesteps(timesteps=TS)
    g = seed_generator(seed)
    for i, t in enumerate(TS):
        x = torch.randn(2, 3, 8, 8, generator=g) * scale
        out = torch.randn(2, channels_out, 8, 8, generator=g) * scale
        if channels_out == 6:
            out[:, 3:] = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
        a = ours.step(out, t, x, generator=seed_generator(100 + i))
        b = sched.step(out, t, x, generator=seed_generator(100 + i), return_dict=False)
        assert torch.allclose(a.prev_sample, b[0], rtol=1e-5, atol=1e-5), f"x_prev at t={t}"
        assert torch.allclose(a.pred_original_sample, b[1], rtol=1e-5, atol=1e-5), f"x0 at t={t}"
        if t == 0:  # the last step adds no noise
            assert torch.allclose(a.prev_sample, a.pred_original_sample, atol=1e-6)


@pytest.mark.parametrize("clip", [False, True])
def test_learned_variance_step_equals_ddpm_scheduler_step(clip):
    sched = if_scheduler(clip_sample=clip)
    schedule = NoiseSchedule.from_diffusers(sched)
    ours = DDPMStep(schedule, variance="learned", clip=(-1.0, 1.0) if clip else None, timesteps=TS)
    _compare(ours, sched, 6, seed=0)


@pytest.mark.parametrize(
    ("ours", "theirs"), [("beta", "fixed_large"), ("posterior", "fixed_small")]
)
def test_fixed_variance_steps_equal_diffusers(ours, theirs):
    sched = if_scheduler(variance_type=theirs)
    step = DDPMStep(NoiseSchedule.from_diffusers(sched), variance=ours, timesteps=TS)
    _compare(step, sched, 3, seed=1)


def test_dynamic_thresholding_step_equals_if_scheduler():
    sched = if_scheduler(thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5)
    th = Thresholding.from_scheduler(sched)
    assert th == Thresholding(0.95, 1.5)
    step = DDPMStep(NoiseSchedule.from_diffusers(sched), variance="learned", threshold=th)
    step.set_timesteps(TS)
    _compare(step, sched, 6, seed=2, scale=3.0)  # large values: thresholding is active
    assert Thresholding.from_scheduler(if_scheduler()) is None
    assert Thresholding.from_scheduler(None) is None


def test_dynamic_threshold_maps_into_unit_range_and_keeps_small_images():
    x = torch.randn(3, 3, 8, 8, generator=seed_generator(4)) * 5
    y = dynamic_threshold(x, 0.95, 1.5)
    assert y.abs().max() <= 1.0 + 1e-6 and y.shape == x.shape
    assert not torch.allclose(y, x.clamp(-1, 1))  # rescaled, not only clipped
    small = torch.rand(2, 3, 4, 4, generator=seed_generator(5)) * 1.8 - 0.9
    assert torch.equal(dynamic_threshold(small), small)  # s clamps to 1: plain clipping


def test_step_needs_generator_and_known_timesteps():
    step = DDPMStep(NoiseSchedule.linear(T=300), timesteps=[200, 100, 0])
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(FundiffError, match="generator"):
        step.step(x, 200, x)
    with pytest.raises(FundiffError, match="not in the step's list"):
        step.step(x, 150, x, generator=seed_generator(0))
    with pytest.raises(FundiffError, match="decreasing"):
        step.set_timesteps([0, 100])
    with pytest.raises(FundiffError, match="variance"):
        DDPMStep(NoiseSchedule.linear(T=300), variance="fixed_large")
    assert step.previous_timestep(0) == -1 and step.previous_timestep(200) == 100
    out, x0 = step.step(x, 0, x, return_dict=False)  # t = 0: no noise, no generator needed
    assert torch.equal(out, x0)


def test_ddpm_update_learned_needs_variance():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(FundiffError, match="no variance"):
        ddpm_update(x, x, 0.5, 0.6, variance="learned", noise=x)


def test_euler_flow_integrates_a_constant_velocity_exactly():
    euler = EulerFlow(4)
    assert euler.times == [0.0, 0.25, 0.5, 0.75]
    x = torch.zeros(2)
    for _ in euler.times:
        x = euler.step(torch.ones(2), x)
    assert torch.allclose(x, torch.ones(2))
    with pytest.raises(FundiffError, match="steps"):
        EulerFlow(0)


def test_cfg_and_reduction():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert cfg(c, u, 1.0).item() == 2.0 and cfg(c, u, 0.0).item() == 1.0
    assert cfg(c, u, 7.0).item() == 8.0
    terms = [torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([6.0])]
    assert reduce_terms(terms, "mean").item() == 3.0
    assert reduce_terms(terms, "sum").item() == 9.0
    with pytest.raises(FundiffError, match="reduce"):
        reduce_terms(terms, "max")
