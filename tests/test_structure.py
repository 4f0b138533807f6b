"""The shape of the code: no import circle, short functions and entry scripts, thin glue.

These guard the structure README's "Layout" describes; each failure names the file and what
to do about it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "workflow_scripts"

#: Longest function body (lines, its docstring excluded) and longest entry script.
MAX_FUNCTION_LINES = 60
MAX_SCRIPT_LINES = 60
MAX_COMMON_SMK_LINES = 300

#: Functions allowed to be longer, each with the reason (see the issue-18 note).
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Package modules ``path`` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in modules else base)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_package():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    # A package importing its own submodules (models/__init__ -> models.registry) is not a
    # circle unless a submodule imports the package back.
    cycles = _cycles(graph)
    assert cycles == [], f"import circle(s) {cycles}: move the shared code to a module both import"


def test_the_cycle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                length -= first.end_lineno - first.lineno + 1
            yield f"{path.relative_to(REPO)}::{node.name}", length


def test_no_long_functions():
    long = {
        name: length
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, length in _function_lengths(path)
        if length > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS
    }
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines (docstring excluded): split them into named steps"


@pytest.mark.parametrize("script", sorted((PACKAGE / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_entry_scripts_are_thin(script):
    lines = len(script.read_text().splitlines())
    assert lines <= MAX_SCRIPT_LINES, f"{script.name}: {lines} lines; move its logic into the package"


def test_common_smk_holds_only_validation_wiring_and_input_functions():
    lines = len((REPO / "rules" / "common.smk").read_text().splitlines())
    assert lines < MAX_COMMON_SMK_LINES, f"rules/common.smk has {lines} lines"


def test_snakemake_keeps_the_private_attribute_the_cluster_sizing_extends():
    """rules/cluster.smk extends Snakemake's parsed --set-resources in place (there is no
    public way to do so before the rules are defined). If a Snakemake release renames or
    freezes that attribute, per-model rules silently lose their family's resources: this
    test fails first."""
    from snakemake.settings.types import ResourceSettings

    from workflow_scripts.cluster import share_family_resources

    settings = ResourceSettings(overwrite_resources={"evaluate": {"mem_mb": 100}, "evaluate_vae": {"runtime": 5}})
    given = getattr(settings, "_parsed_overwrite_resources", None)
    assert given is not None, "snakemake.settings.types.ResourceSettings._parsed_overwrite_resources is gone"
    share_family_resources(given, "evaluate", ["evaluate_vae", "evaluate_pca"])
    parsed = settings._parsed_overwrite_resources
    assert dict(parsed["evaluate_pca"].items()).keys() == {"mem_mb"}
    assert dict(parsed["evaluate_vae"].items()).keys() == {"mem_mb", "runtime"}
    assert parsed["evaluate_vae"].get("runtime").value == 5 and parsed["evaluate_vae"].get("mem_mb").value == 100
