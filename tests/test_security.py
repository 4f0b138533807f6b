"""Let nothing in: no code execution from data (pickles, YAML tags, shell strings), no names that
reach outside their folder. Crafted checkpoints, zip-slip archives, ``../`` manifest paths and
non-http URLs are tested where they are handled (test_train, test_download); this file checks
the names and the code paths that untrusted values could reach."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.test_workflow import REPO, snakemake
from workflow_scripts.config_check import config_errors
from workflow_scripts.datasets import SHARD_PATTERN

SCHEMA = REPO / "schemas" / "config.schema.yaml"
HOSTILE = ["../up", "a/b", "x;rm -rf ~", "$(id)", "`id`", "a b", "name|cat", "..", "-rf", "é"]
PYTHON = [p for p in (REPO / "workflow_scripts").rglob("*.py")] + list((REPO / "benchmarks").glob("*.py"))
RULES = [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]


def wildcard_constraints() -> dict[str, str]:
    text = (REPO / "rules" / "common.smk").read_text()
    block = text.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    found = dict(re.findall(r'^\s+(\w+)="([^"]+)"', block, flags=re.M))
    found.update(re.findall(r"^\s+(\w+)=ds_lib\.SHARD_PATTERN", block, flags=re.M) and {"shard": SHARD_PATTERN})
    return found


def test_every_wildcard_is_constrained_to_a_safe_name():
    constraints = wildcard_constraints()
    assert set(constraints) == {"dataset", "shard", "model", "layer"}
    for name, pattern in constraints.items():
        for value in HOSTILE:
            assert not re.fullmatch(pattern, value), f"wildcard {name} accepts {value!r}"
    assert re.fullmatch(constraints["dataset"], "screen_2024-01")


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("section", ["datasets", "models"])
def test_dataset_and_model_names_that_could_escape_are_rejected(section, value):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config[section] = {value: next(iter(config[section].values()))}
    errors = config_errors(config, SCHEMA)
    assert any(section in e and "does not match" in e for e in errors), errors


def test_no_rule_runs_a_shell_string():
    """Every rule runs a Python script: no ``shell:``/``run:`` blocks that would interpolate
    wildcards or config values into a command line."""
    for path in RULES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.match(r"^\s+(shell|run):", line), f"{path.name}:{number}: {line.strip()}"


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        (r"shell\s*=\s*True", "subprocess with shell=True"),
        (r"os\.system\(|os\.popen\(", "os.system / os.popen"),
        (r"yaml\.(load|unsafe_load|full_load)\(", "YAML loading that can build arbitrary objects"),
        (r"pickle\.loads?\(|joblib\.load\(", "unpickling"),
        (r"allow_pickle\s*=\s*True", "numpy loading with pickles"),
        (r"(?<![.\w])(eval|exec)\(", "eval / exec"),
    ],
)
def test_no_code_path_executes_data(pattern, what):
    for path in PYTHON:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(pattern, line), f"{what} at {path.relative_to(REPO)}:{number}: {line.strip()}"


def test_every_torch_load_refuses_pickled_code():
    calls = [
        (path, number, line)
        for path in PYTHON
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "torch.load(" in line
    ]
    assert calls, "expected the checkpoint loader"
    for path, number, line in calls:
        assert "weights_only=True" in line, f"{path.relative_to(REPO)}:{number}: {line.strip()}"


def test_npz_and_npy_with_objects_are_refused(tmp_path):
    """Arrays are read with numpy's default ``allow_pickle=False``: an object array in a crafted
    field file is refused instead of unpickled."""
    from workflow_scripts.io import read_fields

    np.savez(tmp_path / "evil.npz", images=np.array([{"a": 1}], dtype=object), ids=np.array(["x"]))
    with pytest.raises(ValueError, match="allow_pickle"):
        read_fields(tmp_path / "evil.npz")


def test_yaml_tags_in_a_config_do_not_run_code(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "config.yaml").write_text(
        (REPO / "config.yaml").read_text() + f'\nevil: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    proc = snakemake(tmp_path, "-n", "--configfile", str(tmp_path / "config.yaml"), check=False)
    assert proc.returncode != 0
    assert not marker.exists()
    # Snakemake's own safe YAML loader refuses the tag.
    assert "Config file is not valid JSON or YAML" in proc.stdout + proc.stderr


def test_path_helpers_exist_for_untrusted_names():
    """Manifest paths and archive members go through one checked join (tested in test_download)."""
    from workflow_scripts.download import safe_join

    root = Path("/data/root")
    assert safe_join(root, "plate1/a.tif") == root / "plate1" / "a.tif"
    assert safe_join(root, "a\\..\\b.tif") == root / "b.tif"  # backslashes are separators
    for bad in ("../x.tif", "/etc/passwd", "a/../../x", "a\\..\\..\\x", "\\server\\x", "C:x"):
        with pytest.raises(ValueError):
            safe_join(root, bad)
