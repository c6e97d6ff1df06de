"""The generated writeup: collect figures and numbers, render ``index.md`` and ``index.html``.

The writeup is one self-contained folder (``index.md``, ``index.html``, ``figures/...``) that
opens from disk with no network: every figure is copied into ``<out_dir>/figures/`` and linked
relatively, the CSS is inline, and there are no scripts or external fonts.

Inputs follow the workflow's path conventions (any prefix before ``partA``/``partB`` is allowed,
e.g. ``results/ci/partA/...``):

* Part A: ``.../partA/{backend}/{task}/{item}.png`` (+ ``{item}.json`` numbers).
* Part B: ``.../partB/{run}/{name}.png|gif`` (+ ``losses.csv``, ``eval_epoch{e}.json``),
  ``.../partB/figures/b1_noising.png``, ``.../partB/classifier/metrics.json``.

Figures are assigned to sections that follow the course's structure (Part A 0 to 1.9 plus bells &
whistles; Part B 1 to 2.x with DDPM and flow-matching subsections). Anything that matches no known
section still appears, in an "other" section: nothing listed is ever dropped, and a listed figure
that is missing or not a valid image makes the build fail with a :class:`FundiffError` naming it.

Step runtimes come from Snakemake's file persistence (``.snakemake/metadata``): one JSON record per
output file, named by ``base64.urlsafe_b64encode(output_path)`` and split into ``@``-prefixed
directory chunks when longer than the file-name limit (Snakemake 9, ``persistence/file.py``).

Typical use (``scripts/build_writeup.py``)::

    build_writeup(figures, numbers, out_md="results/writeup/index.md",
                  out_html="results/writeup/index.html", config=config,
                  template_dir="report", metadata_dir=".snakemake/metadata")
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import yaml
from PIL import Image, UnidentifiedImageError

from fundiff.errors import FundiffError

__all__ = [
    "BACKEND_TITLES",
    "PART_A_TASKS",
    "PART_B_RUNS",
    "FigureEntry",
    "ResultKey",
    "Section",
    "StepTiming",
    "Table",
    "WriteupDoc",
    "build_writeup",
    "check_image",
    "collect",
    "confusion_table",
    "csv_table",
    "eval_table",
    "find_seeds",
    "json_tables",
    "loss_table",
    "parse_result_path",
    "read_runtimes",
    "render",
    "runtime_tables",
]

# --------------------------------------------------------------------------------------------
# Section structure (course order)
# --------------------------------------------------------------------------------------------

#: Part A task ids (directory names) -> section titles, in course order.
PART_A_TASKS: dict[str, str] = {
    "a0_text_to_image": "0. Setup: sampling from text prompts",
    "a1_1_forward": "1.1 Implementing the forward process",
    "a1_2_blur": "1.2 Classical denoising",
    "a1_3_one_step": "1.3 One-step denoising",
    "a1_4_iterative": "1.4 Iterative denoising",
    "a1_5_sampling": "1.5 Diffusion model sampling",
    "a1_6_cfg": "1.6 Classifier-free guidance (CFG)",
    "a1_7_sdedit": "1.7 Image-to-image translation (SDEdit)",
    "a1_7_1_sdedit_drawn": "1.7.1 Editing hand-drawn and web images",
    "a1_7_2_inpaint": "1.7.2 Inpainting",
    "a1_7_3_translate": "1.7.3 Text-conditional image-to-image translation",
    "a1_8_anagrams": "1.8 Visual anagrams",
    "a1_9_hybrids": "1.9 Hybrid images",
    "a_logo": "Bells & whistles: course logo",
}

#: Part A backends -> human titles (section headings).
BACKEND_TITLES: dict[str, str] = {
    "deepfloyd": "DeepFloyd IF",
    "local": "Local backend: the MNIST model",
}
_BACKEND_SHORT: dict[str, str] = {"deepfloyd": "DeepFloyd IF", "local": "local MNIST model"}

#: Part B runs -> (group id, section title), in course order.
PART_B_RUNS: dict[str, tuple[str, str]] = {
    "single_step": ("b1", "1.2.1 Training a single-step denoiser (σ = 0.5)"),
    "pure_noise": ("b1", "1.2.3 Denoising pure noise"),
    "ddpm_time": ("b2_ddpm", "2.1–2.3 Time-conditioned UNet"),
    "ddpm_class": ("b2_ddpm", "2.4–2.5 Class-conditioned UNet with CFG"),
    "fm_time": ("b2_fm", "2.1–2.3 Time-conditioned UNet"),
    "fm_class": ("b2_fm", "2.4–2.6 Class-conditioned UNet with CFG"),
    "fm_class_const": ("b2_fm", "2.6 Getting rid of the LR scheduler"),
}

_PART_B_GROUPS: dict[str, str] = {
    "b1": "1. Single-step denoising UNet",
    "b2_ddpm": "2. Diffusion models: DDPM (fall 2024)",
    "b2_fm": "2. Flow matching (fall 2025)",
    "b_classifier": "Evaluation: the judging classifier",
    "b_other": "Other Part B results",
}

_RUN_SHORT: dict[str, str] = {
    "single_step": "single-step denoiser",
    "pure_noise": "pure-noise denoiser",
    "ddpm_time": "DDPM, time-conditioned",
    "ddpm_class": "DDPM, class-conditioned",
    "fm_time": "flow matching, time-conditioned",
    "fm_class": "flow matching, class-conditioned",
    "fm_class_const": "flow matching, class-conditioned, constant LR",
}

IMAGE_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg", ".webp", ".svg")
_EPOCH_RE = re.compile(r"^(?P<stem>[a-z_]+?)_?epoch(?P<epoch>\d+)$")
_SMALL_IMAGE_PX = 200  # images narrower than this are upscaled (pixelated) for display

# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


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

    def is_empty(self) -> bool:
        """True when neither this section nor any child shows anything."""
        return not self.figures and not self.tables and all(c.is_empty() for c in self.children)


@dataclass(frozen=True)
class StepTiming:
    """One finished Snakemake job, from its metadata records (times in Unix seconds)."""

    rule: str
    outputs: tuple[str, ...]
    start: float
    end: float

    @property
    def duration(self) -> float:
        """Wall-clock seconds from the job's start to its last output's mtime."""
        return max(0.0, self.end - self.start)


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


def _results_root(path: str | os.PathLike[str]) -> str | None:
    """The path prefix before ``partA``/``partB`` (e.g. ``results``), or None."""
    parts = Path(path).as_posix().split("/")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ("partA", "partB"):
            return "/".join(parts[:i])
    return None


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


# --------------------------------------------------------------------------------------------
# Numbers -> tables
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """Format a scalar for a table cell (floats to 4 significant digits)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) <= 12 and all(not isinstance(v, (dict, list, tuple)) for v in value):
            return ", ".join(_fmt(v) for v in value)
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)[:120]
    return str(value)


