"""Every command and overlay the README shows works: snakemake commands run as dry runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, copy_repo, tool_env

README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, re.M | re.S)


def snakemake_commands() -> list[str]:
    """The README's snakemake command lines that a dry run can check (not --report)."""
    lines = [line.strip() for block in blocks("bash") for line in block.splitlines()]
    return [
        line
        for line in lines
        if re.match(r"(\.venv/bin/)?snakemake ", line) and "--report" not in line
    ]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository (a dry run writes .snakemake/)."""
    return copy_repo(tmp_path_factory.mktemp("readme") / "repo")


def dry_run(workspace: Path, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    if "-n" not in args:
        cmd.append("-n")
    return subprocess.run(
        cmd, cwd=workspace, env=tool_env(), capture_output=True, text=True, timeout=300
    )


def test_the_readme_shows_commands_and_overlays() -> None:
    assert len(snakemake_commands()) >= 5 and "--config partA=" in " ".join(snakemake_commands())
    assert blocks("yaml")


@pytest.mark.parametrize("command", snakemake_commands())
def test_readme_command_dry_runs(workspace: Path, command: str) -> None:
    args = shlex.split(command, comments=True)[1:]
    proc = dry_run(workspace, args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "This was a dry-run" in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", blocks("yaml"))
def test_readme_overlay_dry_runs(workspace: Path, tmp_path: Path, overlay: str) -> None:
    path = tmp_path / "overlay.yaml"
    path.write_text(overlay)
    proc = dry_run(workspace, ["--cores", "1", "--configfile", str(path)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
