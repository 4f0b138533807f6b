import json

import numpy as np
import pandas as pd
import pytest
from copairs.map import average_precision as copairs_average_precision
from copairs.map import mean_average_precision as copairs_mean_average_precision

from workflow_scripts.screen import metrics as M
from workflow_scripts.screen import profiling as P

META = ["Metadata_plate", "Metadata_well", "Metadata_perturbation", "Metadata_negcon", "Metadata_annotation"]


def _screen(seed=0, n_plates=4, n_ctrl=8, n_pert=12, n_moa=3, n_features=20, plate_shift=3.0, effect=1.0, noise=1.0):
    """Wells of a screen: controls on every plate, each perturbation once per plate, an annotation
    (MoA) per perturbation, and an additive shift per plate on every well."""
    rng = np.random.default_rng(seed)
    moa_effect = rng.normal(0.0, effect, size=(n_moa, n_features))
    pert_effect = rng.normal(0.0, 0.5 * effect, size=(n_pert, n_features))
    plate_offset = rng.normal(0.0, plate_shift, size=(n_plates, n_features))
    rows, X = [], []
    for p in range(n_plates):
        for w in range(n_ctrl + n_pert):
            control = w < n_ctrl
            i = w - n_ctrl
            mu = plate_offset[p] + (0.0 if control else moa_effect[i % n_moa] + pert_effect[i])
            rows.append(
                {
                    "Metadata_plate": f"P{p}",
                    "Metadata_well": f"W{w:02d}",
                    "Metadata_perturbation": "DMSO" if control else f"cpd{i:02d}",
                    "Metadata_negcon": control,
                    "Metadata_annotation": None if control else f"moa{i % n_moa}",
                }
            )
            X.append(5.0 + mu + noise * rng.normal(size=n_features))
    features = pd.DataFrame(np.array(X), columns=[f"f{j:02d}" for j in range(n_features)])
    return pd.concat([pd.DataFrame(rows), features], axis=1)


def _features(wells):
    return wells[[c for c in wells.columns if not c.startswith("Metadata_")]].to_numpy()


# --------------------------------------------------------------------------------------
# Agreement with copairs


def test_phenotypic_activity_equals_copairs(tmp_path):
    wells = _screen(seed=1, n_plates=3, n_ctrl=4, n_pert=6, effect=1.0, plate_shift=0.3)
    # A second well of cpd00 on plate P0: a same-plate replicate, never a positive of P0's cpd00.
    extra = wells[(wells["Metadata_perturbation"] == "cpd00") & (wells["Metadata_plate"] == "P0")].copy()
    extra["Metadata_well"] = "W99"
    extra[[c for c in wells.columns if c.startswith("f")]] += 0.3
    wells = pd.concat([wells, extra], ignore_index=True)
    table, summary = M.phenotypic_activity(wells, null_size=500, fdr=0.1, seed=3)

    ap = copairs_average_precision(
        wells[META],
        _features(wells),
        pos_sameby=["Metadata_perturbation"],
        pos_diffby=["Metadata_plate"],
        neg_sameby=[],
        neg_diffby=["Metadata_negcon"],
        progress_bar=False,
    )
    ap = ap[~ap["Metadata_negcon"]]
    reference = copairs_mean_average_precision(
        ap, ["Metadata_perturbation"], null_size=500, threshold=0.1, seed=3, progress_bar=False, cache_dir=tmp_path
    ).set_index("Metadata_perturbation")
    ours = table.set_index("Metadata_perturbation")
    assert list(ours.index) == [f"cpd{i:02d}" for i in range(6)]
    np.testing.assert_allclose(ours["mAP"], reference.loc[ours.index, "mean_average_precision"], rtol=1e-12)
    np.testing.assert_allclose(ours["p_value"], reference.loc[ours.index, "p_value"], rtol=1e-12)
    np.testing.assert_allclose(ours["q_value"], reference.loc[ours.index, "corrected_p_value"], rtol=1e-12)
    np.testing.assert_array_equal(ours["active"], reference.loc[ours.index, "below_corrected_p"])
    np.testing.assert_allclose(
        ours["normalized_mAP"], reference.loc[ours.index, "mean_normalized_average_precision"], rtol=1e-9
    )
    assert ours.loc["cpd00", "n_queries"] == 4
    assert summary["activity_map"] == pytest.approx(ours["mAP"].mean(), rel=1e-12)
    assert summary["activity_fraction"] == pytest.approx(ours["active"].mean())
    assert 0 < summary["activity_fraction"] < 1  # some active and some not: the comparison means something


