import warnings

import numpy as np
import pandas as pd
import pycytominer
import pytest

from workflow_scripts.screen import profiling as P
from workflow_scripts.screen.metrics import label_map


def _plate_table(seed=0, n_plates=3, n_ctrl=5, n_treated=7, n_features=4, shift=4.0):
    """A well table: every plate has controls and treated wells, and an additive per-plate shift."""
    rng = np.random.default_rng(seed)
    rows, X = [], []
    offsets = rng.normal(0.0, shift, size=(n_plates, n_features))
    for p in range(n_plates):
        for w in range(n_ctrl + n_treated):
            control = w < n_ctrl
            pert = "DMSO" if control else f"cpd{w - n_ctrl}"
            rows.append(
                {
                    "Metadata_plate": f"P{p + 1}",
                    "Metadata_well": f"W{w:02d}",
                    "Metadata_perturbation": pert,
                    "Metadata_negcon": control,
                }
            )
            X.append(offsets[p] + rng.normal(size=n_features) * (1.0 if control else 2.0))
    feats = pd.DataFrame(np.array(X), columns=[f"f{j}" for j in range(n_features)])
    return pd.concat([pd.DataFrame(rows), feats], axis=1)


def _cells(seed=0, n_cells=5):
    rng = np.random.default_rng(seed)
    wells = _plate_table(seed, n_plates=2, n_ctrl=3, n_treated=2, n_features=3)
    cells = wells.loc[wells.index.repeat(n_cells)].reset_index(drop=True)
    cells["Metadata_cell"] = np.tile(np.arange(n_cells), len(wells))
    cells[["f0", "f1", "f2"]] += rng.normal(size=(len(cells), 3))
    return cells


# --------------------------------------------------------------------------------------
# well_profiles


def test_well_profiles_median_counts_and_metadata():
    cells = _cells()
    wells = P.well_profiles(cells)
    assert list(wells.columns) == [
        "Metadata_plate",
        "Metadata_well",
        "Metadata_perturbation",
        "Metadata_negcon",
        "Metadata_n_cells",
        "f0",
        "f1",
        "f2",
    ]  # Metadata_cell varies within a well: dropped
    assert len(wells) == 10 and (wells["Metadata_n_cells"] == 5).all()
    expected = cells.groupby(["Metadata_plate", "Metadata_well"])[["f0", "f1", "f2"]].median().reset_index(drop=True)
    np.testing.assert_allclose(wells[["f0", "f1", "f2"]].to_numpy(), expected.to_numpy())
    assert wells["Metadata_negcon"].dtype == bool
    means = P.well_profiles(cells, how="mean")
    np.testing.assert_allclose(
        means["f1"], cells.groupby(["Metadata_plate", "Metadata_well"])["f1"].mean().to_numpy(), rtol=1e-12
    )


def test_well_profiles_rejects_a_well_with_two_perturbations():
    cells = _cells()
    cells.loc[0, "Metadata_perturbation"] = "other"
    with pytest.raises(ValueError, match=r"'Metadata_perturbation' differs within .*'P1', 'W00'"):
        P.well_profiles(cells)


def test_well_profiles_missing_column():
    with pytest.raises(ValueError, match="Metadata_well"):
        P.well_profiles(_cells().drop(columns="Metadata_well"))


# --------------------------------------------------------------------------------------
# normalize_plates


@pytest.mark.parametrize("method", ["mad_robustize", "robustize", "standardize"])
def test_normalize_plates_equals_pycytominer_per_plate(method):
    wells = _plate_table()
    out = P.normalize_plates(wells, method=method)
    assert list(out.columns) == list(wells.columns)
    pd.testing.assert_frame_equal(
        out.drop(columns=["f0", "f1", "f2", "f3"]), wells.drop(columns=["f0", "f1", "f2", "f3"])
    )
    meta = [c for c in wells.columns if c.startswith("Metadata_")]
    for _, part in wells.groupby("Metadata_plate"):
        ref = pycytominer.normalize(
            part,
            features=["f0", "f1", "f2", "f3"],
            meta_features=meta,
            samples="Metadata_negcon == True",
            method=method,
        )
        np.testing.assert_allclose(out.loc[part.index, ref.columns[len(meta) :]], ref.iloc[:, len(meta) :], rtol=1e-12)


