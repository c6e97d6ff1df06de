"""The generated writeup: collect figures and numbers, render ``index.md`` and ``index.html``.

The writeup is one self-contained folder (``index.md``, ``index.html``, ``figures/...``) that
opens from disk with no network: every figure is copied into ``<out_dir>/figures/`` and linked
relatively, the CSS is inline, and there are no scripts or external fonts. A listed figure that
is missing or not a valid image makes the build fail with a :class:`FundiffError` naming it.

Modules, in the order the data flows:

* :mod:`~fundiff.writeup.model`: what was measured (result paths, figures, tables, sections,
  runtimes, the document);
* :mod:`~fundiff.writeup.tables`: numbers (JSON, ``losses.csv``, judged accuracies) as tables;
* :mod:`~fundiff.writeup.runtimes`: the runtime of each Snakemake job (its benchmark file);
* :mod:`~fundiff.writeup.layout`: the section tree in course order, captions, routing;
* :mod:`~fundiff.writeup.collect`: validate the inputs and build the document;
* :mod:`~fundiff.writeup.render`: Markdown + HTML and the self-contained folder.

Typical use (``scripts/build_writeup.py``)::

    build_writeup(figures, numbers, out_md="results/writeup/index.md",
                  out_html="results/writeup/index.html", config=config,
                  template_dir="report",
                  benchmarks={"train_unet": "benchmarks/train_unet/{run}.tsv", ...})
"""

from fundiff.writeup.collect import collect
from fundiff.writeup.layout import BACKEND_TITLES, PART_A_TASKS, PART_B_RUNS
from fundiff.writeup.model import (
    FigureEntry,
    JobRuntime,
    ResultKey,
    Section,
    Table,
    WriteupDoc,
    check_image,
    parse_result_path,
)
from fundiff.writeup.render import build_writeup, render
from fundiff.writeup.runtimes import read_benchmark, read_benchmarks, runtime_tables
from fundiff.writeup.tables import (
    confusion_table,
    csv_table,
    eval_table,
    find_seeds,
    json_tables,
    loss_table,
)

__all__ = [
    "BACKEND_TITLES",
    "PART_A_TASKS",
    "PART_B_RUNS",
    "FigureEntry",
    "JobRuntime",
    "ResultKey",
    "Section",
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
    "read_benchmark",
    "read_benchmarks",
    "render",
    "runtime_tables",
]
