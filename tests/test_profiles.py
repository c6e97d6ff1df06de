"""Fast checks of the SLURM profiles (no cluster needed).

- both profiles parse and carry the settings they promise;
- every rule named under `set-resources` exists in the workflow;
- a dry run with `--workflow-profile profiles/slurm` on a course preset, on the default config
  and with T5 set to the CPU (and with profiles/slurm-local on the CI config) shows `gpu=1` on
  exactly the jobs that run a model on a GPU: DeepFloyd Part A jobs that load stage I, the
  T5 encoding job unless `partA.deepfloyd.text_encoder.device: cpu`, the Part B GPU rules; not
  the local backend's Part A jobs, forward/blur, or per-prompt embedding files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tool_env

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "profiles" / "slurm" / "config.yaml"
SLURM_LOCAL = REPO / "profiles" / "slurm-local" / "config.yaml"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# a job in a dry run: "rule foo:" followed by indented lines, one of them "resources: a=1, b=x"
JOB_BLOCK = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", re.MULTILINE)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def gpu_rules(profile: dict) -> set[str]:
    """Rules that may get a GPU from the profile (a count or an expression)."""
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}


# rules whose jobs always run a model on the GPU (Part B); Part A decides per job (below)
PART_B_GPU = {"train_unet", "train_classifier", "sample_grid", "evaluate_samples"}
NO_MODEL_TASKS = {"parta_forward", "parta_blur"}


def expected_gpu(rule: str, wildcards: dict[str, str], config: dict) -> int:
    """GPUs a job should request: only jobs that run a model on a GPU get one."""
    if rule == "encode_prompts":
        te = config["partA"]["deepfloyd"]["text_encoder"]
        on_cpu = te["device"] == "cpu" or (te["device"] == "auto" and config["device"] == "cpu")
        return 0 if on_cpu else config["resources"]["embed"]["gpu"]
    if rule.startswith("parta_"):
        return int(wildcards.get("backend") == "deepfloyd" and rule not in NO_MODEL_TASKS)
    return int(rule in PART_B_GPU)


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=REPO,
        env=tool_env(),  # dry runs only: no SLURM probe (conftest.no_slurm_probe)
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


def dry_run_jobs(out: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) for every job of a dry run's output."""

    def pairs(body: str, field: str) -> dict[str, str]:
        m = re.search(rf"^\s+{field}: (.*)$", body, re.MULTILINE)
        items = m.group(1).split(", ") if m else []
        return dict(p.split("=", 1) for p in items if "=" in p)

    return [
        (rule, pairs(body, "wildcards"), pairs(body, "resources"))
        for rule, body in JOB_BLOCK.findall(out)
    ]


def merged_config(*files: Path) -> dict:
    from snakemake.utils import update_config

    from fundiff.config import load_yaml, validate_config

    cfg = load_yaml(REPO / "config.yaml")
    for f in files:
        update_config(cfg, load_yaml(f))
    cwd = Path.cwd()
    os.chdir(REPO)  # input images are checked relative to the repository
    try:
        return validate_config(cfg)
    finally:
        os.chdir(cwd)


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
    res = p["set-resources"]
    gpus = gpu_rules(p)
    assert {"train_unet", "train_classifier"} <= gpus
    assert any(r.startswith("parta_") for r in gpus)
    # the encoding job takes its GPU count from the config (0 when T5 runs on the CPU), and
    # the per-prompt files are made locally
    assert "gpu" not in res["encode_prompts"] and "embed_prompt" not in res
    for rule in gpus | {"encode_prompts"}:
        r = res[rule]
        if rule.startswith("parta_"):
            assert "wildcards.backend == 'deepfloyd'" in str(r["gpu"]), rule
        elif rule != "encode_prompts":
            assert r["gpu"] == 1, rule
        assert "gres" not in r, f"{rule}: set gpu OR gres, both request GPUs twice"
        # the plugin prefers cpus_per_task over cpus_per_gpu whenever it is set (non-zero)
        assert r.get("cpus_per_gpu", 0) >= 1 and r.get("cpus_per_task") == 0, rule
        assert r["mem_mb"] >= 8000 and r["runtime"] >= 15, rule
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
    # parta_<task>_256 exists only where a backend upsamples that task's results (a config
    # choice); its base rule parta_<task> always exists
    variants = {f"{r}_256" for r in rules if r.startswith("parta_")}
    for path in (SLURM, SLURM_LOCAL):
        unknown = set(load(path)["set-resources"]) - rules - variants
        assert not unknown, (
            f"{path.relative_to(REPO)} sets resources for rules the workflow does not have: "
            f"{sorted(unknown)} (rules: {sorted(rules)})"
        )


T5_ON_CPU = {"partA": {"deepfloyd": {"text_encoder": {"device": "cpu"}}}}
DRY_RUNS = [
    ("profiles/slurm", ["configs/course-fa24.yaml"]),
    ("profiles/slurm", ["configs/course-fa25.yaml"]),
    ("profiles/slurm", []),  # default config: the local backend's Part A jobs get no GPU
    ("profiles/slurm", ["configs/course-fa24.yaml", "T5_ON_CPU"]),
    ("profiles/slurm-local", ["configs/ci.yaml"]),
]


@pytest.mark.parametrize(
    ("profile", "configfiles"), DRY_RUNS, ids=["fa24", "fa25", "default", "t5-cpu", "ci"]
)
def test_dry_run_requests_gpus_only_for_models_on_a_gpu(profile, configfiles, tmp_path):
    need_workflow(*[c for c in configfiles if c != "T5_ON_CPU"])
    files = []
    for c in configfiles:
        if c == "T5_ON_CPU":
            (tmp_path / "t5_cpu.yaml").write_text(yaml.safe_dump(T5_ON_CPU))
            files.append(tmp_path / "t5_cpu.yaml")
        else:
            files.append(REPO / c)
    config = merged_config(*files)
    extra = ["--configfile", *map(str, files)] if files else []
    run = snakemake("-n", "--forceall", "--workflow-profile", profile, *extra)
    assert run.returncode == 0, f"dry run failed:\n{run.stdout[-4000:]}"
    jobs = dry_run_jobs(run.stdout)
    assert jobs, f"no jobs in the dry run:\n{run.stdout[-4000:]}"
    wrong = []
    for rule, wildcards, res in jobs:
        gpu, want = int(res.get("gpu", "0") or 0), expected_gpu(rule, wildcards, config)
        if gpu != want:
            wrong.append(f"{rule} {wildcards}: gpu={gpu}, expected {want}")
        if gpu and "cpus_per_gpu" not in res:
            wrong.append(f"{rule}: a GPU job without cpus_per_gpu: {res}")
    assert not wrong, "\n".join(sorted(set(wrong)))
    # not vacuous: some jobs get a GPU, and some jobs of GPU-capable rules get none
    expect = {(r, expected_gpu(r, w, config)) for r, w, _res in jobs}
    assert any(want for _r, want in expect), sorted(expect)
    assert any(not want and r.startswith(("parta_", "encode")) for r, want in expect)
    if "T5_ON_CPU" in configfiles:
        assert ("encode_prompts", 0) in expect
    elif configfiles and "course" in configfiles[0]:
        assert ("encode_prompts", 1) in expect
