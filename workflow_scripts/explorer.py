"""Interactive cell explorer: one self-contained HTML page per dataset, model and layer.

A Bokeh scatter plot of the 2-D embedding (UMAP) of a feature table. Hovering a point shows the
cell's crop (a colour composite of its channels) and its metadata; points are coloured by any
metadata column or by local quality and filtered by class and group; lasso and box selection.
The page also collects expert feedback: label the selected cells, or drag points to new positions
(anchors), then export ``Metadata_cell, label, anchor_x, anchor_y, weight`` as CSV for
``models.<name>.feedback`` (see :mod:`workflow_scripts.training.guided`).

The crops are coloured by the channel-colour rule of the report figures
(:mod:`workflow_scripts.figures.channels`, by role), and the page shows its legend.

Bokeh writes the page with its JavaScript inline, so it opens from disk without a server or a
network. The only hand-written JavaScript is the few callbacks of the widgets (colour, filter,
feedback, export). Thumbnails are 32 px JPEG data URIs (about 1 KB each), so a page of 20,000
cells stays far under 50 MB.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
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
from matplotlib import colormaps
from matplotlib.colors import to_hex
from PIL import Image

from workflow_scripts.data import ShardedArrays
from workflow_scripts.embedding import embed_2d
from workflow_scripts.figures.channels import (
    channel_colour_names,
    composite_rgb,
    hex_colour,
    resolve_names,
    resolve_roles,
)
from workflow_scripts.figures.style import BASE, CATEGORICAL_PALETTE, GREY, SEQUENTIAL_CMAP
from workflow_scripts.io import atomic_path, feature_columns, write_parquet
from workflow_scripts.metrics.neighbourhood import local_quality
from workflow_scripts.metrics.sampling import stratified_subsample

__all__ = ["build_explorer", "channel_legend_html", "layer_page", "thumbnails"]

log = logging.getLogger(__name__)

# Metadata columns that are bookkeeping, not shown on the page.
_HIDDEN = ("Metadata_shard", "Metadata_row")
# Metadata columns left out of the tooltip's list (shown otherwise or not useful there).
_NOT_IN_TOOLTIP = {"Metadata_cell", "Metadata_x", "Metadata_y", "Metadata_label"}

# ----------------------------------------------------------------- widget callbacks (JavaScript)

_JS_COLOUR = "source.data['colour'] = source.data['colour__' + this.value].slice(); source.change.emit();"

_JS_FILTER = """
const c = new Set(cf.value), g = new Set(gf.value);
const lab = source.data[label], grp = source.data[group];
view.filter.booleans = lab.map((v, i) => (c.size == 0 || c.has(v)) && (g.size == 0 || g.has(grp[i])));
source.change.emit();
"""

_JS_LABEL = """
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
"""

_JS_EXPORT = """
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
"""

# ---------------------------------------------------------------------------------- thumbnails


def thumbnails(crops: np.ndarray, roles: Sequence[str], size: int = 32, quality: int = 85) -> list[str]:
    """Encode each cell's colour composite as a small JPEG data URI.

    The composite is :func:`workflow_scripts.figures.channels.composite_rgb`: each channel
    stretched between its 1st and 99.5th percentile over all cells (so brightness is comparable
    between cells) and coloured by its role, as in the report figures.

    Parameters
    ----------
    crops : numpy.ndarray, shape (N, C, H, W), real dtype
        The cells' crops.
    roles : sequence of str
        Role of each channel (nucleus, structure, protein, other).
    size : int
        Width and height of each thumbnail in pixels.
    quality : int
        JPEG quality.

    Returns
    -------
    list of str
        One ``data:image/jpeg;base64,...`` URI per cell.

    Raises
    ------
    ValueError
        If ``crops`` is not (N, C, H, W) with one role per channel.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4:
        raise ValueError(f"crops must be (N, {len(roles)}, H, W) for channel roles {list(roles)}; got {crops.shape}")
    rgb = (composite_rgb(crops, roles=roles) * 255).astype(np.uint8)
    return [_jpeg_uri(image, size, quality) for image in rgb]


