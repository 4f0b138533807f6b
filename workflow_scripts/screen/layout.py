"""Plate and well layouts of a screen: the standard metadata columns profiles are built from.

A dataset declares its layout under ``datasets.<name>.layout``, naming its own metadata
columns (with or without the ``Metadata_`` prefix; a list of columns is joined with ``@``,
e.g. ``[compound, concentration]`` gives ``taxol@0.3``):

``plate``, ``well``, ``perturbation`` (required)
    Become ``Metadata_plate``, ``Metadata_well`` and ``Metadata_perturbation`` (strings).
``negative_control`` (required)
    Which wells are negative controls, in ``Metadata_negcon`` (bool): a value (or a list of
    values) of the perturbation, or ``{column: <column>, value: <value or list>}`` to
    match another column (BBBC021: ``{column: compound, value: DMSO}``).
``annotation``, ``compound``, ``batch`` (optional)
    Become ``Metadata_annotation`` (what perturbations sharing it have in common: the
    mechanism of action, the gene; may be missing, e.g. for controls),
    ``Metadata_compound`` (what "not the same compound" means for BBBC021's NSC
    evaluation; default: none) and ``Metadata_batch`` (the NSCB batch, e.g. the week).

:func:`apply_layout` checks the layout against the table and reports every problem at
once: a missing column, missing values, an unknown control value, a plate without control
wells, a well holding several perturbations, a perturbation on only one plate.

Examples
--------
>>> cells = pd.DataFrame({
...     "Metadata_plate": ["P1", "P1", "P2", "P2"],
...     "Metadata_well": ["A01", "A02", "A01", "A02"],
...     "compound": ["DMSO", "taxol", "taxol", "DMSO"],
... })
>>> layout = {"plate": "plate", "well": "well", "perturbation": "compound", "negative_control": "DMSO"}
>>> apply_layout(cells, layout, dataset="demo")[["Metadata_perturbation", "Metadata_negcon"]]
  Metadata_perturbation  Metadata_negcon
0                  DMSO             True
1                 taxol            False
2                 taxol            False
3                  DMSO             True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = [
    "LAYOUT_KEYS",
    "NEGCON_COLUMN",
    "REQUIRED_KEYS",
    "STANDARD_COLUMNS",
    "apply_layout",
    "negative_control_rows",
    "normalize_layout",
    "synthetic_layout",
]

#: Layout key -> the standard column it becomes (``negative_control`` -> :data:`NEGCON_COLUMN`).
STANDARD_COLUMNS: dict[str, str] = {
    "plate": "Metadata_plate",
    "well": "Metadata_well",
    "perturbation": "Metadata_perturbation",
    "annotation": "Metadata_annotation",
    "compound": "Metadata_compound",
    "batch": "Metadata_batch",
}
#: The standard column flagging negative-control wells (bool).
NEGCON_COLUMN = "Metadata_negcon"
#: Keys every layout must have.
REQUIRED_KEYS: tuple[str, ...] = ("plate", "well", "perturbation", "negative_control")
#: Every key a layout may have.
LAYOUT_KEYS: tuple[str, ...] = (*REQUIRED_KEYS, "annotation", "compound", "batch")
#: Keys whose values may be missing (NaN) in the table.
_MAY_BE_MISSING = ("annotation",)
#: Separator of the values of several columns joined into one (``compound@concentration``).
_JOIN = "@"
#: At most this many items of a list are shown in a message.
_SHOWN = 20


def synthetic_layout() -> dict:
    """Return the layout of a synthetic dataset with ``plates`` (a new dict each call).

    Its columns are those :mod:`workflow_scripts.sources.synthetic` writes; the controls are
    its ``CONTROL`` perturbation and the annotation is the mechanism of action (the class).

    Returns
    -------
    dict
        The ``datasets.<name>.layout`` entry.

    Examples
    --------
    >>> synthetic_layout()["negative_control"]
    'control'
    """
    return {
        "plate": "Metadata_plate",
        "well": "Metadata_well",
        "perturbation": "Metadata_perturbation",
        "negative_control": "control",
        "annotation": "Metadata_moa",
    }


def _shown(values) -> str:
    """Show at most :data:`_SHOWN` items of a list, and how many there are in all."""
    values = list(values)
    if len(values) <= _SHOWN:
        return repr(values)
    return f"{values[:_SHOWN]!r} ... ({len(values)} in all)"


def _as_columns(where: str, value) -> list[str]:
    """Return a column name or a non-empty list of names as a list."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ValueError(f"{where}={value!r}: expected a column name or a non-empty list of column names")