def _pct(value: Any) -> str:
    """Format a fraction in [0, 1] as a percentage ("–" for None: nothing was scored)."""
    if value is None:
        return "–"
    try:
        return f"{100.0 * float(value):.1f} %"
    except (TypeError, ValueError):
        return _fmt(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list, tuple)) or (
        isinstance(value, (list, tuple))
        and len(value) <= 12
        and all(not isinstance(v, (dict, list, tuple)) for v in value)
    )


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys; lists of scalars stay values."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _row_list(value: Any) -> bool:
    """A list usable as a table column: scalars or flat dicts, at least 2 entries."""
    return (
        isinstance(value, list)
        and len(value) >= 2
        and all(
            (isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values()))
            or not isinstance(v, (dict, list, tuple))
            for v in value
        )
    )


def json_tables(obj: Any, title: str, source: str = "") -> list[Table]:
    """Render any JSON value as tables, generically.

    * dict whose values are all dicts of scalars -> one matrix (rows = outer keys, columns = union
      of inner keys, e.g. PSNR per noise level per method);
    * dict with parallel lists (same length; scalars or flat dicts, e.g. ``timesteps``,
      ``best`` = [{kernel_size, sigma, psnr}, ...], ``noisy_psnr``) -> one row per index, a
      column per list (dict entries spread as ``best.psnr``); a lone list of dicts also counts;
    * the remaining keys -> one key/value table (nested dicts flattened to dotted keys, short
      lists inline, long ones summarised);
    * list of dicts -> one row per element.
    """
    if isinstance(obj, Mapping):
        if obj and all(
            isinstance(v, Mapping) and v and all(_is_scalar(x) for x in v.values())
            for v in obj.values()
        ):
            cols: list[str] = []
            for v in obj.values():
                cols += [str(k) for k in v if str(k) not in cols]
            rows = [[str(k)] + [_fmt(v.get(c, "")) for c in cols] for k, v in obj.items()]
            return [Table(title, [""] + cols, rows, source=source)]
        groups: dict[int, list[str]] = {}
        for key, value in obj.items():
            if _row_list(value):
                groups.setdefault(len(value), []).append(str(key))
        tables: list[Table] = []
        used: set[str] = set()
        for length, keys in groups.items():
            has_dicts = any(isinstance(obj[k][0], Mapping) for k in keys)
            if len(keys) < 2 and not has_dicts:
                continue  # a lone list of scalars reads best inline
            used.update(keys)
            columns: list[tuple[str, str | None]] = []  # (list key, dict field or None)
            for k in keys:
                if isinstance(obj[k][0], Mapping):
                    fields: list[str] = []
                    for entry in obj[k]:
                        fields += [str(f) for f in entry if str(f) not in fields]
                    columns += [(k, f) for f in fields]
                else:
                    columns.append((k, None))
            rows = []
            for i in range(length):
                row = []
                for k, f in columns:
                    v = obj[k][i]
                    row.append(_fmt(v.get(f, "") if f is not None else v))
                rows.append(row)
            header = [k if f is None else f"{k}.{f}" for k, f in columns]
            tables.append(Table(title, header, rows, source=source))
        rest = {k: v for k, v in obj.items() if str(k) not in used}
        if rest or not tables:
            flat = _flatten(rest)
            kv = Table(title, ["key", "value"], [[k, _fmt(v)] for k, v in flat.items()])
            kv.source = source
            tables.insert(0, kv)
            for t in tables[1:]:
                t.title, t.source = "", ""  # same file: one heading above its tables
        return tables
    if isinstance(obj, list) and obj and all(isinstance(v, Mapping) for v in obj):
        flats = [_flatten(v) for v in obj]
        cols = []
        for f in flats:
            cols += [k for k in f if k not in cols]
        rows = [[_fmt(f.get(c, "")) for c in cols] for f in flats]
        return [Table(title, cols, rows, source=source)]
    return [Table(title, ["value"], [[_fmt(obj)]], source=source)]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FundiffError(f"expected number file is missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FundiffError(f"number file {path} is not valid JSON: {exc}") from exc


def loss_table(csv_path: str | os.PathLike[str], title: str = "Training loss") -> Table:
    """Mean loss per epoch from a ``losses.csv`` (columns epoch, step, loss, lr).

    Columns of the result: epoch, steps (number of logged steps), mean loss, last loss, lr (last
    logged in the epoch). Epochs are listed in numeric order.
    """
    p = Path(csv_path)
    if not p.is_file():
        raise FundiffError(f"expected number file is missing: {p}")
    per_epoch: dict[int, list[float]] = {}
    lr_last: dict[int, str] = {}
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"epoch", "loss"} - set(reader.fieldnames or [])
        if missing:
            raise FundiffError(
                f"loss file {p} lacks column(s) {sorted(missing)} (expected epoch,step,loss,lr)"
            )
        for lineno, row in enumerate(reader, start=2):
            try:
                epoch = int(float(row["epoch"]))
                loss = float(row["loss"])
            except (TypeError, ValueError) as exc:
                raise FundiffError(f"loss file {p} line {lineno}: bad number ({exc})") from exc
            per_epoch.setdefault(epoch, []).append(loss)
            if row.get("lr") not in (None, ""):
                lr_last[epoch] = row["lr"]
    rows = []
    for epoch in sorted(per_epoch):
        losses = per_epoch[epoch]
        lr = lr_last.get(epoch, "")
        try:
            lr = _fmt(float(lr)) if lr != "" else ""
        except ValueError:
            pass
        rows.append(
            [str(epoch), str(len(losses)), _fmt(sum(losses) / len(losses)), _fmt(losses[-1]), lr]
        )
    note = "" if rows else "no steps logged"
    return Table(title, ["epoch", "steps", "mean loss", "last loss", "lr"], rows, note, str(p))


