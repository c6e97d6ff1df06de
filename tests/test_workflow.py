"""The workflow as a user meets it: lint, dry runs, the tiny CI run end to end, caching, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import ROOT, copy_repo, run_snakemake, tool_env

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["snakefmt", "--check", "Snakefile", "rules"],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_code_is_formatted_and_clean(cmd: list[str]) -> None:
    proc = run([str(BIN / cmd[0]), *cmd[1:]])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakemake_lint_is_clean() -> None:
    proc = run([sys.executable, "-m", "snakemake", "--lint"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    """Parse snakemake's 'Job stats' table into {rule: count}."""
    counts: dict[str, int] = {}
    if "Job stats:" not in output:
        return counts
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("total", None)
    return counts


@pytest.mark.parametrize(
    "preset", [None, "configs/course-fa24.yaml", "configs/course-fa25.yaml", "configs/ci.yaml"]
)
def test_dry_run_of_each_preset_plans_jobs(preset: str | None) -> None:
    args = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "2"]
    if preset:
        args += ["--configfile", preset]
    proc = run(args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("writeup") == 1 and counts.get("all") == 1, counts
    if preset and "course" in preset:
        assert counts.get("embed_prompt", 0) >= 14 and counts.get("encode_prompts") == 1, counts
        assert counts.get("parta_anagrams", 0) >= 3, counts
        assert "parta_forward" in counts and "train_unet" in counts
    else:
        assert counts.get("train_unet", 0) >= 7 and counts.get("parta_inpaint", 0) >= 1, counts


@pytest.mark.parametrize(
    ("override", "key"),
    [(["device=tpu"], "config key device"), (["seed=-3"], "config key seed")],
)
def test_invalid_config_fails_before_any_job_naming_the_key(override: list[str], key: str) -> None:
    proc = run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", *override])
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if key in line]
    assert len(lines) == 1, proc.stdout + proc.stderr


def test_invalid_config_file_names_the_nested_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "partB:\n  runs:\n    ddpm_class: {objective: ddpm, conditioning: class, epochs: -1}\n"
    )
    proc = run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)])
    assert proc.returncode != 0
    assert (
        "config key partB.runs.ddpm_class.epochs: -1 is less than the minimum of 1" in proc.stderr
    )


# ------------------------------------------------------------------- the CI run end to end


def expected_outputs(ws: Path) -> list[str]:
    """The figure + number targets of the CI config, as the workflow lists them."""
    proc = run_snakemake(
        ws, "--cores", "1", "--configfile", "configs/ci.yaml", "--list-target-rules"
    )
    assert "all" in proc.stdout
    proc = run_snakemake(ws, "--cores", "1", "--configfile", "configs/ci.yaml", "--summary")
    return [line.split("\t")[0] for line in proc.stdout.splitlines()[1:] if line.strip()]


@pytest.mark.slow
def test_ci_run_produces_every_figure(ci_workspace: Path) -> None:
    files = expected_outputs(ci_workspace)
    pngs = [f for f in files if f.endswith(".png")]
    for backend in ("local", "deepfloyd"):
        tasks = {Path(p).parent.name for p in pngs if f"partA/{backend}/" in p}
        assert len(tasks) == 14, (backend, sorted(tasks))
    # the flow model runs the two tricks configs/ci.yaml leaves on, judged beside the DDPM's
    tasks = {Path(p).parent.name for p in pngs if "partA/local_fm/" in p}
    assert tasks == {"a1_7_2_inpaint", "a1_8_anagrams"}, sorted(tasks)
    fm = json.loads(
        (ci_workspace / "results/partA/local_fm/a1_8_anagrams/six_nine_flip.json").read_text()
    )
    assert fm["judged"]["success"]["n"] == 8
    assert any("partB/ddpm_class/samples_epoch" in p for p in pngs)
    for rel in pngs:
        path = ci_workspace / rel
        assert path.is_file(), rel
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img.convert("RGB"))
        assert arr.shape[0] >= 28 and arr.shape[1] >= 28, rel
        assert arr.std() > 1.0, f"{rel} is constant"
    gifs = [f for f in files if f.endswith(".gif")]
    assert gifs and all(Image.open(ci_workspace / g).n_frames > 1 for g in gifs)
    html = (ci_workspace / "results/writeup/index.html").read_text()
    assert "DDPM vs flow matching" in html


