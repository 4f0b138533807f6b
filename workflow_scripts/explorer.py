"""Interactive cell explorer: one self-contained HTML page per dataset, model and layer.

A Bokeh scatter plot of the 2-D embedding (UMAP) of a feature table. Hovering a point shows the
cell's crop (a colour composite of its channels) and its metadata; points are coloured by any
metadata column or by local quality and filtered by class and group; lasso and box selection.
The page also collects expert feedback: label the selected cells, or drag points to new positions
(anchors), then export ``Metadata_cell, label, anchor_x, anchor_y, weight`` as CSV for
``models.<name>.feedback`` (see :mod:`workflow_scripts.feedback`).

Bokeh writes the page with its JavaScript inline, so it opens from disk without a server or a
network. The only hand-written JavaScript is the few callbacks of the widgets (colour, filter,
feedback, export). Thumbnails are 32 px JPEG data URIs (about 1 KB each), so a page of 20,000
cells stays far under 50 MB.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["composite_rgb", "thumbnails", "build_explorer", "CHANNEL_COLOURS"]

#: Display colour per channel role (the Human Protein Atlas convention: nucleus blue,
#: structure red, protein green); other channels grey.
CHANNEL_COLOURS = {
    "nucleus": (0.0, 0.35, 1.0),
    "structure": (1.0, 0.0, 0.0),
    "protein": (0.0, 1.0, 0.0),
    "other": (0.6, 0.6, 0.6),
}

#: Palette for categorical colouring (colour-blind-safe Okabe-Ito plus greys), cycled.
_PALETTE = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#F0E442",
    "#0072B2",
    "#D55E00",
    "#CC79A7",
    "#000000",
    "#999999",
    "#7F3C8D",
    "#11A579",
    "#3969AC",
]


def composite_rgb(crops: np.ndarray, roles: list[str], *, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """``(N, C, H, W)`` crops -> ``(N, H, W, 3)`` uint8 colour composites.

    Each channel is scaled by its ``low``/``high`` percentiles over all cells (so brightness is
    comparable between cells), coloured by its role and the colours are added (clipped).
    """
    crops = np.asarray(crops, dtype=np.float32)
    if crops.ndim != 4 or crops.shape[1] != len(roles):
        raise ValueError(f"crops must be (N, {len(roles)}, H, W) for channel roles {roles}; got {crops.shape}")
    rgb = np.zeros((crops.shape[0], crops.shape[2], crops.shape[3], 3), np.float32)
    for c, role in enumerate(roles):
        plane = crops[:, c]
        lo, hi = np.percentile(plane, [low, high]) if plane.size else (0.0, 1.0)
        scaled = np.clip((plane - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
        rgb += scaled[..., None] * np.asarray(CHANNEL_COLOURS.get(role, CHANNEL_COLOURS["other"]), np.float32)
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


def thumbnails(crops: np.ndarray, roles: list[str], size: int = 32, quality: int = 85) -> list[str]:
    """One ``data:image/jpeg;base64,...`` URI per cell: its colour composite at ``size`` px."""
    from PIL import Image

    rgb = composite_rgb(crops, roles)
    uris = []
    for image in rgb:
        pil = Image.fromarray(image)
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=quality)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    return uris


def _colours(values: pd.Series) -> list[str]:
    """One hex colour per value: a palette for categories, viridis for numbers."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 12:
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        v = values.to_numpy(dtype=float)
        lo, hi = np.nanpercentile(v, [1, 99]) if np.isfinite(v).any() else (0.0, 1.0)
        scaled = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
        rgba = colormaps["viridis"](np.nan_to_num(scaled, nan=0.0))
        return [to_hex(row[:3]) for row in rgba]
    text = _text(values)
    codes = {v: i for i, v in enumerate(sorted(set(text)))}
    return [_PALETTE[codes[v] % len(_PALETTE)] for v in text]


def _text(values: pd.Series) -> list[str]:
    """Values as display strings; missing values (NaN, None, pd.NA) as "NA"."""
    return ["NA" if pd.isna(v) else str(v) for v in values.tolist()]


