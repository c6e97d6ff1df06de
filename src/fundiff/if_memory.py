"""Peak GPU memory of the DeepFloyd jobs, estimated from published parameter counts.

An estimate on paper (the weights are gated, so it is not measured here): per job,

    peak GiB = CUDA_CONTEXT + (1 + ACTIVATIONS) * resident weights

where resident weights are, with ``offload: none``, every model the job holds (parameters x
bytes per parameter); with ``model`` the largest single model (diffusers moves one whole model
to the GPU at a time); with ``sequential`` one layer at a time (``SEQUENTIAL_RESIDENT``). Jobs:
the T5 encoding job (T5 only), and a sampling job (stage I, plus stage II when it upsamples;
no T5). A setting fits a GPU when its peak is at most ``USABLE`` of the card's memory.

    python -m fundiff.if_memory      # prints the README table
"""

from __future__ import annotations

import sys

#: published parameter counts (billions)
PARAMS_B = {
    "T5-XXL encoder": 4.7,
    "IF-I-XL": 4.3,
    "IF-I-L": 0.9,
    "IF-II-L": 1.2,
    "IF-II-M": 0.45,
}
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}
#: CUDA context + allocator slack, GiB (not counted by torch.cuda.max_memory_allocated)
CUDA_CONTEXT = 1.0
#: activations and workspace, as a fraction of the resident weights
ACTIVATIONS = 0.2
#: weights resident with sequential offload: about one T5/UNet block, GiB
SEQUENTIAL_RESIDENT = 0.5
#: share of a card's memory a job can use (driver, fragmentation)
USABLE = 0.95
GPU_SIZES_GB = (8, 12, 16, 24, 40, 80)
OFFLOADS = ("none", "model", "sequential")
#: (stage I, stage II) pairs in the table; the first is what the course presets use
PAIRS = (
    ("IF-I-L", "IF-II-L"),
    ("IF-I-XL", "IF-II-L"),
    ("IF-I-L", "IF-II-M"),
    ("IF-I-XL", "IF-II-M"),
)


def weights_gib(model: str, dtype: str = "float16") -> float:
    """Weights of a published model in GiB."""
    return PARAMS_B[model] * 1e9 * BYTES_PER_PARAM[dtype] / 2**30


def job_peak_gib(models: list[str], offload: str = "none", dtype: str = "float16") -> float:
    """Estimated peak GPU memory (GiB) of one job holding ``models`` (see the module doc)."""
    if offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {OFFLOADS}, got {offload!r}")
    sizes = [weights_gib(m, dtype) for m in models]
    resident = {"none": sum(sizes), "model": max(sizes), "sequential": SEQUENTIAL_RESIDENT}
    return CUDA_CONTEXT + (1 + ACTIVATIONS) * resident[offload]


def fits(peak_gib: float) -> list[int]:
    """GPU sizes (GB as sold, taken as GiB) whose usable memory holds ``peak_gib``."""
    return [g for g in GPU_SIZES_GB if peak_gib <= USABLE * g]


def plan(
    stage1: str, stage2: str, offload: str = "none", dtype: str = "float16"
) -> dict[str, float]:
    """Peak GiB of the T5 job, the sampling job (stage I + II) and the run (their max)."""
    t5 = job_peak_gib(["T5-XXL encoder"], offload, dtype)
    sampling = job_peak_gib([stage1, stage2], offload, dtype)
    return {"t5": t5, "sampling": sampling, "peak": max(t5, sampling)}


def _fit_text(peak: float) -> str:
    sizes = fits(peak)
    return f"{sizes[0]} GB and up" if sizes else "none"


def markdown_table(dtype: str = "float16") -> str:
    """The README's GPU-memory table (generated, never typed by hand)."""
    rows = [
        "| stage I + stage II | offload | T5 job | sampling job | peak | fits | "
        "T5 on CPU: peak, fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (s1, s2) in enumerate(PAIRS):
        name = f"{s1} + {s2}" + (" (course presets)" if i == 0 else "")
        for off in OFFLOADS:
            p = plan(s1, s2, off, dtype)
            rows.append(
                f"| {name} | {off} | {p['t5']:.1f} GiB | {p['sampling']:.1f} GiB | "
                f"{p['peak']:.1f} GiB | {_fit_text(p['peak'])} | "
                f"{p['sampling']:.1f} GiB, {_fit_text(p['sampling'])} |"
            )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(markdown_table())