def test_normalize_plates_mad_robust_z_by_hand():
    wells = pd.DataFrame(
        {
            "Metadata_plate": ["A"] * 5 + ["B"] * 3,
            "Metadata_well": list("abcdefgh"),
            "Metadata_negcon": [True, True, True, False, False, True, True, False],
            "f": [1.0, 2.0, 4.0, 5.0, -1.0, 10.0, 20.0, 0.0],
            "g": [0.0, 1.0, 3.0, 2.0, 2.0, 1.0, 2.0, 3.0],
        }
    )
    out = P.normalize_plates(wells)
    # Plate A, feature f: control median 2, MAD median(|1-2|, |2-2|, |4-2|) = 1, scaled by 1.4826.
    np.testing.assert_allclose(out["f"].iloc[:5], (np.array([1, 2, 4, 5, -1]) - 2) / 1.4826, rtol=1e-12)
    # Plate B: controls 10 and 20, median 15, MAD 5.
    np.testing.assert_allclose(out["f"].iloc[5:], (np.array([10, 20, 0]) - 15) / (5 * 1.4826), rtol=1e-12)
    # Rows keep their order and index, even a duplicated one, with the plates interleaved.
    shuffled = wells.iloc[[5, 0, 6, 1, 7, 2, 3, 4]].set_axis([9] * 8)
    pd.testing.assert_frame_equal(P.normalize_plates(shuffled), out.iloc[[5, 0, 6, 1, 7, 2, 3, 4]].set_axis([9] * 8))


def test_normalize_plates_without_controls_on_a_plate_names_the_plate():
    wells = _plate_table()
    wells.loc[wells["Metadata_plate"] == "P2", "Metadata_negcon"] = False
    with pytest.raises(ValueError, match=r"plate 'P2' \(Metadata_plate\) has no negative-control wells"):
        P.normalize_plates(wells)
    P.normalize_plates(wells, samples="all")  # all wells as the reference: fine


def test_normalize_plates_rejects_a_non_boolean_control_column():
    wells = _plate_table()
    wells["Metadata_negcon"] = np.where(wells["Metadata_negcon"], "yes", "no")
    with pytest.raises(ValueError, match=r"'Metadata_negcon' must be True or False; found \['yes'"):
        P.normalize_plates(wells)


def test_normalize_plates_drops_a_feature_constant_on_the_controls():
    wells = _plate_table()
    wells.loc[wells["Metadata_negcon"], "f2"] = 1.0
    with pytest.warns(UserWarning, match=r"dropping 1 feature.*'f2'"):
        out = P.normalize_plates(wells)
    assert "f2" not in out.columns and np.isfinite(out[["f0", "f1", "f3"]].to_numpy()).all()


# --------------------------------------------------------------------------------------
# select_features, sphere, harmony, consensus


def test_select_features_drops_a_correlated_and_a_constant_feature():
    wells = _plate_table(n_features=4)
    wells["f4"] = 2 * wells["f0"] + 1e-3 * np.arange(len(wells))  # correlated with f0
    wells["f5"] = 3.0  # constant
    out = P.select_features(wells, ["variance_threshold", "correlation_threshold"], corr_threshold=0.9)
    assert [c for c in out.columns if not c.startswith("Metadata_")] == ["f1", "f2", "f3", "f4"]
    assert P.select_features(wells, []).equals(wells)


def test_select_features_never_drops_every_feature():
    wells = _plate_table(n_features=1)
    wells["f0"] = 1.0
    with pytest.raises(ValueError, match=r"would drop all 1 features"):
        P.select_features(wells, ["variance_threshold"])
    with pytest.raises(ValueError, match="unknown operation"):
        P.select_features(wells, ["blocklist"])


