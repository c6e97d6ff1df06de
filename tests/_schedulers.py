"""Reference diffusers schedulers shared by the step and sampler tests."""

from __future__ import annotations

from fundiff.schedules import strided_timesteps

TS = strided_timesteps()  # 990 .. 0 by 30


def if_scheduler(**overrides):
    """IF's stage-I scheduler config; thresholding and clipping off unless overridden."""
    from diffusers import DDPMScheduler

    config = dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        thresholding=False,
        clip_sample=False,
    )
    config.update(overrides)
    return DDPMScheduler(**config)
