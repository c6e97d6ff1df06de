rule embed_prompt:
    """T5 embedding of one DeepFloyd prompt (T5 loads once for all missing prompts)."""
    output:
        embedding=f"{R}/partA/deepfloyd/prompts/{{prompt}}.safetensors",
    log:
        "logs/embed_prompt/{prompt}.log",
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["sample"]
    resources:
        gpu=res("embed", "gpu"),
        mem_mb=res("embed", "mem_mb"),
        runtime=res("embed", "runtime"),
    params:
        prompt=prompt_text,
        model=config["partA"]["deepfloyd"]["text_encoder"]
        or config["partA"]["deepfloyd"]["stage1"],
        cache=f"{R}/partA/deepfloyd/prompt_cache",
        device=config["device"],
    script:
        "../scripts/embed_prompt.py"


# One rule per Part A deliverable (parta_forward, parta_sdedit, ...), all through the same
# sampler core: a job = (backend, task, item), with only that item's settings and only the
# backend settings its task reads as params. What each task needs is declared in fundiff.tasks.
# A task whose results a backend upsamples (A0 on DeepFloyd) gets a second rule for that
# backend, which also saves every 256 px result as its own PNG.
for task, folder in PARTA_TASKS.items():
    for name, backends, results in parta_variants(task):

        rule:
            name:
                name
            input:
                unpack(parta_inputs(task)),
            output:
                **upsampled_outputs(folder, results),
                png=report(
                    f"{PA}/{folder}/{{item}}.png",
                    caption=f"../report/captions/{folder}.rst",
                    category="Part A",
                    subcategory=folder,
                    labels={"backend": "{backend}", "item": "{item}"},
                ),
                json=f"{PA}/{folder}/{{item}}.json",
            log:
                f"logs/parta/{{backend}}/{folder}/{{item}}.log",
            benchmark:
                f"benchmarks/parta/{{backend}}/{folder}/{{item}}.tsv"
            wildcard_constraints:
                backend="|".join(backends),
            conda:
                "../envs/fundiff.yaml"
            threads: config["threads"]["sample"]
            resources:
                gpu=res("sample", "gpu"),
                mem_mb=res("sample", "mem_mb"),
                runtime=res("sample", "runtime"),
            params:
                **({"results": results} if results else {}),
                task=task,
                backend=backend_params(task),
                settings=task_params(task),
                image=image_spec(task),
            script:
                "../scripts/run_parta_task.py"
