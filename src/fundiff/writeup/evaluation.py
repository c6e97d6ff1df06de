"""The writeup's "Evaluation" section: every judged Part A metric in one table, with its
baseline and 95% interval, plus the SDEdit curve figures (``<item>.curve.png``).

Reads the ``judged`` key of each Part A task's JSON (see :mod:`fundiff.parta_metrics`): a rate is
``{"value", "k", "n", "ci95"}``; a metric not judged here (DeepFloyd photos) is
``{"judged": false, "note"}`` and shows as n/a with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fundiff import tasks
from fundiff.writeup.model import Section, Table, parse_result_path
from fundiff.writeup.tables import fmt, pretty

#: the rate each judged task headlines (key in its ``judged`` numbers) and what it is called
HEADLINE: dict[str, tuple[str, str]] = {
    "inpaint": ("source_class", "read as the source digit"),
    "translate": ("target_class", "read as the target digit"),
    "logo": ("target_class", "read as the target digit"),
    "anagrams": ("success", "both views right"),
    "hybrids": ("success", "both readings right"),
}

COLUMNS = ["task", "backend", "item", "metric", "value", "95% CI", "n", "baseline", "lift"]

INTRO = (
    "Every Part A trick on the local MNIST model is judged by the reference classifier of "
    "Part B (its test accuracy is in Part B) on a batch of results (``judge_samples`` per job; "
    "the figures show the first few). A value is the fraction k/n judged correct, with its 95% "
    "Wilson interval; the baseline is the same criterion on images not made by the trick; "
    "lift = value / baseline. DeepFloyd photos have no digit judge: n/a, never a proxy. "
    "Every judged image set is saved as .npz (``images`` uint8 N x 28 x 28 as judged, "
    "``labels`` the intended digit) in ``<item>_judged/`` next to its figure, to re-judge with "
    "another classifier."
)


def measures_text() -> str:
    """One sentence per judged task, from the registry: what its numbers mean."""
    judged = [t for t in tasks.TASKS.values() if t.judge and t.measures]
    return " ".join(f"{t.title}: {t.measures}." for t in judged)


def _ci(r: Mapping[str, Any] | None) -> str:
    if not r or not r.get("ci95"):
        return ""
    lo, hi = r["ci95"]
    return f"[{lo:.2f}, {hi:.2f}]"


def _rate_cells(r: Mapping[str, Any] | None) -> list[str]:
    """value, interval, n of a rate ("n/a" when not judged)."""
    if not r or r.get("value") is None:
        return ["n/a", "", fmt(r.get("n", 0)) if r else ""]
    return [fmt(r["value"]), _ci(r), f"{r['k']}/{r['n']}"]


def rows_for(task_key: str, backend: str, item: str, numbers: Mapping[str, Any]) -> list[list[str]]:
    """Table rows of one job's ``judged`` numbers (none when the JSON has no ``judged`` key)."""
    j = numbers.get("judged")
    if not isinstance(j, Mapping):
        return []
    title = tasks.get(task_key).title
    head = [title, backend, pretty(item)]
    if j.get("judged") is False:
        return [head + ["n/a", "n/a", "", "0", "", j.get("note", "")]]
    if "keep_source" in j:  # the SDEdit curve: one row per noise level
        return [
            head + [f"keeps source, t/T = {t:.2f}", *_rate_cells(r), "", ""]
            for t, r in zip(j["levels"], j["keep_source"], strict=True)
        ]
    key, label = HEADLINE[task_key]
    base = j.get("baseline")
    row = head + [label, *_rate_cells(j.get(key))]
    row += [fmt(base["value"]) if base else "", fmt(j.get("lift")) if j.get("lift") else ""]
    rows = [row]
    if "mse_outside_mask" in j:
        rows.append(head + ["MSE outside mask", fmt(j["mse_outside_mask"]), "", "", "", ""])
    return rows


#: the backends compared side by side (same tricks, same settings, another model)
COMPARED: tuple[tuple[str, str], ...] = (("local", "DDPM"), ("local_fm", "flow matching"))


def comparison_table(rows: Sequence[Sequence[str]]) -> Table | None:
    """DDPM vs flow matching: one row per (task, item, metric) judged on both local backends,
    each model's value with its interval and its baseline. None unless both were judged."""
    cells: dict[tuple[str, str, str], dict[str, tuple[str, str, str]]] = {}
    for task, backend, item, metric, value, ci, _n, base, _lift in rows:
        cells.setdefault((task, item, metric), {})[backend] = (value, ci, base)
    names = [b for b, _ in COMPARED]
    both = [(key, got) for key, got in cells.items() if all(b in got for b in names)]
    if not both:
        return None
    columns = ["task", "item", "metric"]
    for _, label in COMPARED:
        columns += [label, f"{label} baseline"]
    out = []
    for key, got in both:
        row = list(key)
        for b in names:
            value, ci, base = got[b]
            row += [f"{value} {ci}".strip(), base]
        out.append(row)
    return Table("DDPM vs flow matching: the same tricks on both models", columns, out)


def evaluation_section(parsed: Mapping[Path, Any], curves: Sequence[Any]) -> Section:
    """The Evaluation section: the metric table of every parsed Part A JSON with ``judged``
    numbers (task order of the registry) and the given curve figures (FigureEntry)."""
    order = {t.folder: i for i, t in enumerate(tasks.TASKS.values())}
    rows: list[tuple[tuple[int, str, str], list[list[str]]]] = []
    sources = []
    for path, obj in parsed.items():
        k = parse_result_path(path)
        if k.part != "A" or not isinstance(obj, Mapping) or "judged" not in obj:
            continue
        task = tasks.by_folder(k.task)
        rows.append(((order[k.task], k.group, k.name), rows_for(task.key, k.group, k.name, obj)))
        sources.append(Path(path).as_posix())
    sec = Section("evaluation", "Evaluation: every trick judged", 2)
    sec.text = f"{INTRO} {measures_text()}"
    if rows:
        table_rows = [r for _, group in sorted(rows, key=lambda x: x[0]) for r in group]
        table = Table("Judged Part A metrics", list(COLUMNS), table_rows)
        table.source = ", ".join(sorted(sources))
        sec.tables.append(table)
        compare = comparison_table(table_rows)
        if compare is not None:
            compare.source = table.source
            sec.tables.append(compare)
    sec.figures.extend(curves)
    return sec