@pytest.mark.slow
def test_editing_one_anagram_prompt_reruns_only_that_anagram(
    ci_workspace: Path, tmp_path: Path
) -> None:
    cfg = yaml.safe_load((ci_workspace / "configs/ci.yaml").read_text())
    illusions = cfg["partA"]["local"]["tasks"]["anagrams"]["illusions"]
    illusions["six_nine_flip"]["prompts"] = ["a 6", "a 0"]
    changed = ci_workspace / "configs/ci_changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(
        ci_workspace, "-n", "--cores", "1", "--configfile", "configs/ci_changed.yaml"
    )
    counts = job_counts(proc.stdout + proc.stderr)
    # that illusion on the DDPM and on the flow model (partA.local_fm inherits it), nothing else
    assert counts == {"all": 1, "parta_anagrams": 2, "writeup": 1}, counts
    assert "results/partA/local/a1_8_anagrams/six_nine_flip.png" in proc.stdout
    assert "results/partA/local_fm/a1_8_anagrams/six_nine_flip.png" in proc.stdout
    # the same edit on the DeepFloyd backend also embeds the one new prompt, and nothing else
    illusion = cfg["partA"]["deepfloyd"]["tasks"]["anagrams"]["illusions"]["old_man_campfire"]
    illusion["prompts"][1] = "a photo of a dog"
    changed.write_text(yaml.safe_dump(cfg))
    proc = run_snakemake(
        ci_workspace, "-n", "--cores", "1", "--configfile", "configs/ci_changed.yaml"
    )
    counts = job_counts(proc.stdout + proc.stderr)
    # the local edit still stands (2 jobs: DDPM and flow model) + the DeepFloyd illusion
    expected = {"all": 1, "encode_prompts": 1, "embed_prompt": 1, "parta_anagrams": 3, "writeup": 1}
    assert counts == expected, counts
    assert "results/partA/deepfloyd/a1_8_anagrams/old_man_campfire.png" in proc.stdout


@pytest.mark.slow
def test_up_to_date_run_plans_nothing(ci_workspace: Path) -> None:
    proc = run_snakemake(ci_workspace, "-n", "--cores", "1", "--configfile", "configs/ci.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-2000:]


# --------------------------------------------------------------------- bad inputs, clearly


def failing_run(ws: Path, config: dict, target: str) -> str:
    path = ws / "configs/bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        ws,
        target,
        "--cores",
        "1",
        "--configfile",
        "configs/ci.yaml",
        "configs/bad.yaml",
        check=False,
    )
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_unknown_prompt_is_a_clear_error(ci_workspace: Path) -> None:
    out = failing_run(
        ci_workspace, {"partA": {"local": {"tasks": {"cfg": {"prompt": "a banana"}}}}}, "all"
    )
    assert "config key partA.local.tasks.cfg.prompt: unknown prompt 'a banana'" in out, out[-3000:]


@pytest.mark.slow
def test_missing_image_is_a_clear_error(ci_workspace: Path) -> None:
    out = failing_run(
        ci_workspace, {"inputs": {"drawn_3": {"path": "inputs/drawings/nope.png"}}}, "all"
    )
    assert "config key inputs.drawn_3.path: inputs/drawings/nope.png does not exist" in out, out[
        -3000:
    ]


@pytest.mark.slow
def test_corrupt_image_and_wrong_mask_fail_naming_the_file(ci_workspace: Path) -> None:
    ws = ci_workspace
    (ws / "inputs/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("L", (10, 10), 255).save(ws / "inputs/small_mask.png")
    cfg = {
        "inputs": {
            "corrupt": {"path": "inputs/corrupt.png"},
            "masked": {
                "path": "inputs/digits/mnist_test_0003_label0.png",
                "mask": "inputs/small_mask.png",
            },
        },
        "partA": {
            "local": {
                "tasks": {"sdedit": {"images": ["corrupt"]}, "inpaint": {"images": ["masked"]}}
            }
        },
    }
    before = sorted(p.name for p in (ws / "results/partB/ddpm_class").iterdir())
    out = failing_run(ws, cfg, "results/partA/local/a1_7_sdedit/corrupt.png")
    assert "inputs/corrupt.png: not a readable image" in out, out[-3000:]
    out = failing_run(ws, cfg, "results/partA/local/a1_7_2_inpaint/masked.png")
    assert re.search(r"inputs/small_mask.png: mask is 10x10 but its image is 28x28", out), out[
        -3000:
    ]
    # nothing already computed was lost
    assert sorted(p.name for p in (ws / "results/partB/ddpm_class").iterdir()) == before


def test_repo_copy_helper_skips_ignored_files(tmp_path: Path) -> None:
    ws = copy_repo(tmp_path / "repo")
    assert (ws / "Snakefile").is_file() and not (ws / ".venv").exists()
