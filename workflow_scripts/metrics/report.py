"""The metrics comparison page of a dataset: every model, layer and baseline on every metric.

:func:`build_report` turns the layers' metrics JSON into the summary table, the metric that
ranks the layers, the HTML comparison page (the best value of each metric marked, and the
guided models beside their unguided twins) and the confusion-matrix panels to draw. Every
label and value on the page is HTML-escaped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

import pandas as pd

from workflow_scripts.metrics.summary import RANKING_TITLES, best_layer, best_per_metric, ranking_metric, summary_table
from workflow_scripts.screen.run import SCORES, summary_rows

__all__ = [
    "GUIDED_COLUMNS",
    "NO_CONFUSION",
    "Report",
    "build_report",
    "comparison_html",
    "confusion_panels",
    "guided_html",
    "protocol_note",
    "read_results",
    "sample_note",
]

#: Columns of the guided-versus-unguided table (those present in the summary).
GUIDED_COLUMNS = ["logreg_accuracy_grouped", "mlp_accuracy_grouped", "knn10_accuracy_grouped", "map", "trustworthiness"]

#: What the confusion figure says when no layer has a grouped confusion matrix.
NO_CONFUSION = "no confusion matrix: classification was skipped (one class or one group)"

_STYLE = (
    "<style>table{border-collapse:collapse;font:12px sans-serif}td,th{border:1px solid #ccc;"
    "padding:2px 6px;text-align:right}th{background:#eee}</style>"
)
_BEST_CELL = '<td style="background:#c8e6c9;font-weight:bold">{}</td>'


@dataclass(frozen=True)
class Report:
    """The summary of a dataset's metrics, ready to write and draw.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per (model, layer) and baseline (:func:`~workflow_scripts.metrics.summary.summary_table`).
    metric : str
        The column that ranks the layers.
    ranking_title : str
        Title of the ranking bar chart.
    html : str
        The comparison page.
    confusion : list of tuple
        ``(title, classes, counts)`` per confusion-matrix panel; empty when classification
        was skipped everywhere.
    """

    summary: pd.DataFrame
    metric: str
    ranking_title: str
    html: str
    confusion: list


def read_results(paths: Iterable) -> list[dict]:
    """Read the layers' metrics JSON files.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
        The files, in the order of the summary's rows.

    Returns
    -------
    list of dict
        One result per file.
    """
    results = []
    for path in paths:
        with open(path) as fh:
            results.append(json.load(fh))
    return results


def build_report(
    results: Sequence[dict],
    dataset: str,
    *,
    families: dict,
    normalize: dict,
    guided: dict,
    screen: Sequence[dict] = (),
) -> Report:
    """Summarise the metrics of every layer and baseline of a dataset.

    Parameters
    ----------
    results : sequence of dict
        Each layer's metrics (:func:`read_results`).
    dataset : str
        Name of the dataset, in the titles.
    families : dict
        Model name to family; a model not listed is a baseline.
    normalize : dict
        Model name to intensity normalisation.
    guided : dict
        Guided model name to its unguided twin (empty for no guided table).
    screen : sequence of dict, optional
        The tables' screen records (:func:`workflow_scripts.screen.run.screen_table`), for a
        dataset with a plate layout: their scores after the last profiling step become
        columns of the table, and the page shows every step.

    Returns
    -------
    Report
        The table, ranking metric, page and confusion panels.

    Raises
    ------
    ValueError
        If no ranking metric has a finite value.
    """
    by_layer = {(result["model"], result["layer"]): result for result in results}
    summary = summary_table(results, families, normalize)
    metric = ranking_metric(summary)
    steps = summary_rows(screen, families) if screen else None
    if steps is not None:
        summary = with_screen_scores(summary, steps)
    extra = guided_html(summary, guided) + (screen_html(steps) if steps is not None else "")
    page = comparison_html(summary, dataset, by_layer, extra=extra)
    return Report(
        summary=summary,
        metric=metric,
        ranking_title=f"{dataset}: {RANKING_TITLES[metric]}",
        html=page,
        confusion=confusion_panels(summary, by_layer, metric),
    )


def with_screen_scores(summary: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Add each table's screening scores after the last profiling step as columns.

    Parameters
    ----------
    summary : pandas.DataFrame
        The summary table.
    steps : pandas.DataFrame
        The long screen table (:func:`workflow_scripts.screen.run.summary_rows`).

    Returns
    -------
    pandas.DataFrame
        ``summary`` with one column per score (``plate_map_chance`` beside ``plate_map``).
    """
    final = steps[steps["final"]].pivot_table(index=["model", "layer"], columns="metric", values="value", sort=False)
    final = final.rename(columns={"plate_chance": "plate_map_chance"})
    order = [s if s != "plate_chance" else "plate_map_chance" for s in SCORES]
    final = final[[c for c in order if c in final.columns]].reset_index()
    return summary.merge(final, on=["model", "layer"], how="left")


