"""Training throughput of fundiff's loop vs a plain DataLoader loop, on the class-conditioned UNet.

Measures, in one process and with the same threads (default 2):

* ``baseline``: the textbook loop -- fp32, eager, ``DataLoader(TensorDataset(x, y), batch_size,
  shuffle=True)`` (per-sample indexing + collate), Adam, the same DDPM objective;
* ``ours_*``: :func:`fundiff.training.train` (data as one tensor, batches indexed from a seeded
  permutation, foreach Adam) in fp32, bf16 autocast, bf16 + channels_last, and the default
  config's ``precision: auto`` + channels_last (bf16 only where the CPU has native bf16);
  on a CPU without native bf16 the bf16 variants are not run (they are ~8x slower than
  fp32 there): one D = 16 bf16 step is timed instead (``bf16_probe``);
* with ``--compile``: ``ours_fp32_compiled`` and ``ours_auto_channels_last_compiled`` (torch.compile; its warm-up is timed apart and
  is not in the per-step numbers; a cold warm-up takes minutes on a small CPU);
* ``default_config_jobs``: how the default config trains, ``--jobs`` (2) 1-thread processes
  of the default-config loop at once (``threads: 1`` in config.yaml, two jobs on two cores),
  their summed images/s against the baseline loop on ``--threads`` threads in one process;
* the machine's fp32 (and bf16) matmul peak (2048^3 GEMM), and the UNet's FLOPs per training
  image (2 x multiply-adds of every conv / transposed conv / linear layer in the forward pass,
  x3 for forward + backward), giving the fraction of peak each loop reaches.

Every optimizer step is timed (the first step of each run is skipped); ``--rounds`` runs per
variant are interleaved so load from other processes hits all variants alike. Reported: the
median step (robust) and the fastest step (an idle-machine estimate), as images/s.
Writes JSON to stdout and to ``bench/results/training.json``. About 1-2 minutes on 2 idle
cores (longer when the machine is busy; ``--compile`` adds its warm-up).

Usage: ``python bench/bench_training.py [--threads 2] [--rounds 3] [--jobs 2] [--compile] [--out FILE]``
(on a machine shared with other jobs use ``--threads 1``: 2-thread steps stall when the cores
are oversubscribed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fundiff.acceleration import native_bf16
from fundiff.diffusion import DDPM
from fundiff.evaluation import synthetic_digits
from fundiff.runtime import set_threads, start_job
from fundiff.training import TrainConfig, images_to_float, train
from fundiff.unets import ClassConditionalUNet

BATCH = 128


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Best-of-``reps`` GFLOP/s of an n x n x n matmul."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def forward_macs_per_image(net: nn.Module) -> int:
    """Multiply-accumulates of one forward pass on one 28x28 image (conv, conv-T, linear)."""
    total = 0

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out.numel() * k
        elif isinstance(m, nn.ConvTranspose2d):
            total += (
                inp[0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            )
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    hs = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 1, 28, 28), torch.zeros(1), torch.eye(10)[:1])
    for h in hs:
        h.remove()
    return total


def baseline_loop(d: int, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> list[float]:
    """Per-step seconds of a plain fp32 loop over a per-sample DataLoader (one epoch).

    A step is measured from the end of the previous step, so it includes fetching the batch.
    """
    torch.manual_seed(seed)
    obj = DDPM(ClassConditionalUNet(1, 10, d))
    opt = torch.optim.Adam(obj.unet.parameters(), lr=1e-3)
    ds = TensorDataset(images_to_float(images), labels)
    loader = DataLoader(
        ds, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    gen = torch.Generator().manual_seed(seed)
    obj.unet.train()
    stamps = [time.perf_counter()]
    for x, y in loader:
        loss = obj.loss(x, y, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())  # same sync point as fundiff's on_step callback
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]  # skip the first step


def our_loop(d: int, images: torch.Tensor, labels: torch.Tensor, **settings) -> list[float]:
    """Per-step seconds of fundiff.training.train for one epoch (timestamps from ``on_step``;
    the end-of-epoch checkpoint write is not inside a step). ``settings``: TrainConfig's
    precision / channels_last / compile."""
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, **settings)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(
            DDPM(ClassConditionalUNet(1, 10, d)),
            images,
            labels,
            cfg,
            tmp,
            progress=False,
            on_step=lambda e, s, loss: stamps.append(time.perf_counter()),
        )
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def child(d: int, steps: int, rounds: int) -> None:
    """One 1-thread process of the parallel-jobs measurement: prints its median images/s.
    Set up as a training job is (start_job: 1 thread, the jobs' malloc setting)."""
    start_job(1)
    images, labels = synthetic_digits(steps * BATCH, generator=torch.Generator().manual_seed(d))
    our_loop(d, images[: 2 * BATCH], labels[: 2 * BATCH], precision="auto", channels_last=True)
    times: list[float] = []
    for _ in range(rounds):
        times += our_loop(d, images, labels, precision="auto", channels_last=True)
    print(json.dumps({"images_per_s_median_step": BATCH / statistics.median(times)}))


def parallel_jobs(d: int, jobs: int, steps: int, rounds: int) -> dict:
    """``jobs`` 1-thread training processes at once (the default run's layout)."""
    cmd = [sys.executable, __file__, "--child", str(d), "--steps", str(steps)]
    cmd += ["--rounds", str(rounds)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    each = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    rates = [round(e["images_per_s_median_step"], 1) for e in each]
    return {
        "jobs": jobs,
        "threads_per_job": 1,
        "images_per_s_each": rates,
        "images_per_s_total": round(sum(rates), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="parallel 1-thread jobs (0: skip)")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.json"))
    ap.add_argument("--steps", type=int, default=0, help="steps per run (0: 7 at D=16, 5 at D=32)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved runs per variant")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes)")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps or 12, args.rounds)
        return
    set_threads(args.threads)
    t_all = time.perf_counter()
    load_start = os.getloadavg()

    peak32 = matmul_gflops(torch.float32)
    native = native_bf16(torch.device("cpu"))
    peak16 = matmul_gflops(torch.bfloat16) if native else float("nan")
    variants: dict[str, dict] = {
        "ours_fp32": {"precision": "fp32"},
        "ours_bf16": {"precision": "bf16"},
        "ours_bf16_channels_last": {"precision": "bf16", "channels_last": True},
        "ours_auto_channels_last": {"precision": "auto", "channels_last": True},
    }
    skipped = {}
    if not native:
        reason = "no native bf16 on this CPU (see bf16_probe)"
        skipped = {k: reason for k, v in variants.items() if v["precision"] == "bf16"}
        variants = {k: v for k, v in variants.items() if k not in skipped}
    if args.compile:
        variants["ours_fp32_compiled"] = {"precision": "fp32", "compile": True}
        variants["ours_auto_channels_last_compiled"] = {
            "precision": "auto",
            "channels_last": True,
            "compile": True,
        }
    base_key = "baseline_dataloader_fp32"
    results = {}
    warmup_s: dict[str, float] = {}
    for d in (16, 32):
        steps = args.steps or (7 if d == 16 else 5)
        images, labels = synthetic_digits(steps * BATCH, generator=torch.Generator().manual_seed(d))
        warm_imgs, warm_labels = images[: 2 * BATCH], labels[: 2 * BATCH]
        baseline_loop(d, warm_imgs, warm_labels)  # warm-up: oneDNN primitives, allocator
        for name, settings in variants.items():
            t = time.perf_counter()
            our_loop(d, warm_imgs, warm_labels, **settings)
            warmup_s[f"D{d}_{name}"] = round(time.perf_counter() - t, 1)
        runs: dict[str, list[float]] = {base_key: []} | {k: [] for k in variants}
        for _ in range(args.rounds):  # interleaved, so machine load hits every variant alike
            runs[base_key] += baseline_loop(d, images, labels)
            for name, settings in variants.items():
                runs[name] += our_loop(d, images, labels, **settings)
        median = {k: BATCH / statistics.median(v) for k, v in runs.items()}
        fastest = {k: BATCH / min(v) for k, v in runs.items()}
        macs = forward_macs_per_image(ClassConditionalUNet(1, 10, d))
        train_flops = 3 * 2 * macs
        results[f"D{d}"] = {
            "steps_timed_per_variant": len(runs[base_key]),
            "images_per_s_median_step": {k: round(v, 1) for k, v in median.items()},
            "images_per_s_fastest_step": {k: round(v, 1) for k, v in fastest.items()},
            "speedup_vs_baseline_median": {
                k: round(v / median[base_key], 3) for k, v in median.items() if k != base_key
            },
            "speedup_vs_baseline_fastest": {
                k: round(v / fastest[base_key], 3) for k, v in fastest.items() if k != base_key
            },
            "forward_gmacs_per_image": round(macs / 1e9, 5),
            "train_gflop_per_image": round(train_flops / 1e9, 5),
            "achieved_gflops_fastest_step": {
                k: round(v * train_flops / 1e9, 2) for k, v in fastest.items()
            },
            "fraction_of_fp32_matmul_peak_fastest_step": {
                k: round(v * train_flops / 1e9 / peak32, 4) for k, v in fastest.items()
            },
        }
    if args.jobs > 1:  # the default config's layout: 1-thread jobs side by side
        for d in (16,):
            par = parallel_jobs(d, args.jobs, max(args.steps, 12), args.rounds)
            base = results[f"D{d}"]["images_per_s_median_step"][base_key]
            par["speedup_vs_baseline_median"] = round(par["images_per_s_total"] / base, 3)
            results[f"D{d}"]["default_config_jobs"] = par
    probe = None
    if not native:  # one bf16 step, to show what bf16 costs here
        images, labels = synthetic_digits(2 * BATCH, generator=torch.Generator().manual_seed(16))
        step = our_loop(16, images, labels, precision="bf16")[0]
        probe = {
            "D16_bf16_images_per_s": round(BATCH / step, 1),
            "vs_ours_fp32_median": round(
                BATCH / step / results["D16"]["images_per_s_median_step"]["ours_fp32"], 3
            ),
        }
    peak32 = max(peak32, matmul_gflops(torch.float32))  # re-measured: the machine may be shared
    if native:
        peak16 = max(peak16, matmul_gflops(torch.bfloat16))
    for r in results.values():
        gf = r["achieved_gflops_fastest_step"]
        r["fraction_of_fp32_matmul_peak_fastest_step"] = {
            k: round(g / peak32, 4) for k, g in gf.items()
        }
        if native:
            r["fraction_of_own_precision_matmul_peak_fastest_step"] = {
                k: round(g / (peak16 if "bf16" in k or "auto" in k else peak32), 4)
                for k, g in gf.items()
            }
    out = {
        "benchmark": "training throughput, ClassConditionalUNet + DDPM loss, batch 128",
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": {
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native,
        },
        "loadavg_1min_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "matmul_peak_gflops": {
            "fp32_2048": round(peak32, 1),
            "bf16_2048": round(peak16, 1) if native else None,
        },
        "results": results,
        "skipped_variants": skipped,
        "bf16_probe": probe,
        "warmup_seconds": warmup_s,
        "headline_speedup_best_ours_vs_baseline_median": {
            k: max(v["speedup_vs_baseline_median"].values()) for k, v in results.items()
        },
        "headline_speedup_default_config_vs_baseline_median": {
            k: v["speedup_vs_baseline_median"]["ours_auto_channels_last"]
            for k, v in results.items()
        },
        "headline_speedup_default_run_layout_vs_baseline_median": {
            k: v["default_config_jobs"]["speedup_vs_baseline_median"]
            for k, v in results.items()
            if "default_config_jobs" in v
        },
        "seconds": round(time.perf_counter() - t_all, 1),
        "notes": "Per-step timings (the first step of each run is skipped), --rounds runs per "
        "variant interleaved. 'median' is robust; 'fastest' estimates an idle machine. Train "
        "FLOPs = 3 x forward (backward ~ 2x forward); BatchNorm/GELU/optimizer not counted. "
        "If loadavg exceeds the core count, the machine was shared and absolute numbers are low.",
    }
    text = json.dumps(out, indent=2)
    print(text)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


if __name__ == "__main__":
    main()
