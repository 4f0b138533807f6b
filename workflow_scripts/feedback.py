"""Expert feedback fed back into training (VAEM's guided latent space).

A feedback CSV (written by the explorer page, :mod:`workflow_scripts.explorer`) has one row per
cell: ``Metadata_cell`` and a ``label`` and/or an anchor position ``anchor_x, anchor_y`` on the
2-D map, with a ``weight``. A model with ``guided: true`` and ``feedback: <csv>`` adds to its loss

* an anchor term, ``sum_i w_i ||A mu_i - anchor_i||^2 / N``: a linear map ``A`` of the latent
  mean to the plane, trained with the model, is pulled toward each anchored cell's anchor
  (anchors standardised over the anchored cells); and
* a label term, ``sum_i w_i CE(B mu_i, label_i) / N``: a small linear head ``B`` on the latent
  mean classifies the labelled cells,

both averaged over the batch (cells without feedback add nothing) and scaled by ``guide_weight``
times the number of values in an input image (the scale of the summed reconstruction loss).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

__all__ = ["read_feedback", "Feedback", "GuidedSource", "guidance_terms"]

COLUMNS = ("Metadata_cell", "label", "anchor_x", "anchor_y", "weight")


class Feedback:
    """Feedback aligned to a cell table: ``labels`` (N,) int64 codes (-1 = none) of the classes
    ``classes``; ``anchors`` (N, 2) float32 standardised (NaN = none); ``weights`` (N,)."""

    def __init__(self, labels: np.ndarray, classes: list[str], anchors: np.ndarray, weights: np.ndarray):
        self.labels, self.classes, self.anchors, self.weights = labels, classes, anchors, weights

    @property
    def n_labelled(self) -> int:
        return int(np.count_nonzero(self.labels >= 0))

    @property
    def n_anchored(self) -> int:
        return int(np.count_nonzero(np.isfinite(self.anchors[:, 0])))

    def subset(self, rows: np.ndarray) -> Feedback:
        return Feedback(self.labels[rows], self.classes, self.anchors[rows], self.weights[rows])


def read_feedback(path: str | os.PathLike, cells: pd.DataFrame, classes: list[str] | None = None) -> Feedback:
    """Read a feedback CSV and align it to ``cells`` (by ``Metadata_cell``).

    Rows naming cells that are not in ``cells`` are an error (a feedback file of another
    dataset or run); so are a missing ``Metadata_cell`` column, a row with neither a label nor an
    anchor, half an anchor, and a negative or non-finite weight. Each error names the file, the
    row and the value.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"feedback file {str(path)!r} does not exist")
    table = pd.read_csv(path, dtype={"Metadata_cell": str, "label": str}, keep_default_na=False, na_values={
        "anchor_x": [""], "anchor_y": [""], "weight": [""]})  # fmt: skip
    if "Metadata_cell" not in table.columns:
        raise ValueError(f"{path}: no Metadata_cell column; expected columns {list(COLUMNS)}")
    unknown = sorted(set(table.columns) - set(COLUMNS))
    if unknown:
        raise ValueError(f"{path}: unknown column(s) {unknown}; expected {list(COLUMNS)}")
    for column, default in (("label", ""), ("anchor_x", np.nan), ("anchor_y", np.nan), ("weight", 1.0)):
        if column not in table.columns:
            table[column] = default
    table["weight"] = pd.to_numeric(table["weight"], errors="coerce").fillna(1.0)
    for column in ("anchor_x", "anchor_y"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for i, row in table.iterrows():
        where = f"{path}, row {i + 2} (cell {row['Metadata_cell']!r})"
        half = np.isfinite(row["anchor_x"]) != np.isfinite(row["anchor_y"])
        if half:
            raise ValueError(f"{where}: anchor_x and anchor_y must both be given or both be empty")
        if not row["label"] and not np.isfinite(row["anchor_x"]):
            raise ValueError(f"{where}: neither a label nor an anchor; expected at least one")
        if not np.isfinite(row["weight"]) or row["weight"] < 0:
            raise ValueError(f"{where}: weight {float(row['weight'])}; expected a finite number >= 0")
    if table["Metadata_cell"].duplicated().any():
        dup = table.loc[table["Metadata_cell"].duplicated(), "Metadata_cell"].iloc[0]
        raise ValueError(f"{path}: cell {dup!r} appears more than once; expected one row per cell")
    position = pd.Series(np.arange(len(cells)), index=cells["Metadata_cell"].astype(str))
    missing = sorted(set(table["Metadata_cell"]) - set(position.index))
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} cell(s) not in this dataset's cell table, e.g. {missing[:3]}; "
            "was the feedback exported from another dataset or run?"
        )
    rows = position.loc[table["Metadata_cell"]].to_numpy()
    labelled = table["label"] != ""
    classes = sorted(set(table.loc[labelled, "label"])) if classes is None else list(classes)
    codes = {c: k for k, c in enumerate(classes)}
    labels = np.full(len(cells), -1, np.int64)
    labels[rows[labelled.to_numpy()]] = [codes[v] for v in table.loc[labelled, "label"]]
    anchors = np.full((len(cells), 2), np.nan, np.float32)
    xy = table[["anchor_x", "anchor_y"]].to_numpy(dtype=np.float64)
    has = np.isfinite(xy[:, 0])
    if has.any():
        # Standardised over the anchored cells: the map's units are arbitrary.
        centre, scale = xy[has].mean(axis=0), xy[has].std(axis=0)
        anchors[rows[has]] = (xy[has] - centre) / np.where(scale > 0, scale, 1.0)
    weights = np.zeros(len(cells), np.float32)
    weights[rows] = table["weight"].to_numpy(dtype=np.float32)
    return Feedback(labels, classes, anchors, weights)