def csv_table(csv_path: str | os.PathLike[str], max_rows: int = 50) -> Table:
    """A CSV as a table: ``losses.csv`` (has epoch and loss columns) via :func:`loss_table`,
    anything else verbatim (first ``max_rows`` rows, the rest counted in the note)."""
    p = Path(csv_path)
    if not p.is_file():
        raise FundiffError(f"expected number file is missing: {p}")
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FundiffError(f"number file {p} is not a readable CSV: {exc}") from exc
    header = rows[0] if rows else []
    if {"epoch", "loss"} <= set(header):
        return loss_table(p)
    body = rows[1 : max_rows + 1]
    note = f"{len(rows) - 1 - max_rows} more rows in {p.name}" if len(rows) - 1 > max_rows else ""
    return Table(_pretty(p.stem), header, body, note, str(p))


def _is_eval(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "accuracy" in obj and isinstance(obj.get("per_digit"), dict)


def eval_table(
    evals: Mapping[str, Mapping[str, Any]], title: str, first_col: str = "epoch"
) -> Table:
    """Judged accuracies, one row per key of ``evals`` (e.g. epoch): overall, n, the sampler
    settings when recorded (guidance, sampler_steps), then the accuracy per digit."""
    digits: list[str] = []
    for ev in evals.values():
        digits += [str(d) for d in ev.get("per_digit", {}) if str(d) not in digits]
    digits.sort(key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))
    extras = [k for k in ("guidance", "sampler_steps") if any(k in ev for ev in evals.values())]
    rows = []
    for key, ev in evals.items():
        per = {str(k): v for k, v in ev.get("per_digit", {}).items()}
        rows.append(
            [str(key), _pct(ev.get("accuracy")), _fmt(ev.get("n", ""))]
            + [_fmt(ev.get(k, "")) for k in extras]
            + [_pct(per[d]) if d in per else "" for d in digits]
        )
    return Table(title, [first_col, "accuracy", "n", *extras] + digits, rows)


