"""One feature table through a screen's recipe and metrics, as the workflow's screen jobs run it.

:func:`screen_table` applies the dataset's layout to the cells, runs the profiling recipe
(:func:`~workflow_scripts.screen.profiling.run_recipe`) and scores every step
(:func:`~workflow_scripts.screen.metrics.screen_metrics`); :func:`summary_rows` flattens the
records of all tables into the long table ``metrics/screen.csv``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from workflow_scripts.screen.layout import STANDARD_COLUMNS, apply_layout
from workflow_scripts.screen.metrics import screen_metrics
from workflow_scripts.screen.profiling import DEFAULT_RECIPE, consensus, run_recipe

__all__ = ["SCORES", "nsc_columns", "screen_table", "summary_rows", "well_ids"]

#: The scalar scores of a step, in the order the summary shows them.
SCORES = (
    "activity_map",
    "activity_fraction",
    "consistency_map",
    "consistency_fraction",
    "plate_map",
    "plate_chance",
    "nsc",
    "nscb",
)

def nsc_columns(layout: Mapping) -> dict | None:
    """Return the columns NSC and NSCB read, or None where the layout cannot score them.

    Parameters
    ----------
    layout : mapping
        The dataset's layout: NSC needs ``annotation`` (the MoA) and ``compound``; NSCB also
        ``batch``.

    Returns
    -------
    dict or None
        ``{"moa", "compound", "batch"}`` (``batch`` None without one).

    Examples
    --------
    >>> nsc_columns({"annotation": "moa", "compound": "compound", "batch": "week"})
    {'moa': 'Metadata_annotation', 'compound': 'Metadata_compound', 'batch': 'Metadata_batch'}
    >>> nsc_columns({"annotation": "moa"}) is None
    True
    """
    if not (layout.get("annotation") and layout.get("compound")):
        return None
    columns = STANDARD_COLUMNS  # the columns apply_layout writes
    batch = columns["batch"] if layout.get("batch") else None
    return {"moa": columns["annotation"], "compound": columns["compound"], "batch": batch}


def screen_table(
    cells: pd.DataFrame, layout: Mapping, profiles: Mapping, *, seed: int, dataset: str
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Profile and score one feature table of a screen.

    Parameters
    ----------
    cells : pandas.DataFrame
        The table: one row per cell, ``Metadata_*`` columns and features.
    layout : mapping
        ``datasets.<dataset>.layout``.
    profiles : mapping
        The ``profiles`` configuration section (its recipe keys, ``null_size``, ``fdr``).
    seed : int
        Seed of Harmony and of the permutation nulls.
    dataset : str
        The dataset's name, for messages.

    Returns
    -------
    record : dict
        ``recipe`` (the steps' settings), ``steps`` (step name to its scores,
        :func:`~workflow_scripts.screen.metrics.screen_metrics`) and ``final_step``.
    wells : pandas.DataFrame
        The well profiles after the last step.
    treatments : pandas.DataFrame
        Their consensus, one profile per perturbation.
    """
    recipe = {key: profiles[key] for key in DEFAULT_RECIPE if key in profiles}
    steps = run_recipe(apply_layout(cells, layout, dataset=dataset), config=recipe, seed=seed)
    scores = screen_metrics(
        steps,
        consensus_how=profiles["consensus"],
        null_size=int(profiles["null_size"]),
        fdr=float(profiles["fdr"]),
        seed=seed,
        nsc=nsc_columns(layout),
    )
    final = list(steps)[-1]
    record = {"recipe": recipe, "steps": scores, "final_step": final}
    return record, steps[final], consensus(steps[final], how=profiles["consensus"])


def summary_rows(records: Iterable[dict], families: Mapping) -> pd.DataFrame:
    """Flatten screen records into one row per table, step and score.

    Parameters
    ----------
    records : iterable of dict
        The tables' records (:func:`screen_table`), each with ``model`` and ``layer``.
    families : mapping
        Model name to family; a model not listed is a baseline.

    Returns
    -------
    pandas.DataFrame
        Columns ``model``, ``layer``, ``kind``, ``step``, ``final`` (the last step),
        ``metric`` and ``value``.

    Examples
    --------
    >>> record = {"model": "vae", "layer": "mu", "final_step": "normalized",
    ...           "steps": {"raw": {"activity_map": 0.4}, "normalized": {"activity_map": 0.6}}}
    >>> summary_rows([record], {"vae": "vae"})[["step", "final", "value"]].values.tolist()
    [['raw', False, 0.4], ['normalized', True, 0.6]]
    """
    rows = []
    for record in records:
        kind = families.get(record["model"], "baseline")
        for step, scores in record["steps"].items():
            for metric in SCORES:
                if metric in scores:
                    rows.append(
                        {
                            "model": record["model"],
                            "layer": record["layer"],
                            "kind": kind,
                            "step": step,
                            "final": step == record["final_step"],
                            "metric": metric,
                            "value": float(scores[metric]),
                        }
                    )
    return pd.DataFrame(rows, columns=["model", "layer", "kind", "step", "final", "metric", "value"])


def well_ids(wells: pd.DataFrame) -> pd.Series:
    """Return a unique name per well, ``<plate>/<well>`` (the index of the wells' ``.h5ad``).

    Parameters
    ----------
    wells : pandas.DataFrame
        Well profiles with ``Metadata_plate`` and ``Metadata_well``.

    Returns
    -------
    pandas.Series
        One name per row.

    Examples
    --------
    >>> well_ids(pd.DataFrame({"Metadata_plate": ["p01"], "Metadata_well": ["A01"]})).tolist()
    ['p01/A01']
    """
    return wells["Metadata_plate"].astype(str) + "/" + wells["Metadata_well"].astype(str)
