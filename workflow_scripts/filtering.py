"""Cell and group filtering with every drop counted by stage and reason."""

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
    """Apply QC and the group-size rule to the cells of all shards.

    Parameters
    ----------
    cells : table of segmented cells (``Metadata_area``, ``QC_saturated_fraction``, ``group_by``).
    segmentation_qc : one record per shard from the segmentation stage (``n_fields``,
        ``n_objects``, ``n_edge_dropped``, ``fields_without_cells`` and, when fields were
        skipped on loading, ``fields_skipped``: ``{image, reason, message}`` records), counted
        in the drop table.

    Returns
    -------
    kept : the cells that pass, in their original order.
    drops : table with columns stage, reason, unit (cells / fields / groups), count.
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