def confusion_table(ev: Mapping[str, Any], title: str) -> Table | None:
    """The ``confusion`` counts of an eval result (rows requested digit, columns predicted),
    or None when absent or not a square matrix."""
    conf = ev.get("confusion")
    if not (isinstance(conf, list) and conf and all(isinstance(r, list) for r in conf)):
        return None
    k = len(conf)
    if any(len(r) != k for r in conf):
        return None
    rows = [[str(i)] + [str(c) for c in r] for i, r in enumerate(conf)]
    return Table(title, ["requested \\ predicted"] + [str(j) for j in range(k)], rows)


def find_seeds(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """All config entries whose key contains ``seed`` as (dotted key, value), in config order."""
    found: list[tuple[str, Any]] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            name = f"{prefix}{key}"
            if "seed" in str(key).lower() and not isinstance(value, Mapping):
                found.append((name, value))
            else:
                found += find_seeds(value, name + ".")
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            found += find_seeds(value, f"{prefix[:-1]}[{i}].")
    return found


# --------------------------------------------------------------------------------------------
# Snakemake metadata -> runtimes
# --------------------------------------------------------------------------------------------


def _decode_record_name(rel_parts: Sequence[str]) -> str | None:
    """Invert Snakemake's ``FilePersistence._record_path`` (urlsafe base64, '@' chunk dirs)."""
    chunks = [p[1:] if p.startswith("@") else p for p in rel_parts[:-1]] + [rel_parts[-1]]
    b64 = "".join(chunks)
    try:
        return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _dir_prefix(folder: str | os.PathLike[str] | None) -> str | None:
    """``folder`` relative to the current directory, as a posix prefix ending in '/'."""
    if folder is None or str(folder) in ("", "."):
        return None
    path = os.path.relpath(folder) if os.path.isabs(folder) else os.path.normpath(folder)
    return Path(path).as_posix().rstrip("/") + "/"


def read_runtimes(
    metadata_dir: str | os.PathLike[str],
    *,
    under: str | os.PathLike[str] | None = None,
    exclude: str | os.PathLike[str] | None = None,
) -> list[StepTiming]:
    """Finished jobs recorded in Snakemake's ``.snakemake/metadata`` (file persistence).

    Records of the same job (one per output file; same rule, ``job_hash`` and start time) are
    merged. ``under`` keeps only outputs whose path (relative to the current directory) lies
    below that folder, and ``exclude`` drops those below another (e.g. the writeup's own
    folder, whose previous record is stale while it is being rebuilt). Incomplete, corrupt or undecodable records are skipped. Returns jobs
    sorted by start time; an absent folder gives an empty list.
    """
    root = Path(metadata_dir)
    if not root.is_dir():
        return []
    prefix, skip = _dir_prefix(under), _dir_prefix(exclude)
    jobs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for fn in filenames:
            rec_path = Path(dirpath) / fn
            rel = rec_path.relative_to(root).parts
            target = _decode_record_name(rel)
            if target is None:
                continue
            try:
                rec = json.loads(rec_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            start, end, rule = rec.get("starttime"), rec.get("endtime"), rec.get("rule")
            if rec.get("incomplete") or start is None or end is None or not rule:
                continue
            if os.path.isabs(target):
                try:
                    target = os.path.relpath(target)
                except ValueError:
                    pass
            target = Path(target).as_posix()
            if prefix is not None and not target.startswith(prefix):
                continue
            if skip is not None and target.startswith(skip):
                continue
            key = (rule, rec.get("job_hash"), round(float(start), 3))
            job = jobs.setdefault(
                key, {"rule": rule, "outputs": [], "start": float(start), "end": float(end)}
            )
            job["outputs"].append(target)
            job["end"] = max(job["end"], float(end))
    timings = [
        StepTiming(j["rule"], tuple(sorted(j["outputs"])), j["start"], j["end"])
        for j in jobs.values()
    ]
    return sorted(timings, key=lambda t: (t.start, t.rule, t.outputs))


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _fmt_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def runtime_tables(timings: Sequence[StepTiming]) -> list[Table]:
    """Two tables: per rule (jobs, total, mean, max) and per job (rule, output, start, duration)."""
    if not timings:
        return []
    per_rule: dict[str, list[float]] = {}
    for t in timings:
        per_rule.setdefault(t.rule, []).append(t.duration)
    first_start = {r: min(t.start for t in timings if t.rule == r) for r in per_rule}
    rule_rows = [
        [
            rule,
            str(len(d)),
            _fmt_seconds(sum(d)),
            _fmt_seconds(sum(d) / len(d)),
            _fmt_seconds(max(d)),
        ]
        for rule, d in sorted(per_rule.items(), key=lambda kv: first_start[kv[0]])
    ]
    total = sum(t.duration for t in timings)
    rule_rows.append(["all rules", str(len(timings)), _fmt_seconds(total), "", ""])
    job_rows = [
        [
            t.rule,
            t.outputs[0] + (f" (+{len(t.outputs) - 1})" if len(t.outputs) > 1 else ""),
            _fmt_time(t.start),
            _fmt_seconds(t.duration),
        ]
        for t in timings
    ]
    return [
        Table("Runtime per rule", ["rule", "jobs", "total", "mean", "max"], rule_rows),
        Table("Runtime per job", ["rule", "output", "start", "duration"], job_rows),
    ]


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def _pretty(name: str) -> str:
    return name.replace("_", " ").strip()


def _epoch_of(name: str) -> tuple[str, int | None]:
    m = _EPOCH_RE.match(name)
    return (m.group("stem"), int(m.group("epoch"))) if m else (name, None)


def _caption_b(key: ResultKey, accuracy: str | None) -> tuple[str, str]:
    """Caption and caption kind for a Part B figure."""
    run = _RUN_SHORT.get(key.group, _pretty(key.group))
    stem, epoch = _epoch_of(key.name)
    if key.group == "figures" and key.name == "b1_noising":
        return (
            "Noising process: the same digits (rows) at σ = 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0.",
            "b1_noising",
        )
    if key.name == "loss":
        return f"Training loss per step ({run}).", "loss"
    if key.name == "ood":
        return (
            f"Out-of-distribution noise levels ({run}, trained at σ = 0.5): "
            "noisy inputs and denoised outputs of one test digit.",
            "ood",
        )
    if key.name == "trajectory":
        return f"Sampling trajectory from noise to digits ({run}).", "trajectory"
    if stem == "denoise" and epoch is not None:
        return (
            f"Test digits after epoch {epoch} ({run}): clean input, noisy (σ = 0.5), output.",
            "denoise",
        )
    if stem == "outputs" and epoch is not None:
        return f"Outputs for pure-noise inputs after epoch {epoch} ({run}).", "outputs"
    if stem == "samples" and epoch is not None:
        acc = f" Judged accuracy {accuracy}." if accuracy else ""
        return f"Samples after epoch {epoch} ({run}).{acc}", "samples"
    return f"{_pretty(key.name).capitalize()} ({run}).", "other"


def _caption_a(key: ResultKey) -> str:
    task = PART_A_TASKS.get(key.task, _pretty(key.task))
    task = re.sub(r"^[0-9.]+\s+|^Bells & whistles:\s*", "", task)
    backend = _BACKEND_SHORT.get(key.group, key.group)
    return f"{task[:1].upper()}{task[1:]}: {_pretty(key.name)} ({backend})."


# --------------------------------------------------------------------------------------------
# Collect
# --------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _figure_sort_key(key: ResultKey) -> tuple[int, int, str]:
    order = ["b1_noising", "loss", "denoise", "ood", "outputs", "samples", "trajectory"]
    stem, epoch = _epoch_of(key.name)
    rank = order.index(stem) if stem in order else len(order)
    return (rank, epoch if epoch is not None else -1, key.name)


def _display(width: int) -> tuple[int, bool]:
    """Display width and whether to upscale with pixelated rendering (tiny images)."""
    if 0 < width < _SMALL_IMAGE_PX:
        return width * math.ceil(_SMALL_IMAGE_PX / width), True
    return width, False


class _Layout:
    """The section tree (course order) and the routing of result files into it."""

    def __init__(self, backends: set[str]) -> None:
        self.backends = backends
        self.part_a = Section("part-a", "Part A: the power of diffusion models", 2)
        self.part_b = Section("part-b", "Part B: training diffusion models on MNIST", 2)
        self.other = Section("other", "Other results", 2)
        if len(backends) == 1:
            (backend,) = backends
            self.part_a.title += f" ({_BACKEND_SHORT.get(backend, backend)})"
        self.a_tasks: dict[str, Section] = {}
        for task, title in PART_A_TASKS.items():
            self.a_tasks[task] = Section(f"a-{task}", title, 3)
            self.part_a.children.append(self.a_tasks[task])
        self.b_groups = {g: Section(g, t, 3) for g, t in _PART_B_GROUPS.items()}
        self.b_noising = Section("b1-noising", "1.2 Using the UNet to train a denoiser: noising", 4)
        self.b_ood = Section("b1-ood", "1.2.2 Out-of-distribution testing", 4)
        self.b_groups["b1"].children.append(self.b_noising)
        self.b_runs: dict[str, Section] = {}
        for run, (group, title) in PART_B_RUNS.items():
            self.b_runs[run] = Section(f"{group}-{run}", title, 4)
            self.b_groups[group].children.append(self.b_runs[run])
            if run == "single_step":
                self.b_groups["b1"].children.append(self.b_ood)
        self.part_b.children.extend(self.b_groups.values())

    def _a(self, key: ResultKey) -> Section:
        task = self.a_tasks.get(key.task)
        if task is None:  # a task this module does not know yet: shown, never dropped
            task = Section(f"a-{_slug(key.task)}", f"Other: {_pretty(key.task)}", 3)
            self.a_tasks[key.task] = task
            self.part_a.children.append(task)
        if len(self.backends) <= 1:
            return task
        sid = f"{task.id}-{_slug(key.group)}"
        for child in task.children:
            if child.id == sid:
                return child
        child = Section(sid, BACKEND_TITLES.get(key.group, _pretty(key.group)), 4)
        task.children.append(child)
        task.children.sort(key=lambda s: s.title)
        return child

    def _b(self, key: ResultKey) -> Section:
        if key.group == "figures":
            return self.b_noising if key.name == "b1_noising" else self.b_groups["b_other"]
        if key.group == "classifier":
            return self.b_groups["b_classifier"]
        if key.group == "single_step" and key.name == "ood":
            return self.b_ood
        sec = self.b_runs.get(key.group)
        if sec is None:  # an unknown run: its own subsection under "Other Part B results"
            sec = Section(f"b-other-{_slug(key.group)}", _pretty(key.group), 4)
            self.b_runs[key.group] = sec
            self.b_groups["b_other"].children.append(sec)
        return sec

    def section_for(self, key: ResultKey) -> Section:
        """The section a result file belongs to."""
        if key.part == "A":
            return self._a(key)
        if key.part == "B":
            return self._b(key)
        return self.other

    def sections(self) -> list[Section]:
        """Top-level sections with empty ones pruned."""

        def prune(sections: list[Section]) -> list[Section]:
            kept = []
            for s in sections:
                s.children = prune(s.children)
                if not s.is_empty():
                    kept.append(s)
            return kept

        return prune([self.part_a, self.part_b, self.other])


def _validate(fig_paths: Sequence[Path], num_paths: Sequence[Path]) -> tuple[dict, dict]:
    """Check every input; return (figure sizes, parsed numbers) or raise one error naming all."""
    problems: list[str] = []
    sizes: dict[Path, tuple[int, int]] = {}
    for p in fig_paths:
        try:
            sizes[p] = check_image(p)
        except FundiffError as exc:
            problems.append(str(exc))
    parsed: dict[Path, Any] = {}
    for p in num_paths:
        try:
            if p.suffix.lower() == ".json":
                parsed[p] = _read_json(p)
            elif p.suffix.lower() == ".csv":
                parsed[p] = csv_table(p)
            elif not p.is_file():
                raise FundiffError(f"expected number file is missing: {p}")
            else:
                parsed[p] = None  # a data file (e.g. samples .npz): listed, not tabulated
        except FundiffError as exc:
            problems.append(str(exc))
    if problems:
        raise FundiffError(
            f"writeup: {len(problems)} expected input(s) missing or invalid:\n  - "
            + "\n  - ".join(problems)
        )
    hrefs: dict[str, Path] = {}
    for p in fig_paths:
        href = "figures/" + parse_result_path(p).rel
        if href in hrefs and hrefs[href] != p:
            raise FundiffError(f"figures {hrefs[href]} and {p} would both be copied to {href}")
        hrefs[href] = p
    return sizes, parsed


def _add_numbers(
    layout: _Layout, num_paths: Sequence[Path], parsed: Mapping[Path, Any]
) -> dict[str, dict[int, Mapping[str, Any]]]:
    """Put number tables into sections; return the per-run eval results (run -> epoch -> eval)."""
    evals: dict[str, dict[int, Mapping[str, Any]]] = {}
    eval_files: dict[str, list[str]] = {}
    data_files: dict[int, tuple[Section, Table]] = {}
    for p in num_paths:
        k = parse_result_path(p)
        stem, epoch = _epoch_of(k.name)
        obj = parsed[p]
        if k.part == "B" and stem == "eval" and epoch is not None and _is_eval(obj):
            evals.setdefault(k.group, {})[epoch] = obj
            eval_files.setdefault(k.group, []).append(p.as_posix())
            continue
        sec = layout.section_for(k)
        if isinstance(obj, Table):
            if obj.columns[:3] == ["epoch", "steps", "mean loss"]:
                obj.title = f"Mean training loss per epoch ({_RUN_SHORT.get(k.group, k.group)})"
            sec.tables.append(obj)
        elif obj is None:
            _sec, table = data_files.setdefault(
                id(sec), (sec, Table("Data files", ["file", "size"], []))
            )
            table.rows.append([p.as_posix(), _fmt_bytes(p.stat().st_size)])
        elif _is_eval(obj):
            t = eval_table({_pretty(k.name): obj}, f"Judged accuracy: {_pretty(k.name)}", "")
            t.source = p.as_posix()
            sec.tables.append(t)
        else:
            if k.part == "A":
                title = f"{_pretty(k.name)} ({_BACKEND_SHORT.get(k.group, k.group)})"
            elif k.group == "classifier":
                title = f"Classifier: {_pretty(k.name)}"
            else:
                title = _pretty(k.name)
            sec.tables.extend(json_tables(obj, title, p.as_posix()))
    for run, by_epoch in evals.items():
        t = eval_table(
            dict(sorted(by_epoch.items())),
            f"Judged accuracy of samples by the MNIST classifier ({_RUN_SHORT.get(run, run)})",
        )
        t.source = ", ".join(sorted(eval_files[run]))
        sec = layout.section_for(ResultKey("B", run, "", "", ""))
        last = max(by_epoch)
        conf = confusion_table(
            by_epoch[last], f"Confusion of the judged samples after epoch {last} (counts)"
        )
        sec.tables[:0] = [t] + ([conf] if conf else [])
    for sec, table in data_files.values():
        sec.tables.append(table)
    return evals


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _add_figures(
    layout: _Layout,
    fig_paths: Sequence[Path],
    sizes: Mapping[Path, tuple[int, int]],
    evals: Mapping[str, Mapping[int, Mapping[str, Any]]],
) -> None:
    """Put figures into sections in display order, with captions (judged accuracy quoted)."""
    for p in sorted(fig_paths, key=lambda q: _figure_sort_key(parse_result_path(q))):
        k = parse_result_path(p)
        width, height = sizes[p]
        disp, pix = _display(width)
        if k.part == "B":
            _stem, epoch = _epoch_of(k.name)
            ev = evals.get(k.group, {}).get(epoch) if epoch is not None else None
            caption, kind = _caption_b(k, _pct(ev["accuracy"]) if ev else None)
        elif k.part == "A":
            caption, kind = _caption_a(k), k.task
        else:
            caption, kind = f"{_pretty(k.name)}.", "other"
        layout.section_for(k).figures.append(
            FigureEntry(
                source=p.as_posix(),
                href="figures/" + k.rel,
                caption=caption,
                kind=kind,
                width=width,
                height=height,
                display_width=disp,
                pixelated=pix,
                label=_pretty(k.name),
            )
        )


def collect(
    figures: Iterable[str | os.PathLike[str]],
    numbers: Iterable[str | os.PathLike[str]],
    *,
    config: Mapping[str, Any] | None = None,
    metadata_dir: str | os.PathLike[str] | None = None,
    exclude: str | os.PathLike[str] | None = None,
    title: str = "Fun With Diffusion Models: results",
) -> WriteupDoc:
    """Validate inputs and assign every figure and number file to a section.

    Raises FundiffError listing *every* expected figure that is missing or not a valid image
    and every number file that is missing or unreadable (each named by its path). Runtimes are
    read from ``metadata_dir`` (None: no runtimes) for outputs under the results folder of the
    figures, except outputs under ``exclude`` (the writeup's own folder).
    """
    fig_paths = [Path(f) for f in figures]
    num_paths = [Path(n) for n in numbers]
    sizes, parsed = _validate(fig_paths, num_paths)

    backends = {k.group for k in map(parse_result_path, fig_paths + num_paths) if k.part == "A"}
    layout = _Layout(backends)
    evals = _add_numbers(layout, num_paths, parsed)
    _add_figures(layout, fig_paths, sizes, evals)

    config = dict(config or {})
    config_yaml = (
        yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True, width=100).rstrip()
        if config
        else "# (no configuration passed to the writeup)"
    )
    seeds = Table("Seeds", ["config key", "value"], [[k, _fmt(v)] for k, v in find_seeds(config)])
    if not seeds.rows:
        seeds.note = "no key containing 'seed' in the configuration"

    roots = {r for r in (_results_root(p) for p in fig_paths + num_paths) if r is not None}
    under = roots.pop() if len(roots) == 1 else None
    timings = []
    if metadata_dir is not None:
        timings = read_runtimes(metadata_dir, under=under, exclude=exclude)
    run_span = ""
    if timings:
        start = min(t.start for t in timings)
        end = max(t.end for t in timings)
        summed = sum(t.duration for t in timings)
        run_span = (
            f"{len(timings)} jobs between {_fmt_time(start)} and {_fmt_time(end)} "
            f"({_fmt_seconds(end - start)} wall clock, {_fmt_seconds(summed)} summed)"
        )
    return WriteupDoc(
        title=title,
        sections=layout.sections(),
        config_yaml=config_yaml,
        seeds=seeds,
        runtimes=runtime_tables(timings),
        run_span=run_span,
        n_figures=len(fig_paths),
        n_numbers=len(num_paths),
    )


def _plain(obj: Any) -> Any:
    """Convert Snakemake's config containers (and tuples, Paths) to plain YAML-safe types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------------------------
# Render
# --------------------------------------------------------------------------------------------


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_alt(text: Any) -> str:
    """Text safe inside Markdown image alt brackets."""
    return re.sub(r"([\[\]\\])", r"\\\1", _md_cell(text))


def _md_table(t: Table) -> str:
    """A Table as a GitHub-flavoured Markdown block (title line, pipe table, note)."""
    out: list[str] = []
    if t.title:
        src = f" (`{t.source}`)" if t.source else ""
        out += [f"**{_md_cell(t.title)}**{src}", ""]
    if t.rows:
        out.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
        out.append("|" + "|".join(" --- " for _ in t.columns) + "|")
        out += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in t.rows]
        out.append("")
    if t.note:
        out += [f"_{_md_cell(t.note)}_", ""]
    return "\n".join(out)


def _iter_sections(sections: Sequence[Section]) -> Iterable[Section]:
    for s in sections:
        yield s
        yield from _iter_sections(s.children)


def render(doc: WriteupDoc, template_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """Render ``(markdown, html)`` from ``writeup.md.j2`` and ``writeup.html.j2`` in template_dir."""
    tdir = Path(template_dir)
    for name in ("writeup.md.j2", "writeup.html.j2"):
        if not (tdir / name).is_file():
            raise FundiffError(f"writeup template missing: {tdir / name}")
    loader = jinja2.FileSystemLoader(str(tdir))
    common = {"undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
    md_env = jinja2.Environment(loader=loader, autoescape=False, **common)
    md_env.filters["md_cell"] = _md_cell
    md_env.filters["md_table"] = _md_table
    md_env.filters["md_alt"] = _md_alt
    html_env = jinja2.Environment(loader=loader, autoescape=True, **common)
    toc = list(_iter_sections(doc.sections))
    ctx = {"doc": doc, "toc": toc}
    try:
        md = md_env.get_template("writeup.md.j2").render(**ctx)
        html = html_env.get_template("writeup.html.j2").render(**ctx)
    except jinja2.TemplateError as exc:
        raise FundiffError(f"writeup template in {tdir} failed to render: {exc}") from exc
    md = re.sub(r"\n{3,}", "\n\n", md)
    return md.strip() + "\n", html


def build_writeup(
    figures: Iterable[str | os.PathLike[str]],
    numbers: Iterable[str | os.PathLike[str]],
    *,
    out_md: str | os.PathLike[str],
    out_html: str | os.PathLike[str],
    template_dir: str | os.PathLike[str],
    config: Mapping[str, Any] | None = None,
    metadata_dir: str | os.PathLike[str] | None = ".snakemake/metadata",
    title: str = "Fun With Diffusion Models: results",
) -> WriteupDoc:
    """Validate, copy figures into ``<dir of out_html>/figures/``, render and write both files.

    ``out_md`` and ``out_html`` must be in the same folder (their relative figure links are
    shared). The ``figures/`` folder there is owned by the writeup and rebuilt from scratch, so
    figures no longer listed do not linger. Returns the rendered document model.
    """
    out_md, out_html = Path(out_md), Path(out_html)
    if out_md.parent.resolve() != out_html.parent.resolve():
        raise FundiffError(
            f"writeup outputs {out_md} and {out_html} must be in the same folder (shared figures/)"
        )
    figures, numbers = list(figures), list(numbers)
    out_dir = out_html.parent
    doc = collect(
        figures, numbers, config=config, metadata_dir=metadata_dir, exclude=out_dir, title=title
    )
    md, html = render(doc, template_dir)

    fig_dir = out_dir / "figures"
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    for sec in _iter_sections(doc.sections):
        for fig in sec.figures:
            dest = out_dir / fig.href
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig.source, dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_md.write_text(md, encoding="utf-8")
    out_html.write_text(html, encoding="utf-8")
    return doc
