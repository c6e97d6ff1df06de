"""The workflow on a real (single-node) SLURM cluster, through profiles/slurm-local.

A session fixture starts the cluster with tests/slurm/cluster.sh (root: installs and starts
munge + slurmctld + slurmd with one fake GPU) and stops it afterwards if it started it. The
workflow then runs with `configs/ci.yaml` in a copy of the working tree, every job submitted
through the SLURM executor plugin, and is compared with a local `--cores 2` run of the same
targets in another copy: same files, only the affected jobs resubmitted after a parameter
change, and a failing job reported as failed in bounded time.

Each SLURM job starts Snakemake again (10-30 s per job on a loaded 2-core machine, and the GPU
rules share the one fake GPU), so by default the run covers a slice of the CI DAG that touches
every kind of job: MNIST preparation (CPU), a UNet training (GPU rule), a Part A job on both
backends (GPU rules; DeepFloyd needs encode_prompts) and three light CPU figures that the
profile groups into one submission, 10 jobs.
FUNDIFF_SLURM_FULL=1 runs the whole CI workflow instead (about 80 jobs, tens of minutes).

Needs root (or passwordless sudo). Without it the tests skip; with CI=true they fail instead.
Run alone with `sudo -E .venv/bin/pytest -m slurm tests/test_slurm.py`.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import slurm_timing
import yaml

from conftest import copy_repo, tool_env

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
# FUNDIFF_SLURM_PROFILE: another profile (e.g. an older version, to compare; bench/bench_slurm.py)
PROFILE = os.environ.get("FUNDIFF_SLURM_PROFILE", "profiles/slurm-local")
# FUNDIFF_SLURM_RECORD=path.json: write jobs submitted, wall times and where each submission's
# time went (tests/slurm_timing.py) for bench/bench_slurm.py
RECORD = os.environ.get("FUNDIFF_SLURM_RECORD", "")
CONFIG = "configs/ci.yaml"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
FULL = os.environ.get("FUNDIFF_SLURM_FULL", "") == "1"

# Upper bounds (seconds) for each snakemake call; on expiry `timeout` sends SIGINT, the only
# signal that makes snakemake scancel its SLURM jobs.
RUN_TIMEOUT = int(os.environ.get("FUNDIFF_SLURM_RUN_TIMEOUT", "3600" if FULL else "900"))
FAIL_TIMEOUT = 150
# the SLURM logs of successful jobs are kept: they show which rules a group job ran, and when
SLURM_ARGS = ("--workflow-profile", PROFILE, "--configfile", CONFIG, "--slurm-keep-successful-logs")

# "Job 3 has been submitted with SLURM jobid 12 (log: /x/.snakemake/slurm_logs/rule_foo/a/12.log)."
# A group job's log is under slurm_logs/group_<group>/.
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)")
RULE_OF_LOG = re.compile(r"/slurm_logs/(?:rule|group)_([A-Za-z0-9_]+)/")
# a job in snakemake's output: "rule foo:" / "localrule all:" followed by indented lines
# (indented itself when it is a member of a group job)
JOB_BLOCK = re.compile(r"^ *(local)?rule (\w+):\n((?:    .*\n)*)", re.MULTILINE)

HOW_TO_ENABLE = (
    "the SLURM integration test starts a local cluster (tests/slurm/cluster.sh) and needs root "
    "or passwordless sudo: run `sudo -E .venv/bin/pytest -m slurm tests/test_slurm.py`; "
    "with CI=true a missing root/sudo is a failure instead of a skip"
)


# --------------------------------------------------------------------------------------------
# helpers


@dataclass
class Run:
    cmd: list[str]
    returncode: int
    output: str
    seconds: float

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])

    def submitted(self) -> list[tuple[str, str]]:
        """(rule, SLURM log path) of every job this run submitted with sbatch."""
        jobs = []
        for _jobid, log in SUBMITTED.findall(self.output):
            m = RULE_OF_LOG.search(log)
            assert m, f"cannot read a rule name from SLURM log path {log}"
            jobs.append((m.group(1), log))
        return jobs

    def submitted_rules(self) -> collections.Counter[str]:
        """Rule names of the jobs that ran through sbatch; a group job counts each member.

        Group members are read from the job's SLURM log (kept by --slurm-keep-successful-logs).
        """
        rules: collections.Counter[str] = collections.Counter()
        for name, log in self.submitted():
            if "/slurm_logs/group_" not in log:
                rules[name] += 1
                continue
            span = slurm_timing.inner_rule_span(Path(log).read_text())
            assert span, f"no rule found in the log of group job {name}: {log}"
            rules.update(span[0])
        return rules


class Snakemake:
    """This venv's snakemake started in `workdir` under `timeout -s INT`, output captured.

    Targets go first in `args`: `--configfile` takes several values and would swallow them.
    """

    def __init__(self, workdir: Path, *args: str, timeout: int = RUN_TIMEOUT) -> None:
        self.cmd = ["timeout", "-s", "INT", "-k", "60", str(timeout)]
        self.cmd += [sys.executable, "-m", "snakemake", *args]
        self.log = workdir / f"snakemake-{time.monotonic_ns()}.out"
        self.start = time.time()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=workdir,
                # venv first on PATH, 1 thread, offline hub, the real scontrol; jobs inherit it
                env=tool_env(slurm=True),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def wait(self) -> Run:
        returncode = self.proc.wait()
        # the output's last write ~ the end, also when wait() is called long after it
        end = min(time.time(), self.log.stat().st_mtime)
        return Run(self.cmd, returncode, self.log.read_text(), end - self.start)


def snakemake(workdir: Path, *args: str, timeout: int = RUN_TIMEOUT) -> Run:
    return Snakemake(workdir, *args, timeout=timeout).wait()


def assert_ok(run: Run, what: str) -> None:
    assert run.returncode != 124, f"{what}: timed out after {run.seconds:.0f}s\n{run.tail()}"
    assert run.returncode == 0, f"{what}: exit {run.returncode}\n{run.tail()}"


def jobs_in(run: Run, *, local: bool | None = None) -> collections.Counter[str]:
    """Rule names of the jobs a run executed (or a dry run would execute).

    local=True/False keeps only jobs shown as `localrule`/`rule`. A dry run shows every job
    as `rule`; a SLURM run shows the jobs it ran itself (e.g. `all`) as `localrule`.
    """
    return collections.Counter(
        rule
        for is_local, rule, _body in JOB_BLOCK.findall(run.output)
        if local is None or bool(is_local) == local
    )


def listing(workdir: Path) -> set[str]:
    return {p.relative_to(workdir).as_posix() for p in workdir.rglob("*") if p.is_file()}


def produced_files(workdir: Path, before: set[str]) -> set[str]:
    """Files a run added to `workdir` (outputs, logs), ignoring Snakemake's own metadata."""
    return {
        rel
        for rel in listing(workdir) - before
        if not rel.startswith(".snakemake/")
        and "__pycache__" not in rel
        and not re.fullmatch(r"snakemake-\d+\.out", rel)
    }


