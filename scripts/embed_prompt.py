"""Snakemake adapter: one DeepFloyd prompt's embedding file, from the encoded batch."""

import sys

from fundiff.prompt_embeddings import extract_prompt

sys.stderr = open(snakemake.log[0], "w")
extract_prompt(
    snakemake.input.batch,
    snakemake.params.prompt,
    snakemake.output.embedding,
    identity=snakemake.params.identity,
)
print(f"{snakemake.params.prompt!r}: {snakemake.output.embedding}", file=sys.stderr)
