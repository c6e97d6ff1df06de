"""Shared fixtures: a copy of the repository in which the tiny CI workflow has run once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tool_env() -> dict[str, str]:
    """Environment for child processes: 1 thread each, offline hub, our venv first on PATH."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1"
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
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