def plan_rows(workdir: Path) -> list[tuple[str, str]]:
    """(output file, rule) for every output of the CI DAG (`snakemake --summary`)."""
    run = snakemake(workdir, "--cores", "1", "--configfile", CONFIG, "--summary", timeout=300)
    assert_ok(run, "snakemake --summary")
    rows = [line.split("\t") for line in run.output.splitlines()]
    return [(r[0], r[2]) for r in rows if len(r) >= 6 and r[0] != "output_file"]


def slice_targets(rows: list[tuple[str, str]]) -> list[str]:
    """A few targets of the CI DAG that pull in every kind of job (9 jobs)."""

    def pick(rule: str, part: str) -> str:
        for out, r in rows:
            if r == rule and part in out and out.endswith((".png", ".gif")):
                return out
        pytest.fail(f"the CI plan has no {rule} figure containing {part!r}: {rows[:20]}")

    return [
        pick("parta_cfg", "/partA/local/"),  # <- train_unet (ddpm_class) <- mnist
        pick("parta_cfg", "/partA/deepfloyd/"),  # <- embed_prompt (local) <- encode_prompts
        pick("plot_loss_curve", "/ddpm_class/"),  # CPU figures (one `light` group job)
        pick("sampling_gif", "/ddpm_class/"),
        pick("plot_noising_grid", "/b1_noising"),
    ]


