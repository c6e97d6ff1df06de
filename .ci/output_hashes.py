#!/usr/bin/env python3
"""Hash every PNG/JSON/NPZ/GIF/CSV/safetensors output of a workflow run, to prove a refactor
changed no output.

    python .ci/output_hashes.py RESULTS_DIR > hashes.txt       # one line per file
    python .ci/output_hashes.py RESULTS_DIR --compare old.txt  # exit 1 listing what differs

Skipped: the writeup folder (its runtime table changes every run) and the Snakemake report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from pathlib import Path

SUFFIXES = {".png", ".json", ".npz", ".gif", ".csv", ".safetensors"}
SKIP_PARTS = {"writeup", "report.zip", "prompt_cache", "training"}


def _canonical_safetensors(data: bytes) -> bytes:
    """The header's JSON with sorted keys + the tensor bytes: safetensors writes its metadata
    map in an arbitrary order, so equal files can differ byte for byte."""
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    return json.dumps(header, sort_keys=True).encode() + data[8 + n :]


def hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or p.suffix not in SUFFIXES or SKIP_PARTS & set(rel.parts):
            continue
        data = p.read_bytes()
        if p.suffix == ".safetensors":
            data = _canonical_safetensors(data)
        out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--compare", type=Path)
    args = ap.parse_args()
    now = hashes(args.results)
    if args.compare is None:
        for k, v in now.items():
            print(f"{v}  {k}")
        return 0
    old = dict(reversed(line.split("  ", 1)) for line in args.compare.read_text().splitlines())
    old = {k.strip(): v for k, v in old.items()}
    bad = 0
    for k in sorted(set(old) | set(now)):
        if old.get(k) != now.get(k):
            bad += 1
            print(f"DIFF {k}: {old.get(k, 'missing')[:12]} -> {now.get(k, 'missing')[:12]}")
    print(f"{len(now)} files, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
