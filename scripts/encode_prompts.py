"""Snakemake adapter: every DeepFloyd prompt's T5 embedding, one encoder load."""

import sys

from fundiff.prompt_embeddings import encode_all
from fundiff.runtime import start_job

sys.stderr = open(snakemake.log[0], "w")
start_job(snakemake.threads)
prompts = list(snakemake.params.prompts)
encoded = encode_all(
    prompts,
    snakemake.output.batch,
    encoder=snakemake.params.encoder,
    cache_dir=snakemake.params.cache,
)
print(
    f"T5 loaded {'once' if encoded else 'not at all'}: encoded {len(encoded)} of "
    f"{len(set(prompts) | {''})} prompts {encoded!r}; the rest came from the cache",
    file=sys.stderr,
)