def _jpeg_uri(image: np.ndarray, size: int, quality: int) -> str:
    """Encode an (H, W, 3) uint8 image, resized to ``size`` px, as a JPEG data URI."""
    pil = Image.fromarray(image)
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def channel_legend_html(
    n_channels: int, channel_names: Sequence[str] | None = None, channel_roles: Sequence[str] | None = None
) -> str:
    """Write the colour legend of the thumbnails as HTML: a swatch, name, role and colour per channel.

    Parameters
    ----------
    n_channels : int
        Number of channels, ``>= 1``.
    channel_names : sequence of str, optional
        Name of each channel; default ``channel 0``, ``channel 1``, ...
    channel_roles : sequence of str, optional
        Role of each channel; default
        :func:`~workflow_scripts.figures.channels.default_roles`.

    Returns
    -------
    str
        An HTML fragment, every name and role escaped.

    Raises
    ------
    ValueError
        If the names or roles are not one per channel.

    Examples
    --------
    >>> print(channel_legend_html(1, ["DNA <Hoechst>"], ["nucleus"]))  # doctest: +ELLIPSIS
    <div class="channel-legend"><b>Crop colours</b><div>...DNA &lt;Hoechst&gt; (nucleus): white</div></div>
    """
    names = resolve_names(channel_names, n_channels)
    roles = resolve_roles(channel_roles, n_channels)
    colours = channel_colour_names(n_channels, roles)
    items = "".join(
        f'<div><span style="display:inline-block;width:0.9em;height:0.9em;vertical-align:middle;'
        f'border:1px solid {to_hex(GREY)};background:{hex_colour(colour)}"></span> '
        f"{html.escape(name)} ({html.escape(role)}): {colour}</div>"
        for name, role, colour in zip(names, roles, colours)
    )
    return f'<div class="channel-legend"><b>Crop colours</b>{items}</div>'


# ------------------------------------------------------------------------------------ the page


def build_explorer(
    coords: np.ndarray,
    table: pd.DataFrame,
    thumbs: list[str],
    path: str | Path,
    *,
    title: str,
    label: str = "Metadata_class",
    group: str = "Metadata_group",
    channel_names: Sequence[str] | None = None,
    channel_roles: Sequence[str] | None = None,
) -> None:
    """Write the explorer page of a table of cells, atomically.

    Parameters
    ----------
    coords : numpy.ndarray, shape (N, 2)
        2-D positions of the cells (the UMAP).
    table : pandas.DataFrame
        One row per cell: ``Metadata_*`` columns (``Metadata_cell``, ``label`` and ``group``
        required) and an optional ``local_quality``.
    thumbs : list of str
        One thumbnail data URI per cell (:func:`thumbnails`).
    path : str or pathlib.Path
        Output HTML file.
    title : str
        Page and plot title.
    label : str
        Class column: the default colouring and the first filter.
    group : str
        Group column: the second filter.
    channel_names, channel_roles : sequence of str, optional
        Name and role of each channel of the thumbnails, for the page's colour legend; the
        legend is left out when neither is given.

    Raises
    ------
    ValueError
        If the lengths disagree or a required column is missing.
    """
    coords = np.asarray(coords, dtype=float)
    _check_inputs(coords, table, thumbs, path, label, group)
    meta = [c for c in table.columns if c.startswith("Metadata_") and c not in _HIDDEN]
    colour_by = [c for c in meta if c != "Metadata_cell" and table[c].nunique() > 1]
    if "local_quality" in table.columns:
        colour_by.append("local_quality")
    first = label if label in colour_by else colour_by[0] if colour_by else None
    source = ColumnDataSource(_cell_data(coords, table, thumbs, meta, colour_by, first), name="cells")
    view = CDSView(filter=BooleanFilter([True] * len(table)))
    plot = _map_plot(source, view, title, meta, label, group)
    controls = [
        _help_text(len(table)),
        *_channel_legend(channel_names, channel_roles),
        _colour_select(source, colour_by, first),
        *_filters(source, view, table, label, group),
        *_feedback_widgets(source),
    ]
    _write_page(row(plot, column(*controls)), title, path)


def _check_inputs(coords: np.ndarray, table: pd.DataFrame, thumbs, path, label: str, group: str) -> None:
    """Check one position and thumbnail per row and the cell, class and group columns."""
    n = len(table)
    if coords.shape != (n, 2) or len(thumbs) != n:
        raise ValueError(f"{path}: coords {coords.shape}, {len(thumbs)} thumbnails and {n} table rows must agree")
    for column_name in ("Metadata_cell", label, group):
        if column_name not in table.columns:
            raise ValueError(f"{path}: column {column_name!r} is missing from the cell table")


