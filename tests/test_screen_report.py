"""The screen's scores in the summary table, on the comparison page and in the report panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from workflow_scripts.figures import plot_screen_steps
from workflow_scripts.metrics.report import screen_html, with_screen_scores
from workflow_scripts.screen.run import nsc_columns, summary_rows


def _record(model, layer, base):
    steps = {
        "raw": {"activity_map": base, "activity_fraction": 0.5, "plate_map": 0.6, "plate_chance": 0.25},
        "normalized": {"activity_map": base + 0.1, "activity_fraction": 0.75, "plate_map": 0.27, "plate_chance": 0.25},
    }
    return {"model": model, "layer": layer, "final_step": "normalized", "steps": steps}


RECORDS = [_record("vae", "mu", 0.4), _record("vae", "conv1", 0.5), _record("pca", "pixels", 0.2)]


def test_summary_rows_one_per_table_step_and_score():
    table = summary_rows(RECORDS, {"vae": "vae"})
    assert len(table) == 3 * 2 * 4
    assert set(table.loc[table["model"] == "pca", "kind"]) == {"baseline"}
    final = table[table["final"] & (table["metric"] == "activity_map")].set_index("layer")["value"]
    assert final.to_dict() == {"mu": 0.5, "conv1": 0.6, "pixels": 0.30000000000000004}


def test_final_scores_become_summary_columns():
    summary = pd.DataFrame({"model": ["pca", "vae", "vae"], "layer": ["pixels", "conv1", "mu"], "map": [0.1, 0.2, 0.3]})
    out = with_screen_scores(summary, summary_rows(RECORDS, {"vae": "vae"}))
    assert list(out.columns) == ["model", "layer", "map", "activity_map", "activity_fraction", "plate_map", "plate_map_chance"]
    assert out.set_index("layer").loc["mu", "activity_map"] == 0.5 and out.set_index("layer").loc["mu", "plate_map"] == 0.27


def test_screen_html_escapes_and_shows_every_step():
    records = [_record("<b>vae</b>", "mu", 0.4)]
    page = screen_html(summary_rows(records, {}))
    assert "&lt;b&gt;vae&lt;/b&gt;" in page and "<b>vae" not in page
    assert page.count("normalized") >= 4 and "0.500" in page


def test_nsc_needs_moa_and_compound():
    assert nsc_columns({"annotation": "moa", "compound": "c"})["batch"] is None
    assert nsc_columns({"compound": "c"}) is None


def test_screen_panel_is_drawn(tmp_path):
    path = tmp_path / "screen.png"
    plot_screen_steps(summary_rows(RECORDS, {"vae": "vae"}), path, title="demo")
    with Image.open(path) as image:
        assert image.size[0] > 400 and np.unique(np.asarray(image.convert("L"))).size > 20