def screen_html(steps: pd.DataFrame) -> str:
    """Render every table's screening scores after each profiling step as an HTML table.

    Parameters
    ----------
    steps : pandas.DataFrame
        The long screen table (:func:`workflow_scripts.screen.run.summary_rows`).

    Returns
    -------
    str
        A heading, a note on the protocol and the table (rows: tables; columns: score at
        each step).
    """
    wide = steps.pivot_table(index=["model", "layer"], columns=["metric", "step"], values="value", sort=False)
    head = "".join(f"<th>{escape(str(m))}<br>{escape(str(s))}</th>" for m, s in wide.columns)
    body = "".join(
        f"<tr><td>{escape(str(model))}</td><td>{escape(str(layer))}</td>"
        + "".join("<td></td>" if pd.isna(v) else f"<td>{v:.3f}</td>" for v in row)
        + "</tr>"
        for (model, layer), row in zip(wide.index, wide.to_numpy())
    )
    return (
        "<h3>Screen: each score after each profiling step</h3>"
        f"<p>{escape(SCREEN_PROTOCOL)}</p>"
        f"<table><tr><th>model</th><th>layer</th>{head}</tr>{body}</table>"
    )


#: How the screen scores are computed, stated on the page.
SCREEN_PROTOCOL = (
    "Well profiles (the median of each well's cells), then each step in turn: per-plate "
    "normalisation against the negative-control wells, feature selection, and sphering or "
    "Harmony where configured. activity_map: mean average precision of each perturbation's "
    "replicate wells ranked against the control wells (cosine similarity); activity_fraction: "
    "the share of perturbations whose mAP beats its permutation null at the configured FDR "
    "(Benjamini-Hochberg); consistency_map: mAP of consensus profiles sharing an annotation "
    "against the others; plate_map: mAP of retrieving wells of the same plate (a plate "
    "effect keeps it above plate_chance, the mAP of random profiles); nsc / nscb: "
    "not-same-compound (-or-batch) 1-nearest-neighbour accuracy of treatment profiles."
)


def comparison_html(summary: pd.DataFrame, dataset: str, results: dict, extra: str = "") -> str:
    """Render the summary as an HTML page, the best value of each metric in bold on green.

    Parameters
    ----------
    summary : pandas.DataFrame
        The summary table (``*_sd`` columns are left out of the page).
    dataset : str
        Name of the dataset, in the title.
    results : dict
        ``(model, layer)`` to that layer's metrics; the first describes the sample and the
        cross-validation protocol (:func:`sample_note`).
    extra : str, optional
        HTML appended after the table (:func:`guided_html`).

    Returns
    -------
    str
        The page, ending in a newline.
    """
    best = best_per_metric(summary)
    shown = summary.drop(columns=[c for c in summary.columns if c.endswith("_sd")])
    head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(_cell(row, c, best) for c in shown.columns) + "</tr>" for _, row in shown.iterrows()
    )
    name = escape(str(dataset))
    return (
        f"<html><head><meta charset='utf-8'><title>{name}: metrics</title>{_STYLE}</head><body>"
        f"<h3>{name}: every model, layer and baseline on every metric (best per metric marked)</h3>"
        f"<p>{escape(sample_note(results))}</p>"
        f"<table><tr>{head}</tr>{body}</table>{extra}</body></html>\n"
    )


def _cell(row, column, best) -> str:
    value = row[column]
    if isinstance(value, float):
        text = "" if pd.isna(value) else f"{value:.3f}"
    else:
        text = escape(str(value))
    if best.get(column) == (row["model"], row["layer"]):
        return _BEST_CELL.format(text)
    return f"<td>{text}</td>"


def guided_html(summary: pd.DataFrame, pairs: dict) -> str:
    """Render the before/after tables: each guided model's layers beside its unguided twin's.

    Parameters
    ----------
    summary : pandas.DataFrame
        The summary table.
    pairs : dict
        Guided model name to unguided model name.

    Returns
    -------
    str
        One heading and table per pair (the :data:`GUIDED_COLUMNS` the summary has: unguided,
        guided and the change, green where guided is at least as good); empty without pairs.
    """
    if not pairs:
        return ""
    columns = [c for c in GUIDED_COLUMNS if c in summary.columns]
    parts = []
    for guided, base in pairs.items():
        a = summary[summary["model"] == base].set_index("layer")
        b = summary[summary["model"] == guided].set_index("layer")
        rows = [
            f"<tr><td>{escape(str(layer))}</td>{''.join(_change_cells(a, b, layer, c) for c in columns)}</tr>"
            for layer in b.index
            if layer in a.index
        ]
        base_name, guided_name = escape(str(base)), escape(str(guided))
        head = "".join(f"<th colspan=3>{escape(c)}<br>{base_name} / {guided_name} / change</th>" for c in columns)
        parts.append(
            f"<h3>Expert feedback: {guided_name} (guided) against {base_name} (unguided)</h3>"
            f"<table><tr><th>layer</th>{head}</tr>{''.join(rows)}</table>"
        )
    return "".join(parts)