class GuidedSource:
    """A batch source whose batches carry the feedback of their cells: ``{"x", "label",
    "anchor", "weight"}`` (the images as the wrapped source gives them)."""

    def __init__(self, source, feedback: Feedback):
        if len(source) != len(feedback.labels):
            raise ValueError(f"source has {len(source)} items but feedback {len(feedback.labels)}")
        self.source, self.feedback = source, feedback

    def __len__(self) -> int:
        return len(self.source)

    def batch(self, index: np.ndarray) -> dict:
        index = np.asarray(index)
        return {
            "x": self.source.batch(index),
            "label": self.feedback.labels[index],
            "anchor": self.feedback.anchors[index],
            "weight": self.feedback.weights[index],
        }

    def raw(self, index):
        return self.source.raw(index)

    def resident_nbytes(self) -> int | None:
        """Bytes the wrapped source's items and the feedback take resident (None: the wrapped
        source cannot be held on a device)."""
        inner = getattr(self.source, "resident_nbytes", None)
        if inner is None or not hasattr(self.source, "resident") or (nbytes := inner()) is None:
            return None
        return nbytes + self.feedback.labels.nbytes + self.feedback.anchors.nbytes + self.feedback.weights.nbytes

    def resident(self, device):
        """The wrapped source resident on ``device`` (``torch.device``) and the feedback as
        tensors there: a ``device_data.ResidentGuidedSource`` whose batches equal :meth:`batch`'s."""
        from workflow_scripts.device_data import ResidentGuidedSource

        if not hasattr(self.source, "resident"):
            raise TypeError(f"a {type(self.source).__name__} cannot be held on a device")
        return ResidentGuidedSource(self.source.resident(device), self.feedback)


def guidance_terms(
    mu: torch.Tensor, batch: dict, label_head: torch.nn.Module | None, anchor_head: torch.nn.Module | None
) -> dict[str, torch.Tensor]:
    """The label and anchor terms for a batch's latent means ``mu`` (N, D), each averaged over
    the N cells of the batch (cells without that feedback contribute 0)."""
    n = mu.shape[0]
    weight = batch["weight"].to(mu.device, torch.float32)
    zero = mu.new_zeros((), dtype=torch.float32)
    terms = {"label_loss": zero, "anchor_loss": zero}
    labels = batch["label"].to(mu.device)
    has_label = labels >= 0
    if label_head is not None and bool(has_label.any()):
        logits = label_head(mu[has_label].float())
        ce = F.cross_entropy(logits, labels[has_label], reduction="none")
        terms["label_loss"] = (weight[has_label] * ce).sum() / n
    anchors = batch["anchor"].to(mu.device, torch.float32)
    has_anchor = torch.isfinite(anchors[:, 0])
    if anchor_head is not None and bool(has_anchor.any()):
        where = anchor_head(mu[has_anchor].float())
        dist = (where - anchors[has_anchor]).pow(2).sum(1)
        terms["anchor_loss"] = (weight[has_anchor] * dist).sum() / n
    return terms
