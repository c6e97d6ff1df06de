"""Fast checks of the SLURM profiles (no cluster needed).

- both profiles parse and carry the settings they promise;
- every rule named under `set-resources` exists in the workflow;
- a dry run with `--workflow-profile profiles/slurm` on a course preset (and with
  profiles/slurm-local on the CI config) shows `gpu=1` on exactly the GPU rules' jobs: a rule
  that takes a GPU from the config but is missing from the profile is caught here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "profiles" / "slurm" / "config.yaml"
SLURM_LOCAL = REPO / "profiles" / "slurm-local" / "config.yaml"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# a job in a dry run: "rule foo:" followed by indented lines, one of them "resources: a=1, b=x"
JOB_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", re.MULTILINE)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def gpu_rules(profile: dict) -> set[str]:
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )


def need_workflow(*paths: str) -> None:
    missing = [p for p in ("Snakefile", *paths) if not (REPO / p).is_file()]
    if missing:
        msg = f"workflow files not in place yet: {', '.join(missing)}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def dry_run_resources(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) for every job of a dry run's output."""
    jobs = []
    for rule, body in JOB_BLOCK.findall(out):
        m = re.search(r"^\s+resources: (.*)$", body, re.MULTILINE)
        pairs = m.group(1).split(", ") if m else []
        jobs.append((rule, dict(p.split("=", 1) for p in pairs if "=" in p)))
    return jobs


# --------------------------------------------------------------------------------------------


def test_slurm_profile_template():
    p = load(SLURM)
    assert p["executor"] == "slurm"
    assert p["rerun-incomplete"] is True
    assert isinstance(p["jobs"], int) and p["jobs"] > 0
    assert p["latency-wait"] >= 30  # shared filesystems
    assert p["retries"] >= 1
    defaults = p["default-resources"]
    for key in ("slurm_partition", "slurm_account", "mem_mb", "runtime", "cpus_per_task"):
        assert key in defaults, f"default-resources lacks {key}"
    gpus = gpu_rules(p)
    assert {"embed_prompt", "train_unet", "train_classifier"} <= gpus
    assert any(r.startswith("parta_") for r in gpus)
    for rule in gpus:
        res = p["set-resources"][rule]
        assert res["gpu"] == 1, rule
        assert "gres" not in res, f"{rule}: set gpu OR gres, both request GPUs twice"
        # the plugin prefers cpus_per_task over cpus_per_gpu whenever it is set (non-zero)
        assert res.get("cpus_per_gpu", 0) >= 1 and res.get("cpus_per_task") == 0, rule
        assert res["mem_mb"] >= 8000 and res["runtime"] >= 15, rule
    # the gres alternative is documented next to the gpu requests
    assert '# gres: "gpu:1"' in SLURM.read_text()


def test_slurm_local_profile():
    p = load(SLURM_LOCAL)
    assert p["executor"] == "slurm"
    # without slurmdbd, sacct fails on every poll and snakemake would wait forever
    assert p["slurm-status-command"] == "squeue"
    assert p["slurm-init-seconds-before-status-checks"] <= 5
    assert p["latency-wait"] <= 10
    assert p["default-resources"]["slurm_partition"] == "debug"
    # GPU rules are the same as in the real-cluster template (cluster.sh fakes one GPU)
    assert gpu_rules(p) == gpu_rules(load(SLURM))


def test_profile_rule_names_exist_in_workflow():
    need_workflow()
    listed = snakemake("--list-rules", "--workflow-profile", "none")
    assert listed.returncode == 0, listed.stdout
    rules = set(re.findall(r"^(\w+)(?: \(|$)", listed.stdout, re.MULTILINE))
    for path in (SLURM, SLURM_LOCAL):
        unknown = set(load(path)["set-resources"]) - rules
        assert not unknown, (
            f"{path.relative_to(REPO)} sets resources for rules the workflow does not have: "
            f"{sorted(unknown)} (rules: {sorted(rules)})"
        )


DRY_RUNS = [
    ("profiles/slurm", "configs/course-fa24.yaml"),
    ("profiles/slurm", "configs/course-fa25.yaml"),
    ("profiles/slurm-local", "configs/ci.yaml"),
]


@pytest.mark.parametrize(("profile", "configfile"), DRY_RUNS, ids=[c for _p, c in DRY_RUNS])
def test_dry_run_requests_gpus_on_gpu_rules_only(profile, configfile):
    need_workflow(configfile)
    run = snakemake("-n", "--forceall", "--workflow-profile", profile, "--configfile", configfile)
    assert run.returncode == 0, f"dry run failed:\n{run.stdout[-4000:]}"
    jobs = dry_run_resources(run.stdout)
    assert jobs, f"no jobs in the dry run:\n{run.stdout[-4000:]}"
    expected = gpu_rules(load(REPO / profile / "config.yaml"))
    wrong = []
    for rule, res in jobs:
        gpu = int(res.get("gpu", "0") or 0)
        if rule in expected and (gpu != 1 or "cpus_per_gpu" not in res):
            wrong.append(f"{rule}: expected gpu=1 and cpus_per_gpu, got {res}")
        if rule not in expected and gpu:
            wrong.append(
                f"{rule}: requests gpu={gpu} (from the config) but is not a GPU rule of "
                f"{profile}/config.yaml; add it under set-resources"
            )
    assert not wrong, "\n".join(sorted(set(wrong)))
    # at least one GPU job in the plan, so the check above is not vacuous
    assert any(rule in expected for rule, _res in jobs), sorted({r for r, _ in jobs})
