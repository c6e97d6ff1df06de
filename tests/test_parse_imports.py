"""Parsing the workflow imports nothing heavy (torch, diffusers, transformers, accelerate).

Every `snakemake` call parses the Snakefile, and on SLURM every job parses it twice more, so
what the rules' helpers import at parse time is paid on each start (torch alone takes seconds).
The dry runs below run with an import hook that ends the process at once (exit 97, naming the
module and the import chain) when a banned package is imported; catching ImportError cannot
hide it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import copy_repo, tool_env

BANNED = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "safetensors")
HOOKED_SNAKEMAKE = textwrap.dedent(
    """
    import os, sys, traceback
    BANNED = set(sys.argv[1].split(","))

    class Tripwire:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BANNED:
                sys.stderr.write(f"BANNED IMPORT AT PARSE TIME: {name}\\n")
                traceback.print_stack(file=sys.stderr)
                sys.stderr.flush()
                os._exit(97)
            return None

    sys.meta_path.insert(0, Tripwire())
    from snakemake.cli import main
    sys.argv = ["snakemake", *sys.argv[2:]]
    main()
    """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("parse"))


def hooked_dry_run(workdir: Path, *args: str, banned=BANNED) -> subprocess.CompletedProcess:
    env = tool_env()  # with the no-SLURM-probe shim (conftest)
    return subprocess.run(
        [sys.executable, "-c", HOOKED_SNAKEMAKE, ",".join(banned), "-n", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "config", [None, "configs/ci.yaml", "configs/course-fa24.yaml"], ids=["default", "ci", "course"]
)
def test_dry_run_imports_nothing_heavy(workdir, config):
    args = ["--configfile", config] if config else []
    run = hooked_dry_run(workdir, *args)
    assert run.returncode != 97, run.stderr[-4000:]
    assert run.returncode == 0, f"dry run failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    assert "Job stats:" in run.stdout + run.stderr, run.stdout[-2000:]


def test_tripwire_catches_a_banned_import(workdir):
    """The hook sees the Snakefile's imports: banning the workflow's own package ends the run."""
    run = hooked_dry_run(workdir, "--configfile", "configs/ci.yaml", banned=("fundiff",))
    assert run.returncode == 97, run.stderr[-2000:]
    assert "BANNED IMPORT AT PARSE TIME: fundiff" in run.stderr


def test_child_snakemakes_skip_the_slurm_probe_except_in_the_slurm_tests() -> None:
    """tool_env() puts a failing `scontrol` first on PATH (no ~10 s probe per Snakemake start
    where SLURM is installed but not running); tool_env(slurm=True) keeps the real one."""
    import shutil

    from conftest import no_slurm_probe

    env = tool_env()
    found = shutil.which("scontrol", path=env["PATH"])
    assert found == str(no_slurm_probe() / "scontrol")
    assert subprocess.run([found], check=False).returncode != 0
    real = shutil.which("scontrol", path=tool_env(slurm=True)["PATH"])
    assert real is None or not real.startswith(str(no_slurm_probe()))
