"""The SLURM profile end to end, through a real single-node SLURM cluster (tests/slurm/setup.sh):
`snakemake --profile slurm all` submits with sbatch, and SLURM's own accounting (sacct) says
where each job ran. Needs root on Debian (the cluster is installed and started on demand); with
CELLEMBED_REQUIRE_SLURM=1 (CI) a cluster that cannot be started fails the tests instead of
skipping them."""

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SETUP = REPO / "tests" / "slurm" / "setup.sh"
STOP = REPO / "tests" / "slurm" / "stop.sh"
FAST_POLL = REPO / "tests" / "slurm" / "fast_poll.py"
REQUIRE = os.environ.get("CELLEMBED_REQUIRE_SLURM") == "1"

#: Rules that run on the submitting machine (localrules), never through sbatch.
LOCAL_RULES = {"all", "summarize_metrics", "segmentation_overlay", "segmentation_qc", "download_manifest", "acquire_hpa", "acquire_bbbc"}
#: Grouped per-shard rules: several shards per SLURM job (group-components in the profile).
GROUP_OF = {"synthesize_fields": "acquire_shards", "load_fields": "acquire_shards", "load_crops": "acquire_shards",
            "segment_and_crop": "segment_shards", "tile_fields": "tile_shards"}
GROUPS = tuple(sorted(set(GROUP_OF.values())))

pytestmark = pytest.mark.slow


def _unavailable(reason):
    if REQUIRE:
        pytest.fail(f"CELLEMBED_REQUIRE_SLURM=1 but the test SLURM cluster is unavailable: {reason}")
    pytest.skip(f"no test SLURM cluster: {reason}")


def _controller_up():
    if not shutil.which("scontrol"):
        return False
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "is UP" in proc.stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the cluster (tests/slurm/setup.sh is idempotent); stop it afterwards only if this
    fixture started it."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (requirements.txt)")
    was_up = _controller_up()
    if os.geteuid() != 0:
        if not was_up:  # a cluster started beforehand (sudo tests/slurm/setup.sh) is used as it is
            _unavailable("tests/slurm/setup.sh needs root (or run it with sudo before the tests)")
    elif not (shutil.which("apt-get") and shutil.which("dpkg-query")):
        _unavailable("tests/slurm/setup.sh needs Debian's apt-get and dpkg")
    else:
        proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            _unavailable(f"tests/slurm/setup.sh failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    yield
    if not was_up:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=300)


def slurm_snakemake(workdir, *args, check=True):
    """`snakemake --profile slurm ...` from the repository root (the `slurm` symlink there is the
    profile), working in `workdir`, checking job states every 1-2 s instead of every 10-180 s
    (tests/slurm/fast_poll.py)."""
    cmd = [sys.executable, str(FAST_POLL), "--profile", "slurm", "--directory", str(workdir),
           "--slurm-logdir", str(workdir / "logs" / "slurm"),
           "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-12000:]}")
    return proc


def run_id(proc):
    """The SLURM job name of every job of one Snakemake run."""
    match = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr)
    assert match, "no SLURM run ID in the output:\n" + proc.stderr[-4000:]
    return match.group(1)


def sacct(*args):
    """sacct rows (one per job, not per step) as a DataFrame."""
    fields = "JobID,JobName%80,Comment%200,Partition,AllocTRES%200,State"
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-o", fields, *args], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    return pd.DataFrame(rows, columns=fields.replace("%80", "").replace("%200", "").split(","))


def run_jobs(name):
    """The jobs of one run (sacct --name), with the rule (or group) each ran: the plugin puts
    `rule_<rule>_wildcards_<wildcards>` (`rule_<group>_<rules>` for a group) in the comment."""
    # Job state reaches the accounting database about a second after the job ends.
    deadline = time.time() + 30
    while True:
        jobs = sacct("--name", name, "-S", "now-1days")
        if (not jobs.empty and jobs["State"].isin(["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"]).all()) \
                or time.time() > deadline:
            break
        time.sleep(1)

    def rule(comment):
        body = comment.removeprefix("rule_")
        group = next((g for g in GROUPS if body.startswith(g + "_")), None)
        return group or body.split("_wildcards_")[0]

    jobs["rule"] = jobs["Comment"].map(rule)
    jobs["wildcards"] = jobs["Comment"].str.partition("_wildcards_")[2]
    return jobs


