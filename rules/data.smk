rule mnist:
    """MNIST as one verified .npz (uint8 28x28, 60k/10k), from the first source that works."""
    output:
        npz=f"{R}/data/mnist.npz",
    log:
        "logs/mnist.log",
    benchmark:
        "benchmarks/mnist.tsv"
    conda:
        "../envs/fundiff.yaml"
    threads: config["threads"]["light"]
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        mnist=config["data"]["mnist"],
    script:
        "../scripts/fetch_mnist.py"