def build_explorer(
    coords: np.ndarray,
    table: pd.DataFrame,
    thumbs: list[str],
    path: str | Path,
    *,
    title: str,
    label: str = "Metadata_class",
    group: str = "Metadata_group",
) -> None:
    """Write the explorer page for ``table`` (one row per cell, ``Metadata_*`` columns and an
    optional ``local_quality``) at 2-D positions ``coords``, atomically."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (
        BooleanFilter,
        Button,
        CDSView,
        ColumnDataSource,
        CustomJS,
        DataTable,
        Div,
        HoverTool,
        MultiChoice,
        NumericInput,
        PointDrawTool,
        Select,
        TableColumn,
        TextAreaInput,
        TextInput,
    )
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    from workflow_scripts.io import atomic_path

    coords = np.asarray(coords, dtype=float)
    n = len(table)
    if coords.shape != (n, 2) or len(thumbs) != n:
        raise ValueError(f"{path}: coords {coords.shape}, {len(thumbs)} thumbnails and {n} table rows must agree")
    for column_name in ("Metadata_cell", label, group):
        if column_name not in table.columns:
            raise ValueError(f"{path}: column {column_name!r} is missing from the cell table")
    meta = [c for c in table.columns if c.startswith("Metadata_") and c not in ("Metadata_shard", "Metadata_row")]
    colour_by = [c for c in meta if c != "Metadata_cell" and table[c].nunique() > 1]
    if "local_quality" in table.columns:
        colour_by.append("local_quality")
    data = {
        "x": coords[:, 0],
        "y": coords[:, 1],
        "x0": coords[:, 0].copy(),
        "y0": coords[:, 1].copy(),
        "thumb": list(thumbs),
        **{c: _text(table[c]) for c in meta},
    }
    if "local_quality" in table.columns:
        data["local_quality"] = np.round(table["local_quality"].to_numpy(dtype=float), 3)
    for c in colour_by:
        data[f"colour__{c}"] = _colours(table[c])
    first = label if label in colour_by else colour_by[0] if colour_by else None
    data["colour"] = list(data[f"colour__{first}"]) if first else ["#1f77b4"] * n
    source = ColumnDataSource(data, name="cells")
    view = CDSView(filter=BooleanFilter([True] * n))

    plot = figure(
        title=title,
        width=760,
        height=640,
        tools="pan,wheel_zoom,box_select,lasso_select,reset,save",
        active_drag="lasso_select",
        name="map",
        output_backend="webgl" if n > 5000 else "canvas",
    )
    plot.xaxis.axis_label, plot.yaxis.axis_label = "UMAP 1", "UMAP 2"
    renderer = plot.scatter(
        "x", "y", source=source, view=view, size=6, fill_color="colour", line_color=None, fill_alpha=0.8,
        selection_line_color="black", nonselection_fill_alpha=0.25, name="points",
    )  # fmt: skip
    skip = {"Metadata_cell", "Metadata_x", "Metadata_y", "Metadata_label"}
    shown = list(dict.fromkeys([label, group] + [c for c in meta if c not in skip]))[:8]
    rows = "".join(f"<div><b>{c.removeprefix('Metadata_')}</b>: @{{{c}}}</div>" for c in shown)
    quality = "<div><b>local quality</b>: @local_quality</div>" if "local_quality" in data else ""
    plot.add_tools(
        HoverTool(
            renderers=[renderer],
            tooltips=(
                '<div class="cell-tooltip" style="display:flex;gap:6px">'
                '<img class="cell-thumb" src="@thumb" width="96" height="96" style="image-rendering:pixelated">'
                f'<div style="font-size:11px"><div><b>cell</b>: @Metadata_cell</div>{rows}{quality}</div></div>'
            ),
        )
    )
    drag = PointDrawTool(renderers=[renderer], add=False, drag=True, description="Drag points to pin anchors")
    plot.add_tools(drag)

    colour_select = Select(title="Colour by", value=first or "", options=colour_by, name="colour_by")
    colour_select.js_on_change(
        "value",
        CustomJS(
            args={"source": source},
            code="source.data['colour'] = source.data['colour__' + this.value].slice(); source.change.emit();",
        ),
    )
    classes = sorted(set(_text(table[label])))
    groups = sorted(set(_text(table[group])))
    class_filter = MultiChoice(title=f"Show {label.removeprefix('Metadata_')}", options=classes, name="class_filter")
    group_filter = MultiChoice(title=f"Show {group.removeprefix('Metadata_')}", options=groups, name="group_filter")
    refilter = CustomJS(
        args={"source": source, "view": view, "cf": class_filter, "gf": group_filter, "label": label, "group": group},
        code="""