def change_one_param(config_path: Path) -> None:
    """Edit the CI config so that only the local backend's CFG job has new params."""
    cfg = yaml.safe_load(config_path.read_text())
    task = cfg["partA"]["local"].setdefault("tasks", {}).setdefault("cfg", {})
    task["prompt"] = "a 2" if task.get("prompt") == "a 6" else "a 6"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))


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
    started = cluster("start", 900)  # the first start may apt-get install (about 3 MB)
    if started.returncode != 0:
        # CI must fail loudly; so must a root user who runs the slurm tests.
        pytest.fail(f"could not start the local SLURM cluster:\n{started.stdout}")
    yield
    if not was_up:
        stopped = cluster("stop", 120)
        assert stopped.returncode == 0, f"cluster.sh stop failed:\n{stopped.stdout}"


@dataclass
class Workspace:
    path: Path
    before: set[str]


@pytest.fixture(scope="module")
def workspaces(slurm_cluster, tmp_path_factory) -> dict[str, Workspace]:
    """Two copies of the working tree with the tiny IF pipeline built: "slurm" and "local"."""
    missing = [p for p in ("Snakefile", CONFIG) if not (REPO / p).is_file()]
    if missing:
        msg = f"the workflow is not in place yet (missing {', '.join(missing)})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    spaces = {}
    for name in ("slurm", "local"):
        ws = copy_repo(tmp_path_factory.mktemp(f"slurm-test-{name}"))
        if name == "slurm":
            subprocess.run(
                [sys.executable, "-m", "fundiff.tiny_if", str(ws / "tiny_if")],
                env=tool_env(),
                check=True,
                capture_output=True,
            )
            tiny_if = ws / "tiny_if"
        else:
            shutil.copytree(tiny_if, ws / "tiny_if")  # deterministic: same files as a rebuild
        spaces[name] = Workspace(ws, listing(ws))
    return spaces


@pytest.fixture(scope="module")
def targets(workspaces) -> list[str]:
    """The targets both runs build: a slice of the CI DAG, or everything (FUNDIFF_SLURM_FULL=1)."""
    return [] if FULL else slice_targets(plan_rows(workspaces["slurm"].path))


@pytest.fixture(scope="module")
def runs(workspaces, targets) -> dict[str, Run]:
    """The same targets on SLURM and locally (`--cores 2`), side by side to save wall time."""
    local = Snakemake(workspaces["local"].path, *targets, "--cores", "2", "--configfile", CONFIG)
    slurm = snakemake(workspaces["slurm"].path, *targets, *SLURM_ARGS)
    runs = {"slurm": slurm, "local": local.wait()}
    if RECORD:
        record(runs, targets)
    return runs


def record(runs: dict[str, Run], targets: list[str]) -> None:
    """Write jobs submitted, wall times and per-submission phases to RECORD (JSON)."""
    slurm = runs["slurm"]
    rows = slurm_timing.submissions(slurm.output)  # right away: scontrol forgets after 300 s
    rule_jobs = sum(jobs_in(slurm, local=False).values())
    data = {
        "profile": PROFILE,
        "profile_text": (REPO / PROFILE / "config.yaml").read_text(),  # PROFILE may be absolute
        "targets": targets or ["<all of configs/ci.yaml>"],
        "returncode": slurm.returncode,
        "slurm_wall_s": round(slurm.seconds, 1),
        "local_wall_s": round(runs["local"].seconds, 1),
        "jobs_total": sum(jobs_in(slurm).values()),
        "rule_jobs_on_slurm": rule_jobs,
        "jobs_submitted": len(rows),
        "summary": slurm_timing.summarize(rows, rule_jobs),
        "submissions": rows,
    }
    Path(RECORD).parent.mkdir(parents=True, exist_ok=True)
    Path(RECORD).write_text(json.dumps(data, indent=1, default=str))