def all_job_ids():
    """Every job the accounting database holds (to check that nothing was submitted)."""
    return set(sacct("-a", "-S", "2000-01-01")["JobID"])


def planned_jobs(proc):
    """Rule -> count from the job-stats table of a (dry) run."""
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:")[1] if "Job stats:" in text else ""
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    counts.pop("total", None)
    return counts


def slurm_jobs_planned(proc):
    """SLURM jobs a dry run with the SLURM profile stands for: one per group job, one per job
    outside groups, none for local rules. Returns (total, group jobs by group)."""
    text = proc.stdout + proc.stderr
    groups = re.findall(r"^\[[^\]]*\] Group job (\w+) ", text, flags=re.M)
    single = [r for r in re.findall(r"^rule (\w+):", text, flags=re.M) if r not in LOCAL_RULES]
    by_group = {g: groups.count(g) for g in set(groups)}
    return len(groups) + len(single), by_group


def is_gpu_rule(rule):
    return rule == "train_model" or rule.startswith("extract_features_")


def slurm_config():
    """The tiny dataset (8 fields, 2 shards), two small models, the raw-pixel baseline only and
    light metrics: every stage, as few and as short jobs as possible (status polling dominates)."""
    config = yaml.safe_load(TINY.read_text())
    small = {"latent_dim": 8, "width": 8, "depth": 3, "epochs": 1, "batch_size": 32}
    config["models"] = {"vae": {"family": "vae", **small}, "ae": {"family": "ae", **small}}
    config["baselines"] = {"handcrafted": False, "random_cnn": False, "cell_count": False}
    config["metrics"].update(mlp=False, mi=False)
    config["profiles"] = {"h5ad": False}
    return config


def slurm_jobs_expected(planned):
    """Rule (or group) -> SLURM jobs, from a dry run's per-rule job counts: local rules submit
    nothing, grouped per-shard rules one job per 50 shards (group-components), others one each."""
    expected = Counter()
    for rule, count in planned.items():
        if rule in LOCAL_RULES:
            continue
        group = GROUP_OF.get(rule)
        if group:
            expected[group] += -(-count // 50)
        else:
            expected[rule] += count
    return expected


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """One complete `snakemake --profile slurm all` of the small config, through sbatch, and
    the dry run before it."""
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "config.yaml").write_text(yaml.safe_dump(slurm_config()))
    planned = planned_jobs(slurm_snakemake(workdir, "-n", "all"))
    start = time.time()
    proc = slurm_snakemake(workdir, "all")
    print(f"SLURM run of the small config: {time.time() - start:.0f} s")
    return workdir, proc, planned


def test_all_through_slurm_gpu_rules_on_gpu_partition(slurm_run):
    workdir, proc, planned = slurm_run
    res = workdir / "results" / "tiny"
    summary = pd.read_csv(res / "metrics" / "summary.csv")
    assert set(summary["model"]) == {"pca", "vae", "ae"}
    assert (res / "embeddings" / "best_umap.png").stat().st_size > 1000

    jobs = run_jobs(run_id(proc))
    print(jobs.drop(columns=["JobName"]).to_string())
    assert (jobs["State"] == "COMPLETED").all(), jobs
    # Every planned job went through SLURM except the local rules; each shard stage (2 shards)
    # as one grouped job.
    submitted = Counter(jobs["rule"])
    assert submitted == slurm_jobs_expected(planned)
    assert planned["synthesize_fields"] == planned["segment_and_crop"] == 2
    assert submitted["acquire_shards"] == submitted["segment_shards"] == 1
    assert submitted["train_model"] == 2 and submitted["extract_features_vae"] == submitted["extract_features_ae"] == 1
    assert not set(submitted) & LOCAL_RULES and {"summarize_metrics", "segmentation_overlay"} <= set(planned)
    # SLURM's accounting: training and feature extraction in the GPU partition with one GPU
    # allocated, everything else in the CPU partition without one.
    gpu = jobs[jobs["rule"].map(is_gpu_rule)]
    cpu = jobs[~jobs["rule"].map(is_gpu_rule)]
    assert len(gpu) == 4
    assert (gpu["Partition"] == "gpu").all() and gpu["AllocTRES"].str.contains("gres/gpu=1").all(), gpu
    assert (cpu["Partition"] == "cpu").all() and not cpu["AllocTRES"].str.contains("gres/gpu").any(), cpu
    # The profile's memory for the GPU rules (16 GB), the rules' own for the others.
    assert gpu["AllocTRES"].str.contains("mem=16000M").all(), gpu
    assert cpu.loc[cpu["rule"] == "filter_cells", "AllocTRES"].str.contains("mem=2000M").all()


