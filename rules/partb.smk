rule train_classifier:
    """Reference CNN that judges class-conditional samples (>= 99% on real test digits)."""
    input:
        mnist=rules.mnist.output.npz,
    output:
        model=protected(f"{PB}/classifier/model.safetensors"),
        metrics=f"{PB}/classifier/metrics.json",
    log:
        "logs/train_classifier.log",
    benchmark:
        "benchmarks/train_classifier.tsv"
    priority: 20  # short, and every judged job waits for it
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=res("train", "gpu"),
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    params:
        classifier=config["partB"]["classifier"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_classifier.py"


rule train_unet:
    """One Part B training run; checkpoints every epoch, so a killed job resumes."""
    input:
        mnist=rules.mnist.output.npz,
    output:
        model=f"{PB}/{{run}}/model.safetensors",
        losses=f"{PB}/{{run}}/losses.csv",
        snapshots=directory(f"{PB}/{{run}}/snapshots"),
    log:
        "logs/train_unet/{run}.log",
    benchmark:
        "benchmarks/train_unet/{run}.tsv"
    priority: train_priority
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=res("train", "gpu"),
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
    params:
        spec=run_spec,
        precision=config["partB"]["precision"],
        seed=config["seed"],
        device=config["device"],
        work_dir=f"{PB}/{{run}}/training",
    script:
        "../scripts/train_unet.py"


rule plot_noising_grid:
    """B1.2: the same digits at every sigma."""
    input:
        mnist=rules.mnist.output.npz,
    output:
        png=report(
            f"{PB}/figures/b1_noising.png",
            caption="../report/captions/noising.rst",
            category="Part B",
            subcategory="1.2 Noising",
        ),
    log:
        "logs/plot_noising_grid.log",
    benchmark:
        "benchmarks/plot_noising_grid.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    params:
        sigmas=config["partB"]["noising_sigmas"],
        seed=config["seed"],
    script:
        "../scripts/plot_noising_grid.py"


rule plot_loss_curve:
    """Training loss per step (log y) of one run."""
    input:
        losses=rules.train_unet.output.losses,
    output:
        png=report(
            f"{PB}/{{run}}/loss.png",
            caption="../report/captions/loss.rst",
            category="Part B",
            subcategory="Loss curves",
            labels={"run": "{run}"},
        ),
    log:
        "logs/plot_loss_curve/{run}.log",
    benchmark:
        "benchmarks/plot_loss_curve/{run}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    script:
        "../scripts/plot_loss_curve.py"


rule denoise_test_set:
    """B1.2.1: test digits at sigma 0.5 denoised by the single-step UNet after an epoch."""
    input:
        mnist=rules.mnist.output.npz,
        snapshots=rules.train_unet.output.snapshots,
    output:
        png=report(
            f"{PB}/{{run}}/denoise_epoch{{epoch}}.png",
            caption="../report/captions/denoise.rst",
            category="Part B",
            subcategory="1.2 Single-step denoiser",
            labels={"run": "{run}", "epoch": "{epoch}"},
        ),
    log:
        "logs/denoise_test_set/{run}_{epoch}.log",
    benchmark:
        "benchmarks/denoise_test_set/{run}_{epoch}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    params:
        spec=run_spec,
        seed=config["seed"],
    script:
        "../scripts/denoise_test_set.py"


rule denoise_ood:
    """B1.2.2: one test digit at every sigma, denoised by the model trained at sigma 0.5."""
    input:
        mnist=rules.mnist.output.npz,
        model=rules.train_unet.output.model,
    output:
        png=report(
            f"{PB}/{{run}}/ood.png",
            caption="../report/captions/ood.rst",
            category="Part B",
            subcategory="1.2 Single-step denoiser",
            labels={"run": "{run}", "epoch": "final"},
        ),
    log:
        "logs/denoise_ood/{run}.log",
    benchmark:
        "benchmarks/denoise_ood/{run}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    params:
        sigmas=config["partB"]["noising_sigmas"],
        seed=config["seed"],
    script:
        "../scripts/denoise_ood.py"


rule pure_noise_outputs:
    """B1.2.3: what a denoiser trained on pure noise outputs, beside the training-set mean."""
    input:
        mnist=rules.mnist.output.npz,
        snapshots=rules.train_unet.output.snapshots,
    output:
        png=report(
            f"{PB}/{{run}}/outputs_epoch{{epoch}}.png",
            caption="../report/captions/pure_noise.rst",
            category="Part B",
            subcategory="1.2.3 Denoising pure noise",
            labels={"run": "{run}", "epoch": "{epoch}"},
        ),
    log:
        "logs/pure_noise_outputs/{run}_{epoch}.log",
    benchmark:
        "benchmarks/pure_noise_outputs/{run}_{epoch}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    params:
        seed=config["seed"],
    script:
        "../scripts/pure_noise_outputs.py"


rule sample_grid:
    """4 x 10 samples of a time- or class-conditioned model after an epoch (+ .npz)."""
    input:
        snapshots=rules.train_unet.output.snapshots,
    output:
        png=report(
            f"{PB}/{{run}}/samples_epoch{{epoch}}.png",
            caption="../report/captions/samples.rst",
            category="Part B",
            subcategory="2 Samples",
            labels={"run": "{run}", "epoch": "{epoch}"},
        ),
        npz=f"{PB}/{{run}}/samples_epoch{{epoch}}.npz",
    log:
        "logs/sample_grid/{run}_{epoch}.log",
    benchmark:
        "benchmarks/sample_grid/{run}_{epoch}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["sample"]
    resources:
        gpu=res("sample", "gpu"),
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
    params:
        spec=run_spec,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/sample_grid.py"


rule sampling_gif:
    """Animated sampling trajectory of the final model."""
    input:
        model=rules.train_unet.output.model,
    output:
        gif=report(
            f"{PB}/{{run}}/trajectory.gif",
            caption="../report/captions/trajectory.rst",
            category="Part B",
            subcategory="2 Sampling GIFs",
            labels={"run": "{run}"},
        ),
    log:
        "logs/sampling_gif/{run}.log",
    benchmark:
        "benchmarks/sampling_gif/{run}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["sample"]
    params:
        spec=run_spec,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/sampling_gif.py"


rule evaluate_samples:
    """Judge class-conditional samples after an epoch: accuracy with its Wilson interval and
    the Frechet distance to real test digits (JSON), plus the judged sets as .npz."""
    input:
        mnist=rules.mnist.output.npz,
        snapshots=rules.train_unet.output.snapshots,
        judge=rules.train_classifier.output.model,
    output:
        json=f"{PB}/{{run}}/eval_epoch{{epoch}}.json",
        accuracy=f"{PB}/{{run}}/judged/{{run}}__epoch{{epoch}}__accuracy.npz",
        fd=f"{PB}/{{run}}/judged/{{run}}__epoch{{epoch}}__fd.npz",
    log:
        "logs/evaluate_samples/{run}_{epoch}.log",
    benchmark:
        "benchmarks/evaluate_samples/{run}_{epoch}.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["sample"]
    resources:
        gpu=res("sample", "gpu"),
        mem_mb=res("sample", "mem_mb"),
        runtime=res("sample", "runtime"),
    params:
        spec=run_spec,
        evaluation=config["partB"]["evaluation"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/evaluate_samples.py"