def _change_cells(a, b, layer, column) -> str:
    before, after = a.at[layer, column], b.at[layer, column]
    colour = "#1b5e20" if after >= before else "#b71c1c"
    return f"<td>{before:.3f}</td><td>{after:.3f}</td><td style='color:{colour}'>{after - before:+.3f}</td>"


def sample_note(results: dict) -> str:
    """Describe the cells evaluated and the grouped protocol, in plain text.

    Parameters
    ----------
    results : dict
        ``(model, layer)`` to that layer's metrics; the first one is read (every model and
        baseline is evaluated on the same cells).

    Returns
    -------
    str
        The number of cells (and the subsample, if any), then :func:`protocol_note`.

    Examples
    --------
    >>> sample_note({("vae", "mu"): {"n_cells": 200}})
    'Evaluated on all 200 cells. '
    """
    first = next(iter(results.values()))
    n, total = first["n_cells"], first.get("n_cells_total", first["n_cells"])
    if n < total:
        note = (
            f"Evaluated on a seeded, class-stratified subsample of {n} of the {total} cells "
            f"(metrics.max_cells); every model and baseline on the same cells."
        )
    else:
        note = f"Evaluated on all {n} cells."
    return note + " " + protocol_note(first.get("protocol") or {})


def protocol_note(protocol: dict) -> str:
    """Describe the grouped cross-validation protocol in one sentence (plain text).

    Parameters
    ----------
    protocol : dict
        The ``protocol`` of a metrics file: ``name``, ``folds``, ``groups_per_class``,
        ``dropped_classes`` and ``n_cells_scored``, or ``skipped`` with the reason.

    Returns
    -------
    str
        The sentence; empty for an empty protocol.

    Examples
    --------
    >>> protocol_note({"skipped": "one group"})
    'Grouped probes not run: one group.'
    >>> print(protocol_note({"name": "leave_one_group_out", "folds": 4, "n_cells_scored": 90}))
    ... # doctest: +NORMALIZE_WHITESPACE
    Grouped probes (logistic regression, MLP, kNN): leave one group out, 4 folds of whole
    groups, every class in every training fold (90 cells scored; metrics.cv).
    """
    if not protocol or "name" not in protocol:
        reason = protocol.get("skipped") if protocol else None
        return f"Grouped probes not run: {reason}." if reason else ""
    per_class = protocol.get("groups_per_class", {})
    text = (
        f"Grouped probes (logistic regression, MLP, kNN): {protocol['name'].replace('_', ' ')}, "
        f"{protocol['folds']} folds of whole groups, every class in every training fold"
    )
    if per_class:
        text += f"; groups per class {min(per_class.values())} to {max(per_class.values())}"
    dropped = protocol.get("dropped_classes") or []
    if dropped:
        text += (
            f"; left out of grouped scoring (seen in a single group, so no fold could train on them): "
            f"{', '.join(dropped)}"
        )
    return text + f" ({protocol['n_cells_scored']} cells scored; metrics.cv)."


def confusion_panels(summary: pd.DataFrame, results: dict, metric: str) -> list[tuple]:
    """Pick the confusion matrices to draw: the best learned layer's and the best baseline's.

    Parameters
    ----------
    summary : pandas.DataFrame
        The summary table.
    results : dict
        ``(model, layer)`` to that layer's metrics.
    metric : str
        The ranking column.

    Returns
    -------
    list of tuple
        ``("model/layer", classes, counts)`` of the group-held-out logistic regression, for
        each of the two with a score and a confusion matrix (none when classification was
        skipped).
    """
    panels = []
    for kind_is_baseline in (False, True):
        part = summary[(summary["kind"] == "baseline") == kind_is_baseline]
        if part.empty or part[metric].isna().all():
            continue
        best = best_layer(part, metric)
        probe = results[(best.model, best.layer)].get("logreg_grouped", {})
        if "confusion" in probe:
            panels.append((f"{best.model}/{best.layer}", probe["classes"], probe["confusion"]))
    return panels
