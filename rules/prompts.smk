# DeepFloyd prompt embeddings: T5 runs in ONE job (encode_prompts) for every prompt missing
# from the cache; each prompt then gets its own small file (embed_prompt, no model), so editing
# one prompt encodes only that prompt and reruns only the figures that use it.


include: "prompts_common.smk"


localrules:
    embed_prompt,


rule encode_prompts:
    """T5 embeddings of every DeepFloyd prompt, one encoder load (cached prompts are free)."""
    output:
        batch=PROMPT_BATCH,
    log:
        "logs/encode_prompts.log",
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["sample"]
    resources:
        gpu=encoder_gpus,
        mem_mb=res("embed", "mem_mb"),
        runtime=res("embed", "runtime"),
    params:
        prompts=lambda wildcards: all_prompts(config["partA"]["deepfloyd"]),
        encoder=lambda wildcards: text_encoder(),
        identity=lambda wildcards: identity(),
        cache=f"{R}/partA/deepfloyd/prompt_cache",
    script:
        "../scripts/encode_prompts.py"


rule embed_prompt:
    """One prompt's embedding file, taken from the batch (no model; runs locally)."""
    input:
        batch=batch_input,
    output:
        embedding=f"{R}/partA/deepfloyd/prompts/{{prompt}}.safetensors",
    log:
        "logs/embed_prompt/{prompt}.log",
    conda:
        "../envs/fundiff.yaml"
    threads: 1
    params:
        prompt=prompt_text,
        identity=lambda wildcards: identity(),
    script:
        "../scripts/embed_prompt.py"
