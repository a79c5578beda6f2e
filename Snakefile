# plmscale: compute-optimal scaling studies of protein language models.
# FASTA in -> MMseqs2 clusters -> token shards -> one training job per grid point -> scaling laws.
# The stages live in rules/, their logic in the plmscale package; see README.md.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a study config is named (--configfile): merging the demo's tiny ladder
# into the paper's study would add runs nobody asked for.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/preprocess.smk"
include: "rules/cluster.smk"
include: "rules/shards.smk"
include: "rules/identity.smk"
include: "rules/train.smk"
include: "rules/scaling.smk"
include: "rules/design.smk"
include: "rules/closed_loop.smk"
include: "rules/repetition.smk"
include: "rules/mixed.smk"
include: "rules/transfer.smk"
include: "rules/export.smk"
include: "rules/generation.smk"
include: "rules/cross_check.smk"


rule all:
    input:
        all_targets(),
