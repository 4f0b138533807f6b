"""The metric summary, the comparison page, and the per-table steps of the metrics rules."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.figures import plot_message
from workflow_scripts.metrics.report import (
    NO_CONFUSION,
    build_report,
    comparison_html,
    confusion_panels,
    guided_html,
    protocol_note,
    read_results,
    sample_note,
)
from workflow_scripts.metrics.retrieval import group_profiles
from workflow_scripts.metrics.suite import evaluate_layer, load_pixel_space
from workflow_scripts.metrics.summary import SUMMARY_COLUMNS, summary_row, summary_table

PROTOCOL = {
    "name": "stratified_group",
    "folds": 3,
    "groups_per_class": {"a": 3, "b": 4},
    "dropped_classes": [],
    "n_cells_scored": 60,
}


def _result(model, layer, accuracy, *, tortuosity=1.5, confusion=True, n_cells=60, n_total=60):
    grouped = {"accuracy_mean": accuracy, "accuracy_sd": 0.01, "f1_macro_mean": accuracy - 0.1}
    if confusion:
        grouped |= {"classes": ["a", "b"], "confusion": [[20, 10], [5, 25]]}
    return {
        "model": model,
        "layer": layer,
        "n_cells": n_cells,
        "n_cells_total": n_total,
        "n_features": 8,
        "summary_k": 10,
        "protocol": PROTOCOL,
        "logreg_grouped": grouped,
        "logreg_stratified": {"accuracy_mean": accuracy + 0.05, "accuracy_sd": 0.02},
        "knn_grouped": {"5": {"accuracy_mean": 0.5, "accuracy_sd": 0.1, "f1_macro_mean": 0.4}},
        "retrieval": {"map": accuracy / 2},
        "trustworthiness": {"10": 0.9},
        "backbone": {"tortuosity": tortuosity, "cell_spearman": 0.7},
    }


@pytest.fixture
def results():
    return [_result("vae", "mu", 0.8), _result("guided", "mu", 0.85, tortuosity=1.2), _result("pca", "pca", 0.6)]


# --- summary table ------------------------------------------------------------------------


def test_summary_row_columns_and_missing_metrics():
    row = summary_row(_result("vae", "mu", 0.8), kind="vae", normalize="field")
    at = SUMMARY_COLUMNS.index("mlp_f1_grouped") + 1
    assert list(row) == SUMMARY_COLUMNS[:at] + ["knn5_accuracy_grouped"] + SUMMARY_COLUMNS[at:]
    assert (row["kind"], row["normalize"], row["logreg_accuracy_grouped"]) == ("vae", "field", 0.8)
    assert math.isnan(row["mig"]) and math.isnan(row["mlp_accuracy_grouped"])


def test_summary_table_kinds_and_normalisation(results):
    table = summary_table(results, {"vae": "vae", "guided": "vae"}, {"vae": "field"})
    assert table["model"].tolist() == ["vae", "guided", "pca"]
    assert table["kind"].tolist() == ["vae", "vae", "baseline"]
    assert table["normalize"].tolist() == ["field", "", ""]


# --- the page -----------------------------------------------------------------------------


def test_protocol_and_sample_notes():
    assert protocol_note({}) == ""
    assert protocol_note({"skipped": None}) == ""
    assert protocol_note({"skipped": "one group"}) == "Grouped probes not run: one group."
    text = protocol_note(PROTOCOL | {"dropped_classes": ["c", "d"]})
    assert "stratified group, 3 folds" in text and "groups per class 3 to 4" in text
    assert text.endswith("c, d (60 cells scored; metrics.cv).")
    assert sample_note({("m", "l"): {"n_cells": 60}}).startswith("Evaluated on all 60 cells.")
    note = sample_note({("m", "l"): _result("m", "l", 0.5, n_cells=50, n_total=80)})
    assert "subsample of 50 of the 80 cells" in note and "3 folds" in note


def test_comparison_html_marks_the_best_per_metric(results):
    table = summary_table(results, {"vae": "vae", "guided": "vae"}, {})
    page = comparison_html(table, "toy", {(r["model"], r["layer"]): r for r in results})
    assert page.startswith("<html><head><meta charset='utf-8'><title>toy: metrics</title><style>")
    assert page.endswith("</table></body></html>\n")
    best = '<td style="background:#c8e6c9;font-weight:bold">'
    assert f"{best}0.850</td>" in page  # guided: best grouped accuracy
    assert f"{best}1.200</td>" in page  # guided: lowest tortuosity (lower is better)
    assert "_sd" not in page  # SD columns are left out
    assert "<td></td>" in page  # NaN metrics are blank


def test_page_escapes_every_label_and_value():
    results = [_result("<b>vae</b>", "mu&1", 0.8), _result("ae", "z", 0.7)]
    report = build_report(results, "data<script>", families={}, normalize={"ae": "a'b\"c"}, guided={"<b>vae</b>": "ae"})
    page = report.html
    assert "<script>" not in page and "<b>" not in page
    assert "data&lt;script&gt;: metrics" in page
    assert "&lt;b&gt;vae&lt;/b&gt;" in page and "mu&amp;1" in page
    assert "a&#x27;b&quot;c" in page
    assert "Expert feedback: &lt;b&gt;vae&lt;/b&gt; (guided) against ae (unguided)" in page
    # The ranking title and the confusion panel titles are for plots: plain text.
    assert report.ranking_title == "data<script>: logistic regression, groups held out"


def test_guided_html_before_after_change(results):
    table = summary_table(results, {}, {})
    assert guided_html(table, {}) == ""
    page = guided_html(table, {"guided": "vae", "missing": "vae"})
    assert "<h3>Expert feedback: guided (guided) against vae (unguided)</h3>" in page
    assert "<td>0.800</td><td>0.850</td><td style='color:#1b5e20'>+0.050</td>" in page
    assert "<th colspan=3>map<br>vae / guided / change</th>" in page
    assert "knn10_accuracy_grouped" not in page  # only the columns the summary has
    assert page.count("<tr><td>mu</td>") == 1  # the guided model without layers: no rows


def test_build_report_puts_guided_table_before_end(results):
    report = build_report(
        results, "toy", families={"vae": "vae", "guided": "vae"}, normalize={}, guided={"guided": "vae"}
    )
    assert report.metric == "logreg_accuracy_grouped"
    assert report.html.count("</body>") == 1
    assert report.html.index("Expert feedback") < report.html.index("</body>")
    assert report.summary["model"].tolist() == ["vae", "guided", "pca"]


def test_confusion_panels_best_learned_and_best_baseline(results):
    report = build_report(results, "toy", families={"vae": "vae", "guided": "vae"}, normalize={}, guided={})
    assert [title for title, _, _ in report.confusion] == ["guided/mu", "pca/pca"]
    assert report.confusion[0][1:] == (["a", "b"], [[20, 10], [5, 25]])


def test_confusion_panels_without_matrices():
    results = [_result("vae", "mu", 0.8, confusion=False), _result("pca", "pca", 0.6, confusion=False)]
    table = summary_table(results, {"vae": "vae"}, {})
    by_layer = {(r["model"], r["layer"]): r for r in results}
    assert confusion_panels(table, by_layer, "logreg_accuracy_grouped") == []
    table["logreg_accuracy_grouped"] = np.nan
    assert confusion_panels(table, by_layer, "logreg_accuracy_grouped") == []


def test_read_results_and_note_figure(tmp_path, results):
    paths = []
    for i, result in enumerate(results):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(result))
    assert read_results(paths) == results
    pytest.importorskip("matplotlib")
    plot_message(NO_CONFUSION, tmp_path / "note.png")
    assert (tmp_path / "note.png").read_bytes().startswith(b"\x89PNG")


# --- the per-table steps of the rules -----------------------------------------------------


@pytest.fixture
def cells():
    rng = np.random.default_rng(0)
    n = 40
    table = pd.DataFrame(
        {
            "Metadata_cell": [f"c{i}" for i in range(n)],
            "Metadata_class": np.repeat(["a", "b"], n // 2),
            "Metadata_well": np.tile(["w1", "w2", "w3", "w4"], n // 4),
            "Metadata_plate": "p1",
            "f1": rng.normal(size=n),
            "f2": rng.normal(size=n),
        }
    )
    table.loc[table["Metadata_class"] == "b", "Metadata_well"] += "b"
    return table


def test_group_profiles_keeps_constant_metadata_first(cells):
    profiles = group_profiles(cells, "Metadata_well", "median")
    assert profiles.columns.tolist() == [
        "Metadata_well",
        "Metadata_class",
        "Metadata_plate",
        "Metadata_n_cells",
        "f1",
        "f2",
    ]
    assert profiles["Metadata_well"].is_monotonic_increasing and len(profiles) == 8
    assert (profiles["Metadata_n_cells"] == 5).all()
    first = cells[cells["Metadata_well"] == "w1"]
    assert profiles.loc[0, "f1"] == first["f1"].median()
    # Metadata that varies within a group is dropped.
    assert "Metadata_class" not in group_profiles(cells, "Metadata_plate", "mean").columns
    with pytest.raises(ValueError, match="t.parquet: profiles.by column 'nope' is missing"):
        group_profiles(cells, "nope", source="t.parquet")


def test_evaluate_layer_reads_the_pixel_space_cells(tmp_path, cells):
    rng = np.random.default_rng(1)
    order = rng.permutation(len(cells))[:30]
    pixels = rng.normal(size=(30, 12)).astype(np.float32)
    np.savez(
        tmp_path / "space.npz", pixels=pixels, cells=cells["Metadata_cell"].to_numpy().astype(str)[order], n_total=40
    )
    space = load_pixel_space(tmp_path / "space.npz", seed=0)
    assert space["pixels_pca"].shape == (30, 12)
    cfg = {
        "label": "Metadata_class",
        "group_by": "Metadata_well",
        "summary_k": 5,
        "max_cells": 100,
        "pca_components": 5,
        "neighbors": [5],
        "mlp": False,
        "mi": False,
        "knn": [],
        "n_splits": 2,
    }
    result = evaluate_layer(cells, space, cfg, seed=0, dataset="toy", model="vae", layer="mu")
    assert list(result)[-7:] == ["dataset", "model", "layer", "n_cells_total", "label", "group_by", "summary_k"]
    assert (result["n_cells"], result["n_cells_total"], result["n_features"]) == (30, 40, 2)
    assert "mlp_grouped" not in result and "mutual_information" not in result
    with pytest.raises(ValueError, match=r"t.parquet: column 'Metadata_group' \(from metrics config\) is missing"):
        evaluate_layer(
            cells,
            space,
            cfg | {"group_by": "Metadata_group"},
            seed=0,
            dataset="",
            model="",
            layer="",
            source="t.parquet",
        )
    cells.loc[order[0], "f1"] = np.nan
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        evaluate_layer(cells, space, cfg, seed=0, dataset="", model="", layer="")