def test_consistency_equals_copairs_on_wells(tmp_path):
    wells = _screen(seed=2, n_plates=2, n_ctrl=3, n_pert=8, n_moa=3, effect=0.5)
    table, summary = M.consistency(wells, null_size=400, seed=5)

    treated = wells[~wells["Metadata_negcon"]].reset_index(drop=True)
    ap = copairs_average_precision(
        treated[META],
        _features(treated),
        pos_sameby=["Metadata_annotation"],
        pos_diffby=["Metadata_perturbation"],
        neg_sameby=[],
        neg_diffby=["Metadata_annotation"],
        progress_bar=False,
    )
    reference = copairs_mean_average_precision(
        ap, ["Metadata_annotation"], null_size=400, threshold=0.05, seed=5, progress_bar=False, cache_dir=tmp_path
    ).set_index("Metadata_annotation")
    ours = table.set_index("Metadata_annotation")
    assert list(ours.index) == ["moa0", "moa1", "moa2"]
    np.testing.assert_allclose(ours["mAP"], reference.loc[ours.index, "mean_average_precision"], rtol=1e-12)
    np.testing.assert_allclose(ours["p_value"], reference.loc[ours.index, "p_value"], rtol=1e-12)
    np.testing.assert_allclose(ours["q_value"], reference.loc[ours.index, "corrected_p_value"], rtol=1e-12)
    assert summary["n_annotations"] == 3
    assert summary["consistency_map"] == pytest.approx(ours["mAP"].mean(), rel=1e-12)


def test_consistency_without_a_shared_annotation_is_nan():
    wells = _screen(n_pert=3, n_moa=3)  # every annotation has one perturbation
    table, summary = M.consistency(P.consensus(wells))
    assert table.empty and summary["n_annotations"] == 0 and np.isnan(summary["consistency_map"])


def test_activity_is_deterministic_and_active_perturbations_are_found():
    wells = P.normalize_plates(_screen(seed=4, effect=1.5))
    first = M.phenotypic_activity(wells, null_size=1000, seed=0)
    second = M.phenotypic_activity(wells, null_size=1000, seed=0)
    pd.testing.assert_frame_equal(first[0], second[0])
    assert first[1]["activity_fraction"] == 1.0 and first[1]["activity_map"] > 0.8
    # Controls against controls: a fake "perturbation" of control-like wells is inactive.
    fake = wells.copy()
    fake.loc[fake["Metadata_negcon"] & fake["Metadata_well"].isin(["W00", "W01"]), "Metadata_negcon"] = False
    fake.loc[~fake["Metadata_negcon"] & fake["Metadata_well"].isin(["W00", "W01"]), "Metadata_perturbation"] = "mock"
    table, _ = M.phenotypic_activity(fake, null_size=1000)
    assert not table.set_index("Metadata_perturbation").loc["mock", "active"]


# --------------------------------------------------------------------------------------
# Plate effect


