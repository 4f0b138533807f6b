"""Rule summarize_metrics: one row per (model, layer) and baseline, a ranking bar chart, one
panel per metric, and an HTML comparison table with the best value of each metric marked."""

import html
import json

import _bootstrap  # noqa: F401  (puts the package on sys.path)
import pandas as pd

from workflow_scripts.io import atomic_path, write_csv
from workflow_scripts.metrics.summary import (
    LOWER_IS_BETTER,
    RANKING_TITLES,
    best_per_metric,
    metric_columns,
    ranking_metric,
    summary_row,
)
from workflow_scripts.plots import plot_confusion_matrices, plot_metric_bars, plot_metric_grid
from workflow_scripts.runner import run


def comparison_html(summary: pd.DataFrame, dataset: str, results: dict) -> str:
    """The summary as an HTML table, the best value of each metric in bold on green."""
    best = best_per_metric(summary)
    shown = summary.drop(columns=[c for c in summary.columns if c.endswith("_sd")])

    def cell(row, column):
        value = row[column]
        if isinstance(value, float):
            text = "" if pd.isna(value) else f"{value:.3f}"
        else:
            text = str(value)
        if best.get(column) == (row["model"], row["layer"]):
            return f'<td style="background:#c8e6c9;font-weight:bold">{text}</td>'
        return f"<td>{text}</td>"

    head = "".join(f"<th>{c}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(cell(r, c) for c in shown.columns) + "</tr>" for _, r in shown.iterrows())
    return (
        f"<html><head><meta charset='utf-8'><title>{dataset}: metrics</title>"
        "<style>table{border-collapse:collapse;font:12px sans-serif}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}th{background:#eee}</style></head><body>"
        f"<h3>{dataset}: every model, layer and baseline on every metric (best per metric marked)</h3>"
        f"<p>{_sample_note(results)}</p>"
        f"<table><tr>{head}</tr>{body}</table></body></html>\n"
    )


#: Columns of the guided-versus-unguided table (those present in the summary).
GUIDED_COLUMNS = ["logreg_accuracy_grouped", "mlp_accuracy_grouped", "knn10_accuracy_grouped", "map", "trustworthiness"]


def guided_html(summary: pd.DataFrame, pairs: dict) -> str:
    """Before/after table: each guided model's layers beside its unguided twin's, with the change."""
    if not pairs:
        return ""
    columns = [c for c in GUIDED_COLUMNS if c in summary.columns]
    parts = []
    for guided, base in pairs.items():
        a = summary[summary["model"] == base].set_index("layer")
        b = summary[summary["model"] == guided].set_index("layer")
        rows = []
        for layer in [layer for layer in b.index if layer in a.index]:
            cells = "".join(
                f"<td>{a.at[layer, c]:.3f}</td><td>{b.at[layer, c]:.3f}</td>"
                f"<td style='color:{'#1b5e20' if b.at[layer, c] >= a.at[layer, c] else '#b71c1c'}'>"
                f"{b.at[layer, c] - a.at[layer, c]:+.3f}</td>"
                for c in columns
            )
            rows.append(f"<tr><td>{layer}</td>{cells}</tr>")
        head = "".join(f"<th colspan=3>{c}<br>{base} / {guided} / change</th>" for c in columns)
        parts.append(
            f"<h3>Expert feedback: {guided} (guided) against {base} (unguided)</h3>"
            f"<table><tr><th>layer</th>{head}</tr>{''.join(rows)}</table>"
        )
    return "".join(parts)


def _sample_note(results: dict) -> str:
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
    """The grouped cross-validation protocol in one sentence (HTML-escaped)."""
    if not protocol or "name" not in protocol:
        reason = protocol.get("skipped") if protocol else None
        return html.escape(f"Grouped probes not run: {reason}." if reason else "")
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
    return html.escape(text + f" ({protocol['n_cells_scored']} cells scored; metrics.cv).")


def main(smk):
    families, normalize = dict(smk.params.families), dict(smk.params.normalize)
    rows, results = [], {}
    for path in smk.input:
        with open(path) as fh:
            result = json.load(fh)
        results[(result["model"], result["layer"])] = result
        model = result["model"]
        rows.append(summary_row(result, kind=families.get(model, "baseline"), normalize=normalize.get(model, "")))
    summary = pd.DataFrame(rows)
    write_csv(smk.output.table, summary)
    metric = ranking_metric(summary)
    dataset = smk.wildcards.dataset
    plot_metric_bars(summary, metric, smk.output.plot, title=f"{dataset}: {RANKING_TITLES[metric]}")
    plot_metric_grid(summary, metric_columns(summary), smk.output.grid, lower_is_better=LOWER_IS_BETTER, title=dataset)
    html = comparison_html(summary, dataset, results)
    guided = guided_html(summary, dict(smk.params.guided))
    with atomic_path(smk.output.html) as tmp:
        tmp.write_text(html.replace("</body>", guided + "</body>") if guided else html)
    confusion_figure(summary, results, metric, smk.output.confusion)


def confusion_figure(summary, results, metric, path):
    """Group-held-out logistic-regression confusion matrices of the best learned layer and the
    best baseline (or a note on the figure when the data has one class)."""
    panels = []
    for kind_is_baseline in (False, True):
        part = summary[(summary["kind"] == "baseline") == kind_is_baseline]
        if part.empty or part[metric].isna().all():
            continue
        best = part.sort_values(metric, ascending=False, kind="stable").iloc[0]
        probe = results[(best.model, best.layer)].get("logreg_grouped", {})
        if "confusion" in probe:
            panels.append((f"{best.model}/{best.layer}", probe["classes"], probe["confusion"]))
    if panels:
        plot_confusion_matrices(panels, path)
    else:
        import matplotlib.pyplot as plt

        from workflow_scripts.io import save_figure

        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no confusion matrix: classification was skipped (one class or one group)", ha="center")
        save_figure(fig, path)


run(snakemake, main)  # noqa: F821
