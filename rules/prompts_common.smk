"""Config checks and input/param functions of rules/prompts.smk (DeepFloyd prompt embeddings)."""

from fundiff.if_settings import (
    check_settings,
    encoder_identity,
    encoder_uses_gpu,
    text_encoder_settings,
)
from fundiff.prompt_embeddings import is_current

try:
    check_settings(config)
except FundiffError as err:
    sys.exit(f"fundiff: invalid configuration: {err}")

PROMPT_BATCH = f"{R}/partA/deepfloyd/prompt_batch.safetensors"


def text_encoder():
    return text_encoder_settings(config["partA"]["deepfloyd"], config["device"])


def identity(_memo={}):
    """The encoder identity (hashes a local folder's T5 files: once per parse)."""
    if "id" not in _memo:
        _memo["id"] = encoder_identity(text_encoder())
    return _memo["id"]


def batch_input(wildcards):
    """The batch, as ancient() for a prompt file that exists and is current.

    A new batch (another prompt edited) then does not rewrite this prompt's file, so its
    figures do not rerun. Only current files get ancient(): Snakemake 9 drops a job whose
    inputs are all ancient() and downstream of a rerun job even when its output is missing.
    """
    own = f"{R}/partA/deepfloyd/prompts/{wildcards.prompt}.safetensors"
    return ancient(PROMPT_BATCH) if is_current(own, identity()) else PROMPT_BATCH


def encoder_gpus(wildcards):
    """GPUs of the encoding job: none when T5 is set to run on the CPU."""
    return res("embed", "gpu") if encoder_uses_gpu(text_encoder()) else 0
