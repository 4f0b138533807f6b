"""Render README's configuration reference from ``schemas/config.schema.yaml``.

The schema is the one home of every configuration key: its type and range (validation),
its default (filled in before any job runs) and its meaning (each property's Markdown
``description``). README's table (key | default | meaning) is generated from it::

    python -m workflow_scripts.config_reference          # rewrite README's table
    python -m workflow_scripts.config_reference --check  # exit 1 when README is stale

The default column is the schema's ``default``; where the schema cannot hold one because it
depends on another key, its ``x-default`` annotation (ignored by validation) is shown as
written. Model keys have no schema default at all: theirs depend on the family and come from
:mod:`workflow_scripts.models.spec`, which also says which families take a key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from workflow_scripts.models.spec import COMMON_DEFAULTS, FAMILIES, FAMILY_DEFAULTS, TRAINING_DEFAULTS

__all__ = [
    "README",
    "SCHEMA",
    "START",
    "END",
    "load_schema",
    "main",
    "readme_block",
    "render_reference",
    "replace_block",
]

_REPO = Path(__file__).resolve().parents[1]
#: The configuration schema the table is generated from.
SCHEMA = _REPO / "schemas" / "config.schema.yaml"
#: The README holding the generated table between :data:`START` and :data:`END`.
README = _REPO / "README.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"

_HEADER = ("| key | default | meaning |", "|---|---|---|")


def load_schema(path: str | Path = SCHEMA) -> dict:
    """Read the configuration schema.

    Parameters
    ----------
    path : str or Path, optional
        The schema file (YAML); ``schemas/config.schema.yaml`` of this repository by default.

    Returns
    -------
    dict
        The schema, in file order.
    """
    return yaml.safe_load(Path(path).read_text())


def render_reference(schema: dict) -> str:
    """Render the configuration reference of ``schema`` as a Markdown table.

    One row per key, in the schema's order: top-level keys by name (``seed``), each section
    as a bold header row followed by its keys (``.size``), named entries (``datasets``,
    ``models``: an object whose values follow a ``$defs`` entry) as ``datasets.<name>``.
    Model keys carry the families that take them and defaults from
    :mod:`workflow_scripts.models.spec`.

    Parameters
    ----------
    schema : dict
        A JSON schema of an object (``properties``; ``$defs`` for named entries), whose
        properties carry a Markdown ``description`` and optionally ``default``,
        ``x-default`` (the default as shown) and ``required``.

    Returns
    -------
    str
        The table, one line per row, without a trailing newline.

    Examples
    --------
    >>> schema = {
    ...     "required": ["name"],
    ...     "properties": {
    ...         "seed": {"type": "integer", "default": 0, "description": "Seed."},
    ...         "name": {"type": "string", "description": "A name."},
    ...         "crop": {
    ...             "type": "object",
    ...             "description": "Crops.",
    ...             "properties": {
    ...                 "size": {"default": "auto", "description": "Window (px)."},
    ...                 "sizes": {"default": [8, 16], "x-default": "a few", "description": "Sizes."},
    ...             },
    ...         },
    ...     },
    ... }
    >>> print(render_reference(schema))
    | key | default | meaning |
    |---|---|---|
    | `seed` | 0 | Seed. |
    | `name` | (required) | A name. |
    | **`crop`** | | Crops. |
    | `.size` | `auto` | Window (px). |
    | `.sizes` | a few | Sizes. |
    """
    required = set(schema.get("required", ()))
    rows = list(_HEADER)
    for key, prop in schema.get("properties", {}).items():
        rows += _top_level_rows(schema, key, prop, key in required)
    return "\n".join(rows)


def readme_block(text: str) -> str:
    """Return what lies between the reference markers of a README.

    Parameters
    ----------
    text : str
        The README's text.

    Returns
    -------
    str
        The text between :data:`START` and :data:`END`, stripped of surrounding blank lines.

    Raises
    ------
    ValueError
        If the markers are missing, repeated or out of order.
    """
    start, end = _marker_positions(text)
    return text[start + len(START) : end].strip("\n")


def replace_block(text: str, table: str) -> str:
    r"""Put ``table`` between the reference markers of a README.

    Parameters
    ----------
    text : str
        The README's text.
    table : str
        The new content (the output of :func:`render_reference`).

    Returns
    -------
    str
        ``text`` with the markers' content replaced (one blank line each side of ``table``).

    Raises
    ------
    ValueError
        If the markers are missing, repeated or out of order.

    Examples
    --------
    >>> replace_block(f"intro\n{START}\nold\n{END}\nrest\n", "new")
    'intro\n<!-- config-reference:start -->\n\nnew\n\n<!-- config-reference:end -->\nrest\n'
    """
    start, end = _marker_positions(text)
    return f"{text[: start + len(START)]}\n\n{table}\n\n{text[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate README's configuration reference, or check that it is current.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments (``sys.argv[1:]`` when None): ``--check`` only compares;
        ``--schema`` and ``--readme`` name other files.

    Returns
    -------
    int
        0 when README is (now) current; 1 when ``--check`` finds it stale.
    """
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.config_reference",
        description="Generate README's configuration reference from the config schema.",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if README's table is stale; write nothing")
    parser.add_argument("--schema", type=Path, default=SCHEMA, help="the config schema (YAML)")
    parser.add_argument("--readme", type=Path, default=README, help="the README holding the markers")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    updated = replace_block(text, render_reference(load_schema(args.schema)))
    if updated == text:
        return 0
    if args.check:
        print(
            f"{args.readme}: the configuration reference is stale (it differs from {args.schema}); "
            "run: python -m workflow_scripts.config_reference",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(updated)
    print(f"{args.readme}: configuration reference regenerated from {args.schema}")
    return 0


def _marker_positions(text: str) -> tuple[int, int]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"README must hold {START} once, then {END} once")
    return text.index(START), text.index(END)


