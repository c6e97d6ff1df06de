"""Prompt embeddings: T5 loaded once per embedding job, only missing prompts encoded, a cache
keyed by the encoder (a rebuilt folder is a miss), and the workflow's plan when a prompt is
edited. Tiny random IF pipelines, offline, CPU."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from fundiff import deepfloyd as df  # noqa: E402
from fundiff.errors import FundiffError  # noqa: E402
from fundiff.if_settings import encoder_identity, model_fingerprint  # noqa: E402
from fundiff.prompt_embeddings import encode_all, extract_prompt  # noqa: E402
from fundiff.tiny_if import build_tiny_if  # noqa: E402

from conftest import copy_repo, run_snakemake  # noqa: E402

torch.set_num_threads(1)
PROMPTS = ["a rocket ship", "a pencil", "a high quality photo"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)


def encoder(model: Path) -> dict:
    return {
        "model": str(model),
        "key": "partA.deepfloyd.stage1",
        "revision": None,
        "dtype": "auto",
        "variant": "auto",
        "device": "cpu",
        "offload": "none",
    }


class T5Counter:
    """Counts T5 loads (encode_prompts calls) and prompts through the encoder's forward."""

    def __init__(self, monkeypatch) -> None:
        from transformers import T5EncoderModel

        self.loads: list[list[str]] = []
        self.rows = 0
        real_encode, real_forward = df.encode_prompts, T5EncoderModel.forward

        def encode(model, prompts, **kw):
            self.loads.append(list(prompts))
            return real_encode(model, prompts, **kw)

        def forward(module, input_ids=None, **kw):
            self.rows += int(input_ids.shape[0])
            return real_forward(module, input_ids=input_ids, **kw)

        monkeypatch.setattr(df, "encode_prompts", encode)
        monkeypatch.setattr(T5EncoderModel, "forward", forward)


def test_t5_loads_once_and_editing_one_prompt_encodes_only_it(tmp_path, monkeypatch):
    model = build_tiny_if(tmp_path / "tiny", seed=0, with_stage2=False)["stage1"]
    t5 = T5Counter(monkeypatch)
    cache, batch = tmp_path / "cache", tmp_path / "batch.safetensors"
    first = encode_all(PROMPTS, batch, encoder=encoder(model), cache_dir=cache)
    assert sorted(first) == sorted([*PROMPTS, ""])
    assert len(t5.loads) == 1 and t5.rows == 4  # one load, every prompt once (+ "")
    table = df.load_embeddings(batch)
    assert set(table) == {*PROMPTS, ""} and table["a pencil"].shape == (77, 32)
    # nothing changed: T5 is not even loaded
    assert encode_all(PROMPTS, batch, encoder=encoder(model), cache_dir=cache) == []
    assert len(t5.loads) == 1 and t5.rows == 4
    # one prompt edited: exactly that prompt goes through T5
    edited = ["a photo of a dog", *PROMPTS[1:]]
    assert encode_all(edited, batch, encoder=encoder(model), cache_dir=cache) == [edited[0]]
    assert len(t5.loads) == 2 and t5.loads[1] == [edited[0]] and t5.rows == 5
    again = df.load_embeddings(batch)
    assert set(again) == {*edited, ""}
    assert torch.equal(again["a pencil"], table["a pencil"])  # from the cache, unchanged
    # per-prompt files come from the batch, no model involved
    out = tmp_path / "prompts" / "dog.safetensors"
    extract_prompt(batch, "a photo of a dog", out)
    single = df.load_embeddings(out)
    assert list(single) == ["a photo of a dog"]
    assert torch.equal(single["a photo of a dog"], again["a photo of a dog"])
    assert df.embeddings_model(out) == str(model)
    with pytest.raises(FundiffError, match="encode_prompts"):
        extract_prompt(batch, "a rocket ship", tmp_path / "gone.safetensors")