def test_normalisation_removes_the_plate_effect_and_raises_activity_and_consistency():
    # 32 controls per plate: the plate's median and MAD are estimated well enough that what is
    # left of the shift is small next to the wells' noise (with 16, about 0.07 above chance).
    raw = _screen(seed=0, n_plates=4, n_ctrl=32, n_pert=24, n_moa=4, plate_shift=3.0, effect=1.0)
    normalized = P.normalize_plates(raw)
    before, after = M.label_map(raw), M.label_map(normalized)
    assert before["chance"] == pytest.approx(after["chance"]) == pytest.approx((56 - 1) / (224 - 1))
    assert before["map"] > before["chance"] + 0.4
    assert abs(after["map"] - after["chance"]) < 0.05, after
    act_raw = M.phenotypic_activity(raw, null_size=500)[1]["activity_map"]
    act_norm = M.phenotypic_activity(normalized, null_size=500)[1]["activity_map"]
    assert act_norm > act_raw + 0.2
    cons_raw = M.consistency(raw, null_size=500)[1]["consistency_map"]
    cons_norm = M.consistency(normalized, null_size=500)[1]["consistency_map"]
    assert cons_norm > cons_raw + 0.1


# --------------------------------------------------------------------------------------
# NSC / NSCB


def _angles(degrees, norms):
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1) * np.asarray(norms)[:, None]


def test_nsc_and_nscb_on_a_hand_computed_bbbc_fixture():
    # 6 treatment profiles (3 compounds x 2 concentrations), 2 MoAs, 2 batches, at these angles
    # (cosine similarity falls with the angle between two profiles; norms do not matter):
    #   0 c1 A b1 0deg | 1 c1 A b2 10deg | 2 c2 A b1 20deg | 3 c2 A b2 80deg | 4 c3 B b1 35deg | 5 c3 B b2 70deg
    # NSC (other compounds only):
    #   q0 -> 2 (20 deg away, A) right; q1 -> 2 (10, A) right; q2 -> 1 (10, A) right;
    #   q3 -> 5 (10, B) wrong; q4, q5: MoA B has no other compound, so they are not scored. 3/4.
    # NSCB (other compounds and other batches):
    #   q0 (b1) -> among 3 (80) and 5 (70): 5, B, wrong; q1 (b2) -> among 2 (10) and 4 (25): 2 right;
    #   q2 (b1) -> among 1 (10) and 5 (50): 1 right; q3 (b2) -> among 0 (80) and 4 (45): 4 wrong. 2/4.
    X = _angles([0, 10, 20, 80, 35, 70], [1.0, 2.0, 0.5, 3.0, 1.0, 1.5])
    profiles = pd.DataFrame(
        {
            "Metadata_compound": ["c1", "c1", "c2", "c2", "c3", "c3"],
            "Metadata_moa": ["A", "A", "A", "A", "B", "B"],
            "Metadata_batch": ["b1", "b2", "b1", "b2", "b1", "b2"],
            "f0": X[:, 0],
            "f1": X[:, 1],
        }
    )
    kw = {"moa": "Metadata_moa", "compound": "Metadata_compound"}
    assert M.nsc_accuracy(profiles, **kw) == pytest.approx(3 / 4)
    assert M.nsc_accuracy(profiles, **kw, batch="Metadata_batch") == pytest.approx(2 / 4)
    assert M.nsc_accuracy(profiles.iloc[::-1], **kw, chunk_size=1) == pytest.approx(3 / 4)
    # A DMSO row (no MoA) and a control row are left out.
    dmso = pd.DataFrame({"Metadata_compound": ["DMSO"], "Metadata_moa": [None], "Metadata_batch": ["b1"]})
    dmso[["f0", "f1"]] = X[:1] * 1.01
    assert M.nsc_accuracy(pd.concat([profiles, dmso], ignore_index=True), **kw) == pytest.approx(3 / 4)


# --------------------------------------------------------------------------------------
# Layout errors


