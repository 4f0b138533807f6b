import pandas as pd
import pytest

from workflow_scripts.filtering import filter_cells

QC = [{"n_fields": 3, "n_objects": 12, "n_edge_dropped": 2, "fields_without_cells": ["f2"]}]


def cells():
    return pd.DataFrame(
        {
            "Metadata_group": ["a"] * 6 + ["b"] * 3 + ["c"],
            "Metadata_area": [50, 200, 200, 200, 200, 9000, 200, 200, 200, 200],
            "QC_saturated_fraction": [0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0],
        }
    )


def counts(drops):
    return {(r.reason, r.unit): r.count for r in drops.itertuples()}


def test_every_drop_counted_once():
    kept, drops = filter_cells(
        cells(), QC, min_area=100, max_area=5000, max_saturated_fraction=0.1, min_cells_per_group=3
    )
    c = counts(drops)
    assert c[("area_below_min", "cells")] == 1
    assert c[("area_above_max", "cells")] == 1
    assert c[("saturated", "cells")] == 1
    # group a keeps 3 cells, b 3, c 1 -> c dropped
    assert c[("group_below_3_cells", "cells")] == 1 and c[("group_below_3_cells", "groups")] == 1
    assert c[("kept", "cells")] == len(kept) == 6
    assert c[("no_nuclei_found", "fields")] == 1 and c[("crop_leaves_image", "cells")] == 2
    assert set(kept["Metadata_group"]) == {"a", "b"}
    assert list(drops.columns) == ["stage", "reason", "unit", "count"]


def test_missing_group_column_named():
    with pytest.raises(ValueError, match="Metadata_well"):
        filter_cells(cells(), QC, group_by="Metadata_well")