def test_rebuilt_local_folder_is_a_cache_miss(tmp_path, monkeypatch):
    root = tmp_path / "tiny"
    model = build_tiny_if(root, seed=0, with_stage2=False)["stage1"]
    t5 = T5Counter(monkeypatch)
    cache, batch = tmp_path / "cache", tmp_path / "batch.safetensors"
    encode_all(PROMPTS, batch, encoder=encoder(model), cache_dir=cache)
    old = df.load_embeddings(batch)
    fp0, id0 = model_fingerprint(str(model)), encoder_identity(encoder(model))
    # the same folder rebuilt identically keeps its key (content hash, not mtimes)
    build_tiny_if(root, seed=0, with_stage2=False)
    assert model_fingerprint(str(model)) == fp0
    assert encode_all(PROMPTS, batch, encoder=encoder(model), cache_dir=cache) == []
    # rebuilt with other weights: a miss for every prompt, new values, new identity
    build_tiny_if(root, seed=1, with_stage2=False)
    assert model_fingerprint(str(model)) != fp0 and encoder_identity(encoder(model)) != id0
    assert sorted(encode_all(PROMPTS, batch, encoder=encoder(model), cache_dir=cache)) == sorted(
        [*PROMPTS, ""]
    )
    assert len(t5.loads) == 2
    new = df.load_embeddings(batch)
    assert not torch.allclose(new["a pencil"], old["a pencil"])
    # another dtype is another key too
    bf16 = {**encoder(model), "dtype": "bfloat16"}
    assert len(encode_all(PROMPTS, batch, encoder=bf16, cache_dir=cache)) == 4
    assert df.load_embeddings(batch)["a pencil"].dtype == torch.bfloat16


def test_hub_fingerprint_is_id_and_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    assert model_fingerprint("DeepFloyd/IF-I-L-v1.0") == "hub:DeepFloyd/IF-I-L-v1.0@main"
    assert model_fingerprint("DeepFloyd/IF-I-L-v1.0", "v2") == "hub:DeepFloyd/IF-I-L-v1.0@v2"
    refs = tmp_path / "models--DeepFloyd--IF-I-L-v1.0" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    resolved = model_fingerprint("DeepFloyd/IF-I-L-v1.0", resolve=True)
    assert resolved == f"hub:DeepFloyd/IF-I-L-v1.0@main:{'a' * 40}"


# ----------------------------------------------------------------------------- the workflow
def job_counts(text: str) -> dict[str, int]:
    from test_workflow import job_counts as parse

    return parse(text)


def embedding_targets(ws: Path, config: str) -> list[str]:
    from fundiff.config import all_prompts, load_yaml, prompt_key, validate_config

    cfg = load_yaml(ws / "config.yaml")
    from snakemake.utils import update_config

    update_config(cfg, load_yaml(ws / config))
    old = Path.cwd()
    os.chdir(ws)
    try:
        validate_config(cfg)
    finally:
        os.chdir(old)
    return [
        f"results/partA/deepfloyd/prompts/{prompt_key(p)}.safetensors"
        for p in all_prompts(cfg["partA"]["deepfloyd"])
    ]


@pytest.mark.slow
def test_workflow_encodes_in_one_job_and_an_edit_replans_one_prompt(tmp_path):
    ws = copy_repo(tmp_path / "repo")
    build_tiny_if(ws / "tiny_if", seed=0)
    cfg = yaml.safe_load((ws / "configs/ci.yaml").read_text())
    cfg["partB"] = {"enabled": False}
    cfg["partA"]["local"] = {"enabled": False}
    (ws / "configs/emb.yaml").write_text(yaml.safe_dump(cfg))
    targets = embedding_targets(ws, "configs/emb.yaml")
    args = ["--cores", "1", "--configfile", "configs/emb.yaml"]
    plan = run_snakemake(ws, *targets, "-n", *args)
    assert job_counts(plan.stdout) == {"encode_prompts": 1, "embed_prompt": len(targets)}
    run_snakemake(ws, *targets, *args)
    log = (ws / "logs/encode_prompts.log").read_text()
    assert f"T5 loaded once: encoded {len(targets)} of {len(targets)} prompts" in log, log
    before = {t: (ws / t).stat().st_mtime_ns for t in targets}
    # edit one anagram prompt: one encoding job (one prompt through T5), one new file
    illusion = cfg["partA"]["deepfloyd"]["tasks"]["anagrams"]["illusions"]["old_man_campfire"]
    illusion["prompts"][1] = "a photo of a dog"
    (ws / "configs/emb.yaml").write_text(yaml.safe_dump(cfg))
    new_targets = embedding_targets(ws, "configs/emb.yaml")
    plan = run_snakemake(ws, *new_targets, "-n", *args)
    assert job_counts(plan.stdout) == {"encode_prompts": 1, "embed_prompt": 1}, plan.stdout
    run_snakemake(ws, *new_targets, *args)
    log = (ws / "logs/encode_prompts.log").read_text()
    assert "T5 loaded once: encoded 1 of" in log and "'a photo of a dog'" in log, log
    kept = [t for t in new_targets if t in before]
    assert len(kept) == len(new_targets) - 1
    assert all((ws / t).stat().st_mtime_ns == before[t] for t in kept)  # untouched
    assert "Nothing to be done" in run_snakemake(ws, *new_targets, "-n", *args).stdout