def _as_values(where: str, value) -> list:
    """Return a control value (str, number or bool) or a non-empty list of them as a list."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if values and all(isinstance(v, (str, int, float, bool)) for v in values):
        return values
    raise ValueError(f"{where}={value!r}: expected a value (text, number or boolean) or a non-empty list of values")


def normalize_layout(layout, *, dataset: str) -> dict:
    """Check a layout entry's keys and types, and return it in one shape.

    Parameters
    ----------
    layout : dict
        The ``datasets.<dataset>.layout`` entry (see the module docstring).
    dataset : str
        Dataset name, for messages.

    Returns
    -------
    dict
        Key -> list of column names for every column key given, and ``negative_control``
        -> ``{"columns": list of column names or None (the perturbation's), "values": list}``.

    Raises
    ------
    ValueError
        If ``layout`` is not a mapping, lacks a required key, has an unknown key or a value
        of the wrong type; the message names the key and the value.

    Examples
    --------
    >>> spec = normalize_layout({"plate": "plate", "well": "well", "perturbation": ["compound", "dose"],
    ...                          "negative_control": {"column": "compound", "value": "DMSO"}}, dataset="d")
    >>> spec["perturbation"], spec["negative_control"]
    (['compound', 'dose'], {'columns': ['compound'], 'values': ['DMSO']})
    """
    where = f"datasets.{dataset}.layout"
    if not isinstance(layout, Mapping):
        raise ValueError(f"{where}={layout!r}: expected a mapping with keys {list(LAYOUT_KEYS)}")
    unknown = [k for k in layout if k not in LAYOUT_KEYS]
    missing = [k for k in REQUIRED_KEYS if layout.get(k) is None]
    if unknown or missing:
        raise ValueError(
            f"{where}: "
            + "; ".join(
                ([f"unknown key(s) {unknown}"] if unknown else []) + ([f"missing key(s) {missing}"] if missing else [])
            )
            + f"; expected {list(REQUIRED_KEYS)} and optionally {list(LAYOUT_KEYS[len(REQUIRED_KEYS) :])}"
        )
    spec = {k: _as_columns(f"{where}.{k}", v) for k, v in layout.items() if k in STANDARD_COLUMNS and v is not None}
    control = layout["negative_control"]
    if isinstance(control, Mapping):
        keys = set(control)
        if keys != {"column", "value"}:
            raise ValueError(
                f"{where}.negative_control={dict(control)!r}: expected a value or {{column: <column>, value: <value>}}"
            )
        columns = _as_columns(f"{where}.negative_control.column", control["column"])
        values = _as_values(f"{where}.negative_control.value", control["value"])
    else:
        columns, values = None, _as_values(f"{where}.negative_control", control)
    spec["negative_control"] = {"columns": columns, "values": values}
    return spec


def _resolve(table: pd.DataFrame, names: list[str]) -> tuple[list[str], list[str]]:
    """Return the table columns of the given names (``Metadata_<name>`` first), and the names not found."""
    found, missing = [], []
    for name in names:
        candidates = [name] if name.startswith("Metadata_") else [f"Metadata_{name}", name]
        hit = next((c for c in candidates if c in table.columns), None)
        (found if hit is not None else missing).append(hit if hit is not None else name)
    return found, missing


def _joined(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Return the values of ``columns`` as text, joined by ``@`` when several; missing when any part is."""
    parts, missing = [], np.zeros(len(table), bool)
    for column in columns:
        # Each distinct value is converted once: cell tables have millions of rows, few values.
        codes, uniques = pd.factorize(table[column], use_na_sentinel=True)
        texts = np.asarray([_text(u) for u in uniques] + [""], dtype=object)
        parts.append(texts[codes])
        missing |= codes < 0
    out = parts[0]
    for part in parts[1:]:
        out = out + _JOIN + part
    return pd.Series(np.where(missing, None, out), index=table.index, dtype=object)


def _text(value) -> str:
    """Return a value as text; whole floats lose their ``.0`` (a plate ``3.0`` read from CSV is ``3``)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _label(columns: list[str]) -> str:
    """Name one column, or several joined."""
    return repr(columns[0]) if len(columns) == 1 else repr(_JOIN.join(columns))


def _present(table: pd.DataFrame) -> str:
    """Describe the columns of a table, for messages: all of them when few, else the metadata ones."""
    if len(table.columns) <= 30:
        return f"the columns present are {list(table.columns)}"
    meta = [c for c in table.columns if str(c).startswith("Metadata_")]
    return f"the metadata columns present are {meta} (and {len(table.columns) - len(meta)} others)"


def _resolve_all(table: pd.DataFrame, spec: dict, where: str) -> tuple[dict, list[str]]:
    """Return the table columns of every layout key (``negative_control`` too, when it names a column), and the problems."""
    named = {k: v for k, v in spec.items() if k != "negative_control"}
    if spec["negative_control"]["columns"] is not None:
        named["negative_control"] = spec["negative_control"]["columns"]
    resolved, problems = {}, []
    for key, names in named.items():
        found, missing = _resolve(table, names)
        if missing:
            tried = " or ".join(
                repr(c) for m in missing for c in ([m] if m.startswith("Metadata_") else [f"Metadata_{m}", m])
            )
            suffix = ".column" if key == "negative_control" else ""
            problems.append(f"{where}.{key}{suffix}: no column {tried}; {_present(table)}")
        else:
            resolved[key] = found
    return resolved, problems


def _missing_values(values: dict, resolved: dict, where: str) -> list[str]:
    """Return a problem for every layout column with missing values (the annotation may have some)."""
    problems = []
    for key, series in values.items():
        n_missing = int(series.isna().sum())
        if key not in _MAY_BE_MISSING and n_missing:
            rows = list(series.index[series.isna()][:5]) + (["..."] if n_missing > 5 else [])
            problems.append(
                f"{where}.{key}: column {_label(resolved[key])} has {n_missing} missing value(s) (rows {rows}); "
                "expected a value in every row"
            )
    return problems


def _negative_controls(
    table: pd.DataFrame, spec: dict, resolved: dict, values: dict, where: str
) -> tuple[np.ndarray, list[str], str]:
    """Flag the negative-control rows; return them, a problem for every control value the column lacks."""
    control = spec["negative_control"]
    key = "negative_control" if control["columns"] is not None else "perturbation"
    column = values[key] if key == "perturbation" else _joined(table, resolved[key])
    targets = [_text(v) for v in control["values"]]
    flags = column.isin(targets).to_numpy(dtype=bool)
    unknown = [v for v, t in zip(control["values"], targets) if not (column == t).any()]
    problems = []
    if unknown:
        found = sorted(column.dropna().unique(), key=str)
        problems.append(
            f"{where}.negative_control: value(s) {unknown!r} not found in column {_label(resolved[key])}; "
            f"values found: {_shown(found)}"
        )
    return flags, problems, _label(resolved[key])


def _plate_problems(values: dict, negcon: np.ndarray, labels: dict, where: str, controls_found: bool) -> list[str]:
    """Return the problems of the plates: wells with several perturbations, plates without controls, perturbations on one plate."""
    wells = pd.DataFrame(
        {"plate": values["plate"], "well": values["well"], "perturbation": values["perturbation"], "negcon": negcon}
    ).drop_duplicates()
    problems = []
    per_well = wells.groupby(["plate", "well"], sort=True)["perturbation"].unique()
    crowded = [f"plate {p!r} well {w!r}: {sorted(v)}" for (p, w), v in per_well.items() if len(v) > 1]
    if crowded:
        problems.append(
            f"{where}: well(s) holding several perturbations (plate {labels['plate']}, well {labels['well']}, "
            f"perturbation {labels['perturbation']}): {'; '.join(crowded[:_SHOWN])}"
            + (f" ... ({len(crowded)} in all)" if len(crowded) > _SHOWN else "")
        )
    with_controls = set(wells.loc[wells["negcon"], "plate"])
    bare = sorted(set(wells["plate"]) - with_controls, key=str)
    if controls_found and bare:
        problems.append(
            f"{where}: plate(s) {_shown(bare)} (column {labels['plate']}) have no negative-control well "
            f"({labels['negative_control']}); every plate needs controls to normalise against"
        )
    treated = wells[~wells["negcon"]]
    plates = treated.groupby("perturbation", sort=True)["plate"].unique()
    single = [f"{name!r} on plate {found[0]!r}" for name, found in plates.items() if len(found) == 1]
    if single:
        problems.append(
            f"{where}: perturbation(s) on only one plate (perturbation {labels['perturbation']}, plate "
            f"{labels['plate']}); replicates must lie on at least two plates: {'; '.join(single[:_SHOWN])}"
            + (f" ... ({len(single)} in all)" if len(single) > _SHOWN else "")
        )
    return problems


def negative_control_rows(table: pd.DataFrame, layout: dict, *, dataset: str) -> np.ndarray | None:
    """Flag the negative-control rows of a field table, where the layout's columns are there.

    Used when a dataset is indexed, before the layout is checked in full (:func:`apply_layout`).

    Parameters
    ----------
    table : pandas.DataFrame
        Fields (or cells) with metadata columns.
    layout : dict
        The ``datasets.<dataset>.layout`` entry.
    dataset : str
        Dataset name, for messages.

    Returns
    -------
    numpy.ndarray of bool or None
        One flag per row; None where a column the controls are read from is missing.

    Examples
    --------
    >>> fields = pd.DataFrame({"Metadata_compound": ["DMSO", "taxol"]})
    >>> layout = {"plate": "p", "well": "w", "perturbation": "compound", "negative_control": "DMSO"}
    >>> negative_control_rows(fields, layout, dataset="d").tolist()
    [True, False]
    """
    spec = normalize_layout(layout, dataset=dataset)
    control = spec["negative_control"]
    names = control["columns"] if control["columns"] is not None else spec["perturbation"]
    found, missing = _resolve(table, names)
    if missing:
        return None
    targets = [_text(v) for v in control["values"]]
    return _joined(table, found).isin(targets).to_numpy(dtype=bool)


def apply_layout(cells: pd.DataFrame, layout: dict, *, dataset: str) -> pd.DataFrame:
    """Add the standard layout columns to a table of cells or wells, after checking the layout.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell (or well, or field) with the metadata columns ``layout`` names.
    layout : dict
        The ``datasets.<dataset>.layout`` entry (see the module docstring).
    dataset : str
        Dataset name, for messages.

    Returns
    -------
    pandas.DataFrame
        A copy of ``cells`` with ``Metadata_plate``, ``Metadata_well``,
        ``Metadata_perturbation`` (text), ``Metadata_negcon`` (bool) and, where the layout
        has them, ``Metadata_annotation``, ``Metadata_compound``, ``Metadata_batch``
        (replacing columns of those names); ``Metadata_*`` columns first.

    Raises
    ------
    ValueError
        If the layout is malformed (see :func:`normalize_layout`) or does not fit the
        table: a missing column (the message lists those present), missing values, a
        control value the column lacks (the values found are listed), a plate without a
        control well, a well with several perturbations, or a perturbation on only one
        plate. Every problem is reported at once, each naming the dataset, the column
        and the value.
    """
    where = f"datasets.{dataset}.layout"
    spec = normalize_layout(layout, dataset=dataset)
    resolved, problems = _resolve_all(cells, spec, where)
    if not problems:
        values = {k: _joined(cells, resolved[k]) for k in STANDARD_COLUMNS if k in resolved}
        problems = _missing_values(values, resolved, where)
        negcon, control_problems, control_label = _negative_controls(cells, spec, resolved, values, where)
        problems += control_problems
        if not any(values[k].isna().any() for k in ("plate", "well", "perturbation")):
            labels = {k: _label(resolved[k]) for k in ("plate", "well", "perturbation")}
            labels["negative_control"] = f"{spec['negative_control']['values']!r} in column {control_label}"
            problems += _plate_problems(values, negcon, labels, where, controls_found=bool(negcon.any()))
    if problems:
        raise ValueError(f"dataset {dataset!r}: the plate layout does not fit its table:\n- " + "\n- ".join(problems))
    out = cells.copy()
    for key, series in values.items():
        out[STANDARD_COLUMNS[key]] = series.astype("str")  # the annotation's missing values stay missing
    out[NEGCON_COLUMN] = negcon
    meta = [c for c in out.columns if str(c).startswith("Metadata_")]
    return out[meta + [c for c in out.columns if c not in meta]]
