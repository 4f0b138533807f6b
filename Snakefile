# cellembed: raw multichannel fluorescence microscopy -> learned single-cell features ->
# metrics and an HTML report. Stages, in data-flow order, one file each under rules/.
from snakemake.utils import min_version

min_version("9.27")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/cluster.smk"
include: "rules/acquire.smk"
include: "rules/segment.smk"
include: "rules/filter.smk"
include: "rules/tile.smk"
include: "rules/train.smk"
include: "rules/features.smk"
include: "rules/metrics.smk"
include: "rules/profiles.smk"
include: "rules/report.smk"
include: "rules/explorer.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
