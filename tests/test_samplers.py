"""The Part A sampler core on fake denoisers: A.3 == diffusers, one call per step, CFG,
views, hybrids, inpainting, SDEdit, reproducibility, classical blur."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch

from fundiff import samplers as S
from fundiff.denoisers import Denoiser, DenoiserOutput
from fundiff.errors import FundiffError
from fundiff.filters import HighPass, LowPass
from fundiff.runtime import seed_generator
from fundiff.schedules import NoiseSchedule, strided_timesteps
from fundiff.views import get_view

from _schedulers import TS, if_scheduler

torch.set_num_threads(1)


class FakeDenoiser:
    """Deterministic, not flip-equivariant, condition-dependent; records batch sizes."""

    value_range = (-1.0, 1.0)

    def __init__(self, variance: bool = True, channels: int = 3, resolution: int = 8):
        self.schedule = NoiseSchedule.from_diffusers(if_scheduler())
        self.channels, self.resolution = channels, resolution
        self.variance_type = "learned_range" if variance else "fixed_small"
        self._variance = variance
        g = seed_generator(123)
        self.pattern = torch.randn(channels, resolution, resolution, generator=g) * 0.3
        self.proj = torch.randn(4, channels, generator=g) * 0.5
        self.table = {p: torch.randn(4, generator=g) for p in ("a", "b", "c")}
        self.table[""] = torch.zeros(4)
        self.calls: list[int] = []

    def conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        for p in prompts:
            if p not in self.table:
                raise FundiffError(f"unknown prompt {p!r}; known: {sorted(self.table)}")
        return torch.stack([self.table[p] for p in prompts])

    def __call__(self, x_t, t, cond):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        assert cond.shape[0] == x_t.shape[0]
        self.calls.append(x_t.shape[0])
        s = (t.float() / 1000).view(-1, 1, 1, 1)
        eps = (
            0.5 * torch.tanh(x_t)
            + s * self.pattern
            + (cond @ self.proj).view(-1, self.channels, 1, 1)
        )
        var = torch.tanh(0.5 * x_t.mean(1, keepdim=True) + s - 0.5).expand_as(x_t)
        return DenoiserOutput(eps, var.clone() if self._variance else None)


class OracleDenoiser(FakeDenoiser):
    """Returns the true noise of x_t given the clean image x0 it knows."""

    def __init__(self, x0: torch.Tensor):
        super().__init__(variance=False, channels=x0.shape[1], resolution=x0.shape[-1])
        self.x0 = x0

    def __call__(self, x_t, t, cond):
        self.calls.append(x_t.shape[0])
        ab = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1).to(x_t.dtype)
        x0 = self.x0.repeat(x_t.shape[0] // self.x0.shape[0], 1, 1, 1)
        return DenoiserOutput((x_t - ab.sqrt() * x0) / (1 - ab).sqrt(), None)


def test_fakes_satisfy_the_protocol():
    assert isinstance(FakeDenoiser(), Denoiser)


# ----------------------------------------------------------------------------- the loop vs diffusers
def test_denoise_a3_equals_scheduler_loop_for_cfg_anagram():
    d = FakeDenoiser()
    x = torch.randn(2, 3, 8, 8, generator=seed_generator(5))
    kw = dict(
        branches=[
            S.Branch(d.conditions(["a"])[0]),
            S.Branch(d.conditions(["b"])[0], view=get_view("flip")),
        ],
        null_cond=d.conditions([""])[0],
        guidance=7.0,
        final_step=True,
    )
    a = S.denoise(d, x, TS, generator=seed_generator(9), **kw)
    b = S.denoise(
        d, x, TS, generator=seed_generator(9), step="scheduler", scheduler=if_scheduler(), **kw
    )
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    # and by hand: the same loop written with scheduler.step directly
    sched = if_scheduler()
    sched.set_timesteps(timesteps=TS)
    gen, y = seed_generator(9), x.clone()
    for t in TS:
        eps, var = S.predict_noise(
            d, y, t, branches=kw["branches"], null_cond=kw["null_cond"], guidance=7.0
        )
        y = sched.step(torch.cat([eps, var], 1), t, y, generator=gen, return_dict=False)[0]
    assert torch.allclose(a, y, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- one prediction
def test_cfg_views_and_variance_combination():
    d = FakeDenoiser()
    x = torch.randn(3, 3, 8, 8, generator=seed_generator(2))
    t = 600
    ca, cb, cn = d.conditions(["a", "b", ""])
    rot = get_view("rot90cw")
    eps, var = S.predict_noise(
        d,
        x,
        t,
        branches=[S.Branch(ca, view=rot), S.Branch(cb, view=get_view("negate"))],
        null_cond=cn,
        guidance=3.0,
    )
    tt = torch.full((3,), t)

    def call(xx, c):
        return d(xx, tt, c.expand(3, -1))

    e1c, e1u = call(rot.view(x), ca), call(rot.view(x), cn)
    e2c, e2u = call(-x, cb), call(-x, cn)
    g1 = rot.inverse(e1u.eps + 3.0 * (e1c.eps - e1u.eps))
    g2 = -(e2u.eps + 3.0 * (e2c.eps - e2u.eps))
    assert torch.allclose(eps, (g1 + g2) / 2, atol=1e-6)
    # default: the mean of the inverse-viewed conditional variances (visual_anagrams);
    # negation leaves a variance alone
    mean = (rot.inverse(e1c.variance) + e2c.variance) / 2
    assert torch.allclose(var, mean, atol=1e-6)
    assert not torch.allclose(var, rot.inverse(e1c.variance), atol=1e-3)
    _, first = S.predict_noise(
        d,
        x,
        t,
        branches=[S.Branch(ca, view=rot), S.Branch(cb, view=get_view("negate"))],
        null_cond=cn,
        guidance=3.0,
        variance_combine="first",
    )
    assert torch.allclose(first, rot.inverse(e1c.variance), atol=1e-6)  # conditional, branch 0
    with pytest.raises(FundiffError, match="variance_combine"):
        S.predict_noise(d, x, t, branches=[S.Branch(ca)], variance_combine="max")


def test_hybrid_sums_low_and_high_pass_of_guided_estimates():
    d = FakeDenoiser(resolution=16)
    x = torch.randn(1, 3, 16, 16, generator=seed_generator(3))
    ca, cb, cn = d.conditions(["a", "b", ""])
    lo, hi = LowPass(9, 1.0), HighPass(9, 1.0)
    eps, _ = S.predict_noise(
        d,
        x,
        300,
        branches=[S.Branch(ca, filter=lo), S.Branch(cb, filter=hi)],
        null_cond=cn,
        guidance=7.0,
        reduce="sum",
    )
    tt = torch.full((1,), 300)
    u = d(x, tt, cn[None]).eps
    ga = u + 7 * (d(x, tt, ca[None]).eps - u)
    gb = u + 7 * (d(x, tt, cb[None]).eps - u)
    assert torch.allclose(eps, lo.inverse(ga) + hi.inverse(gb), atol=1e-5)


def test_anagram_with_cfg_makes_one_call_per_step_with_batch_4B():
    d = FakeDenoiser()
    ts = strided_timesteps(990, 90, 0)
    out = S.visual_anagram(
        d, ["a", "b"], ["identity", "flip"], n=3, generator=seed_generator(0), timesteps=ts
    )
    assert out.shape == (3, 3, 8, 8)
    assert d.calls == [4 * 3] * (len(ts) - 1)
    # hybrids share the unconditional pass of their (identical) views: 3B per step
    d.calls.clear()
    S.hybrid(d, ["a", "b"], n=2, generator=seed_generator(0), timesteps=ts)
    assert d.calls == [3 * 2] * (len(ts) - 1)
    # no guidance: just the conditional pass
    d.calls.clear()
    S.sample(d, "a", n=5, generator=seed_generator(0), timesteps=ts)
    assert d.calls == [5] * (len(ts) - 1)


# ----------------------------------------------------------------------------- reproducibility
def test_same_seed_same_output_bit_for_bit():
    d = FakeDenoiser()
    ts = strided_timesteps(990, 90, 0)

    def run(seed):
        return S.visual_anagram(
            d, ["a", "c"], ["identity", "rot180"], n=2, generator=seed_generator(seed), timesteps=ts
        )

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    x0 = torch.rand(1, 3, 8, 8, generator=seed_generator(0)) * 2 - 1
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:5, 2:5] = 1
    p = S.inpaint(d, x0, m, "a", generator=seed_generator(4), timesteps=ts, repaint_jumps=1)
    q = S.inpaint(d, x0, m, "a", generator=seed_generator(4), timesteps=ts, repaint_jumps=1)
    assert torch.equal(p, q)


# ----------------------------------------------------------------------------- oracle checks
def test_one_step_estimate_is_exact_with_the_true_noise():
    x0 = torch.rand(3, 3, 8, 8, generator=seed_generator(0)) * 2 - 1
    d = OracleDenoiser(x0)
    t = torch.tensor([250, 500, 750])
    x_t, noise = d.schedule.forward(x0, t, seed_generator(1))
    est = S.one_step_denoise(d, x_t, t, "a")
    assert torch.allclose(est, x0, atol=1e-4)
    # a wrong (zero) noise estimate does not give x0: the check can fail
    assert not torch.allclose(
        x_t / d.schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1).float(), x0, atol=1e-2
    )


def test_iterative_denoise_with_oracle_recovers_x0_and_callback_frames():
    x0 = torch.rand(2, 3, 8, 8, generator=seed_generator(0)) * 2 - 1
    d = OracleDenoiser(x0)
    x_t, _ = d.schedule.forward(x0, TS[10], seed_generator(1))
    seen: list[tuple[int, int]] = []

    def cb(i, t, x, x0_hat):
        assert x.shape == x0_hat.shape == x0.shape
        assert torch.allclose(x0_hat, x0, atol=1e-3)
        seen.append((i, t))

    out = S.iterative_denoise(d, x_t, 10, "a", generator=seed_generator(2), callback=cb)
    assert [i for i, _ in seen] == list(range(10, 33))
    assert [t for i, t in seen if (i - 10) % 5 == 0] == [690, 540, 390, 240, 90]
    # course variance (sigma^2 = beta of the strided step 30 -> 0) leaves some noise at t = 0
    beta_last = 1 - d.schedule.abar(30) / d.schedule.abar(0)
    assert (out - x0).abs().max() < 6 * math.sqrt(beta_last)
    exact = S.iterative_denoise(d, x_t, 10, "a", generator=seed_generator(2), final_step=True)
    assert torch.allclose(exact, x0, atol=1e-4)


def test_posterior_steps_with_oracle_reproduce_the_forward_marginal():
    # with the true noise and the posterior variance, each A.3 step samples q(x_t' | x_t, x0)
    # exactly, so x at t = 0 ~ N(sqrt(abar_0) x0, 1 - abar_0): checks means AND variances
    x0 = (torch.rand(1, 3, 8, 8, generator=seed_generator(0)) * 2 - 1).repeat(256, 1, 1, 1)
    d = OracleDenoiser(x0)
    x_t, _ = d.schedule.forward(x0, TS[0], seed_generator(1))
    out = S.iterative_denoise(d, x_t, 0, "a", generator=seed_generator(2), variance="posterior")
    ab0 = d.schedule.abar(0)
    resid = out - math.sqrt(ab0) * x0
    assert abs(resid.std().item() / math.sqrt(1 - ab0) - 1) < 0.05
    assert abs(resid.mean().item()) < 0.05 * math.sqrt(1 - ab0)


def test_sdedit_returns_one_result_per_level():
    x0 = torch.rand(1, 3, 8, 8, generator=seed_generator(0)) * 2 - 1
    d = OracleDenoiser(x0)
    levels = [1, 3, 5, 7, 10, 20]
    outs = S.sdedit(
        d, x0, levels, "a", generator=seed_generator(3), guidance=7.0, variance="posterior"
    )
    assert len(outs) == len(levels)
    for o in outs:
        assert o.shape == x0.shape
        assert (o - x0).abs().max() < 6 * math.sqrt(1 - d.schedule.abar(0))  # oracle -> x0
    with pytest.raises(FundiffError):
        S.sdedit(d, x0, [34], "a", generator=seed_generator(3))
    tr = S.translate(d, x0, [5], "b", generator=seed_generator(3))
    assert len(tr) == 1


def test_inpainting_keeps_the_unmasked_region():
    d = FakeDenoiser()
    x0 = torch.rand(2, 3, 8, 8, generator=seed_generator(0)) * 2 - 1
    m = torch.zeros(1, 1, 8, 8)
    m[..., 1:5, 3:7] = 1
    ts = strided_timesteps(990, 90, 0)
    out = S.inpaint(d, x0, m, "a", generator=seed_generator(1), timesteps=ts)
    keep = (m == 0).expand_as(x0)
    final_std = math.sqrt(1 - d.schedule.abar(0))
    assert (out - x0)[keep].abs().max() < 6 * final_std
    assert (out - x0)[~keep].abs().mean() > 0.05  # the hole was regenerated
    exact = S.inpaint(d, x0, m, "a", generator=seed_generator(1), timesteps=ts, final_step=True)
    assert torch.equal(exact[keep], x0[keep])
    d.calls.clear()
    rp = S.inpaint(d, x0, m, "a", generator=seed_generator(1), timesteps=ts, repaint_jumps=2)
    assert len(d.calls) == 3 * (len(ts) - 1)
    assert (rp - x0)[keep].abs().max() < 6 * final_std


# ----------------------------------------------------------------------------- variance modes
def test_model_variance_without_learned_channels_is_fixed_beta():
    d = FakeDenoiser(variance=False)
    x = torch.randn(1, 3, 8, 8, generator=seed_generator(0))
    br = [S.Branch(d.conditions(["a"])[0])]
    a = S.denoise(d, x, TS, branches=br, generator=seed_generator(1))
    b = S.denoise(d, x, TS, branches=br, generator=seed_generator(1), variance="fixed")
    c = S.denoise(d, x, TS, branches=br, generator=seed_generator(1), variance="posterior")
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(FundiffError):
        S.denoise(d, x, TS, branches=br, generator=seed_generator(1), variance="learned")


def test_bad_arguments_raise_fundiff_errors():
    d = FakeDenoiser()
    x = torch.randn(1, 3, 8, 8)
    br = [S.Branch(d.conditions(["a"])[0])]
    g = seed_generator(0)
    with pytest.raises(FundiffError, match="decreasing"):
        S.denoise(d, x, [0, 30], branches=br, generator=g)
    with pytest.raises(FundiffError, match="i_start"):
        S.denoise(d, x, TS, branches=br, generator=g, i_start=40)
    with pytest.raises(FundiffError, match="null"):
        S.denoise(d, x, TS, branches=br, generator=g, guidance=7.0)
    with pytest.raises(FundiffError, match="unknown prompt"):
        S.sample(d, "zebra", generator=g)
    with pytest.raises(FundiffError, match="one view per prompt"):
        S.visual_anagram(d, ["a"], ["identity", "flip"], generator=g)
    with pytest.raises(FundiffError, match="step"):
        S.denoise(d, x, TS, branches=br, generator=g, step="ddim")


# ----------------------------------------------------------------------------- classical blur
def test_best_blur_beats_the_noisy_image_and_reports_its_choice():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    clean = torch.stack([xx, yy, xx * yy]).unsqueeze(0).repeat(2, 1, 1, 1) * 0.8
    s = NoiseSchedule.from_diffusers(if_scheduler())
    noisy = s.add_noise(
        clean, torch.tensor([250, 500]), torch.randn(clean.shape, generator=seed_generator(0))
    )
    blurred, params = S.best_blur(noisy, clean, kernel_sizes=(3, 7, 11), sigmas=(0.5, 1.0, 2.0))
    before, after = S.psnr(noisy, clean), S.psnr(blurred, clean)
    assert (after > before).all()
    for j, p in enumerate(params):
        assert p["kernel_size"] in (3, 7, 11) and p["sigma"] in (0.5, 1.0, 2.0)
        assert abs(p["psnr"] - after[j].item()) < 1e-6


def test_per_image_prompts_condition_each_image():
    d = FakeDenoiser()
    x = torch.randn(2, 3, 8, 8, generator=seed_generator(6))
    conds = d.conditions(["a", "b"])
    eps, _ = S.predict_noise(d, x, 500, branches=[S.Branch(conds, per_image=True)])
    one_a, _ = S.predict_noise(d, x[:1], 500, branches=[S.Branch(conds[0])])
    one_b, _ = S.predict_noise(d, x[1:], 500, branches=[S.Branch(conds[1])])
    assert torch.allclose(eps, torch.cat([one_a, one_b]), atol=1e-6)
    out = S.sample(d, ["a", "b", "c"], generator=seed_generator(0), timesteps=[990, 500, 0])
    assert out.shape == (3, 3, 8, 8)
    with pytest.raises(FundiffError, match="per-image"):
        S.predict_noise(d, x, 500, branches=[S.Branch(d.conditions(["a"] * 3), per_image=True)])


def test_pipeline_step_follows_the_scheduler_config():
    d = FakeDenoiser()
    x = torch.randn(2, 3, 8, 8, generator=seed_generator(6)) * 3
    kw = dict(branches=[S.Branch(d.conditions(["a"])[0])], final_step=True)
    a3 = S.denoise(d, x, TS, generator=seed_generator(1), **kw)
    # no scheduler on the denoiser: the pipeline is the plain A.3 step, bit for bit
    assert torch.equal(S.denoise(d, x, TS, generator=seed_generator(1), step="pipeline", **kw), a3)
    d.scheduler = if_scheduler(thresholding=True, sample_max_value=1.5)
    th = S.denoise(d, x, TS, generator=seed_generator(1), step="pipeline", **kw)
    ref = S.denoise(d, x, TS, generator=seed_generator(1), step="scheduler", **kw)
    assert torch.allclose(th, ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(th, a3, atol=1e-3) and th.abs().max() <= 1.0 + 1e-6
    d.scheduler = if_scheduler(clip_sample=True, clip_sample_range=0.5)
    clipped = S.denoise(d, x, TS, generator=seed_generator(1), step="pipeline", **kw)
    assert clipped.abs().max() <= 0.5 + 1e-6
    with pytest.raises(FundiffError, match="step must be"):
        S.denoise(d, x, TS, generator=seed_generator(1), step="ddim", **kw)
