"""A0 is exactly DeepFloyd IF: stage I as ``IFPipeline`` and stage II as
``IFSuperResolutionPipeline`` do it, on a tiny random IF pair at the course's 64 / 256 px."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported

import pytest  # noqa: E402
import torch  # noqa: E402

from fundiff import deepfloyd as df  # noqa: E402
from fundiff import samplers as S  # noqa: E402
from fundiff import superres  # noqa: E402
from fundiff.runtime import seed_generator  # noqa: E402
from fundiff.schedules import leading_timesteps  # noqa: E402
from fundiff.tiny_if import build_tiny_if  # noqa: E402

torch.set_num_threads(1)

PROMPT = "a rocket ship"
STEPS = 4


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    import huggingface_hub.constants as hc

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hc, "HF_HUB_OFFLINE", True)
        paths = build_tiny_if(tmp_path_factory.mktemp("course_if"), seed=0, course=True)
        emb = df.encode_prompts(str(paths["stage1"]), [PROMPT], device="cpu")
        stage1 = df.load_stage1(str(paths["stage1"]), device="cpu")
        stage2 = df.load_stage2(str(paths["stage2"]), device="cpu")
        yield {"emb": emb, "stage1": stage1, "stage2": stage2}


def _ours_stage1(course, seed, step="pipeline", n=2):
    denoiser = df.DeepFloydDenoiser.from_pipeline(course["stage1"], course["emb"])
    assert denoiser.resolution == 64
    return S.sample(
        denoiser,
        PROMPT,
        n,
        generator=seed_generator(seed),
        timesteps=leading_timesteps(1000, STEPS),
        guidance=7.0,
        final_step=True,
        step=step,
    )


def _ifpipeline(course, seed, n=2):
    emb = course["emb"]
    return course["stage1"](
        prompt_embeds=emb[PROMPT][None],
        negative_prompt_embeds=emb[""][None],
        num_inference_steps=STEPS,
        guidance_scale=7.0,
        num_images_per_prompt=n,
        generator=seed_generator(seed),
        output_type="pt",
    ).images


def test_stage1_equals_ifpipeline_with_thresholding(course):
    ours = _ours_stage1(course, 7)
    ref = _ifpipeline(course, 7)
    assert ours.shape == ref.shape == (2, 3, 64, 64)
    # float32 rounding: our step's coefficients are float64, diffusers' float32; the random
    # model amplifies the last-bit differences to at most ~6e-5 here
    assert torch.allclose(ours, ref, rtol=1e-4, atol=2e-4)
    # thresholding on: the random model's output stays in [-1, 1] like IFPipeline's
    assert ours.abs().max() <= 1.0 + 1e-5
    # the course's plain A.3 step on the same model and seed does not: the comparison can fail
    plain = _ours_stage1(course, 7, step="a3")
    assert not torch.allclose(plain, ref, atol=1e-3)
    assert not torch.allclose(_ours_stage1(course, 8), ref, atol=1e-3)


def test_stage2_equals_ifsuperresolutionpipeline(course):
    emb = course["emb"]
    low = _ifpipeline(course, 3, n=1)
    ours = df.upsample(
        course["stage2"], low, emb[PROMPT], emb[""], steps=STEPS, generator=seed_generator(5)
    )
    ref = course["stage2"](
        image=low,
        prompt_embeds=emb[PROMPT][None],
        negative_prompt_embeds=emb[""][None],
        num_inference_steps=STEPS,
        generator=seed_generator(5),
        output_type="pt",
    ).images
    assert ours.shape == ref.shape == (1, 3, 256, 256)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-4, atol=2e-4)
    other = superres.upsample(
        course["stage2"], low, emb[PROMPT], emb[""], steps=STEPS, generator=seed_generator(6)
    )
    assert not torch.allclose(other, ref, atol=1e-3)
    # no CFG (scale <= 1) and another noise level, as the pipeline's arguments
    a = superres.upsample(
        course["stage2"],
        low,
        emb[PROMPT],
        emb[""],
        steps=2,
        guidance=1.0,
        noise_level=100,
        generator=seed_generator(5),
    )
    b = course["stage2"](
        image=low,
        prompt_embeds=emb[PROMPT][None],
        negative_prompt_embeds=emb[""][None],
        num_inference_steps=2,
        guidance_scale=1.0,
        noise_level=100,
        generator=seed_generator(5),
        output_type="pt",
    ).images
    assert torch.allclose(a, b, rtol=1e-4, atol=2e-4)


# ----------------------------------------------------------------------------- stage II tricks
def _reference_stage2(pipe, low, embs, neg, views, filters, steps, seed, guidance=4.0):
    """visual_anagrams' sample_stage_2 loop (views on cat([x, upscaled]), CFG, inverse views,
    mean of noise and variances; factorized: per-branch filter, sum) with diffusers' step."""
    import copy

    import torch.nn.functional as F

    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps)
    g = seed_generator(seed)
    x = torch.randn(low.shape[0], 3, 256, 256, generator=g)
    up = F.interpolate(low, (256, 256), mode="bilinear", align_corners=True)
    level = torch.tensor([250] * low.shape[0])
    up = pipe.image_noising_scheduler.add_noise(up, torch.randn(up.shape, generator=g), level)
    for t in sched.timesteps:
        inp = torch.cat([x, up], 1)
        eps_terms, var_terms = [], []
        for e, v, f in zip(embs, views, filters, strict=True):
            vi = v.view(inp)
            batch = torch.cat([vi, vi])
            cond = torch.cat([neg[None], e[None]]).repeat_interleave(low.shape[0], 0)
            out = pipe.unet(batch, t, encoder_hidden_states=cond, class_labels=level.repeat(2))[0]
            u, c = out.chunk(2)
            eps = v.inverse(u[:, :3] + guidance * (c[:, :3] - u[:, :3]))
            eps_terms.append(f.inverse(eps) if f is not None else eps)
            var_terms.append(v.inverse_variance(c[:, 3:]))
        if filters[0] is None:
            eps = sum(eps_terms) / len(eps_terms)
        else:
            eps = sum(eps_terms)
        var = sum(var_terms) / len(var_terms)
        x = sched.step(torch.cat([eps, var], 1), t, x, generator=g, return_dict=False)[0]
    return x


def test_stage2_anagram_and_hybrid_follow_the_reference_loop(course):
    from fundiff.views import get_view

    emb = course["emb"]
    low = _ifpipeline(course, 3, n=1)
    embs = [emb[PROMPT], emb[""] * 0.5]  # two different conditions
    views = [get_view("identity"), get_view("jigsaw")]
    ours = superres.upsample_anagram(
        course["stage2"], low, embs, emb[""], views, steps=2, generator=seed_generator(9)
    )
    ref = _reference_stage2(course["stage2"], low, embs, emb[""], views, [None, None], 2, 9)
    assert ours.shape == (1, 3, 256, 256)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=2e-4)
    plain = superres.upsample(
        course["stage2"], low, emb[PROMPT], emb[""], steps=2, generator=seed_generator(9)
    )
    assert not torch.allclose(ours, plain, atol=1e-3)

    filters = superres.stage2_filters(4)
    assert filters[0].kernel_size == 133 and filters[0].sigma == 8.0
    ours_h = superres.upsample_hybrid(
        course["stage2"], low, embs, emb[""], steps=2, generator=seed_generator(9)
    )
    ident = [get_view("identity")] * 2
    ref_h = _reference_stage2(course["stage2"], low, embs, emb[""], ident, filters, 2, 9)
    assert torch.allclose(ours_h, ref_h, rtol=1e-4, atol=2e-4)
