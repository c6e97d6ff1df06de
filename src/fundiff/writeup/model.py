"""What the writeup shows: result files located in the path conventions, figures, tables,
sections, runtimes and the whole document (plain dataclasses, no rendering).

Result paths follow the workflow's conventions (any prefix before ``partA``/``partB`` is allowed,
e.g. ``results/ci/partA/...``): Part A ``.../partA/{backend}/{task}/{item}.png`` (+ ``.json``),
Part B ``.../partB/{run}/{name}.png|gif`` (+ ``losses.csv``, ``eval_epoch{e}.json``).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from fundiff.errors import FundiffError

IMAGE_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg", ".webp", ".svg")


@dataclass(frozen=True)
class ResultKey:
    """Where a result file sits in the conventions.

    ``part`` is ``"A"``, ``"B"`` or ``""`` (unknown); ``group`` is the Part A backend or the
    Part B run (``"figures"``, ``"classifier"`` included); ``task`` the Part A task id (``""``
    in Part B); ``name`` the file stem; ``rel`` the path from ``partA``/``partB`` on (posix),
    used inside the writeup's ``figures/`` folder.
    """

    part: str
    group: str
    task: str
    name: str
    rel: str


@dataclass(frozen=True)
class FigureEntry:
    """One figure as shown in the writeup (``href`` is relative to the writeup folder)."""

    source: str
    href: str
    caption: str
    kind: str
    width: int
    height: int
    display_width: int
    pixelated: bool
    label: str = ""


@dataclass
class Table:
    """A table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    source: str = ""


@dataclass
class Section:
    """A writeup section; ``level`` 2 = part, 3 = section, 4 = subsection."""

    id: str
    title: str
    level: int
    text: str = ""
    figures: list[FigureEntry] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    #: the Part A backend a per-backend subsection shows ("" for every other section)
    backend: str = ""

    def is_empty(self) -> bool:
        """True when neither this section nor any child shows anything."""
        return not self.figures and not self.tables and all(c.is_empty() for c in self.children)


@dataclass(frozen=True)
class JobRuntime:
    """One finished Snakemake job, from its benchmark file.

    ``job`` names its wildcards (``"run=fm_class, epoch=5"``; ``""`` for a rule without any),
    ``path`` is the benchmark file, ``seconds`` the job's wall-clock time (summed over repeats),
    ``finished`` the file's mtime (Unix seconds) and ``max_rss_mb`` its peak resident memory in
    MB (None when not sampled).
    """

    rule: str
    job: str
    path: str
    seconds: float
    finished: float
    max_rss_mb: float | None = None
    repeats: int = 1

    @property
    def start(self) -> float:
        """When the job started (Unix seconds): its finish time minus its duration."""
        return self.finished - self.seconds


@dataclass
class WriteupDoc:
    """Everything the templates render."""

    title: str
    sections: list[Section]
    config_yaml: str
    seeds: Table
    runtimes: list[Table]
    run_span: str
    n_figures: int
    n_numbers: int
    jobs: list[JobRuntime] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Paths and validation
# --------------------------------------------------------------------------------------------


def parse_result_path(path: str | os.PathLike[str]) -> ResultKey:
    """Locate ``path`` in the result conventions (see module docstring).

    Any prefix before the ``partA``/``partB`` component is allowed. Paths outside the
    conventions get ``part=""`` and ``rel="other/<file name>"``.
    """
    parts = PurePosixPath(Path(path).as_posix()).parts
    name = PurePosixPath(parts[-1]).stem if parts else ""
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("partA", "partB"):
            rest = parts[i + 1 :]
            rel = "/".join(parts[i:])
            if parts[i] == "partA":
                backend = rest[0] if len(rest) > 1 else ""
                task = rest[1] if len(rest) > 2 else ""
                return ResultKey("A", backend, task, name, rel)
            run = rest[0] if len(rest) > 1 else ""
            return ResultKey("B", run, "", name, rel)
    return ResultKey("", "", "", name, "other/" + (parts[-1] if parts else "unnamed"))


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` of a valid image, else raise FundiffError naming ``path``.

    PNG/GIF/JPEG/WebP are fully decoded with Pillow (truncated files fail); SVG must parse as
    XML with an ``<svg>`` root (size from its ``width``/``height``, else 0).
    """
    p = Path(path)
    if not p.is_file():
        raise FundiffError(f"expected figure is missing: {p}")
    suffix = p.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise FundiffError(
            f"figure {p} has unsupported type {suffix!r} (expected one of {IMAGE_SUFFIXES})"
        )
    if p.stat().st_size == 0:
        raise FundiffError(f"figure {p} is empty (0 bytes), not a valid image")
    if suffix == ".svg":
        try:
            root = ET.parse(p).getroot()
        except ET.ParseError as exc:
            raise FundiffError(f"figure {p} is not a valid SVG image: {exc}") from exc
        if not root.tag.endswith("svg"):
            raise FundiffError(f"figure {p} is not a valid SVG image (root <{root.tag}>)")
        return _svg_len(root.get("width")), _svg_len(root.get("height"))
    try:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            im.load()  # verify() does not decode pixel data; load() catches truncation
            size = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FundiffError(f"figure {p} is not a valid image: {exc}") from exc
    if size[0] <= 0 or size[1] <= 0:
        raise FundiffError(f"figure {p} has an empty size {size}")
    return size


def _svg_len(value: str | None) -> int:
    """Pixel length from an SVG width/height attribute ('12', '12px', '9pt'); 0 if unknown."""
    m = re.match(r"^\s*([0-9.]+)", value or "")
    return int(float(m.group(1))) if m else 0
