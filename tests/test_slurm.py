"""The workflow on a real (single-node) SLURM cluster, through profiles/slurm-local.

A session fixture starts the cluster with tests/slurm/cluster.sh (root: installs and starts
munge + slurmctld + slurmd with one fake GPU) and stops it afterwards if it started it. The
workflow then runs with `configs/ci.yaml` in a copy of the working tree, submitted job by job
through the SLURM executor plugin, and is checked against a local `--cores 2` run of the same
copy: same files, only the affected jobs resubmitted after a parameter change, and a failing
job reported as failed in bounded time.

Needs root (or passwordless sudo). Without it the tests skip; with CI=true they fail instead.
Run alone with `sudo -E .venv/bin/pytest -m slurm tests/test_slurm.py`.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
# The checkout whose working tree is copied and run (another checkout: for trying a branch).
WORKFLOW = Path(os.environ.get("FUNDIFF_SLURM_WORKFLOW", REPO)).resolve()
PROFILE = "profiles/slurm-local"
CONFIG = "configs/ci.yaml"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# Upper bounds (seconds) for each snakemake call; SIGINT makes snakemake scancel its jobs.
FULL_RUN_TIMEOUT = int(os.environ.get("FUNDIFF_SLURM_RUN_TIMEOUT", "900"))
FAIL_RUN_TIMEOUT = 120

# "Job 3 has been submitted with SLURM jobid 12 (log: /x/.snakemake/slurm_logs/rule_foo/a/12.log)."
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)")
RULE_OF_LOG = re.compile(r"/slurm_logs/rule_([A-Za-z0-9_]+)/")
# a dry-run job block: "rule foo:" / "localrule all:" followed by indented lines
JOB_BLOCK = re.compile(r"^(local)?rule (\w+):\n((?:    .*\n)*)", re.MULTILINE)

HOW_TO_ENABLE = (
    "the SLURM integration test starts a local cluster (tests/slurm/cluster.sh) and needs root "
    "or passwordless sudo: run `sudo -E .venv/bin/pytest -m slurm tests/test_slurm.py`; "
    "with CI=true a missing root/sudo is a failure instead of a skip"
)


# --------------------------------------------------------------------------------------------
# helpers


def _env() -> dict[str, str]:
    """The caller's environment with the venv first on PATH (jobs inherit it: --export=ALL)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Run:
    cmd: list[str]
    returncode: int
    output: str
    seconds: float

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])

    def submitted_rules(self) -> collections.Counter[str]:
        """Rule name of every job this run submitted to SLURM."""
        rules = collections.Counter()
        for _jobid, log in SUBMITTED.findall(self.output):
            m = RULE_OF_LOG.search(log)
            assert m, f"cannot read a rule name from SLURM log path {log}"
            rules[m.group(1)] += 1
        return rules


def snakemake(workdir: Path, *args: str, timeout: int = FULL_RUN_TIMEOUT) -> Run:
    """Run snakemake (this venv's) in `workdir` under `timeout -s INT`, output captured."""
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "60",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        *args,
    ]
    start = time.monotonic()
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    run = Run(cmd, proc.returncode, proc.stdout, time.monotonic() - start)
    (workdir / f"snakemake-{int(start * 1000)}.out").write_text(" ".join(cmd) + "\n" + run.output)
    return run


def assert_ok(run: Run, what: str) -> None:
    assert run.returncode != 124, (
        f"{what}: timed out after {run.seconds:.0f}s (sent SIGINT)\n{run.tail()}"
    )
    assert run.returncode == 0, f"{what}: exit {run.returncode}\n{run.tail()}"


def jobs_in(run: Run, *, local: bool | None = None) -> collections.Counter[str]:
    """Rule names of the jobs a run executed (or a dry run would execute).

    local=True/False keeps only jobs shown as `localrule`/`rule`. A dry run shows every job
    as `rule`; a real SLURM run shows the jobs it ran itself (e.g. `all`) as `localrule`.
    """
    return collections.Counter(
        rule
        for is_local, rule, _body in JOB_BLOCK.findall(run.output)
        if local is None or bool(is_local) == local
    )