def _cell_data(coords, table: pd.DataFrame, thumbs, meta: list[str], colour_by: list[str], first) -> dict:
    """Build the columns of the page's data source.

    Positions (current and original), thumbnails, metadata as text, local quality, one colour
    column per colouring and the colour shown.
    """
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
    data["colour"] = list(data[f"colour__{first}"]) if first else [to_hex(BASE)] * len(table)
    return data


def _colours(values: pd.Series) -> list[str]:
    """Give one hex colour per value: a palette for categories, viridis for numbers."""
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 12:
        v = values.to_numpy(dtype=float)
        lo, hi = np.nanpercentile(v, [1, 99]) if np.isfinite(v).any() else (0.0, 1.0)
        scaled = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
        rgba = colormaps[SEQUENTIAL_CMAP](np.nan_to_num(scaled, nan=0.0))
        return [to_hex(row[:3]) for row in rgba]
    text = _text(values)
    codes = {v: i for i, v in enumerate(sorted(set(text)))}
    return [CATEGORICAL_PALETTE[codes[v] % len(CATEGORICAL_PALETTE)] for v in text]


def _text(values: pd.Series) -> list[str]:
    """Turn values into display strings; missing values (NaN, None, pd.NA) into "NA"."""
    return ["NA" if pd.isna(v) else str(v) for v in values.tolist()]


def _map_plot(source, view, title: str, meta: list[str], label: str, group: str):
    """Draw the scatter plot with its hover tooltip (thumbnail and metadata) and point dragging."""
    n = len(source.data["x"])
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
    shown = list(dict.fromkeys([label, group] + [c for c in meta if c not in _NOT_IN_TOOLTIP]))[:8]
    plot.add_tools(HoverTool(renderers=[renderer], tooltips=_tooltip(shown, "local_quality" in source.data)))
    plot.add_tools(PointDrawTool(renderers=[renderer], add=False, drag=True, description="Drag points to pin anchors"))
    return plot


def _tooltip(shown: list[str], quality: bool) -> str:
    """Write the hover template: the thumbnail beside the cell id, the ``shown`` columns, quality."""
    rows = "".join(f"<div><b>{html.escape(c.removeprefix('Metadata_'))}</b>: @{{{c}}}</div>" for c in shown)
    quality_row = "<div><b>local quality</b>: @local_quality</div>" if quality else ""
    return (
        '<div class="cell-tooltip" style="display:flex;gap:6px">'
        '<img class="cell-thumb" src="@thumb" width="96" height="96" style="image-rendering:pixelated">'
        f'<div style="font-size:11px"><div><b>cell</b>: @Metadata_cell</div>{rows}{quality_row}</div></div>'
    )


def _help_text(n: int) -> Div:
    """Explain how to use the page."""
    return Div(
        text=(
            f"<p><b>{n:,} cells</b>. Hover a point for its crop and metadata. Select with the lasso or box "
            "tool, type a label and press <i>Label selection</i>; or pick "
            "the <i>point draw</i> tool and drag points to where they belong (anchors). <i>Export CSV</i> writes "
            "<code>feedback.csv</code> (Metadata_cell, label, anchor_x, anchor_y, weight) for "
            "<code>models.&lt;name&gt;.feedback</code>.</p>"
        ),
        width=360,
    )


def _channel_legend(channel_names, channel_roles) -> list[Div]:
    """Make the thumbnails' colour legend, or nothing when the channels are not described."""
    described = channel_names if channel_names is not None else channel_roles
    if described is None:
        return []
    text = channel_legend_html(len(described), channel_names, channel_roles)
    return [Div(text=text, width=360, name="channel_legend")]


def _colour_select(source, colour_by: list[str], first) -> Select:
    """Make the "Colour by" menu, which recolours the points."""
    select = Select(title="Colour by", value=first or "", options=colour_by, name="colour_by")
    select.js_on_change("value", CustomJS(args={"source": source}, code=_JS_COLOUR))
    return select


