"""Tests of plate and well layouts (workflow_scripts.screen.layout): the standard columns, and
a clear error for every bad layout, naming the dataset, the column and the value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_scripts.screen.layout import (
    LAYOUT_KEYS,
    NEGCON_COLUMN,
    STANDARD_COLUMNS,
    apply_layout,
    normalize_layout,
    synthetic_layout,
)
from workflow_scripts.sources.bbbc import build_field_table
from workflow_scripts.sources.synthetic import CONTROL, LAYOUT_COLUMNS, plate_layout

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def screen():
    """Cells of a synthetic screen: 3 plates x 24 wells, 2 cells per well, two feature columns."""
    wells = plate_layout(0, 72, 3, 4)
    cells = wells.loc[wells.index.repeat(2)].reset_index(drop=True)
    cells.insert(0, "Metadata_image", [f"f{i:05d}" for i in cells["Metadata_field_index"]])
    rng = np.random.default_rng(0)
    return cells.assign(f0=rng.normal(size=len(cells)), f1=rng.normal(size=len(cells)))


def _error(cells, layout, dataset="screen") -> str:
    with pytest.raises(ValueError) as info:
        apply_layout(cells, layout, dataset=dataset)
    return str(info.value)


def test_synthetic_layout_fits_the_synthetic_screen(screen):
    out = apply_layout(screen, synthetic_layout(), dataset="screen")
    assert synthetic_layout()["negative_control"] == CONTROL
    assert {synthetic_layout()[k] for k in ("plate", "well", "perturbation", "annotation")} == set(LAYOUT_COLUMNS)
    assert out[NEGCON_COLUMN].dtype == bool
    assert out[NEGCON_COLUMN].sum() == 3 * 4 * 2  # 4 control wells per plate, 2 cells each
    assert out[NEGCON_COLUMN].equals(out["Metadata_perturbation"] == CONTROL)
    assert out["Metadata_annotation"].tolist() == screen["Metadata_moa"].tolist()
    assert "Metadata_batch" not in out and "Metadata_compound" not in out
    # Metadata first, features untouched, the input left alone.
    assert list(out.columns[-2:]) == ["f0", "f1"] and all(c.startswith("Metadata_") for c in out.columns[:-2])
    pd.testing.assert_frame_equal(out[["f0", "f1"]], screen[["f0", "f1"]])
    assert NEGCON_COLUMN not in screen


def test_columns_with_or_without_prefix_lists_and_control_rules():
    table = pd.DataFrame(
        {
            "Metadata_Plate": [22123, 22123, 22141, 22141, 22141],
            "well": ["B02", "C03", "B02", "C03", "D04"],
            "Metadata_compound": ["DMSO", "taxol", "DMSO", "taxol", "taxol"],
            "Metadata_concentration": [0.0, 0.3, 0.0, 0.3, 0.3],
            "Metadata_moa": [np.nan, "Microtubule stabilizers", np.nan, "Microtubule stabilizers", "x"],
            "Metadata_week": ["Week1"] * 5,
        }
    )
    layout = {
        "plate": "Metadata_Plate",
        "well": "well",
        "perturbation": ["compound", "concentration"],
        "negative_control": {"column": "compound", "value": ["DMSO"]},
        "annotation": "moa",
        "compound": "compound",
        "batch": "Metadata_week",
    }
    out = apply_layout(table, layout, dataset="bbbc")
    assert out["Metadata_plate"].tolist() == ["22123", "22123", "22141", "22141", "22141"]
    assert out["Metadata_well"].tolist() == table["well"].tolist()
    assert out["Metadata_perturbation"].tolist() == ["DMSO@0", "taxol@0.3", "DMSO@0", "taxol@0.3", "taxol@0.3"]
    assert out[NEGCON_COLUMN].tolist() == [True, False, True, False, False]
    assert out["Metadata_annotation"].isna().tolist() == [True, False, True, False, False]
    assert out["Metadata_batch"].eq("Week1").all() and out["Metadata_compound"].equals(table["Metadata_compound"])
    # A control value of the perturbation itself; numbers match their text.
    by_value = apply_layout(table, {**layout, "perturbation": "compound", "negative_control": "DMSO"}, dataset="b")
    assert by_value[NEGCON_COLUMN].tolist() == [True, False, True, False, False]
    by_number = apply_layout(
        table, {**layout, "negative_control": {"column": "concentration", "value": 0}}, dataset="b"
    )
    assert by_number[NEGCON_COLUMN].tolist() == [True, False, True, False, False]


def test_normalize_layout_gives_one_shape():
    spec = normalize_layout(synthetic_layout(), dataset="d")
    assert spec["plate"] == ["Metadata_plate"] and spec["negative_control"] == {"columns": None, "values": ["control"]}
    assert set(STANDARD_COLUMNS) | {"negative_control"} == set(LAYOUT_KEYS)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("plate", r"datasets\.screen\.layout='plate': expected a mapping"),
        ({"plate": "p"}, r"datasets\.screen\.layout: missing key\(s\) \['well', 'perturbation', 'negative_control'\]"),
        ({**synthetic_layout(), "dose": "x"}, r"datasets\.screen\.layout: unknown key\(s\) \['dose'\]"),
        ({**synthetic_layout(), "plate": ""}, r"datasets\.screen\.layout\.plate='': expected a column name"),
        ({**synthetic_layout(), "well": ["a", 3]}, r"layout\.well=\['a', 3\]: expected a column name"),
        (
            {**synthetic_layout(), "negative_control": {"column": "x"}},
            r"layout\.negative_control=.*expected a value or",
        ),
        ({**synthetic_layout(), "negative_control": []}, r"layout\.negative_control=\[\]: expected a value"),
        ({**synthetic_layout(), "negative_control": {"column": "x", "value": {"a": 1}}}, r"negative_control\.value="),
    ],
)
def test_malformed_layouts_name_the_key(screen, layout, message):
    with pytest.raises(ValueError, match=message):
        apply_layout(screen, layout, dataset="screen")


def test_missing_column_lists_the_columns_present(screen):
    message = _error(screen, {**synthetic_layout(), "plate": "plaque", "batch": "week"})
    assert message.startswith("dataset 'screen': the plate layout does not fit its table:")
    assert "datasets.screen.layout.plate: no column 'Metadata_plaque' or 'plaque'" in message
    assert "datasets.screen.layout.batch: no column 'Metadata_week' or 'week'" in message  # both at once
    assert "the columns present are ['Metadata_image', 'Metadata_field_index', 'Metadata_plate'" in message
    control = {"column": "Metadata_is_control", "value": True}
    assert "layout.negative_control.column: no column 'Metadata_is_control'" in _error(
        screen, {**synthetic_layout(), "negative_control": control}
    )
    # A wide table lists its metadata columns only.
    wide = screen.assign(**{f"f{k}": 0.0 for k in range(2, 40)})
    assert "the metadata columns present are ['Metadata_image'" in _error(wide, {**synthetic_layout(), "well": "x"})


def test_unknown_control_value_lists_the_values_found(screen):
    message = _error(screen, {**synthetic_layout(), "negative_control": ["control", "DMSO"]})
    assert "layout.negative_control: value(s) ['DMSO'] not found in column 'Metadata_perturbation'" in message
    assert "values found: ['control', 'pert01', 'pert02'" in message and "(21 in all)" in message
    assert "have no negative-control well" not in message  # not every plate again
    message = _error(screen, {**synthetic_layout(), "negative_control": {"column": "moa", "value": "ctrl"}})
    assert "value(s) ['ctrl'] not found in column 'Metadata_moa'; values found: ['control', 'cytoplasmic'," in message


def test_plate_without_controls_is_named(screen):
    no_controls = (screen["Metadata_plate"].isin(["p02", "p03"])) & (screen["Metadata_perturbation"] == CONTROL)
    message = _error(screen[~no_controls], synthetic_layout())
    assert (
        "datasets.screen.layout: plate(s) ['p02', 'p03'] (column 'Metadata_plate') have no negative-control well "
        "(['control'] in column 'Metadata_perturbation')"
    ) in message


def test_perturbation_on_one_plate_is_named_with_its_plate(screen):
    alone = screen["Metadata_perturbation"].isin(["pert05", "pert11"]) & (screen["Metadata_plate"] != "p03")
    message = _error(screen[~alone], synthetic_layout())
    assert "perturbation(s) on only one plate (perturbation 'Metadata_perturbation', plate 'Metadata_plate')" in message
    assert "'pert05' on plate 'p03'; 'pert11' on plate 'p03'" in message
    # A perturbation name unique to one plate, e.g. a typo.
    typo = screen.copy()
    typo.loc[typo["Metadata_perturbation"] == "pert02", "Metadata_perturbation"] = ["pert2"] * 2 + ["pert02"] * 4
    assert "'pert2' on plate 'p01'" in _error(typo, synthetic_layout())


def test_every_problem_is_reported_at_once(screen):
    bad = screen.copy()
    bad = bad[~((bad["Metadata_plate"] == "p01") & (bad["Metadata_perturbation"] == CONTROL))]
    bad = bad[~(bad["Metadata_perturbation"].eq("pert07") & bad["Metadata_plate"].ne("p02"))]
    bad.loc[bad.index[[0, 2]], "Metadata_well"] = "Z99"  # cells of wells A01 and A02
    message = _error(bad, synthetic_layout())
    assert message.count("\n- ") == 3
    assert "plate(s) ['p01']" in message and "'pert07' on plate 'p02'" in message
    assert (
        "well(s) holding several perturbations" in message and "plate 'p01' well 'Z99': ['pert06', 'pert12']" in message
    )


def test_missing_values_are_counted(screen):
    bad = screen.copy()
    bad.loc[[3, 4], "Metadata_plate"] = None
    message = _error(bad, synthetic_layout())
    assert "layout.plate: column 'Metadata_plate' has 2 missing value(s) (rows [3, 4])" in message
    # The annotation may be missing (controls often have none).
    fine = screen.assign(Metadata_moa=screen["Metadata_moa"].where(screen["Metadata_perturbation"] != CONTROL))
    out = apply_layout(fine, synthetic_layout(), dataset="screen")
    assert out.loc[out[NEGCON_COLUMN], "Metadata_annotation"].isna().all()


def _bbbc_images(root: Path) -> pd.DataFrame:
    """A BBBC021-shaped image table of three plates (two weeks) with its (empty) files."""
    rows = []
    design = {"B02": ("DMSO", 0.0), "C03": ("taxol", 0.3), "D04": ("nocodazole", 1.0), "E05": ("DMSO", 0.0)}
    for plate in ("Week1_22123", "Week1_22141", "Week2_24121"):
        (root / "images" / plate).mkdir(parents=True)
        for well, (compound, concentration) in design.items():
            row = {"TableNumber": 1, "ImageNumber": len(rows) + 1}
            for channel, w in (("DAPI", 1), ("Tubulin", 2), ("Actin", 4)):
                name = f"{plate[:5]}_150607_{well}_s1_w{w}.tif"
                (root / "images" / plate / name).write_bytes(b"x")
                row[f"Image_FileName_{channel}"], row[f"Image_PathName_{channel}"] = name, f"{plate[:5]}/{plate}"
            rows.append(
                {
                    **row,
                    "Image_Metadata_Plate_DAPI": plate,
                    "Image_Metadata_Well_DAPI": well,
                    "Replicate": 1,
                    "Image_Metadata_Compound": compound,
                    "Image_Metadata_Concentration": concentration,
                }
            )
    return pd.DataFrame(rows)


def test_the_bbbc021_example_layout_fits_a_bbbc021_field_table(tmp_path):
    config = yaml.safe_load((REPO / "config" / "examples" / "bbbc021.yaml").read_text())
    layout = config["datasets"]["bbbc021"]["layout"]
    moa = pd.DataFrame(
        {
            "compound": ["DMSO", "taxol", "nocodazole"],
            "concentration": [0.0, 0.3, 1.0],
            "moa": ["DMSO", "Microtubule stabilizers", "Microtubule destabilizers"],
        }
    )
    channels = {"DAPI": "DAPI", "Tubulin": "Tubulin", "Actin": "Actin"}
    fields = build_field_table(_bbbc_images(tmp_path), tmp_path, channels=channels, moa=moa)
    assert fields["Metadata_treatment"].tolist()[:4] == ["DMSO@0", "taxol@0.3", "nocodazole@1", "DMSO@0"]
    assert fields["Metadata_batch"].tolist() == ["Week1"] * 8 + ["Week2"] * 4
    out = apply_layout(fields, layout, dataset="bbbc021")
    assert out["Metadata_perturbation"].tolist() == fields["Metadata_treatment"].tolist()
    assert out[NEGCON_COLUMN].tolist() == [True, False, False, True] * 3
    assert out["Metadata_annotation"].tolist() == fields["Metadata_moa"].tolist()
    assert out["Metadata_compound"].tolist() == fields["Metadata_compound"].tolist()
    assert out["Metadata_batch"].tolist() == fields["Metadata_batch"].tolist()
    assert out["Metadata_plate"].nunique() == 3 and out["Metadata_well"].nunique() == 4


def test_bbbc_batch_is_the_plate_without_a_week(tmp_path):
    images = pd.DataFrame(
        {
            "Image_FileName_DNA": ["a.tif", "b.tif"],
            "Image_PathName_DNA": ["p", "p"],
            "Metadata_Plate": ["Week10-3", "plateX"],
            "Metadata_Well": ["A01", "A02"],
            "Metadata_Compound": ["x", np.nan],
        }
    )
    (tmp_path / "images" / "p").mkdir(parents=True)
    for name in ("a.tif", "b.tif"):
        (tmp_path / "images" / "p" / name).write_bytes(b"x")
    table = build_field_table(images, tmp_path, channels={"dna": "DNA"}, class_column="well")
    assert table["Metadata_batch"].tolist() == ["Week10", "plateX"]
    assert table["Metadata_treatment"].iloc[0] == "x" and pd.isna(table["Metadata_treatment"].iloc[1])


def test_the_screen_example_is_a_synthetic_plate_layout():
    config = yaml.safe_load((REPO / "config" / "examples" / "screen.yaml").read_text())
    (name,) = config["run_datasets"]
    entry = config["datasets"][name]
    assert entry["source"] == "synthetic" and entry["n_fields"] % entry["plates"] == 0
    assert entry["layout"] == synthetic_layout()
    wells = plate_layout(config.get("seed", 0), entry["n_fields"], entry["plates"], entry["controls_per_plate"])
    apply_layout(wells, entry["layout"], dataset=name)