def copy_worktree(dst: Path) -> None:
    """Copy the repository's working tree (tracked + untracked-but-not-ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=WORKFLOW,
        check=True,
        stdout=subprocess.PIPE,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = WORKFLOW / rel
        if src.is_symlink() or not src.is_file():
            continue  # deleted in the working tree, or a link
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def produced_files(workdir: Path, before: set[str]) -> set[str]:
    """Files a run added to `workdir` (outputs, logs), ignoring Snakemake's own metadata."""
    found = set()
    for path in workdir.rglob("*"):
        rel = path.relative_to(workdir).as_posix()
        if (
            path.is_file()
            and rel not in before
            and not rel.startswith(".snakemake/")
            and "__pycache__" not in rel
            and not re.fullmatch(r"snakemake-\d+\.out", rel)
        ):
            found.add(rel)
    return found


def listing(workdir: Path) -> set[str]:
    return {p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------------------------
# the workflow under test


def _workflow_ready() -> bool:
    return (WORKFLOW / "Snakefile").is_file() and (WORKFLOW / CONFIG).is_file()


def change_one_param(config_path: Path) -> str:
    """Edit the CI config in place so that a single Part A job's params change.

    Returns the rule whose job is affected directly (its descendants may rerun too).
    """
    cfg = yaml.safe_load(config_path.read_text())
    task = cfg["partA"]["local"]["tasks"]["cfg"]
    task["prompt"] = "a 6" if task.get("prompt") != "a 6" else "a 2"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return "parta_cfg"


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the local cluster (idempotent); stop it at the end only if this session started it."""
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif (
        shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0
    ):
        prefix = ["sudo", "-n", "-E"]
    elif IN_CI:
        pytest.fail(f"CI=true but neither root nor passwordless sudo: {HOW_TO_ENABLE}")
    else:
        pytest.skip(HOW_TO_ENABLE)

    def cluster(action: str, timeout: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, "bash", str(CLUSTER_SH), action],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )

    was_up = cluster("status", 30).returncode == 0
    started = cluster("start", 900)  # first start may apt-get install (a few MB)
    if started.returncode != 0:
        # CI must fail loudly; so must a root user who asked for the slurm tests.
        pytest.fail(f"could not start the local SLURM cluster:\n{started.stdout}")
    yield
    if not was_up:
        stopped = cluster("stop", 120)
        assert stopped.returncode == 0, f"cluster.sh stop failed:\n{stopped.stdout}"


@pytest.fixture(scope="module")
def workflow_copies(slurm_cluster, tmp_path_factory):
    """Two copies of the working tree: one run on SLURM, one run locally with --cores 2."""
    if not _workflow_ready():
        msg = f"the workflow is not in place yet (need Snakefile and {CONFIG})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    copies = {}
    for name in ("slurm", "local"):
        d = tmp_path_factory.mktemp(f"wf-{name}")
        copy_worktree(d)
        copies[name] = (d, listing(d))
    return copies


@pytest.fixture(scope="module")
def slurm_run(workflow_copies) -> Run:
    workdir, _ = workflow_copies["slurm"]
    run = snakemake(workdir, "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(run, "the CI workflow on SLURM")
    return run


@pytest.fixture(scope="module")
def local_run(workflow_copies) -> Run:
    workdir, _ = workflow_copies["local"]
    run = snakemake(workdir, "--cores", "2", "--configfile", CONFIG)
    assert_ok(run, "the CI workflow locally")
    return run


# --------------------------------------------------------------------------------------------
# tests


def test_all_jobs_complete_on_slurm(slurm_run, workflow_copies):
    workdir, _ = workflow_copies["slurm"]
    submitted = slurm_run.submitted_rules()
    assert submitted, f"no job went through SLURM:\n{slurm_run.tail()}"
    # every non-local job went through sbatch, and every job finished
    assert submitted == jobs_in(slurm_run, local=False), slurm_run.tail()
    total = sum(jobs_in(slurm_run).values())
    assert f"{total} of {total} steps (100%) done" in slurm_run.output, slurm_run.tail()
    # nothing left to do, with the same profile (a dry run needs no cluster)
    again = snakemake(workdir, "-n", "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(again, "dry run after the SLURM run")
    assert not jobs_in(again), f"jobs still pending after the SLURM run:\n{again.tail()}"


def test_same_files_as_local_run(slurm_run, local_run, workflow_copies):
    slurm_dir, slurm_before = workflow_copies["slurm"]
    local_dir, local_before = workflow_copies["local"]
    on_slurm = produced_files(slurm_dir, slurm_before)
    local = produced_files(local_dir, local_before)
    assert on_slurm == local, (
        f"only on SLURM: {sorted(on_slurm - local)}\nonly local: {sorted(local - on_slurm)}"
    )


def test_param_change_resubmits_only_affected_jobs(slurm_run, workflow_copies):
    workdir, _ = workflow_copies["slurm"]
    changed_rule = change_one_param(workdir / CONFIG)
    plan = snakemake(workdir, "-n", "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(plan, "dry run after the parameter change")
    expected = jobs_in(plan)
    assert expected[changed_rule] >= 1, f"{changed_rule} not planned to rerun:\n{plan.tail()}"
    assert sum(expected.values()) < sum(slurm_run.submitted_rules().values()), (
        f"a one-parameter change would rerun everything: {dict(expected)}"
    )

    rerun = snakemake(workdir, "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(rerun, "SLURM rerun after the parameter change")
    # exactly the planned jobs ran; all but the local ones (like `all`) through sbatch
    assert jobs_in(rerun) == expected, f"ran {dict(jobs_in(rerun))}, planned {dict(expected)}"
    assert rerun.submitted_rules() == jobs_in(rerun, local=False), (
        f"submitted {dict(rerun.submitted_rules())}, expected {dict(jobs_in(rerun, local=False))}"
    )


FAILING_SNAKEFILE = """\
rule all:
    input:
        "gpu_ok.txt",
        "boom.txt",


rule gpu_ok:
    output:
        "gpu_ok.txt",
    resources:
        gpu=1,
    shell:
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} > {output}"