@pytest.fixture(scope="module")
def slurm_run(runs) -> Run:
    assert_ok(runs["slurm"], "the CI workflow on SLURM")
    return runs["slurm"]


@pytest.fixture(scope="module")
def local_run(runs) -> Run:
    assert_ok(runs["local"], "the CI workflow locally")
    return runs["local"]


# --------------------------------------------------------------------------------------------
# tests


def test_all_jobs_complete_on_slurm(slurm_run, workspaces, targets):
    submitted = slurm_run.submitted_rules()
    assert submitted, f"no job went through SLURM:\n{slurm_run.tail()}"
    # every non-local job went through sbatch, and every job finished
    assert submitted == jobs_in(slurm_run, local=False), slurm_run.tail()
    total = sum(jobs_in(slurm_run).values())
    assert f"{total} of {total} steps (100%) done" in slurm_run.output, slurm_run.tail()
    if not FULL:
        assert {"mnist", "train_unet", "encode_prompts", "parta_cfg", "plot_loss_curve"} <= set(
            submitted
        ), submitted
    # nothing left to do (a dry run with the SLURM profile needs no cluster)
    ws = workspaces["slurm"].path
    again = snakemake(ws, *targets, "-n", "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(again, "dry run after the SLURM run")
    assert not jobs_in(again), f"jobs still pending after the SLURM run:\n{again.tail()}"


def test_same_files_as_a_local_run(slurm_run, local_run, workspaces):
    on_slurm = produced_files(workspaces["slurm"].path, workspaces["slurm"].before)
    local = produced_files(workspaces["local"].path, workspaces["local"].before)
    assert local, f"the local run produced nothing:\n{local_run.tail()}"
    assert on_slurm == local, (
        f"only on SLURM: {sorted(on_slurm - local)}\nonly local: {sorted(local - on_slurm)}"
    )


def test_param_change_resubmits_only_affected_jobs(slurm_run, workspaces, targets):
    ws = workspaces["slurm"].path
    change_one_param(ws / CONFIG)
    plan = snakemake(ws, *targets, "-n", "--workflow-profile", PROFILE, "--configfile", CONFIG)
    assert_ok(plan, "dry run after the parameter change")
    expected = jobs_in(plan)
    # one CFG job (the local backend's; the DeepFloyd one keeps its params) + descendants
    assert expected["parta_cfg"] == 1, f"planned {dict(expected)}:\n{plan.tail()}"
    assert sum(expected.values()) < sum(jobs_in(slurm_run).values()), dict(expected)

    rerun = snakemake(ws, *targets, *SLURM_ARGS)
    assert_ok(rerun, "SLURM rerun after the parameter change")
    # exactly the planned jobs ran; all but the local ones (like `all`) through sbatch
    assert jobs_in(rerun) == expected, f"ran {dict(jobs_in(rerun))}, planned {dict(expected)}"
    assert rerun.submitted_rules() == jobs_in(rerun, local=False), rerun.tail()
    cfg_logs = [log for rule, log in rerun.submitted() if rule == "parta_cfg"]
    assert len(cfg_logs) == 1 and "/rule_parta_cfg/local" in cfg_logs[0], cfg_logs


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
        tmp_path, "--workflow-profile", str(REPO / PROFILE), "--keep-going", timeout=FAIL_TIMEOUT
    )
    assert run.returncode != 124, (
        f"a failed SLURM job was not reported within {FAIL_TIMEOUT}s:\n{run.tail()}"
    )
    assert run.returncode != 0, f"the run succeeded although rule boom exits 3:\n{run.tail()}"
    assert "Error in rule boom" in run.output, run.tail()
    assert run.submitted_rules() == {"gpu_ok": 1, "boom": 1}, run.tail()
    # the failed job's SLURM log is kept and shows why
    boom_log = next(log for rule, log in run.submitted() if rule == "boom")
    assert "deliberate failure" in Path(boom_log).read_text()
    # `--gpus=1` was accepted by sbatch and the job saw the (fake) GPU
    assert (tmp_path / "gpu_ok.txt").read_text().strip() == "CUDA_VISIBLE_DEVICES=0"
    assert not (tmp_path / "boom.txt").exists()
