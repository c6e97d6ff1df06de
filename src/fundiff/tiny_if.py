"""A tiny, random, DeepFloyd-IF-shaped pipeline for offline tests and CI.

DeepFloyd IF is gated on the model hub and nothing on PyPI ships its weights, so tests and the
workflow's CI config use this stand-in instead. It has the same *shapes of interfaces* as the
real thing -- a T5 tokenizer + ``T5EncoderModel``, a text-conditioned ``UNet2DConditionModel``
whose output has ``2 * in_channels`` channels (noise + learned variance), IF's stage-I scheduler
config (``squaredcos_cap_v2``, ``learned_range``, dynamic thresholding) and a stage-II
``IFSuperResolutionPipeline`` -- but it is tiny (16 px, d_model 32) and random, so its images
are noise. It is saved with ``save_pretrained`` and loaded back through the real
``DiffusionPipeline.from_pretrained`` path, offline.

Usage::

    python -m fundiff.tiny_if OUT_DIR        # writes OUT_DIR/stage1 and OUT_DIR/stage2

Deterministic: the same seed gives bit-identical weights and tokenizer files.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

#: Sentences the tiny tokenizer's sentencepiece model is trained on (the course's prompts).
TOKENIZER_SENTENCES: tuple[str, ...] = (
    "an oil painting of a snowy mountain village",
    "a photo of the amalfi cost",
    "a photo of a man",
    "a photo of a hipster barista",
    "a photo of a dog",
    "an oil painting of people around a campfire",
    "an oil painting of an old man",
    "a lithograph of waterfalls",
    "a lithograph of a skull",
    "a man wearing a hat",
    "a high quality photo",
    "a rocket ship",
    "a pencil",
)

#: Hidden size of the tiny T5 encoder (the real IF T5-XXL has 4096).
TINY_D_MODEL = 32
#: Stage-I resolution of the tiny UNet (the real IF stage I has 64).
TINY_RESOLUTION = 16
#: Stage-II resolution of the tiny super-resolution UNet (the real IF stage II has 256).
TINY_RESOLUTION_STAGE2 = 32
#: Resolutions of the course-sized pair (``course=True``): IF's real 64 px and 256 px.
COURSE_RESOLUTION = 64
COURSE_RESOLUTION_STAGE2 = 256


def _tiny_tokenizer():
    """A T5 tokenizer whose unigram vocabulary comes from a sentencepiece model trained here."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TOKENIZER_SENTENCES),
        model_writer=proto,
        model_type="unigram",
        vocab_size=96,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=8, model_max_length=77)


def _tiny_text_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=TINY_D_MODEL,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
    )
    return T5EncoderModel(config).eval()


def _unet_kwargs() -> dict:
    return dict(
        layers_per_block=1,
        block_out_channels=[32, 64],
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        cross_attention_dim=TINY_D_MODEL,
        encoder_hid_dim=TINY_D_MODEL,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
    )


def _course_unet_kwargs(levels: int) -> dict:
    """Tiny widths at the course's resolutions: ``levels`` resolution levels, attention only at
    the coarsest one (16 px for stage I, 32 px for stage II) so CPU runs stay fast."""
    resnets = levels - 1
    return dict(
        _unet_kwargs(),
        block_out_channels=[8 * 2 ** min(i, 2) for i in range(levels)],
        down_block_types=["ResnetDownsampleBlock2D"] * resnets + ["SimpleCrossAttnDownBlock2D"],
        up_block_types=["SimpleCrossAttnUpBlock2D"] + ["ResnetUpsampleBlock2D"] * resnets,
        norm_num_groups=8,
    )


def _if_scheduler():
    """IF's stage-I/II denoising scheduler config (as in DeepFloyd's ``scheduler_config.json``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        clip_sample=True,
        clip_sample_range=1.0,
    )


def build_tiny_if(
    out_dir: str | Path, seed: int = 0, with_stage2: bool = True, course: bool = False
) -> dict[str, Path]:
    """Build tiny random IF stage-I (and stage-II) pipelines and ``save_pretrained`` them.

    Args:
        out_dir: folder to write; gets ``stage1/`` (an ``IFPipeline``) and, with
            ``with_stage2``, ``stage2/`` (an ``IFSuperResolutionPipeline``).
        seed: seeds the random weights (``torch.manual_seed`` inside a forked RNG state, so the
            caller's global RNG is untouched).
        with_stage2: also build the 16 -> 32 px super-resolution stage.
        course: build at the course's resolutions instead, 64 px stage I and 64 -> 256 px
            stage II (still tiny widths: 8-32 channels, attention only at 16 / 32 px).

    Returns:
        ``{"stage1": path, "stage2": path}`` (``stage2`` only with ``with_stage2``).

    Stage I: 3 x 16 x 16 images in [-1, 1], UNet output 6 channels (noise + learned variance),
    T5 embeddings (B, 77, 32). Takes about a second on one CPU thread.
    """
    from diffusers import (
        DDPMScheduler,
        IFPipeline,
        IFSuperResolutionPipeline,
        UNet2DConditionModel,
    )

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        tokenizer = _tiny_tokenizer()
        text_encoder = _tiny_text_encoder(len(tokenizer))
        size1, size2 = (
            (COURSE_RESOLUTION, COURSE_RESOLUTION_STAGE2)
            if course
            else (TINY_RESOLUTION, TINY_RESOLUTION_STAGE2)
        )
        kw1 = _course_unet_kwargs(3) if course else _unet_kwargs()
        kw2 = _course_unet_kwargs(4) if course else _unet_kwargs()
        unet = UNet2DConditionModel(sample_size=size1, in_channels=3, out_channels=6, **kw1).eval()
        shared = dict(tokenizer=tokenizer, text_encoder=text_encoder, requires_safety_checker=False)
        shared.update(safety_checker=None, feature_extractor=None, watermarker=None)
        stage1 = IFPipeline(unet=unet, scheduler=_if_scheduler(), **shared)
        paths["stage1"] = out / "stage1"
        stage1.save_pretrained(paths["stage1"], safe_serialization=True)

        if with_stage2:
            unet2 = UNet2DConditionModel(
                sample_size=size2,
                in_channels=6,
                out_channels=6,
                class_embed_type="timestep",
                **kw2,
            ).eval()
            noising = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
            stage2 = IFSuperResolutionPipeline(
                unet=unet2, scheduler=_if_scheduler(), image_noising_scheduler=noising, **shared
            )
            paths["stage2"] = out / "stage2"
            stage2.save_pretrained(paths["stage2"], safe_serialization=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m fundiff.tiny_if OUT_DIR [SEED]``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or len(args) > 2:
        print("usage: python -m fundiff.tiny_if OUT_DIR [SEED]", file=sys.stderr)
        return 2
    seed = int(args[1]) if len(args) == 2 else 0
    paths = build_tiny_if(args[0], seed=seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