rule boom:
    output:
        "boom.txt",
    shell:
        "echo deliberate failure >&2; exit 3"
"""


def test_failing_job_reported_in_bounded_time(slurm_cluster, tmp_path):
    """A job that fails on the cluster fails the run promptly; a GPU job gets the (fake) GPU."""
    (tmp_path / "Snakefile").write_text(FAILING_SNAKEFILE)
    run = snakemake(
        tmp_path,
        "--workflow-profile",
        str(REPO / PROFILE),
        "--keep-going",
        timeout=FAIL_RUN_TIMEOUT,
    )
    assert run.returncode != 124, (
        f"a failed SLURM job was not reported within {FAIL_RUN_TIMEOUT}s:\n{run.tail()}"
    )
    assert run.returncode != 0, f"the run succeeded although rule boom exits 3:\n{run.tail()}"
    assert "Error in rule boom" in run.output, run.tail()
    assert run.submitted_rules() == {"gpu_ok": 1, "boom": 1}, run.tail()
    # the job's own log names the failure
    boom_logs = [log for _id, log in SUBMITTED.findall(run.output) if "/rule_boom/" in log]
    assert "deliberate failure" in Path(boom_logs[0]).read_text()
    # `--gpus=1` was accepted by sbatch and the job saw the fake GPU
    assert (tmp_path / "gpu_ok.txt").read_text().strip() == "CUDA_VISIBLE_DEVICES=0"
    assert not (tmp_path / "boom.txt").exists()