const c = new Set(cf.value), g = new Set(gf.value);
const lab = source.data[label], grp = source.data[group];
view.filter.booleans = lab.map((v, i) => (c.size == 0 || c.has(v)) && (g.size == 0 || g.has(grp[i])));
source.change.emit();
""",
    )
    class_filter.js_on_change("value", refilter)
    group_filter.js_on_change("value", refilter)

    feedback = ColumnDataSource({"Metadata_cell": [], "label": [], "weight": []}, name="feedback")
    label_input = TextInput(title="Label for the selected cells", value="", name="label_input")
    weight_input = NumericInput(title="Weight", value=1.0, mode="float", low=0.0, name="weight_input")
    add_label = Button(label="Label selection", button_type="primary", name="label_button")
    add_label.js_on_click(
        CustomJS(
            args={"source": source, "feedback": feedback, "text": label_input, "weight": weight_input},
            code="""
const sel = source.selected.indices;
if (!text.value || sel.length == 0) { return; }
const d = feedback.data;
const cells = d['Metadata_cell'].slice(), labels = d['label'].slice(), weights = d['weight'].slice();
for (const i of sel) {
  const id = source.data['Metadata_cell'][i];
  const k = cells.indexOf(id);
  if (k >= 0) { labels[k] = text.value; weights[k] = weight.value; }
  else { cells.push(id); labels.push(text.value); weights.push(weight.value); }
}
feedback.data = {'Metadata_cell': cells, 'label': labels, 'weight': weights};
""",
        )
    )
    table_widget = DataTable(
        source=feedback,
        columns=[TableColumn(field="Metadata_cell", title="cell"), TableColumn(field="label", title="label"),
                 TableColumn(field="weight", title="weight")],
        width=360, height=160, name="feedback_table",
    )  # fmt: skip
    csv_out = TextAreaInput(title="Feedback CSV", value="", rows=6, width=360, name="csv_out")
    export = Button(label="Export CSV", button_type="success", name="export_button")
    export.js_on_click(
        CustomJS(
            args={"source": source, "feedback": feedback, "weight": weight_input, "out": csv_out},
            code="""
const d = source.data, f = feedback.data;
const rows = new Map();
for (let k = 0; k < f['Metadata_cell'].length; k++) {
  rows.set(f['Metadata_cell'][k], {label: f['label'][k], ax: '', ay: '', w: f['weight'][k]});
}
for (let i = 0; i < d['x'].length; i++) {
  if (d['x'][i] !== d['x0'][i] || d['y'][i] !== d['y0'][i]) {
    const id = d['Metadata_cell'][i];
    const r = rows.get(id) || {label: '', w: weight.value};
    r.ax = d['x'][i].toFixed(4); r.ay = d['y'][i].toFixed(4);
    rows.set(id, r);
  }
}
const q = (s) => /[",\\n]/.test(String(s)) ? '"' + String(s).replace(/"/g, '""') + '"' : String(s);
let csv = 'Metadata_cell,label,anchor_x,anchor_y,weight\\n';
for (const [id, r] of rows) { csv += [q(id), q(r.label), r.ax, r.ay, r.w].join(',') + '\\n'; }
out.value = csv;
const blob = new Blob([csv], {type: 'text/csv'});
const a = document.createElement('a');
a.href = URL.createObjectURL(blob); a.download = 'feedback.csv';
document.body.appendChild(a); a.click(); a.remove();
""",
        )
    )
    help_text = Div(
        text=(
            f"<p><b>{n:,} cells</b>. Hover a point for its crop (nucleus blue, structure red, protein green) and "
            "metadata. Select with the lasso or box tool, type a label and press <i>Label selection</i>; or pick "
            "the <i>point draw</i> tool and drag points to where they belong (anchors). <i>Export CSV</i> writes "
            "<code>feedback.csv</code> (Metadata_cell, label, anchor_x, anchor_y, weight) for "
            "<code>models.&lt;name&gt;.feedback</code>.</p>"
        ),
        width=360,
    )
    controls = column(help_text, colour_select, class_filter, group_filter, label_input, weight_input, add_label,
                      table_widget, export, csv_out)  # fmt: skip
    html = file_html(row(plot, controls), INLINE, title=title)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
