"""Measured numbers as tables: generic JSON, ``losses.csv`` (mean loss per epoch), judged
accuracies and confusion matrices, seeds of the configuration; plus the cell formatting."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fundiff.errors import FundiffError
from fundiff.writeup.model import Table


def fmt(value: Any) -> str:
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
            return ", ".join(fmt(v) for v in value)
        return f"[{len(value)} values]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)[:120]
    return str(value)


def pct(value: Any) -> str:
    """Format a fraction in [0, 1] as a percentage ("–" for None: nothing was scored)."""
    if value is None:
        return "–"
    try:
        return f"{100.0 * float(value):.1f} %"
    except (TypeError, ValueError):
        return fmt(value)


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
            rows = [[str(k)] + [fmt(v.get(c, "")) for c in cols] for k, v in obj.items()]
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
                    row.append(fmt(v.get(f, "") if f is not None else v))
                rows.append(row)
            header = [k if f is None else f"{k}.{f}" for k, f in columns]
            tables.append(Table(title, header, rows, source=source))
        rest = {k: v for k, v in obj.items() if str(k) not in used}
        if rest or not tables:
            flat = _flatten(rest)
            kv = Table(title, ["key", "value"], [[k, fmt(v)] for k, v in flat.items()])
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
        rows = [[fmt(f.get(c, "")) for c in cols] for f in flats]
        return [Table(title, cols, rows, source=source)]
    return [Table(title, ["value"], [[fmt(obj)]], source=source)]


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FundiffError(f"expected number file is missing: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FundiffError(f"number file {path} is not valid JSON: {exc}") from exc


#: The columns of a training run's ``losses.csv`` (one row per logged step).
LOSS_COLUMNS = ("epoch", "step", "loss", "lr")


def loss_table(csv_path: str | os.PathLike[str], title: str = "Training loss") -> Table:
    """Mean loss per epoch from a ``losses.csv`` (columns epoch, step, loss, lr), read by
    :func:`fundiff.storage.read_losses` (the one reader of that format).

    Columns of the result: epoch, steps (number of logged steps), mean loss, last loss, lr (last
    logged in the epoch). Epochs are listed in numeric order. A missing column or a row that is
    not numbers raises FundiffError naming the file.
    """
    from fundiff.storage import read_losses  # imports torch: only when a loss file is shown

    p = Path(csv_path)
    if not p.is_file():
        raise FundiffError(f"expected number file is missing: {p}")
    try:
        steps = read_losses(p)  # names the file (and line) of a missing column or bad number
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FundiffError(f"loss file {p} is not a CSV of numbers: {exc}") from exc
    per_epoch: dict[int, list[Mapping[str, float]]] = {}
    for step in steps:
        per_epoch.setdefault(int(step["epoch"]), []).append(step)
    rows = []
    for epoch in sorted(per_epoch):
        losses = [float(s["loss"]) for s in per_epoch[epoch]]
        last = per_epoch[epoch][-1]
        rows.append(
            [
                str(epoch),
                str(len(losses)),
                fmt(sum(losses) / len(losses)),
                fmt(losses[-1]),
                fmt(float(last["lr"])),
            ]
        )
    note = "" if rows else "no steps logged"
    return Table(title, ["epoch", "steps", "mean loss", "last loss", "lr"], rows, note, str(p))


def csv_table(csv_path: str | os.PathLike[str], max_rows: int = 50) -> Table:
    """A CSV as a table: ``losses.csv`` (has the :data:`LOSS_COLUMNS`) via :func:`loss_table`,
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
    if set(LOSS_COLUMNS) <= set(header):
        return loss_table(p)
    body = rows[1 : max_rows + 1]
    note = f"{len(rows) - 1 - max_rows} more rows in {p.name}" if len(rows) - 1 > max_rows else ""
    return Table(pretty(p.stem), header, body, note, str(p))


def is_eval(obj: Any) -> bool:
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
            [str(key), pct(ev.get("accuracy")), fmt(ev.get("n", ""))]
            + [fmt(ev.get(k, "")) for k in extras]
            + [pct(per[d]) if d in per else "" for d in digits]
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


def fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def pretty(name: str) -> str:
    return name.replace("_", " ").strip()
