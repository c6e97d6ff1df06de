"""Files that outlive a job: atomic writes, safetensors weights, the ``losses.csv`` format.

* Every write goes to a temporary file beside the target (a hidden name unique per process and
  call: ``.{name}.{pid}.{random}.tmp``), is flushed to disk, then renamed over the target
  (``os.replace``, atomic on POSIX). A reader sees the old file or the new one, never half of
  one; a killed or failed write leaves the previous file as it was.
* A failed write raises :class:`fundiff.errors.FundiffError` naming the file (and saying the
  disk is full on ``ENOSPC`` / ``EDQUOT``), never a bare ``OSError`` or ``SafetensorError``.
* A truncated or corrupt ``.safetensors`` file raises a FundiffError naming the file and what
  to do (the caller says how to rebuild it).
* JSON results (:func:`write_json`): 2-space indent, a final newline, finite numbers only (a
  NaN or infinity is refused naming the file and the key: JSON has no such numbers).
* :func:`folder_lock`: an exclusive ``flock`` on ``{folder}/.lock`` for one writer per folder
  (released by the kernel when the holder dies, so a killed job never leaves it locked).
* ``losses.csv``: header ``epoch,step,loss,lr``; one row per logged optimizer step (epoch and
  step 1-based ints, loss and lr floats written with ``%.8g``).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from fundiff.errors import FundiffError

__all__ = [
    "folder_lock",
    "remove_stale_temporaries",
    "temporary_path",
    "write_error",
    "naming_write_errors",
    "write_bytes_atomic",
    "copy_atomic",
    "write_json",
    "save_safetensors",
    "load_safetensors",
    "LOSS_COLUMNS",
    "read_losses",
]

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


_TMP_NAME = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def temporary_path(path: str | Path) -> Path:
    """A hidden temporary name beside ``path``, unique per process and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files of :func:`temporary_path` in ``folder`` (left by a killed writer).

    Call it only while holding :func:`folder_lock` on the folder: no live writer then has one.
    """
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if _TMP_NAME.match(p.name)] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def folder_lock(
    folder: str | Path,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    poll: float = 0.2,
) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``fcntl.flock`` on ``folder/.lock``) in the block.

    If another process holds it, ``on_wait`` gets one message naming the lock file and the
    holder's pid, then this waits up to ``timeout`` seconds (None = as long as the holder
    runs; the kernel drops the lock when the holder exits or is killed).

    Raises:
        FundiffError: still held after ``timeout`` seconds (names the lock file and the pid).
    """
    folder = Path(folder)
    lock = folder / ".lock"
    with naming_write_errors(lock):
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if deadline is not None and time.monotonic() >= deadline:
                    raise FundiffError(
                        f"{lock} is held by another process (pid {holder}) writing the same "
                        "run: let it finish (or stop it) and rerun"
                    ) from None
                if not waiting and on_wait is not None:
                    on_wait(f"waiting for {lock}, held by pid {holder} (a concurrent run)")
                waiting = True
                time.sleep(poll)
        with naming_write_errors(lock):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        os.close(fd)  # releases the lock


def write_error(path: str | Path, exc: OSError) -> FundiffError:
    """The one-line error for a failed write of ``path``."""
    if exc.errno in _DISK_FULL:
        why = "the disk is full (no space left on device); free some space and rerun"
    else:
        why = f"{exc.strerror or exc}"
    return FundiffError(f"cannot write {path}: {why} (the previous version, if any, is unchanged)")


@contextmanager
def naming_write_errors(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`write_error` for ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from exc


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (unique temporary file, fsync, rename)."""
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    return path


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy ``src`` to ``dst`` atomically (a reader of ``dst`` never sees a partial copy)."""
    return write_bytes_atomic(dst, Path(src).read_bytes())


def _non_finite_key(obj: Any, key: str = "") -> str | None:
    """Dotted key of the first NaN / infinite float inside ``obj``, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else key or "(top level)"
    if isinstance(obj, Mapping):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for sub_key, value in items:
        found = _non_finite_key(value, sub_key)
        if found is not None:
            return found
    return None


def _json_scalar(obj: Any) -> Any:
    """numpy / torch scalars -> Python numbers (``json.dumps`` ``default``)."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON (indent 2, final newline) atomically; NaN and infinity refused.

    Raises:
        FundiffError: a non-finite number (naming the file and its key) or a failed write.
    """
    try:
        text = json.dumps(data, indent=2, default=_json_scalar, allow_nan=False)
    except ValueError as exc:
        plain = json.loads(json.dumps(data, default=_json_scalar))
        key = _non_finite_key(plain) or "?"
        raise FundiffError(
            f"refusing to write {path}: {key} is not a finite number (JSON has no NaN or "
            "infinity); the computation that produced it diverged"
        ) from exc
    return write_bytes_atomic(path, (text + "\n").encode())


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save tensors (any device; stored from CPU, contiguous) as safetensors, atomically."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    data = safetensors_bytes(cpu, metadata=dict(metadata) if metadata is not None else None)
    return write_bytes_atomic(path, canonical_safetensors(data))


def canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted (metadata included).

    safetensors writes its ``__metadata__`` map in an arbitrary order, so the same tensors and
    metadata could give different bytes from run to run; sorted, result files are byte-identical
    across reruns. The header stays padded with spaces to a multiple of 8 bytes.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def load_safetensors(
    path: str | Path, device: torch.device | str = "cpu", *, remedy: str = ""
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors on ``device``, metadata) of a safetensors file.

    Raises:
        FundiffError: the file is missing, truncated or corrupt; the message names the file
            and ends with ``remedy`` (how to rebuild it), or a generic "delete it and rerun".
    """
    path = Path(path)
    if not path.exists():
        raise FundiffError(f"file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as exc:
        todo = remedy or "delete it and rerun the step that writes it"
        raise FundiffError(f"{path} is truncated or corrupt ({exc}); {todo}") from exc
    return tensors, meta


LOSS_COLUMNS = ("epoch", "step", "loss", "lr")


def read_losses(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``losses.csv`` as dicts with int ``epoch`` / ``step`` and float ``loss`` / ``lr``.

    Raises:
        FundiffError: the file is missing, lacks a column, or has a bad number (names the
            file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FundiffError(f"loss file not found: {path}")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in LOSS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FundiffError(
                f"loss file {path} lacks column(s) {missing} (expected {','.join(LOSS_COLUMNS)})"
            )
        for line, r in enumerate(reader, start=2):
            try:
                rows.append(
                    {
                        "epoch": int(r["epoch"]),
                        "step": int(r["step"]),
                        "loss": float(r["loss"]),
                        "lr": float(r["lr"]),
                    }
                )
            except (TypeError, ValueError) as exc:
                raise FundiffError(f"loss file {path} line {line}: bad number ({exc})") from exc
    return rows