def test_complete_run_submits_nothing(slurm_run):
    workdir = slurm_run[0]
    before = all_job_ids()
    proc = slurm_snakemake(workdir, "all")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert all_job_ids() == before


def changed_config(workdir):
    """A second config file changing one training hyperparameter of one model (ae)."""
    config = slurm_config()
    config["models"]["ae"]["lr"] = 0.0005
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def downstream_of_ae_training(workdir):
    """Rule -> jobs of ae's training and everything that depends on it, as Snakemake's DAG has
    them (a dry run forcing that one job)."""
    weights = "results/tiny/models/ae/weights.safetensors"
    closure = planned_jobs(slurm_snakemake(workdir, "-n", "all", "--forcerun", weights))
    assert closure["train_model"] == 1 and "extract_features_ae" in closure
    for rule in ("extract_features_vae", "evaluate_vae", "evaluate_baselines", "pca_features", "pixel_space",
                 "filter_cells", "synthesize_fields", "segment_and_crop"):
        assert rule not in closure, rule  # the other model, the baseline and everything upstream
    return closure


def test_dry_run_submits_nothing(slurm_run):
    """`-n` with work to do (a changed hyperparameter): lists the jobs, submits none."""
    workdir = slurm_run[0]
    before = all_job_ids()
    proc = slurm_snakemake(workdir, "-n", "all", "--configfile", str(changed_config(workdir)))
    assert planned_jobs(proc) == downstream_of_ae_training(workdir)
    assert "SLURM run ID" not in proc.stdout + proc.stderr
    time.sleep(2)  # a submitted job would be in accounting by now
    assert all_job_ids() == before


def test_hyperparameter_change_resubmits_only_training_and_downstream(slurm_run):
    workdir = slurm_run[0]
    expected = slurm_jobs_expected(downstream_of_ae_training(workdir))
    start = time.time()
    proc = slurm_snakemake(workdir, "all", "--configfile", str(changed_config(workdir)))
    print(f"SLURM rerun after the hyperparameter change: {time.time() - start:.0f} s")
    jobs = run_jobs(run_id(proc))
    print(jobs.drop(columns=["JobName"]).to_string())
    assert (jobs["State"] == "COMPLETED").all(), jobs
    assert Counter(jobs["rule"]) == expected
    assert jobs.loc[jobs["rule"] == "train_model", "wildcards"].tolist() == ["tiny_ae"]
    assert not jobs["rule"].str.contains("vae").any() and not jobs["wildcards"].str.contains("vae").any()
    gpu = jobs[jobs["rule"].map(is_gpu_rule)]
    assert sorted(gpu["rule"]) == ["extract_features_ae", "train_model"]
    assert (gpu["Partition"] == "gpu").all() and gpu["AllocTRES"].str.contains("gres/gpu=1").all()


def test_literal_command_from_repository_root():
    """`snakemake --profile slurm -n all`, exactly as README gives it: the `slurm` symlink at
    the root is found. A dry run submits nothing and needs no running cluster."""
    assert (REPO / "slurm").is_symlink() and os.readlink(REPO / "slurm") == "profiles/slurm"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (requirements.txt)")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "all"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    assert "Using profiles slurm and workflow specific profile" in proc.stderr
    text = proc.stdout + proc.stderr
    assert "Nothing to be done" in text or "This was a dry-run" in text


def test_ten_thousand_fields_are_under_500_slurm_jobs(tmp_path):
    """The job count README states for a 10,000-image dataset, from a dry run."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (requirements.txt)")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    (name, dataset), = config["datasets"].items()
    dataset["n_fields"] = 10_000
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = slurm_snakemake(tmp_path, "-n", "all")
    assert planned_jobs(proc)["segment_and_crop"] == 625  # 10,000 fields / 16 per shard
    total, by_group = slurm_jobs_planned(proc)
    assert by_group == {"acquire_shards": 13, "segment_shards": 13}  # 625 shards / 50 per job
    assert total < 500
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Running on a SLURM cluster")[1].split("\n## ")[0]
    assert f"{total} SLURM jobs" in section, f"README's SLURM section should state {total} SLURM jobs"
