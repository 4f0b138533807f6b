"""The screen panel: each screening metric before and after each profiling step."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from workflow_scripts.figures.style import BASELINE, CATEGORICAL_PALETTE, GREY, grid_shape, hide_unused, save, subplots

__all__ = ["SCREEN_TITLES", "plot_screen_steps"]

#: Panel title of each score, in panel order.
SCREEN_TITLES = {
    "activity_map": "phenotypic activity (mAP vs controls)",
    "activity_fraction": "fraction of perturbations active",
    "consistency_map": "consistency (mAP, same annotation)",
    "plate_map": "plate-label mAP (dotted: chance)",
    "nsc": "NSC accuracy (1-NN MoA)",
    "nscb": "NSCB accuracy",
}


def plot_screen_steps(table: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> None:
    """Draw one panel per screening metric: its value after each step, one line per table.

    Each model is drawn with its best layer (the highest activity mAP after the last step)
    and so is each baseline (grey, dashed), so the panel stays readable; ``metrics/screen.csv``
    has every layer.

    Parameters
    ----------
    table : pandas.DataFrame
        The long table of :func:`workflow_scripts.screen.run.summary_rows` (``model``,
        ``layer``, ``kind``, ``step``, ``final``, ``metric``, ``value``).
    path : str or os.PathLike
        Output image file (PNG).
    title : str, optional
        Figure title.
    """
    metrics = [m for m in SCREEN_TITLES if m in set(table["metric"])]
    steps = list(dict.fromkeys(table["step"]))
    shown = _best_layers(table)
    nrows, ncols = grid_shape(len(metrics), max_cols=3)
    fig, axes = subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows + 0.6))
    for ax, metric in zip(axes.flat, metrics):
        _draw_panel(ax, table, shown, metric, steps)
    hide_unused(axes, len(metrics))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), fontsize="small")
    if title:
        fig.suptitle(title)
    save(fig, path)


def _best_layers(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """Return (model, layer, kind) of each model's and baseline's best table, models first."""
    final = table[table["final"] & (table["metric"] == "activity_map")]
    best = final.sort_values("value", ascending=False, kind="stable").drop_duplicates("model")
    rows = sorted(best[["model", "layer", "kind"]].itertuples(index=False), key=lambda r: r.kind == "baseline")
    return [tuple(r) for r in rows]


def _draw_panel(ax, table: pd.DataFrame, shown: list, metric: str, steps: list[str]) -> None:
    x = np.arange(len(steps))
    colours, markers = iter(CATEGORICAL_PALETTE), iter("s^Dvpx*")
    for model, layer, kind in shown:
        part = table[(table["model"] == model) & (table["layer"] == layer) & (table["metric"] == metric)]
        values = part.set_index("step")["value"].reindex(steps).to_numpy(float)
        if kind == "baseline":  # grey and dashed, told apart by their markers
            style = {"color": BASELINE, "linestyle": "--", "marker": next(markers, "o")}
        else:
            style = {"color": next(colours), "marker": "o"}
        ax.plot(x, values, label=f"{model}/{layer}", **style)
        if metric == "plate_map":
            chance = table[(table["model"] == model) & (table["layer"] == layer) & (table["metric"] == "plate_chance")]
            ax.plot(x, chance.set_index("step")["value"].reindex(steps).to_numpy(float), ":", color=GREY, lw=1)
    ax.set_xticks(x, steps, rotation=20, fontsize="small")
    ax.set_title(SCREEN_TITLES[metric], fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
