"""NoiseSchedule, strided timesteps and the forward process, checked against diffusers."""

from __future__ import annotations

import pytest
import torch

from fundiff.errors import FundiffError
from fundiff.runtime import seed_generator
from fundiff.schedules import NoiseSchedule, randn_like, scale_timesteps, strided_timesteps

torch.set_num_threads(1)


def test_strided_timesteps_course_default():
    ts = strided_timesteps()
    assert ts == list(range(990, -1, -30))
    assert len(ts) == 34 and ts[0] == 990 and ts[-1] == 0
    assert strided_timesteps(90, 30, 0) == [90, 60, 30, 0]
    with pytest.raises(FundiffError):
        strided_timesteps(100, 30, 0)  # 0 not reachable
    with pytest.raises(FundiffError):
        strided_timesteps(10, 0, 0)


def test_scale_timesteps_to_mnist_T():
    ts = scale_timesteps(strided_timesteps(), from_T=1000, to_T=300)
    assert ts[0] == 297 and ts[-1] == 0
    assert all(a > b for a, b in zip(ts, ts[1:], strict=False))
    assert all(0 <= t < 300 for t in ts)
    # dedupe when the target T is coarser than the stride
    coarse = scale_timesteps([990, 980, 970, 0], from_T=1000, to_T=10)
    assert coarse == [9, 0]
    assert scale_timesteps([999], 1000, 300) == [299]  # clamped to T - 1
    with pytest.raises(FundiffError):
        scale_timesteps([0, 10], 1000, 300)


def test_linear_schedule_is_course_linspace():
    s = NoiseSchedule.linear(300, 1e-4, 0.02)
    assert s.num_train_timesteps == 300
    assert torch.allclose(s.betas, torch.linspace(1e-4, 0.02, 300, dtype=torch.float64))
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))
    assert s.alphas_cumprod.dtype == torch.float64


def test_squaredcos_matches_diffusers_and_from_diffusers_is_exact():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    mine = NoiseSchedule.squaredcos_cap_v2(1000)
    assert torch.allclose(mine.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    exact = NoiseSchedule.from_diffusers(sched)
    assert torch.equal(exact.alphas_cumprod, sched.alphas_cumprod.double())
    assert torch.allclose(exact.betas, sched.betas.double(), atol=1e-6)
    assert exact.abar(-1) == 1.0
    with pytest.raises(FundiffError):
        exact.abar(1000)


def test_add_noise_formula_and_diffusers_agree():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    s = NoiseSchedule.from_diffusers(sched)
    g = seed_generator(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([250, 500, 750])
    ours = s.add_noise(x0, t, noise)
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1).double()
    manual = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).float()
    assert torch.allclose(ours, manual, atol=1e-6)
    assert torch.allclose(ours, sched.add_noise(x0, noise, t), atol=1e-5)
    # an int t applies to the whole batch
    assert torch.allclose(s.add_noise(x0, 500, noise)[1], ours[1])
    assert torch.equal(s.add_noise(x0, -1, noise), x0)  # t = -1 is clean
    with pytest.raises(FundiffError):
        s.add_noise(x0, torch.tensor([1, 2]), noise)


def test_forward_is_seeded_and_gaussian():
    s = NoiseSchedule.linear()
    x0 = torch.zeros(2, 1, 28, 28)
    a, na = s.forward(x0, 299, seed_generator(3))
    b, nb = s.forward(x0, 299, seed_generator(3))
    c, _ = s.forward(x0, 299, seed_generator(4))
    assert torch.equal(a, b) and torch.equal(na, nb)
    assert not torch.equal(a, c)
    big = randn_like(torch.empty(64, 3, 32, 32), seed_generator(0))
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02
    # x_t std at t: sqrt(abar x0^2 + (1 - abar)) with x0 = 0 -> sqrt(1 - abar)
    expect = (1 - s.alphas_cumprod[299]).sqrt().item()
    assert abs(a.std().item() - expect) < 0.1


def test_randn_like_matches_diffusers_randn_tensor():
    from diffusers.utils.torch_utils import randn_tensor

    x = torch.empty(2, 3, 5, 5)
    assert torch.equal(
        randn_like(x, seed_generator(7)), randn_tensor(x.shape, generator=seed_generator(7))
    )


def test_timestep_helpers_agree_with_the_course_and_diffusers():
    from diffusers import DDPMScheduler

    from fundiff.schedules import (
        course_timesteps,
        ddpm_schedule,
        leading_timesteps,
        scale_timestep,
        spaced_timesteps,
    )

    assert course_timesteps(1000) == strided_timesteps()
    assert course_timesteps(300, 990, 90) == scale_timesteps(strided_timesteps(990, 90), 1000, 300)
    sched = DDPMScheduler(num_train_timesteps=1000)
    for steps in (3, 5, 50):
        sched.set_timesteps(steps)
        assert leading_timesteps(1000, steps) == sched.timesteps.tolist()
    assert leading_timesteps(10, 20) == list(range(9, -1, -1))
    assert spaced_timesteps(300, None) == list(range(299, -1, -1))
    sp = spaced_timesteps(300, 30)
    assert len(sp) == 30 and sp[0] == 299 and sp[-1] == 0
    assert scale_timestep(250, 300) == 75 and scale_timestep(999, 300) == 299
    lin = ddpm_schedule(1e-4, 0.02, 300)
    assert torch.equal(lin["alpha_bars"], NoiseSchedule.linear(300).alphas_cumprod)
    assert torch.equal(
        NoiseSchedule.from_ddpm_linear(1e-4, 0.02, 300).alphas_cumprod, lin["alpha_bars"]
    )
    with pytest.raises(FundiffError):
        ddpm_schedule(0.02, 1e-4, 300)
