"""The screen recipe on the synthetic plate layout: normalising each plate against its
controls removes most of the plate effect and finds more active perturbations."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.segmentation import expand_labels, find_boundaries

from workflow_scripts.screen.layout import apply_layout, synthetic_layout
from workflow_scripts.screen.metrics import screen_metrics
from workflow_scripts.screen.profiling import run_recipe
from workflow_scripts.sources.synthetic import generate_field

PLATES, WELLS, CONTROLS = 4, 48, 16


def _cell_features(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Log mean intensity per channel in each nucleus, its cytoplasm (nucleus grown by 6 px,
    less the nucleus) and the cell's rim, and the protein's spread and peak in the cell."""
    cells = expand_labels(labels, 6)
    ids = np.arange(1, labels.max() + 1)
    regions = (labels, np.where(labels > 0, 0, cells), np.where(find_boundaries(cells, mode="inner"), cells, 0))
    image = image.astype(np.float64)
    with np.errstate(invalid="ignore"):  # a nucleus with no free pixel around it: NaN, set to 0 below
        columns = [np.log1p(ndimage.mean(channel, region, ids)) for region in regions for channel in image]
    columns += [np.log1p(ndimage.standard_deviation(image[2], cells, ids)), np.log1p(ndimage.maximum(image[2], cells, ids))]
    return np.nan_to_num(np.column_stack(columns))


@pytest.fixture(scope="module")
def screen_cells() -> pd.DataFrame:
    tables = []
    for index in range(PLATES * WELLS):
        image, labels, meta, _ = generate_field(
            7, index, size=128, cells_per_field=10, plates=PLATES, n_fields=PLATES * WELLS, controls_per_plate=CONTROLS
        )
        if labels.max() == 0:
            continue
        features = _cell_features(image, labels)
        table = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
        for key, value in meta.items():
            table[key] = value
        tables.append(table)
    return apply_layout(pd.concat(tables, ignore_index=True), synthetic_layout(), dataset="screen")


@pytest.mark.parametrize("method", ["mad_robustize", "standardize"])
def test_normalising_against_controls_removes_the_plate_effect(screen_cells, method):
    logging.disable(logging.WARNING)
    try:
        steps = run_recipe(screen_cells, config={"normalize": method, "feature_select": []}, seed=0)
        scores = screen_metrics(steps, null_size=500, seed=0)
    finally:
        logging.disable(logging.NOTSET)
    raw, normalized = scores["raw"], scores["normalized"]
    assert raw["plate_map"] - raw["plate_chance"] > 0.15  # the plates' gains, backgrounds and blur
    assert normalized["plate_map"] - normalized["plate_chance"] < 0.06  # mad_robustize 0.054, standardize 0.030
    # More perturbations pass the permutation test at 5% FDR once the plates are aligned
    # (raw 20 of 32, against controls 22-23 of the 26 with a phenotype); the mean mAP stays
    # within 0.01.
    assert normalized["activity_fraction"] > raw["activity_fraction"]
    assert abs(normalized["activity_map"] - raw["activity_map"]) < 0.01
    # Perturbations that share the controls' phenotype (every sixth) are not found active.
    cells = screen_cells
    control_class = cells.loc[cells["Metadata_negcon"], "Metadata_class"].iloc[0]
    classes = cells[~cells["Metadata_negcon"]].groupby("Metadata_perturbation")["Metadata_class"].first()
    inactive = set(classes.index[classes == control_class])
    found = {row["perturbation"] for row in normalized["activity"] if row["active"]}
    assert len(inactive) == 6 and not found & inactive


def test_normalising_on_all_wells_of_a_balanced_plate_leaves_no_plate_effect(screen_cells):
    logging.disable(logging.WARNING)
    try:
        config = {"normalize": "standardize", "normalize_on": "all", "feature_select": []}
        scores = screen_metrics(run_recipe(screen_cells, config=config, seed=0), null_size=500, seed=0)
    finally:
        logging.disable(logging.NOTSET)
    assert scores["normalized"]["plate_map"] - scores["normalized"]["plate_chance"] < 0.02
