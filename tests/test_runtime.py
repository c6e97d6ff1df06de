"""fundiff.runtime: what every job sets up first (threads, the allocator)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fundiff import runtime

REPO = Path(__file__).resolve().parents[1]
GLIBC_LINUX = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None

#: a sampling-copy forward pass (the Part A jobs' inner loop), its minor page faults per call
PAGE_FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from fundiff.runtime import start_job
    from fundiff.inference import SamplingUNet
    from fundiff.unets import ClassConditionalUNet

    start_job(1)
    torch.manual_seed(0)
    unet = SamplingUNet(ClassConditionalUNet(1, 10, 16), 64, True)
    x, t, c = torch.randn(128, 1, 28, 28), torch.rand(128), torch.eye(10)[torch.arange(128) % 10]
    with torch.inference_mode():
        first = unet(x, t, c)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            out = unet(x, t, c)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"faults": (after - before) / 4, "same": bool(torch.equal(first, out)),
                      "sum": float(out.double().sum())}))
    """
)


def forward_faults(malloc: str) -> dict:
    env = {**os.environ, runtime.MALLOC_ENV: malloc, "OMP_NUM_THREADS": "1"}
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-c", PAGE_FAULTS], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC_LINUX, reason="the setting is glibc malloc's")
def test_tuned_allocator_reuses_activation_memory() -> None:
    """With glibc's defaults each forward maps fresh pages for its activations (thousands of
    page faults); with start_job's setting the heap keeps them, and the numbers are the same."""
    default, tuned = forward_faults("default"), forward_faults("")
    assert default["faults"] > 1000, default
    assert tuned["faults"] * 5 < default["faults"], (tuned, default)
    assert tuned["same"] and default["same"]
    assert tuned["sum"] == default["sum"]  # where memory comes from changes no result


def test_tune_allocator_respects_opt_outs(monkeypatch) -> None:
    monkeypatch.setenv(runtime.MALLOC_ENV, "default")
    assert runtime.tune_allocator() is False
    monkeypatch.delenv(runtime.MALLOC_ENV)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # the user's own glibc tuning wins
    assert runtime.tune_allocator() is False


def test_every_job_script_starts_with_start_job() -> None:
    """Job scripts that set threads do it through start_job (threads + allocator)."""
    for script in sorted((REPO / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        ]
        assert "set_threads" not in calls, f"{script.name}: call start_job, not set_threads"
        if "snakemake.threads" in script.read_text():
            assert "start_job" in calls, script.name
            top = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Expr)]
            assert "start_job(snakemake.threads)" in top, f"{script.name}: at module level"


def test_make_setup_left_bytecode_for_the_heavy_imports() -> None:
    """`make setup` installs with --no-compile and byte-compiles on every core afterwards:
    without the .pyc files (PYTHONDONTWRITEBYTECODE is common on shared machines) every job
    would recompile torch's sources on import. Checked where the Makefile made this venv."""
    stamps = list(Path(sys.prefix).glob(".installed-*"))  # touched when setup ends
    if not stamps:
        pytest.skip("this interpreter's venv was not made by `make setup`")
    import diffusers
    import snakemake
    import torch

    for module in (torch, diffusers, snakemake):
        init = Path(module.__file__)
        cached = init.parent / "__pycache__" / f"__init__.{sys.implementation.cache_tag}.pyc"
        assert cached.is_file(), f"{cached} missing: the compileall step of `make setup` failed"
        # made by setup, not by a later import (which would hide a failed compile step)
        assert cached.stat().st_mtime <= stamps[0].stat().st_mtime, cached
