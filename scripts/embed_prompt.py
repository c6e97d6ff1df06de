"""Snakemake adapter: the T5 embedding of one DeepFloyd prompt (shared encoder load)."""

import sys

from fundiff.backends import embed_prompt
from fundiff.config import all_prompts
from fundiff.runtime import set_threads

sys.stderr = open(snakemake.log[0], "w")
set_threads(snakemake.threads)
# every configured prompt, so the one T5 load serves the other embedding jobs too
wanted = all_prompts(snakemake.config["partA"]["deepfloyd"])
ran = embed_prompt(
    snakemake.params.prompt,
    snakemake.output.embedding,
    model=snakemake.params.model,
    wanted=wanted,
    cache_dir=snakemake.params.cache,
    device=snakemake.params.device,
)
print(f"{snakemake.params.prompt!r}: {'encoded' if ran else 'from cache'}", file=sys.stderr)
