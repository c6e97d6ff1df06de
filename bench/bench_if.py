"""Benchmark: the project's IF stage-I sampling against ``IFPipeline.__call__``.

Both sample the same tiny random IF pipeline (built here with ``fundiff.tiny_if``) with the
same embeddings, strided timesteps, guidance and seed: ours through
:class:`fundiff.deepfloyd.DeepFloydDenoiser` + :func:`fundiff.samplers.sample_cfg` (the
scheduler's step, as IF does it), theirs through the diffusers pipeline. The ratio
(ours / IFPipeline, seconds per step) is measured in the same run; the images are compared.

On a CUDA machine it runs unchanged on the GPU (the pipeline's default dtype there) and also
records seconds per step and peak GPU memory (``torch.cuda.max_memory_allocated``) of each;
on CPU it records the ratio. Under a minute on one CPU thread.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_if.py [--stage1 FOLDER] [--device cuda]

Prints JSON to stdout and writes bench/results/if_sampling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from fundiff import deepfloyd as df  # noqa: E402
from fundiff import samplers as S  # noqa: E402
from fundiff.runtime import resolve_device, seed_generator, set_threads  # noqa: E402
from fundiff.schedules import strided_timesteps  # noqa: E402

PROMPT = "an oil painting of an old man"
GUIDANCE = 7.0
N = 2  # images per run
REPEATS = 2  # best-of (the machine may be shared)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, steps: int) -> tuple[float, torch.Tensor, int | None]:
    """Best-of-REPEATS seconds per step, the output, and peak GPU bytes (None on CPU)."""
    best, out, peak = float("inf"), None, None
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / steps)
        if device.type == "cuda":
            peak = max(peak or 0, torch.cuda.max_memory_allocated(device))
    return best, out, peak


def run(stage1: str, device: torch.device) -> dict:
    # T5 on the CPU in float32 (a random tiny T5 may overflow in fp16); both samplers get
    # the same embeddings, cast to the UNet's dtype
    emb = df.encode_prompts(stage1, [PROMPT], device="cpu", dtype="float32")
    pipe = df.load_stage1(stage1, device=device)
    den = df.DeepFloydDenoiser.from_pipeline(pipe, emb)
    ts = strided_timesteps()
    steps = len(ts)

    def ours() -> torch.Tensor:
        return S.sample_cfg(
            den,
            PROMPT,
            n=N,
            generator=seed_generator(0),
            guidance=GUIDANCE,
            timesteps=ts,
            step="scheduler",
            final_step=True,
        )

    def theirs() -> torch.Tensor:
        return pipe(
            prompt_embeds=emb[PROMPT][None].to(device, pipe.unet.dtype),
            negative_prompt_embeds=emb[""][None].to(device, pipe.unet.dtype),
            timesteps=ts,
            guidance_scale=GUIDANCE,
            num_images_per_prompt=N,
            generator=seed_generator(0),
            output_type="pt",
        ).images

    ours(), theirs()  # warm-up (allocator, lazy init, kernels)
    t_ours, a, peak_ours = timed(ours, device, steps)
    t_ref, b, peak_ref = timed(theirs, device, steps)
    result = {
        "steps": steps,
        "images": N,
        "resolution": int(den.resolution),
        "unet_dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "seconds_per_step": {"fundiff": round(t_ours, 5), "IFPipeline": round(t_ref, 5)},
        "ratio_fundiff_over_ifpipeline": round(t_ours / t_ref, 3),
        "max_abs_difference": float((a.float().cpu() - b.float().cpu()).abs().max()),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_mib"] = {
            "fundiff": round(peak_ours / 2**20, 1),
            "IFPipeline": round(peak_ref / 2**20, 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage1", help="an IF stage-I pipeline folder (default: build a tiny one)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:N")
    args = ap.parse_args(argv)
    set_threads(1)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stage1 = args.stage1
        if stage1 is None:
            from fundiff.tiny_if import build_tiny_if

            stage1 = str(build_tiny_if(tmp, seed=0, with_stage2=False)["stage1"])
        result = {
            "benchmark": "IF stage I: fundiff sample_cfg (scheduler step) vs IFPipeline.__call__",
            "model": args.stage1 or "tiny random IF-shaped pipeline (fundiff.tiny_if, seed 0)",
            "device": str(device),
            "mode": "gpu" if device.type == "cuda" else "cpu",
            **run(stage1, device),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            "wall_seconds": None,
        }
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(__file__).resolve().parent / "results" / "if_sampling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
