"""Snakemake adapter: T5-encode every configured DeepFloyd prompt once."""

import sys

from fundiff import deepfloyd
from fundiff.runtime import set_threads

sys.stderr = open(snakemake.log[0], "w")
set_threads(snakemake.threads)
deepfloyd.preflight(snakemake.params.model)
embeddings = deepfloyd.encode_prompts(
    snakemake.params.model, snakemake.params.prompts, device=snakemake.params.device
)
deepfloyd.save_embeddings(snakemake.output.embeddings, embeddings, model=snakemake.params.model)
print(f"encoded {len(embeddings)} prompts with {snakemake.params.model}", file=sys.stderr)
