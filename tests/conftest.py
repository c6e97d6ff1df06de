"""Shared fixtures: a copy of the repository in which the tiny CI workflow has run once."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@functools.cache
def no_slurm_probe() -> Path:
    """A folder (outside the checkout) holding a ``scontrol`` that fails at once.

    The SLURM executor plugin runs ``scontrol show config`` at every Snakemake start, whatever
    the executor; where SLURM is installed but no controller runs (this machine and CI between
    the SLURM tests) each start waits ~10 s for it (docs/slurm.md): most of the time of the
    tests that start Snakemake (test_config: 87 s -> 22 s)."""
    folder = Path(tempfile.mkdtemp(prefix="fundiff-no-slurm-"))
    atexit.register(shutil.rmtree, folder, True)
    shim = folder / "scontrol"
    shim.write_text("#!/bin/sh\nexit 1\n")
    shim.chmod(0o755)
    return folder


def tool_env(*, slurm: bool = False) -> dict[str, str]:
    """Environment for child processes: 1 thread each, offline hub, our venv first on PATH.

    Without ``slurm`` the failing ``scontrol`` of :func:`no_slurm_probe` comes first on PATH
    (local-executor runs never need SLURM); the SLURM tests pass ``slurm=True``."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1"
    )
    path = [str(Path(sys.executable).parent), env.get("PATH", "")]
    if not slurm:
        path.insert(0, str(no_slurm_probe()))
    env["PATH"] = os.pathsep.join(path)
    return env


def copy_repo(dest: Path) -> Path:
    """Copy the files git knows (tracked + untracked, not ignored) to ``dest``."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def run_snakemake(
    workdir: Path, *args: str, timeout: int = 1200, check: bool = True
) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir``; on failure with ``check``, fail the test with the output tail."""
    proc = subprocess.run(
        [*SNAKEMAKE, *args],
        cwd=workdir,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def ci_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo copy where ``configs/ci.yaml`` ran end to end (both Part A backends, all of B),
    with the Snakemake report in ``results/report.zip``. Tests write only there or in their own
    tmp dirs, never into the checkout."""
    ws = copy_repo(tmp_path_factory.mktemp("ci") / "repo")
    subprocess.run(
        [sys.executable, "-m", "fundiff.tiny_if", str(ws / "tiny_if")],
        env=tool_env(),
        check=True,
        capture_output=True,
    )
    run_snakemake(ws, "--cores", "2", "--configfile", "configs/ci.yaml")
    run_snakemake(
        ws, "--cores", "1", "--configfile", "configs/ci.yaml", "--report", "results/report.zip"
    )
    return ws
