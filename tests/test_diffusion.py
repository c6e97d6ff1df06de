"""Part B objectives: schedule, loss targets and sampler maths with oracle networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fundiff.diffusion import (
    DDPM,
    FlowMatching,
    SingleStepDenoising,
    build_objective,
    class_condition,
    ddpm_schedule,
    strided_indices,
)
from fundiff.errors import FundiffError
from fundiff.unets import ClassConditionalUNet, TimeConditionalUNet, UnconditionalUNet

torch.set_num_threads(1)


def target_image() -> torch.Tensor:
    """A fixed image in [0, 1]: the single point of a point-mass data distribution."""
    x = torch.zeros(1, 1, 28, 28)
    x[..., 6:22, 12:16] = 0.9
    x[..., 20:23, 8:20] = 0.6
    return x


class _FakeNet(nn.Module):
    """Base for oracle networks: a dummy parameter so objectives find a device."""

    in_channels = 1

    def __init__(self, conditioning: str, num_classes: int = 10) -> None:
        super().__init__()
        self.conditioning = conditioning
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[int] = []


class PointMassEps(_FakeNet):
    """Exact DDPM noise predictor for data = point mass at x*: eps = (x_t - sqrt(ab) x*) / sqrt(1-ab)."""

    def __init__(self, x_star: torch.Tensor, T: int) -> None:
        super().__init__("time")
        self.x_star, self.ab = x_star, ddpm_schedule(1e-4, 0.02, T)["alpha_bars"]
        self.T = T

    def forward(self, x, t):
        self.calls.append(x.shape[0])
        i = torch.round(t * self.T - 1).long()  # the objective feeds (i + 1) / T
        ab = self.ab[i].float()[:, None, None, None]
        return (x - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


class PointMassVelocity(_FakeNet):
    """Exact flow-matching velocity for data = point mass at x*: u = (x* - x_t) / (1 - t)."""

    def __init__(self, x_star: torch.Tensor) -> None:
        super().__init__("time")
        self.x_star = x_star

    def forward(self, x, t):
        self.calls.append(x.shape[0])
        tt = t[:, None, None, None]
        return (self.x_star - x) / (1 - tt).clamp(min=1e-6)


class ConstantPerCondition(_FakeNet):
    """Class-conditional fake: returns a for rows with a class, b for all-zero rows."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__("class")
        self.a, self.b = a, b

    def forward(self, x, t, c):
        self.calls.append(x.shape[0])
        has = (c.abs().sum(1) > 0).float()[:, None, None, None]
        return torch.zeros_like(x) + has * self.a + (1 - has) * self.b


def test_schedule_and_indices() -> None:
    s = ddpm_schedule(1e-4, 0.02, 300)
    assert s["betas"].shape == (300,)
    assert s["betas"][0].item() == pytest.approx(1e-4) and s["betas"][-1].item() == pytest.approx(
        0.02
    )
    assert torch.allclose(s["alpha_bars"], torch.cumprod(1 - s["betas"], 0))
    full = strided_indices(300, None)
    assert full == list(range(299, -1, -1))
    st = strided_indices(300, 30)
    assert len(st) == 30 and st[0] == 299 and st[-1] == 0
    assert all(a > b for a, b in zip(st, st[1:], strict=False))
    assert strided_indices(300, 300) == full


def test_step_matches_course_formula() -> None:
    """B.2 update with unit stride, written out independently from SPEC.md."""
    ddpm = DDPM(TimeConditionalUNet(1, 4), T=300)
    s = ddpm_schedule(1e-4, 0.02, 300)
    g = torch.Generator().manual_seed(1)
    x_t, eps, z = (torch.randn(2, 1, 28, 28, generator=g, dtype=torch.float64) for _ in range(3))
    for i in (299, 150, 1):  # course t = i + 1
        ab, ab_prev = s["alpha_bars"][i], s["alpha_bars"][i - 1]
        beta, alpha = s["betas"][i], s["alphas"][i]
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        expected = (
            ab_prev.sqrt() * beta / (1 - ab) * x0
            + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t
            + beta.sqrt() * z
        )
        got = ddpm.step(x_t, eps, i, i - 1, z)
        assert torch.allclose(got, expected, atol=1e-10)
    # the last step (index 0 -> clean) adds no noise and returns x0_hat
    ab0 = s["alpha_bars"][0]
    assert torch.allclose(
        ddpm.step(x_t, eps, 0, -1, z), (x_t - (1 - ab0).sqrt() * eps) / ab0.sqrt(), atol=1e-10
    )