def _top_level_rows(schema: dict, key: str, prop: dict, required: bool) -> list[str]:
    """Rows of one top-level key: a plain row, a section, or named entries."""
    if "properties" in prop:
        return [_row(f"**`{key}`**", "", prop), *_property_rows(prop, ".")]
    entry = _defs_entry(schema, prop)
    if entry is None:
        return [_row(f"`{key}`", _default_cell(prop, required), prop)]
    name, definition = entry
    header = _row(f"**`{key}.<name>`**", "", prop)
    if name == "model":
        return [header, *_model_rows(definition)]
    return [header, *_property_rows(definition, ".")]


def _defs_entry(schema: dict, prop: dict) -> tuple[str, dict] | None:
    """``(name, definition)`` of an object whose values follow ``#/$defs/<name>``."""
    extra = prop.get("additionalProperties")
    ref = extra.get("$ref", "") if isinstance(extra, dict) else ""
    if not ref.startswith("#/$defs/"):
        return None
    name = ref.removeprefix("#/$defs/")
    return name, schema["$defs"][name]


def _property_rows(section: dict, prefix: str) -> Iterator[str]:
    """Rows of a section's keys, nested sections (``.download.workers``) included."""
    required = set(section.get("required", ()))
    for key, prop in section.get("properties", {}).items():
        if "properties" in prop:
            yield _row(f"`{prefix}{key}`", "", prop)
            yield from _property_rows(prop, f"{prefix}{key}.")
        else:
            yield _row(f"`{prefix}{key}`", _default_cell(prop, key in required), prop)


def _model_rows(definition: dict) -> Iterator[str]:
    """Rows of the model keys: the families that take each, defaults from the spec."""
    required = set(definition.get("required", ()))
    for key, prop in definition.get("properties", {}).items():
        families = [family for family in FAMILIES if key in FAMILY_DEFAULTS[family]]
        label = f"`.{key}`"
        if families and len(families) < len(FAMILIES):
            label = f"{', '.join(f'`{family}`' for family in families)}: {label}"
        default = _default_cell(prop, key in required, _spec_default(key, families))
        yield _row(label, default, prop)


def _spec_default(key: str, families: list[str]) -> str | None:
    """Format a model key's spec default, with the families whose default differs."""
    if key in COMMON_DEFAULTS:
        base = COMMON_DEFAULTS[key]
        per_family = [(f, TRAINING_DEFAULTS[f][key]) for f in FAMILIES if key in TRAINING_DEFAULTS.get(f, {})]
    elif families:
        values = [FAMILY_DEFAULTS[f][key] for f in families]
        base = max(values, key=values.count)  # the most common; the first of a tie
        per_family = [(f, FAMILY_DEFAULTS[f][key]) for f in families]
    else:
        return None
    others = [f"`{family}` {_format_value(value)}" for family, value in per_family if value != base]
    return _format_value(base) + (f" ({', '.join(others)})" if others else "")


def _default_cell(prop: dict, required: bool, computed: str | None = None) -> str:
    """Give the default column: ``x-default`` as written, else the schema's, else the spec's."""
    if "x-default" in prop:
        return str(prop["x-default"])
    if "default" in prop:
        return _format_value(prop["default"])
    if computed is not None:
        return computed
    return "(required)" if required else ""


def _format_value(value) -> str:
    """Format a default as README shows it: strings (and lists of them) as code, numbers plain."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        return f"`[{', '.join(value)}]`"
    if isinstance(value, list):
        return f"[{', '.join(_format_value(v) for v in value)}]"
    if isinstance(value, dict) and not value:
        return "`{}`"
    return f"`{value}`"


def _row(label: str, default: str, prop: dict) -> str:
    meaning = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
    return "|" + "|".join(f" {cell} " if cell else " " for cell in (label, default, meaning)) + "|"


if __name__ == "__main__":
    sys.exit(main())
