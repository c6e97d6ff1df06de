rule writeup:
    """The generated writeup: one folder (index.md, index.html, figures/) that opens offline.

    Fails, naming the file, if an expected figure is missing or not a valid image.
    """
    input:
        figures=all_figures(),
        numbers=all_numbers(),
        templates=[
            f"{workflow.basedir}/report/writeup.md.j2",
            f"{workflow.basedir}/report/writeup.html.j2",
        ],
    output:
        md=f"{R}/writeup/index.md",
        html=f"{R}/writeup/index.html",
    log:
        "logs/writeup.log",
    localrule: True
    conda:
        "../envs/fundiff.yaml"
    params:
        # The writeup prints the whole configuration (and its seeds), so any change reruns it.
        config=config,
        title="Fun With Diffusion Models: results",
        benchmarks=benchmark_patterns,
    script:
        "../scripts/build_writeup.py"
