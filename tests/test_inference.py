"""Sampling copies of trained UNets (fundiff.inference): same outputs, BatchNorm folded away."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fundiff.checkpoints import load_model, save_weights
from fundiff.diffusion import DDPM, FlowMatching
from fundiff.errors import FundiffError
from fundiff.inference import SamplingUNet, fold_batchnorm, for_sampling
from fundiff.unets import (
    ClassConditionalUNet,
    TimeConditionalUNet,
    UnconditionalUNet,
    unet_spec,
)


def trained_like(unet: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (as after
    training), so folding is actually exercised; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in unet.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))
    return unet.eval()


def inputs(b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 28, 28, generator=g)
    t = torch.rand(b, generator=g)
    c = nn.functional.one_hot(torch.randint(0, 10, (b,), generator=g), 10).float()
    c[::3] = 0  # some unconditional rows, as in a CFG batch
    return x, t, c


@pytest.mark.parametrize("chunk", [None, 4, 7])
def test_sampling_copy_matches_the_trained_unet_for_every_unet_kind(chunk: int | None) -> None:
    torch.manual_seed(0)
    x, t, c = inputs(10)  # 10 images: chunks of 4 -> 4 + 4 + 2, of 7 -> 7 + 3
    cases = [
        (trained_like(UnconditionalUNet(num_hiddens=8)), (x,)),
        (trained_like(TimeConditionalUNet(num_hiddens=8)), (x, t)),
        (trained_like(TimeConditionalUNet(num_hiddens=8, injection="mul")), (x, t[:1].squeeze())),
        (trained_like(ClassConditionalUNet(num_hiddens=8)), (x, t, c)),
    ]
    for unet, args in cases:
        fast = SamplingUNet(unet, chunk=chunk, channels_last=chunk is not None)
        with torch.no_grad():
            ref, out = unet(*args), fast(*args)
        assert out.shape == ref.shape and out.is_contiguous()
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), type(unet).__name__
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        # the trained model is left as it was
        assert sum(isinstance(m, nn.BatchNorm2d) for m in unet.modules()) > 10
        assert (fast.conditioning, fast.in_channels) == (unet.conditioning, unet.in_channels)


def test_folding_uses_running_statistics_and_replaces_each_batchnorm() -> None:
    seq = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.GELU(),
        nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), nn.BatchNorm2d(4),
    )  # fmt: skip
    trained_like(seq, seed=3)
    x = torch.randn(2, 2, 5, 5)
    ref = seq(x)
    empty = nn.Module()
    assert fold_batchnorm(empty) is empty  # a module without children comes back as it was
    holder = nn.Module()
    holder.seq = seq
    assert fold_batchnorm(holder) is holder
    assert isinstance(seq[1], nn.Identity) and isinstance(seq[4], nn.Identity)
    assert torch.allclose(seq(x), ref, atol=1e-5)
    # a BatchNorm that follows no convolution has nothing to fold into: it stays
    holder.seq = nn.Sequential(nn.GELU(), nn.BatchNorm2d(3))
    fold_batchnorm(holder)
    assert isinstance(holder.seq[1], nn.BatchNorm2d)


def test_load_model_for_sampling_gives_the_same_samples(tmp_path: Path) -> None:
    """A DDPM and a flow model saved as a run's weights, loaded plain and as sampling copies:
    the same CFG samples (from the same generator) and the same noise estimates."""
    for objective in (
        DDPM(trained_like(ClassConditionalUNet(num_hiddens=8)), T=20),
        FlowMatching(trained_like(ClassConditionalUNet(num_hiddens=8, injection="mul"))),
    ):
        path = save_weights(objective.unet, tmp_path / "model.safetensors", objective.spec())
        plain = load_model(path)
        fast = load_model(path, sampling=True)
        assert isinstance(fast.unet, SamplingUNet) and not fast.training
        kw = {"labels": list(range(10)) * 8, "guidance": 5.0, "steps": 6}  # 160 rows a call
        a, _ = plain.sample(generator=torch.Generator().manual_seed(4), **kw)
        b, _ = fast.sample(generator=torch.Generator().manual_seed(4), **kw)
        assert torch.allclose(a, b, atol=1e-4), type(objective).__name__
        assert for_sampling(fast) is fast and isinstance(fast.unet, SamplingUNet)  # idempotent
        with pytest.raises(FundiffError, match="not a fundiff UNet"):
            unet_spec(fast.unet)  # a sampling copy is never saved as a run's model
