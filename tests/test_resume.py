"""A training job killed mid-run and rerun by Snakemake resumes from its last checkpoint.

Issue requirement: "A killed training job rerun by Snakemake resumes from the last checkpoint
instead of starting over, and ends with the same weights as an uninterrupted run (CPU)."

Copy ``a`` runs ``train_unet`` for one small run with ``FUNDIFF_TEST_SIGKILL_AFTER_EPOCH=1``:
the trainer SIGKILLs its whole process group (Snakemake and the job, like an OOM kill or a lost
node) right after writing the epoch-1 checkpoint -- a known point, no timer. It is then rerun
with the same command. Copy ``b`` runs the same target uninterrupted, afterwards (one training
at a time). Both must end with bit-identical weights and the same losses.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fundiff.storage import read_losses
from fundiff.training import KILL_ENV

from conftest import SNAKEMAKE, copy_repo, run_snakemake, tool_env

RUN = "ddpm_class"
EPOCHS = 3
KILL_AFTER = 1
# 600 digits / batch 16 = 38 steps per epoch: 2-5 s per epoch on a loaded 2-core CPU; the test
# takes ~1-2 min (mostly Snakemake and torch start-up, three Snakemake runs one after another)
OVERLAY = f"""\
device: cpu
partA: {{enabled: false}}
partB:
  runs:
    {RUN}: {{hidden: 4, batch_size: 16, epochs: {EPOCHS}, T: 50, sample_steps: 10, snapshot_epochs: [1]}}
"""
OUT = Path("results/partB") / RUN
TARGET = str(OUT / "model.safetensors")
CKPTS = OUT / "training" / "checkpoints"
LOG = Path("logs/train_unet") / f"{RUN}.log"
# the target goes first: --configfile takes every following word as a config file
ARGS = (TARGET, "--cores", "1", "--configfile", "configs/ci.yaml", "configs/resume.yaml")
WAIT_S = 120
RESUMED = re.compile(r"resuming from checkpoint epoch (\d+) \(step (\d+)\)")


def _workspace(dest: Path) -> Path:
    ws = copy_repo(dest)
    (ws / "configs" / "resume.yaml").write_text(OVERLAY)
    return ws


def _start(ws: Path, out: Path, kill_after: int | None = None) -> subprocess.Popen:
    """Snakemake in its own session (process group), output to a file (no pipe to fill)."""
    env = tool_env()
    env.pop(KILL_ENV, None)
    if kill_after is not None:
        env[KILL_ENV] = str(kill_after)
    with open(out, "w") as f:
        return subprocess.Popen(
            [*SNAKEMAKE, *ARGS],
            cwd=ws,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(proc: subprocess.Popen, out: Path, what: str) -> int:
    try:
        return proc.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} still running after {WAIT_S} s:\n" + _tail(out))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL snakemake and its job (the script subprocess is in the same group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid with start_new_session
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no output)"


def _checkpoint_epochs(ws: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (ws / CKPTS).glob("epoch_*.pt"))


@pytest.mark.slow
def test_killed_training_job_resumes_and_matches_uninterrupted_run(tmp_path: Path) -> None:
    ws_a, ws_b = _workspace(tmp_path / "a"), _workspace(tmp_path / "b")
    out_a, out_b = tmp_path / "a_first.out", tmp_path / "b.out"
    procs = []
    try:
        # 1. run a kills itself (SIGKILL to Snakemake and the job) right after writing the
        #    epoch-KILL_AFTER checkpoint
        procs.append(proc_a := _start(ws_a, out_a, kill_after=KILL_AFTER))
        rc = _wait(proc_a, out_a, "the run that should kill itself")
        assert rc == -signal.SIGKILL, f"expected SIGKILL, got {rc}:\n" + _tail(out_a)
        assert _checkpoint_epochs(ws_a) == [KILL_AFTER]
        assert not (ws_a / TARGET).exists(), "the killed job must not have published a model"
        history = ws_a / OUT / "training" / "train.log"  # appended to by every attempt
        assert "starting fresh" in history.read_text()

        # 2. rerun. A SIGKILLed snakemake cannot remove its lock, so (as Snakemake itself says)
        #    the directory is unlocked first; `rerun-incomplete: true` (profiles/default) then
        #    reruns the incomplete job, which must resume from the newest checkpoint
        run_snakemake(ws_a, *ARGS, "--unlock", timeout=WAIT_S)
        run_snakemake(ws_a, *ARGS, timeout=WAIT_S)
        # Snakemake deletes the job log of an incomplete job before rerunning it, so the log
        # holds the rerun alone; train.log (in the checkpoint folder) keeps every attempt
        rerun_log = (ws_a / LOG).read_text()
        resumed = RESUMED.search(rerun_log)
        assert resumed, f"the rerun did not resume from a checkpoint:\n{rerun_log[-3000:]}"
        assert "starting fresh" not in rerun_log
        attempts = re.findall(r"starting fresh|resuming from checkpoint", history.read_text())
        assert attempts == ["starting fresh", "resuming from checkpoint"], attempts
        assert int(resumed.group(1)) == KILL_AFTER, "must resume from the newest checkpoint"

        # 3. the uninterrupted run, after run a (one training at a time)
        procs.append(proc_b := _start(ws_b, out_b))
        assert _wait(proc_b, out_b, "the uninterrupted run") == 0, _tail(out_b)
        assert "resuming" not in (ws_b / LOG).read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)

    # 4. same weights (bit for bit), same snapshots, same losses with no duplicate steps
    def tensors(ws: Path, rel: Path) -> dict[str, torch.Tensor]:
        return load_file(str(ws / rel))

    files = [Path(TARGET)] + sorted(
        p.relative_to(ws_b) for p in (ws_b / OUT / "snapshots").glob("*.safetensors")
    )
    assert len(files) == 3, files  # model + snapshots of epochs 1 and EPOCHS
    for rel in files:
        ta, tb = tensors(ws_a, rel), tensors(ws_b, rel)
        assert ta.keys() == tb.keys(), rel
        for k in ta:
            assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), f"{rel}: {k} differs"

    rows_a = read_losses(ws_a / OUT / "losses.csv")
    rows_b = read_losses(ws_b / OUT / "losses.csv")
    steps = [r["step"] for r in rows_a]
    assert steps == list(range(1, len(steps) + 1)), "losses.csv steps must be 1..N, no duplicates"
    assert rows_a[-1]["epoch"] == EPOCHS
    assert rows_a == rows_b
