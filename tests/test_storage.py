"""fundiff.storage: atomic writes that name the file, safetensors files, JSON, losses.csv."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fundiff.errors import FundiffError
from fundiff.storage import (
    load_safetensors,
    read_losses,
    save_safetensors,
    temporary_path,
    write_bytes_atomic,
    write_json,
)


def test_write_json_format_and_scalars(tmp_path: Path) -> None:
    p = write_json(tmp_path / "sub" / "a.json", {"n": np.int64(3), "x": torch.tensor(0.5)})
    text = p.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "n": 3,')
    assert json.loads(text) == {"n": 3, "x": 0.5}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_write_json_refuses_non_finite_naming_file_and_key(bad, tmp_path: Path) -> None:
    p = tmp_path / "metrics.json"
    p.write_text('{"old": 1}\n')
    with pytest.raises(FundiffError, match=r"metrics\.json: per_digit\.3\[1\] is not a finite"):
        write_json(p, {"ok": 1.0, "per_digit": {"2": [0.5], "3": [0.1, bad]}})
    assert p.read_text() == '{"old": 1}\n'  # the previous file is untouched
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left


def test_temporary_names_are_unique_and_hidden(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    names = {temporary_path(target) for _ in range(50)}
    assert len(names) == 50
    assert all(n.parent == tmp_path and n.name.startswith(".model.safetensors.") for n in names)


def test_interleaved_writers_of_one_file_do_not_clash(tmp_path: Path, monkeypatch) -> None:
    """A second writer of the same file in the middle of a first one (two runs of one job):
    with one shared temporary name the first rename would fail or publish a mix."""
    import os

    target = tmp_path / "w.bin"
    real_fsync = os.fsync
    nested = []

    def fsync_and_interleave(fd: int) -> None:
        real_fsync(fd)
        if not nested:
            nested.append(True)
            write_bytes_atomic(target, b"second" * 1000)

    monkeypatch.setattr(os, "fsync", fsync_and_interleave)
    write_bytes_atomic(target, b"first" * 1000)
    assert target.read_bytes() == b"first" * 1000  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["w.bin"]


def test_safetensors_round_trip_and_truncation(tmp_path: Path) -> None:
    p = save_safetensors(
        {"w": torch.arange(600.0).reshape(20, 30)}, tmp_path / "w.safetensors", {"k": "v"}
    )
    tensors, meta = load_safetensors(p)
    assert meta == {"k": "v"} and torch.equal(tensors["w"], torch.arange(600.0).reshape(20, 30))
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(FundiffError, match=r"w\.safetensors is truncated or corrupt.*rebuild me"):
        load_safetensors(p, remedy="rebuild me")
    with pytest.raises(FundiffError, match="not found"):
        load_safetensors(tmp_path / "missing.safetensors")


def test_read_losses(tmp_path: Path) -> None:
    p = tmp_path / "losses.csv"
    p.write_text("epoch,step,loss,lr\n1,1,0.5,0.001\n1,2,0.25,0.001\n")
    assert read_losses(p) == [
        {"epoch": 1, "step": 1, "loss": 0.5, "lr": 0.001},
        {"epoch": 1, "step": 2, "loss": 0.25, "lr": 0.001},
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("epoch,step,loss\n1,1,0.5\n", r"losses\.csv lacks column\(s\) \['lr'\]"),
        ("epoch,step,loss,lr\n1,1,0.5,0.1\n1,2,0.5\n", r"losses\.csv line 3: bad number"),
        ("epoch,step,loss,lr\n1,x,0.5,0.1\n", r"losses\.csv line 2: bad number"),
    ],
)
def test_read_losses_names_the_file_and_line(text: str, error: str, tmp_path: Path) -> None:
    p = tmp_path / "losses.csv"
    p.write_text(text)
    with pytest.raises(FundiffError, match=error):
        read_losses(p)
    with pytest.raises(FundiffError, match="loss file not found"):
        read_losses(tmp_path / "nope.csv")


def test_safetensors_bytes_do_not_depend_on_metadata_order(tmp_path: Path) -> None:
    """safetensors writes its metadata map in arbitrary order; ours sorts it, so result files
    are byte-identical across reruns, and the file still loads."""
    from safetensors import safe_open

    t = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(3, dtype=torch.int64)}
    keys = [f"k{i}" for i in range(12)]
    blobs = []
    for order in (keys, keys[::-1]):
        path = save_safetensors(t, tmp_path / f"{order[0]}.safetensors", {k: k for k in order})
        blobs.append(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata() == {k: k for k in keys}
            assert torch.equal(f.get_tensor("b"), t["b"]) and torch.equal(f.get_tensor("a"), t["a"])
    assert blobs[0] == blobs[1]
    assert int.from_bytes(blobs[0][:8], "little") % 8 == 0
