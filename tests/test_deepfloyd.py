"""DeepFloyd IF backend on a tiny random IF-shaped pipeline, saved and loaded back through the
real ``from_pretrained`` path with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported

import pytest  # noqa: E402
import torch  # noqa: E402

from fundiff import deepfloyd as df  # noqa: E402
from fundiff import samplers as S  # noqa: E402
from fundiff.errors import FundiffError  # noqa: E402
from fundiff.runtime import seed_generator  # noqa: E402
from fundiff.schedules import strided_timesteps  # noqa: E402
from fundiff.tiny_if import build_tiny_if  # noqa: E402

torch.set_num_threads(1)

PROMPTS = [
    "a high quality photo",
    "an oil painting of an old man",
    "an oil painting of people around a campfire",
    "a lithograph of a skull",
    "a lithograph of waterfalls",
    "a rocket ship",
]
SHORT = strided_timesteps(990, 90, 0)  # 12 steps: enough to exercise every path quickly


@pytest.fixture(scope="module", autouse=True)
def offline():
    """Offline for real: the env var only counts if set before import, so patch the constant."""
    import huggingface_hub.constants as hc

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(hc, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if"), seed=0)


@pytest.fixture(scope="module")
def emb(tiny):
    return df.encode_prompts(str(tiny["stage1"]), PROMPTS, device="cpu")


@pytest.fixture(scope="module")
def pipe(tiny):
    return df.load_stage1(str(tiny["stage1"]), device="cpu")


@pytest.fixture(scope="module")
def denoiser(pipe, emb):
    return df.DeepFloydDenoiser.from_pipeline(pipe, emb)


def _image(b=1, seed=0):
    return torch.rand(b, 3, 16, 16, generator=seed_generator(seed)) * 2 - 1


# ----------------------------------------------------------------------------- embeddings
def test_encode_prompts_all_plus_empty(emb, tiny):
    assert set(emb) == set(PROMPTS) | {""}
    for e in emb.values():
        assert e.shape == (77, 32) and e.dtype == torch.float32 and e.device.type == "cpu"
        assert torch.isfinite(e).all()
    assert not torch.equal(emb["a rocket ship"], emb["a high quality photo"])
    # "" equals the negative embedding the pipeline itself would use for CFG
    from diffusers import DiffusionPipeline

    p = DiffusionPipeline.from_pretrained(str(tiny["stage1"]), unet=None)
    _, neg = p.encode_prompt("a rocket ship", do_classifier_free_guidance=True, clean_caption=False)
    assert torch.allclose(emb[""], neg[0], atol=1e-6)
    with pytest.raises(FundiffError, match="text_encoder.dtype: float16 on the CPU"):
        df.encode_prompts(str(tiny["stage1"]), ["x"], device="cpu", dtype="fp16")


def test_embeddings_file_roundtrip(emb, tmp_path):
    path = tmp_path / "sub" / "emb.safetensors"
    df.save_embeddings(path, emb, model="tiny/stage1")
    back = df.load_embeddings(path)
    assert list(back) == list(emb)
    assert all(torch.equal(back[k], emb[k]) for k in emb)
    assert df.embeddings_model(path) == "tiny/stage1"
    # the course's prompt_embeds_dict.pth layout: {prompt: (1, 77, D)}
    pth = tmp_path / "prompt_embeds_dict.pth"
    torch.save({k: v[None].half() for k, v in emb.items()}, pth)
    legacy = df.load_embeddings(pth)
    assert legacy["a rocket ship"].shape == (77, 32)
    with pytest.raises(FundiffError, match="not found"):
        df.load_embeddings(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(FundiffError, match="cannot read"):
        df.load_embeddings(bad)


# ----------------------------------------------------------------------------- loading
def test_load_stage1_without_text_encoder(pipe, denoiser):
    assert type(pipe).__name__ == "IFPipeline"
    assert pipe.text_encoder is None and pipe.unet is not None
    assert pipe._execution_device.type == "cpu"
    assert denoiser.channels == 3 and denoiser.resolution == 16
    assert denoiser.variance_type == "learned_range" and denoiser.value_range == (-1.0, 1.0)
    assert torch.equal(denoiser.schedule.alphas_cumprod, pipe.scheduler.alphas_cumprod.double())
    assert df.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert df.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(FundiffError):
        df.resolve_dtype("fp8", torch.device("cpu"))


def test_unknown_prompt_lists_known_prompts(denoiser):
    with pytest.raises(FundiffError, match="a rocket ship") as info:
        denoiser.conditions(["a photo of a zebra"])
    assert "a photo of a zebra" in str(info.value)
    c = denoiser.conditions(["a rocket ship", ""])
    assert c.shape == (2, 77, 32)


def test_embeddings_of_another_model_are_rejected(pipe):
    with pytest.raises(FundiffError, match="another model"):
        df.DeepFloydDenoiser.from_pipeline(pipe, {"": torch.zeros(77, 4096)})


# ----------------------------------------------------------------------------- every trick
def test_every_part_a_trick_runs_end_to_end(denoiser):
    g = seed_generator(0)
    x0 = _image(2)
    t = torch.tensor([250, 750])
    x_t, _ = denoiser.schedule.forward(x0, t, g)
    est = S.one_step_denoise(denoiser, x_t, t, "a high quality photo")
    assert est.shape == x0.shape and torch.isfinite(est).all()

    frames = []
    x690, _ = denoiser.schedule.forward(x0, 690, g)
    it = S.iterative_denoise(
        denoiser,
        x690,
        10,
        generator=g,
        callback=lambda i, t, x, x0h: frames.append(t),
    )
    assert it.shape == x0.shape and frames[0] == 690 and frames[-1] == 30

    outs = {
        "sample": S.sample(denoiser, n=2, generator=g, timesteps=SHORT),
        "cfg": S.sample_cfg(denoiser, "a rocket ship", n=2, generator=g, timesteps=SHORT),
        "inpaint": S.inpaint(
            denoiser,
            x0,
            torch.zeros(1, 1, 16, 16).index_fill_(2, torch.arange(2, 8), 1.0),
            generator=g,
            timesteps=SHORT,
        ),
        "anagram": S.visual_anagram(
            denoiser,
            ["an oil painting of an old man", "an oil painting of people around a campfire"],
            n=2,
            generator=g,
            timesteps=SHORT,
        ),
        "anagram3": S.visual_anagram(
            denoiser,
            ["a rocket ship", "a lithograph of a skull", "a high quality photo"],
            ["identity", "rot90cw", "jigsaw"],
            generator=g,
            timesteps=SHORT,
        ),
        "hybrid": S.hybrid(
            denoiser,
            ["a lithograph of a skull", "a lithograph of waterfalls"],
            generator=g,
            timesteps=SHORT,
        ),
        "hybrid3": S.hybrid(
            denoiser,
            ["a lithograph of a skull", "a rocket ship", "a lithograph of waterfalls"],
            band_sigma=0.25,
            generator=g,
            timesteps=SHORT,
        ),
    }
    for name, out in outs.items():
        assert out.shape[1:] == (3, 16, 16), name
        assert torch.isfinite(out).all(), name
    edits = S.sdedit(denoiser, x0, [1, 5], generator=g, timesteps=SHORT)
    edits += S.translate(denoiser, x0, [3], "a rocket ship", generator=g, timesteps=SHORT)
    assert len(edits) == 3 and all(e.shape == x0.shape and torch.isfinite(e).all() for e in edits)


def test_cfg_sampler_with_scheduler_step_reproduces_ifpipeline(pipe, denoiser, emb):
    ts = strided_timesteps()
    prompt = "an oil painting of an old man"
    ours = S.sample_cfg(
        denoiser,
        prompt,
        n=2,
        generator=seed_generator(42),
        guidance=7.0,
        timesteps=ts,
        step="scheduler",
        final_step=True,
    )
    ref = pipe(
        prompt_embeds=emb[prompt][None],
        negative_prompt_embeds=emb[""][None],
        timesteps=ts,
        guidance_scale=7.0,
        num_images_per_prompt=2,
        generator=seed_generator(42),
        output_type="pt",
    ).images
    assert ref.shape == ours.shape == (2, 3, 16, 16)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-5)
    other = S.sample_cfg(
        denoiser,
        prompt,
        n=2,
        generator=seed_generator(43),
        timesteps=ts,
        step="scheduler",
        final_step=True,
    )
    assert not torch.allclose(other, ref, atol=1e-3)  # the comparison can fail
    again = S.sample_cfg(
        denoiser,
        prompt,
        n=2,
        generator=seed_generator(42),
        timesteps=ts,
        step="scheduler",
        final_step=True,
    )
    assert torch.equal(again, ours)  # same seed, same output, bit for bit


def test_upsample_with_stage2(tiny, emb, denoiser):
    stage2 = df.load_stage2(str(tiny["stage2"]), device="cpu")
    imgs = _image(2, seed=3)
    a = df.upsample(
        stage2, imgs, emb["a rocket ship"], emb[""], steps=3, generator=seed_generator(1)
    )
    b = df.upsample(
        stage2, imgs, emb["a rocket ship"], emb[""], steps=3, generator=seed_generator(1)
    )
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- preflight
def _assert_clear(err: FundiffError, *needles: str) -> None:
    msg = str(err)
    for n in ("partA.deepfloyd.stage1", *needles):
        assert n in msg, f"{n!r} missing from: {msg}"
    assert err.__cause__ is None  # no chained library traceback
    assert err.__context__ is None or err.__suppress_context__


def test_preflight_missing_local_folder(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FundiffError) as info:
        df.preflight(str(missing))
    _assert_clear(info.value, str(missing), "local folder")
    with pytest.raises(FundiffError) as info:
        df.load_stage1(str(missing), device="cpu")
    _assert_clear(info.value, "local folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FundiffError, match="model_index.json"):
        df.preflight(str(empty))


def test_preflight_unreachable_hub_id_names_the_remedies():
    with pytest.raises(FundiffError) as info:
        df.preflight("fundiff-tests/definitely-not-a-model")
    _assert_clear(info.value, "license", "HF_TOKEN", "huggingface-cli login", "local folder")
    with pytest.raises(FundiffError) as info:
        df.encode_prompts("fundiff-tests/definitely-not-a-model", ["a"], device="cpu")
    _assert_clear(info.value, "HF_TOKEN")


def test_preflight_accepts_the_tiny_folder(tiny):
    assert df.preflight(str(tiny["stage1"])) == "local"


def test_tiny_if_is_deterministic(tmp_path):
    a = build_tiny_if(tmp_path / "a", seed=0, with_stage2=False)["stage1"]
    b = build_tiny_if(tmp_path / "b", seed=0, with_stage2=False)["stage1"]
    c = build_tiny_if(tmp_path / "c", seed=1, with_stage2=False)["stage1"]
    rel = "unet/diffusion_pytorch_model.safetensors"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    assert (a / "tokenizer/tokenizer.json").read_bytes() == (
        b / "tokenizer/tokenizer.json"
    ).read_bytes()


# ----------------------------------------------------------------------------- memory plan
def test_text_encoder_dtype_is_selectable_and_nan_checked(tiny, emb, tmp_path):
    bf16 = df.encode_prompts(str(tiny["stage1"]), ["a pencil"], device="cpu", dtype="bfloat16")
    assert bf16["a pencil"].dtype == torch.bfloat16 and torch.isfinite(bf16["a pencil"]).all()
    torch.testing.assert_close(bf16["a pencil"].float(), emb_of(tiny, "a pencil"), **BF16_TOL)
    # a T5 that overflows: the error names the config key to change, nothing else is written
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny["stage1"], broken)
    (weights,) = (broken / "text_encoder").glob("*.safetensors")
    state = load_file(str(weights))
    name = next(k for k in state if "SelfAttention.o.weight" in k)
    state[name] = torch.full_like(state[name], float("inf"))
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(FundiffError) as info:
        df.encode_prompts(str(broken), ["a pencil"], device="cpu")
    msg = str(info.value)
    assert msg.startswith("config key partA.deepfloyd.text_encoder.dtype: ") and "\n" not in msg
    assert "NaN" in msg and "bfloat16" in msg and "encode_dtype" not in msg


BF16_TOL = dict(rtol=0.05, atol=0.05)


def emb_of(tiny, prompt):
    return df.encode_prompts(str(tiny["stage1"]), [prompt], device="cpu")[prompt]


def test_fp16_on_cpu_and_offload_without_accelerate_name_their_keys(tiny, monkeypatch):
    with pytest.raises(FundiffError, match=r"^config key partA\.deepfloyd\.dtype: float16 on"):
        df.load_stage1(str(tiny["stage1"]), device="cpu", dtype="float16")
    monkeypatch.setattr(df, "has_accelerate", lambda: False)
    with pytest.raises(FundiffError, match=r"^config key partA\.deepfloyd\.offload: .*accelerate"):
        df.load_stage1(str(tiny["stage1"]), device="cpu", offload="model")
    with pytest.raises(FundiffError, match=r"^config key partA\.deepfloyd\.offload: .*accelerate"):
        df.encode_prompts(str(tiny["stage1"]), ["x"], device="cpu", offload="sequential")


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_samples_on_the_execution_device(tiny, emb, denoiser, offload):
    pipe = df.load_stage1(str(tiny["stage1"]), device="cpu", offload=offload)
    hooked = [m for m in pipe.unet.modules() if hasattr(m, "_hf_hook")]
    assert hooked, f"{offload} offload installed no accelerate hooks"
    if offload == "sequential":
        assert pipe.device.type == "meta"  # pipe.device is no place to put inputs
    off = df.DeepFloydDenoiser.from_pipeline(pipe, emb)
    assert off.device == pipe._execution_device and off.device.type == "cpu"
    if offload == "sequential":
        # accelerate 1.15 cannot move a layer back to `meta` when the execution device is the
        # CPU itself (TypeError in set_module_tensor_to_device); it is meant for a GPU
        return
    kw = dict(n=1, guidance=7.0, timesteps=SHORT, step="scheduler", final_step=True)
    a = S.sample_cfg(off, "a rocket ship", generator=seed_generator(5), **kw)
    b = S.sample_cfg(denoiser, "a rocket ship", generator=seed_generator(5), **kw)
    torch.testing.assert_close(a, b)


def test_sampling_job_loads_stage1_only(tiny, monkeypatch):
    """A Part A job holds stage I alone: no T5 (embeddings are files), no stage II."""
    from diffusers import DiffusionPipeline

    from fundiff import backends

    loads = []
    real = DiffusionPipeline.from_pretrained.__func__

    def spy(cls, model, **kw):
        loads.append((str(model), kw))
        return real(cls, model, **kw)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(spy))
    emb_file = tiny["stage1"].parent / "emb.safetensors"
    df.save_embeddings(emb_file, {"": torch.zeros(77, 32), "a": torch.ones(77, 32)})
    params = dict(
        stage1=str(tiny["stage1"]), stage2=str(tiny["stage2"]), device="cpu", dtype="auto"
    )
    params.update(variant="none", offload="none")
    den = backends.load_backend("deepfloyd", params, {"embeddings": [str(emb_file)]})
    assert [m for m, _ in loads] == [str(tiny["stage1"])]
    assert loads[0][1]["text_encoder"] is None and "unet" not in loads[0][1]
    assert den.prompts == ["", "a"] and den.resolution == 16


def _config(**deepfloyd):
    """The CI config (DeepFloyd on) with ``partA.deepfloyd`` overrides, validated."""
    from snakemake.utils import update_config

    from fundiff.config import load_yaml, validate_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_yaml(root / "config.yaml")
    update_config(cfg, load_yaml(root / "configs/ci.yaml"))
    update_config(cfg, {"partA": {"deepfloyd": deepfloyd}})
    return validate_config(cfg)


def test_text_encoder_settings_are_real_config_keys(monkeypatch):
    from fundiff import if_settings

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    cfg = _config(text_encoder={"dtype": "bfloat16", "device": "cpu"})
    te = if_settings.text_encoder_settings(cfg["partA"]["deepfloyd"], cfg["device"])
    assert te == {
        "model": "tiny_if/stage1",
        "key": "partA.deepfloyd.stage1",
        "revision": None,
        "dtype": "bfloat16",
        "variant": "auto",
        "device": "cpu",
        "offload": "none",
    }
    assert not if_settings.encoder_uses_gpu(te)
    defaults = _config()["partA"]["deepfloyd"]
    assert defaults["text_encoder"]["dtype"] == "auto" and defaults["offload"] == "none"
    own = if_settings.text_encoder_settings(
        {**defaults, "text_encoder": {**te, "model": "x/y"}}, "auto"
    )
    assert own["key"] == "partA.deepfloyd.text_encoder.model" and own["device"] == "cpu"


@pytest.mark.parametrize(
    ("settings", "device", "key"),
    [
        (
            {"text_encoder": {"dtpe": "float16"}},
            "auto",
            "partA.deepfloyd.text_encoder.dtpe: unknown key",
        ),
        ({"offload": "all"}, "auto", "partA.deepfloyd.offload: 'all' is not one of"),
        ({"dtype": "float16"}, "cpu", "partA.deepfloyd.dtype: float16 on the CPU"),
        (
            {"text_encoder": {"dtype": "float16", "device": "cpu"}},
            "cuda",
            "text_encoder.dtype: float16 on the CPU",
        ),
        ({"text_encoder": {"dtype": "float16"}}, "cpu", "text_encoder.dtype: float16 on the CPU"),
        (
            {"offload": "model"},
            "auto",
            "partA.deepfloyd.offload: CPU offload needs the `accelerate`",
        ),
    ],
)
def test_bad_deepfloyd_settings_stop_with_one_line_naming_the_key(
    settings, device, key, monkeypatch
):
    from fundiff import if_settings

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    monkeypatch.setattr(if_settings, "has_accelerate", lambda: False)
    with pytest.raises(FundiffError) as info:
        cfg = _config(**settings)
        cfg["device"] = device
        if_settings.check_settings(cfg)
    msg = str(info.value)
    assert msg.startswith("config key partA.deepfloyd.") and key in msg and "\n" not in msg
    # the same settings with the backend switched off are not checked
    if "unknown" not in key and "not one of" not in key:
        cfg = _config(**settings)
        cfg["partA"]["deepfloyd"]["enabled"] = False
        if_settings.check_settings(cfg)