def test_sphere_whitens_the_controls_and_keeps_shape():
    wells = _plate_table(n_plates=4, n_ctrl=10, n_treated=5, n_features=4)  # 40 controls > 4 features
    out = P.sphere(wells, epsilon=0.0)  # plain whitening: the controls' covariance becomes the identity
    assert out.shape == wells.shape and list(out.columns) == list(wells.columns)
    controls = out.loc[wells["Metadata_negcon"], ["f0", "f1", "f2", "f3"]].to_numpy()
    np.testing.assert_allclose(np.cov(controls, rowvar=False), np.eye(4), atol=1e-4)
    # Regularised (the default, epsilon=0.1): the controls' variances shrink below 1, none collapses.
    regular = P.sphere(wells).loc[wells["Metadata_negcon"], ["f0", "f1", "f2", "f3"]].to_numpy()
    variances = np.linalg.eigvalsh(np.cov(regular, rowvar=False))
    assert (variances < 1).all() and (variances > 0.3).all()


def test_sphere_with_fewer_controls_than_features():
    wells = _plate_table(n_plates=2, n_ctrl=3, n_treated=6, n_features=10)  # 6 controls, 10 features
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # generic data: no fallback needed
        out = P.sphere(wells)
    assert out.shape == wells.shape and np.isfinite(out[[f"f{j}" for j in range(10)]].to_numpy()).all()


def test_sphere_falls_back_to_principal_components_on_exact_dependencies():
    wells = _plate_table(n_plates=4, n_ctrl=10, n_treated=5, n_features=4)
    wells["f4"] = wells["f0"] + wells["f1"]  # exactly dependent
    with pytest.warns(UserWarning, match="rank 4 over 5 features"):
        out = P.sphere(wells, epsilon=0.0)
    assert [c for c in out.columns if not c.startswith("Metadata_")] == ["PC1", "PC2", "PC3", "PC4"]
    controls = out.loc[wells["Metadata_negcon"], ["PC1", "PC2", "PC3", "PC4"]].to_numpy()
    np.testing.assert_allclose(np.cov(controls, rowvar=False), np.eye(4), atol=1e-4)


def test_harmony_keeps_shape_reduces_the_plate_effect_and_is_seeded():
    wells = _plate_table(n_plates=3, n_ctrl=10, n_treated=10, n_features=5, shift=2.0)
    out = P.harmony(wells, seed=0)
    assert out.shape == wells.shape and list(out.columns) == list(wells.columns)
    before, after = label_map(wells)["map"], label_map(out)["map"]
    assert after < before - 0.1, (before, after)
    pd.testing.assert_frame_equal(out, P.harmony(wells, seed=0))
    with pytest.raises(ValueError, match=r"'Metadata_plate' has a single value 'P1'"):
        P.harmony(wells[wells["Metadata_plate"] == "P1"])


def test_consensus_keeps_constant_metadata():
    wells = _plate_table()
    wells["Metadata_annotation"] = wells["Metadata_perturbation"].map(lambda p: None if p == "DMSO" else "moa")
    out = P.consensus(wells)
    assert list(out.columns[:4]) == [
        "Metadata_perturbation",
        "Metadata_negcon",
        "Metadata_annotation",
        "Metadata_n_wells",
    ]
    dmso = out.set_index("Metadata_perturbation").loc["DMSO"]
    assert dmso["Metadata_negcon"] and pd.isna(dmso["Metadata_annotation"]) and dmso["Metadata_n_wells"] == 15
    np.testing.assert_allclose(dmso["f1"], wells.loc[wells["Metadata_negcon"], "f1"].median())


# --------------------------------------------------------------------------------------
# run_recipe


def test_run_recipe_steps_in_order_and_skipped_steps_absent():
    cells = _cells()
    steps = P.run_recipe(cells, config={"feature_select": ["drop_na_columns"], "sphere": True, "harmony": True})
    assert list(steps) == ["raw", "normalized", "feature_selected", "sphered", "harmony"]
    assert all(len(t) == 10 for t in steps.values())
    steps = P.run_recipe(cells, config={"normalize": "none", "feature_select": []})
    assert list(steps) == ["raw"]


def test_check_recipe_names_the_key():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['whiten'\]"):
        P.check_recipe({"whiten": True})
    with pytest.raises(ValueError, match=r"profiles.normalize='zscore' is invalid"):
        P.check_recipe({"normalize": "zscore"})
    with pytest.raises(ValueError, match=r"profiles.sphere='yes' is invalid"):
        P.check_recipe({"sphere": "yes"})
    assert P.check_recipe(None) == P.DEFAULT_RECIPE
