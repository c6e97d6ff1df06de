# One rule per Part A deliverable (parta_forward, parta_sdedit, ...), all through the same
# sampler core: a job = (backend, task, item), with only that item's settings as params.
for task, folder in PARTA_TASKS.items():

    rule:
        name:
            f"parta_{task}"
        input:
            unpack(parta_inputs(task)),
        output:
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
        conda:
            "../envs/fundiff.yaml"
        threads: config["threads"]["sample"]
        resources:
            gpu=res("sample", "gpu"),
            mem_mb=res("sample", "mem_mb"),
            runtime=res("sample", "runtime"),
        params:
            task=task,
            backend=backend_params,
            settings=task_params(task),
            image=image_spec(task),
        script:
            "../scripts/run_parta_task.py"
