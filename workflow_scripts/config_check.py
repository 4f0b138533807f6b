"""Schema errors a user can act on.

Every schema violation at once, each naming the key (as a dotted path), the value found and
what was expected.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import yaml

__all__ = ["config_errors"]


def _key(path) -> str:
    parts = []
    for part in path:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]"]
        else:
            parts.append(str(part))
    return ".".join(parts) or "(top level)"


def _message(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{key}: {error.message}" + (f"; expected one of {allowed}" if allowed else "")
    if error.validator in ("required", "dependentRequired", "minProperties"):
        return f"{key}: {error.message}"
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    value = repr(error.instance)
    value = value if len(value) <= 80 else value[:77] + "..."
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    text = f"{key} = {value}: {message}"
    if description:
        text += f" ({_first_sentence(description)})"
    return text


def _first_sentence(description) -> str:
    """Return the first sentence of a (Markdown) description as plain text."""
    text = " ".join(str(description).split())
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    match = re.search(r"\.(\s|$)", text)
    return text[: match.start()] if match else text


def config_errors(config: dict, schema_path: str | Path) -> list[str]:
    """Return every violation of the schema by ``config``, one line each.

    Parameters
    ----------
    config : dict
        The configuration.
    schema_path : str or Path
        The JSON schema (YAML).

    Returns
    -------
    list of str
        Sorted by key; empty when the configuration is valid.

    Examples
    --------
    >>> from workflow_scripts.configuration import SCHEMA
    >>> config = {"datasets": {"d": {"source": "synthetic"}}, "models": {}, "seed": -1}
    >>> config_errors(config, SCHEMA)  # doctest: +ELLIPSIS
    ['models: {} should be non-empty', 'seed = -1: -1 is less than the minimum of 0 (...)']
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        # A oneOf/anyOf failure lists its branches' reasons: report the most specific one.
        auto = False
        if error.context:
            # A size that may also be "auto": the numeric branch says what is wrong.
            specific = [e for e in error.context if e.validator != "const"]
            auto = len(specific) < len(error.context)
            error = jsonschema.exceptions.best_match(specific or error.context)
        errors.append(_message(error) + (" (or 'auto')" if auto else ""))
    return errors