def test_x0_estimate_exact_with_true_noise() -> None:
    ddpm = DDPM(TimeConditionalUNet(1, 4), T=300)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 1, 28, 28, generator=g)
    eps = torch.randn(4, 1, 28, 28, generator=g)
    i = torch.tensor([0, 50, 200, 299])
    x_t = ddpm.add_noise(x0, i, eps)
    ab = ddpm.alpha_bars[i][:, None, None, None]  # float64
    assert torch.allclose(
        x_t.double(), ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double(), atol=1e-6
    )
    for k in range(4):  # stepping to "index -1" with the true eps recovers x0
        got = ddpm.step(x_t[k : k + 1], eps[k : k + 1], int(i[k]), -1, None)
        assert torch.allclose(got, x0[k : k + 1], atol=1e-3 if i[k] == 299 else 1e-4)


@pytest.mark.parametrize("steps", [None, 30, 7])
def test_ddpm_sampler_reaches_point_mass(steps: int | None) -> None:
    x_star = target_image()
    net = PointMassEps(x_star, 300)
    ddpm = DDPM(net, T=300)
    out, traj = ddpm.sample(
        None,
        n=3,
        guidance=None,
        generator=torch.Generator().manual_seed(0),
        steps=steps,
        trajectory_every=10,
    )
    assert out.shape == (3, 1, 28, 28)
    assert torch.allclose(out, x_star.expand(3, -1, -1, -1), atol=1e-3)
    n_calls = 300 if steps is None else steps
    assert len(net.calls) == n_calls
    assert len(traj) == 1 + math.ceil(n_calls / 10)


def test_ddpm_oracle_loss_is_zero() -> None:
    x_star = target_image()
    ddpm = DDPM(PointMassEps(x_star, 300), T=300)
    loss = ddpm.loss(x_star.expand(16, -1, -1, -1), None, torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8


def test_flow_matching_euler_reaches_point_mass_and_oracle_loss() -> None:
    x_star = target_image()
    fm = FlowMatching(PointMassVelocity(x_star), num_steps=50)
    out, traj = fm.sample(
        None, n=2, guidance=None, generator=torch.Generator().manual_seed(0), trajectory_every=25
    )
    assert torch.allclose(out, x_star.expand(2, -1, -1, -1), atol=1e-5)
    assert len(fm.unet.calls) == 50 and len(traj) == 3
    # fewer steps still land exactly on a point mass (Euler is exact on this straight path)
    out5, _ = fm.sample(
        None, n=2, guidance=None, generator=torch.Generator().manual_seed(1), steps=5
    )
    assert torch.allclose(out5, x_star.expand(2, -1, -1, -1), atol=1e-5)
    loss = fm.loss(x_star.expand(8, -1, -1, -1), None, torch.Generator().manual_seed(0))
    assert loss.item() < 1e-8


def test_cfg_combination_one_batched_call() -> None:
    """u = u_u + g (u_c - u_u), computed from ONE network call on a 2N batch."""
    net = ConstantPerCondition(a=0.3, b=0.1)
    fm = FlowMatching(net, num_steps=1)
    labels = torch.tensor([0, 4, 9])
    out, _ = fm.sample(labels, guidance=5.0, generator=torch.Generator().manual_seed(3))
    x0 = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out, (x0 + 0.1 + 5.0 * (0.3 - 0.1)).clamp(0, 1), atol=1e-6)
    assert net.calls == [6]
    net.calls.clear()
    out_none, _ = fm.sample(labels, guidance=None, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(out_none, (x0 + 0.3).clamp(0, 1), atol=1e-6)
    assert net.calls == [3]
    # unconditional labels (-1) give zero conditions
    net.calls.clear()
    out_u, _ = fm.sample(
        torch.tensor([-1, -1]), guidance=None, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(out_u, (x0[:2] + 0.1).clamp(0, 1), atol=1e-6)


class NonlinearClassNet(_FakeNet):
    """Class-conditional fake whose output depends strongly and nonlinearly on x, t and c."""

    def __init__(self) -> None:
        super().__init__("class")
        g = torch.Generator().manual_seed(11)
        self.w, self.v = torch.randn(10, generator=g), torch.randn(10, generator=g)

    def forward(self, x, t, c):
        self.calls.append(x.shape[0])
        scale = (1 + c @ self.w)[:, None, None, None]
        shift = (c @ self.v)[:, None, None, None]
        return torch.tanh(x * (1 + 2 * t[:, None, None, None])) * scale + shift


@pytest.mark.parametrize("kind", ["ddpm", "fm"])
def test_guidance_one_equals_conditional(kind: str) -> None:
    net = NonlinearClassNet()
    obj = DDPM(net) if kind == "ddpm" else FlowMatching(net)
    labels = torch.arange(4)
    a, _ = obj.sample(labels, guidance=1.0, generator=torch.Generator().manual_seed(5), steps=8)
    b, _ = obj.sample(labels, guidance=None, generator=torch.Generator().manual_seed(5), steps=8)
    c, _ = obj.sample(labels, guidance=5.0, generator=torch.Generator().manual_seed(5), steps=8)
    assert torch.allclose(a, b, atol=1e-5)
    assert (a - c).abs().mean() > 0.05
    assert 0 <= a.min() and a.max() <= 1


@pytest.mark.parametrize("kind", ["ddpm", "fm"])
def test_guidance_one_with_real_unet(kind: str) -> None:
    torch.manual_seed(0)
    unet = ClassConditionalUNet(1, 10, 4)
    obj = DDPM(unet) if kind == "ddpm" else FlowMatching(unet)
    labels = torch.tensor([0, 3, -1])
    a, _ = obj.sample(labels, guidance=1.0, generator=torch.Generator().manual_seed(5), steps=6)
    b, _ = obj.sample(labels, guidance=None, generator=torch.Generator().manual_seed(5), steps=6)
    assert torch.allclose(a, b, atol=1e-5)  # fails if BatchNorm ran in train mode on the 2N batch
    assert unet.training  # sampling restores the training mode


def test_class_condition_dropping() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (20000,), generator=g)
    c = class_condition(labels, 20000, 10, p_uncond=0.1, generator=g)
    zero = c.sum(1) == 0
    assert 0.09 < zero.float().mean().item() < 0.11
    assert torch.equal(c[~zero].argmax(1), labels[~zero])
    expected = torch.stack([torch.zeros(10), torch.eye(10)[2]])
    assert torch.equal(class_condition(torch.tensor([-1, 2]), 2, 10), expected)
    assert torch.equal(class_condition(None, 3, 10), torch.zeros(3, 10))
    with pytest.raises(FundiffError):
        class_condition(torch.tensor([10]), 1, 10)


def test_training_draws_follow_generator() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 28, 28)
    labels = torch.arange(8)
    for obj in (
        SingleStepDenoising(UnconditionalUNet(1, 4)),
        DDPM(ClassConditionalUNet(1, 10, 4)),
        FlowMatching(TimeConditionalUNet(1, 4, "mul")),
    ):
        l1 = obj.loss(x, labels, torch.Generator().manual_seed(7))
        l2 = obj.loss(x, labels, torch.Generator().manual_seed(7))
        l3 = obj.loss(x, labels, torch.Generator().manual_seed(8))
        assert l1.ndim == 0 and torch.equal(l1, l2) and not torch.equal(l1, l3)


