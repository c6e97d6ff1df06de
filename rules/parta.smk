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
                **judged_outputs(task, folder),
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
