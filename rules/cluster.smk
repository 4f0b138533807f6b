# Job sizing for a cluster (the SLURM profile, profiles/slurm), bound to this run's datasets:
# memory and time of per-shard jobs grow with the shard's pixels and with each retry
# (workflow_scripts.cluster). Resource names follow the SLURM executor plugin.
from workflow_scripts import cluster as cluster_lib


def shard_megapixels(wildcards):
    """Millions of pixel values (fields x height x width x channels) in one shard."""
    return cluster_lib.shard_megapixels(
        DATASETS[wildcards.dataset],
        wildcards.shard,
        config["crop"]["resize_to"],
        lambda: len(_index_table(wildcards.dataset)),
    )


def shard_mem_mb(base_mb, mb_per_megapixel):
    """Memory of a per-shard job: a base plus so much per megapixel of the shard."""
    return lambda wildcards, attempt: cluster_lib.scaled_by_pixels(
        base_mb, mb_per_megapixel, shard_megapixels(wildcards), attempt
    )


def shard_runtime(base_minutes, seconds_per_megapixel):
    """Wall time (minutes) of a per-shard job: a base plus so long per megapixel."""
    return lambda wildcards, attempt: cluster_lib.scaled_by_pixels(
        base_minutes, seconds_per_megapixel, shard_megapixels(wildcards), attempt, 60
    )


def threads_up_to(n):
    """``threads:`` of a multi-threaded rule: ``n``, but 1 on a machine of fewer than 4 cores
    (cluster_lib.threads_for_cores); without --cores (a cluster run) ``n``."""

    def threads(wildcards):
        try:
            cores = workflow.cores
        except WorkflowError:
            cores = None
        return cluster_lib.threads_for_cores(n, cores)

    return threads


def retry_scaled(value):
    """A resource that is ``value`` on the first attempt, twice that on the second, ..."""
    return lambda wildcards, attempt: value * attempt


# Rules generated per model take the --set-resources given for their family name. Snakemake
# keeps the parsed --set-resources in a private attribute, the only place they can be extended
# before the rules are defined; tests/test_structure.py fails if it disappears.
_given_resources = getattr(
    workflow.resource_settings, "_parsed_overwrite_resources", None
)
cluster_lib.share_family_resources(
    _given_resources, "extract_features", [f"extract_features_{m}" for m in MODELS]
)
cluster_lib.share_family_resources(
    _given_resources, "evaluate", [f"evaluate_{name}" for name in evaluated_layers()]
)