def test_single_step_noise_models() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    obj = SingleStepDenoising(UnconditionalUNet(1, 4), sigma=0.5)
    z = obj.make_input(x, torch.Generator().manual_seed(1))
    eps = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(z, x + 0.5 * eps)
    pure = SingleStepDenoising(UnconditionalUNet(1, 4), pure_noise=True)
    assert torch.allclose(pure.make_input(x, torch.Generator().manual_seed(1)), eps)
    out, traj = pure.sample(None, n=3, generator=g)
    assert out.shape == (3, 1, 28, 28) and traj == [] and 0 <= out.min() and out.max() <= 1


def test_spec_roundtrip_and_argument_errors() -> None:
    ddpm = DDPM(ClassConditionalUNet(1, 10, 4), T=100, betas=(1e-4, 0.03), p_uncond=0.2)
    rebuilt = build_objective(ddpm.spec())
    assert isinstance(rebuilt, DDPM) and rebuilt.T == 100 and rebuilt.beta_range == (1e-4, 0.03)
    assert rebuilt.spec() == ddpm.spec()
    with pytest.raises(FundiffError):
        DDPM(UnconditionalUNet(1, 4))
    with pytest.raises(FundiffError):
        SingleStepDenoising(TimeConditionalUNet(1, 4))
    fm = FlowMatching(TimeConditionalUNet(1, 4, "mul"))
    with pytest.raises(FundiffError):  # time-only model cannot take class labels
        fm.sample(torch.tensor([1, 2]), generator=torch.Generator())
    with pytest.raises(FundiffError):
        fm.sample(None, n=None, generator=torch.Generator())
