"""Snakemake script of rule `writeup`: render results/writeup/index.{md,html} (fundiff.writeup)."""

import sys
from pathlib import Path

from fundiff.errors import FundiffError
from fundiff.writeup import build_writeup

console = sys.stderr
sys.stderr = open(snakemake.log[0], "w")  # the log, for the whole script

try:
    doc = build_writeup(
        snakemake.input.figures,
        snakemake.input.numbers,
        out_md=snakemake.output.md,
        out_html=snakemake.output.html,
        template_dir=Path(snakemake.input.templates[0]).parent,
        config=snakemake.params.config,
        benchmarks=snakemake.params.benchmarks,
        title=snakemake.params.title,
    )
except FundiffError as err:
    for stream in (sys.stderr, console):
        print(f"fundiff writeup failed: {err}", file=stream, flush=True)
    sys.exit(1)
print(
    f"writeup: {doc.n_figures} figures, {doc.n_numbers} number files -> "
    f"{snakemake.output.md}, {snakemake.output.html}",
    file=sys.stderr,
)
