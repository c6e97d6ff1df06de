# fundiff: the "Fun With Diffusion Models" experiments (CS180 project 5) as one workflow.
#
#   snakemake --cores 2                                 # default: offline, CPU, local backend
#   snakemake --cores 2 --configfile configs/ci.yaml    # tiny end-to-end run (tests)
#   snakemake --report results/report.zip               # Snakemake report of the last run


import sys

from snakemake.utils import min_version

from fundiff.configfiles import check_workdir
from fundiff.errors import FundiffError

min_version("9.0")

try:  # config.yaml, inputs/ and results/ are relative to this directory
    check_workdir(workflow.basedir)
except FundiffError as err:
    sys.exit(f"fundiff: {err}")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/partb.smk"
include: "rules/prompts.smk"
include: "rules/parta.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
