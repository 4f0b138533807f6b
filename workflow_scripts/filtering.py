"""Filter cells and groups, counting every drop by stage and reason."""

from __future__ import annotations

import numpy as np
import pandas as pd

DROP_COLUMNS = ["stage", "reason", "unit", "count"]


def filter_cells(
    cells: pd.DataFrame,
    segmentation_qc: list[dict],
    *,
    min_area: int = 0,
    max_area: int | None = None,
    max_saturated_fraction: float = 1.0,
    min_cells_per_group: int = 1,
    group_by: str = "Metadata_group",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply QC and the group-size rule to the cells of all shards, counting every drop.

    Each cell is counted once, under the first filter it fails: area below ``min_area``, area
    above ``max_area``, saturated fraction above ``max_saturated_fraction``, then membership of
    a group (``group_by``) left with fewer than ``min_cells_per_group`` cells.

    Parameters
    ----------
    cells : pandas.DataFrame
        Segmented cells of all shards (``Metadata_area``, ``QC_saturated_fraction`` if any,
        and the ``group_by`` column); may be empty.
    segmentation_qc : list of dict
        One record per shard from the segmentation stage (``n_fields``, ``n_objects``,
        ``n_edge_dropped``, ``fields_without_cells`` and, when fields were skipped on
        loading, ``fields_skipped``: ``{image, reason, message}`` records), counted in the
        drop table.
    min_area : int, optional
        Smallest nucleus area kept (px).
    max_area : int or None, optional
        Largest nucleus area kept (px); None: no upper bound.
    max_saturated_fraction : float, optional
        Largest share of saturated pixels in a cell's window.
    min_cells_per_group : int, optional
        Groups with fewer cells left are dropped whole.
    group_by : str, optional
        Column naming each cell's group.

    Returns
    -------
    kept : pandas.DataFrame
        The cells that pass, in their original order (index reset).
    drops : pandas.DataFrame
        Columns ``stage``, ``reason``, ``unit`` (cells / fields / groups) and ``count``.

    Raises
    ------
    ValueError
        If ``group_by`` is not a column of a non-empty ``cells``.

    Examples
    --------
    >>> cells = pd.DataFrame({"Metadata_area": [50, 400, 500, 600], "Metadata_group": ["a", "a", "b", "b"]})
    >>> qc = [{"n_fields": 1, "n_objects": 5, "n_edge_dropped": 1, "fields_without_cells": []}]
    >>> kept, drops = filter_cells(cells, qc, min_area=100, min_cells_per_group=2)
    >>> kept["Metadata_area"].tolist()
    [500, 600]
    >>> drops[drops["stage"] == "filter"]
        stage               reason    unit  count
    4  filter       area_below_min   cells      1
    5  filter  group_below_2_cells   cells      1
    6  filter  group_below_2_cells  groups      1
    7  filter                 kept   cells      2
    8  filter                 kept  groups      1
    """
    rows = []

    def add(stage, reason, unit, count):
        rows.append({"stage": stage, "reason": reason, "unit": unit, "count": int(count)})

    skipped = [f for r in segmentation_qc for f in r.get("fields_skipped", [])]
    for reason in sorted({f["reason"] for f in skipped}):
        # on_bad_image: skip -- fields left out when loading, by reason (missing_file, unreadable, ...)
        add("load", f"bad_image_{reason}", "fields", sum(f["reason"] == reason for f in skipped))
    add("segment", "fields_read", "fields", sum(r["n_fields"] for r in segmentation_qc))
    add("segment", "no_nuclei_found", "fields", sum(len(r["fields_without_cells"]) for r in segmentation_qc))
    add("segment", "nuclei_detected", "cells", sum(r["n_objects"] for r in segmentation_qc))
    add("segment", "crop_leaves_image", "cells", sum(r["n_edge_dropped"] for r in segmentation_qc))
    if len(cells) == 0:
        add("filter", "kept", "cells", 0)
        return cells, pd.DataFrame(rows, columns=DROP_COLUMNS)
    if group_by not in cells.columns:
        raise ValueError(
            f"filter.group_by: column {group_by!r} is not in the cell table; "
            f"available: {[c for c in cells.columns if c.startswith('Metadata_')]}"
        )

    keep = np.ones(len(cells), dtype=bool)
    area = cells["Metadata_area"].to_numpy()
    checks = [("area_below_min", area < min_area)]
    if max_area is not None:
        checks.append(("area_above_max", area > max_area))
    if "QC_saturated_fraction" in cells.columns:
        checks.append(("saturated", cells["QC_saturated_fraction"].to_numpy() > max_saturated_fraction))
    for reason, bad in checks:
        # Each cell is counted once, under the first reason it fails.
        add("filter", reason, "cells", np.count_nonzero(bad & keep))
        keep &= ~bad

    sizes = cells.loc[keep].groupby(group_by, sort=False).size()
    small = sizes.index[sizes < min_cells_per_group]
    in_small = cells[group_by].isin(small).to_numpy() & keep
    add("filter", f"group_below_{min_cells_per_group}_cells", "cells", np.count_nonzero(in_small))
    add("filter", f"group_below_{min_cells_per_group}_cells", "groups", len(small))
    keep &= ~in_small
    add("filter", "kept", "cells", np.count_nonzero(keep))
    add("filter", "kept", "groups", cells.loc[keep, group_by].nunique())
    return cells.loc[keep].reset_index(drop=True), pd.DataFrame(rows, columns=DROP_COLUMNS)