def test_a_perturbation_on_a_single_plate_is_named():
    wells = _screen(n_plates=2)
    wells = wells[~((wells["Metadata_perturbation"] == "cpd03") & (wells["Metadata_plate"] == "P1"))]
    with pytest.raises(ValueError, match=r"Metadata_perturbation 'cpd03' is on a single plate \(Metadata_plate 'P0'\)"):
        M.phenotypic_activity(wells)
    table, _ = M.phenotypic_activity(wells, across_plates=False, null_size=100)
    assert "cpd03" not in set(table["Metadata_perturbation"])  # one well: no positive, not scored


def test_control_layout_errors_name_the_column_and_value():
    wells = _screen(n_plates=2)
    shared = wells.copy()
    shared.loc[shared["Metadata_perturbation"] == "cpd01", "Metadata_perturbation"] = "DMSO"
    with pytest.raises(ValueError, match=r"Metadata_perturbation value\(s\) \['DMSO'\] name both control and treated"):
        M.phenotypic_activity(shared)
    with pytest.raises(ValueError, match=r"no negative-control well \(Metadata_negcon is never True\)"):
        M.phenotypic_activity(wells.assign(Metadata_negcon=False))
    with pytest.raises(ValueError, match=r"'Metadata_negcon' must be True or False; found \['DMSO'"):
        M.phenotypic_activity(wells.assign(Metadata_negcon=np.where(wells["Metadata_negcon"], "DMSO", "treated")))


# --------------------------------------------------------------------------------------
# screen_metrics


def test_screen_metrics_structure_and_json():
    raw = _screen(seed=3, n_plates=4, n_ctrl=6, n_pert=8, n_moa=2)
    raw["Metadata_compound"] = raw["Metadata_perturbation"]
    raw["Metadata_batch"] = raw["Metadata_plate"].map({"P0": "B1", "P1": "B1", "P2": "B2", "P3": "B2"})
    steps = {"raw": raw, "normalized": P.normalize_plates(raw)}
    nsc = {"moa": "Metadata_annotation", "compound": "Metadata_compound", "batch": "Metadata_batch"}
    result = M.screen_metrics(steps, null_size=200, nsc=nsc)
    assert list(result) == ["raw", "normalized"]
    step = result["normalized"]
    assert set(step) == {
        "n_wells",
        "n_zero_wells",
        "n_features",
        "activity_map",
        "activity_fraction",
        "n_perturbations",
        "plate_map",
        "plate_chance",
        "consistency_map",
        "consistency_fraction",
        "n_annotations",
        "nsc",
        "nscb",
        "activity",
        "consistency",
    }
    assert step["n_wells"] == 56 and step["n_perturbations"] == 8 and step["n_annotations"] == 2
    assert set(step["activity"][0]) == {
        "perturbation",
        "mAP",
        "normalized_mAP",
        "p_value",
        "q_value",
        "active",
        "n_queries",
    }
    assert result["raw"]["plate_map"] > step["plate_map"]
    assert 0.0 <= step["nsc"] <= 1.0 and 0.0 <= step["nscb"] <= 1.0
    assert json.dumps(json.loads(json.dumps(result))) == json.dumps(result)  # plain JSON types (NaN included)
    assert json.dumps(M.screen_metrics(steps, null_size=200, nsc=nsc)) == json.dumps(result)  # deterministic
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['dose'\]"):
        M.screen_metrics(steps, nsc={**nsc, "dose": "x"})


def test_screen_metrics_leave_out_all_zero_profiles():
    """A well at the controls' median on every feature (a one-feature table after
    normalisation) has no direction: it is left out and counted, not an error."""
    raw = _screen(seed=3, n_plates=4, n_ctrl=6, n_pert=8, n_moa=2)
    features = [c for c in raw.columns if not c.startswith("Metadata_")]
    raw.loc[raw.index[:3], features] = 0.0
    result = M.screen_metrics({"raw": raw}, null_size=200)
    assert result["raw"]["n_zero_wells"] == 3 and result["raw"]["n_wells"] == len(raw) - 3
    assert 0.0 <= result["raw"]["activity_map"] <= 1.0