def _filters(source, view, table: pd.DataFrame, label: str, group: str) -> list[MultiChoice]:
    """Make two multiple choices that show only some classes and groups."""
    classes = sorted(set(_text(table[label])))
    groups = sorted(set(_text(table[group])))
    class_filter = MultiChoice(title=f"Show {label.removeprefix('Metadata_')}", options=classes, name="class_filter")
    group_filter = MultiChoice(title=f"Show {group.removeprefix('Metadata_')}", options=groups, name="group_filter")
    refilter = CustomJS(
        args={"source": source, "view": view, "cf": class_filter, "gf": group_filter, "label": label, "group": group},
        code=_JS_FILTER,
    )
    class_filter.js_on_change("value", refilter)
    group_filter.js_on_change("value", refilter)
    return [class_filter, group_filter]


def _feedback_widgets(source) -> list:
    """Make the label input, weight, label button, feedback table, export button and CSV box."""
    feedback = ColumnDataSource({"Metadata_cell": [], "label": [], "weight": []}, name="feedback")
    label_input = TextInput(title="Label for the selected cells", value="", name="label_input")
    weight_input = NumericInput(title="Weight", value=1.0, mode="float", low=0.0, name="weight_input")
    add_label = Button(label="Label selection", button_type="primary", name="label_button")
    add_label.js_on_click(
        CustomJS(
            args={"source": source, "feedback": feedback, "text": label_input, "weight": weight_input}, code=_JS_LABEL
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
        CustomJS(args={"source": source, "feedback": feedback, "weight": weight_input, "out": csv_out}, code=_JS_EXPORT)
    )
    return [label_input, weight_input, add_label, table_widget, export, csv_out]


def _write_page(layout, title: str, path) -> None:
    """Write the standalone page (Bokeh's JavaScript inline) atomically."""
    page = file_html(layout, INLINE, title=title)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")


def layer_page(
    features_path: str | Path,
    arrays: ShardedArrays,
    page: str | Path,
    coords_path: str | Path,
    *,
    title: str,
    label: str,
    group: str,
    max_cells: int,
    seed: int,
    channels: Sequence[dict],
) -> tuple[int, int]:
    """Build one layer's page and write its UMAP coordinates beside it.

    Subsample (seeded, stratified by ``label``) above ``max_cells``, embed with UMAP, score
    each cell's local quality, draw the thumbnails, write the page and the coordinates.

    Parameters
    ----------
    features_path : str or Path
        The layer's feature table (``Metadata_cell``, ``Metadata_shard``, ``Metadata_row``,
        ``label`` and ``group`` among its columns).
    arrays : workflow_scripts.data.ShardedArrays
        The cells' crops.
    page, coords_path : str or Path
        The HTML page and the Parquet table of its UMAP coordinates.
    title : str
        The page's title.
    label, group : str
        The class and group columns.
    max_cells : int
        Most cells on a page.
    seed : int
        Seed of the subsample and the UMAP.
    channels : sequence of dict
        Name and role per channel (they colour the thumbnails).

    Returns
    -------
    tuple of int
        Cells on the page and bytes of their thumbnails.

    Raises
    ------
    ValueError
        If the feature table lacks a required column.
    """
    table = pd.read_parquet(features_path)
    for col in ("Metadata_cell", "Metadata_shard", "Metadata_row", label, group):
        if col not in table.columns:
            raise ValueError(f"{features_path}: column {col!r} is missing")
    if len(table) > max_cells:
        keep = stratified_subsample(table[label].astype(str).to_numpy(), int(max_cells), int(seed))
        log.info("%d of %d cells shown (explorer.max_cells, seeded and stratified by %s)", len(keep), len(table), label)
        table = table.iloc[np.sort(keep)].reset_index(drop=True)
    features = table[feature_columns(table)].to_numpy(np.float32)
    coords = embed_2d(features, method="umap", seed=int(seed))
    # How faithfully the map keeps each cell's feature-space neighbours (1 = all 10 kept).
    table["local_quality"] = local_quality(features.astype(np.float64), coords, k=int(min(10, len(table) - 1)))
    crops = arrays.gather(table["Metadata_shard"].to_numpy(), table["Metadata_row"].to_numpy())
    names, roles = [c["name"] for c in channels], [c["role"] for c in channels]
    thumbs = thumbnails(crops, roles)
    build_explorer(
        coords, table, thumbs, page, title=title, label=label, group=group, channel_names=names, channel_roles=roles
    )
    frame = pd.DataFrame({"Metadata_cell": table["Metadata_cell"], "UMAP_1": coords[:, 0], "UMAP_2": coords[:, 1]})
    write_parquet(coords_path, frame)
    return len(table), sum(map(len, thumbs))
