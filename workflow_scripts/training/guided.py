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

from workflow_scripts.models.guidance import guidance_terms
from workflow_scripts.training.device import ResidentGuidedSource
from workflow_scripts.training.streams import as_training_source

__all__ = ["read_feedback", "Feedback", "GuidedSource", "guidance_terms"]

# The loss terms belong to the model (models/guidance.py); they are re-exported here, beside the
# feedback they score.

#: The columns a feedback CSV may have (``Metadata_cell`` is required).
COLUMNS = ("Metadata_cell", "label", "anchor_x", "anchor_y", "weight")


class Feedback:
    """Feedback aligned to a cell table, one row per cell.

    Parameters
    ----------
    labels : ndarray of shape (N,), int64
        Codes of the classes ``classes`` (-1 = none).
    classes : list of str
        The class names.
    anchors : ndarray of shape (N, 2), float32
        Standardised anchor positions (NaN = none).
    weights : ndarray of shape (N,)
        The weight of each cell's feedback.
    """

    def __init__(self, labels: np.ndarray, classes: list[str], anchors: np.ndarray, weights: np.ndarray):
        self.labels, self.classes, self.anchors, self.weights = labels, classes, anchors, weights

    @property
    def n_labelled(self) -> int:
        """Return the number of labelled cells."""
        return int(np.count_nonzero(self.labels >= 0))

    @property
    def n_anchored(self) -> int:
        """Return the number of anchored cells."""
        return int(np.count_nonzero(np.isfinite(self.anchors[:, 0])))

    def subset(self, rows: np.ndarray) -> Feedback:
        """Take the feedback of some cells.

        Parameters
        ----------
        rows : array_like of int
            Positions of the cells, in the order wanted.

        Returns
        -------
        Feedback
            Their feedback, with the same classes.
        """
        return Feedback(self.labels[rows], self.classes, self.anchors[rows], self.weights[rows])


def read_feedback(path: str | os.PathLike, cells: pd.DataFrame, classes: list[str] | None = None) -> Feedback:
    """Read a feedback CSV and align it to ``cells`` (by ``Metadata_cell``).

    Rows naming cells that are not in ``cells`` are an error (a feedback file of another
    dataset or run); so are a missing ``Metadata_cell`` column, a row with neither a label nor an
    anchor, half an anchor, and a negative or non-finite weight. Each error names the file, the
    row and the value.

    Parameters
    ----------
    path : str or path
        The CSV (columns :data:`COLUMNS`).
    cells : DataFrame
        The cell table (``Metadata_cell``) the feedback is aligned to.
    classes : list of str, optional
        The label classes, in code order (default: the file's labels, sorted).

    Returns
    -------
    Feedback
        One row per cell of ``cells``.

    Raises
    ------
    ValueError
        If the file is missing or any of the errors above.
    """
    path = Path(path)
    table = _read_table(path)
    _check_rows(table, path)
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
    anchors = _standardised_anchors(table, rows, len(cells))
    weights = np.zeros(len(cells), np.float32)
    weights[rows] = table["weight"].to_numpy(dtype=np.float32)
    return Feedback(labels, classes, anchors, weights)


def _read_table(path: Path) -> pd.DataFrame:
    """Read the CSV with every column of :data:`COLUMNS` present and typed."""
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
    return table


def _check_rows(table: pd.DataFrame, path: Path) -> None:
    """Raise ValueError naming the first row with half an anchor, no feedback, a bad weight, or a repeated cell."""
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


def _standardised_anchors(table: pd.DataFrame, rows: np.ndarray, n: int) -> np.ndarray:
    """Place the anchors at their cells' rows, standardised over the anchored cells (NaN elsewhere)."""
    anchors = np.full((n, 2), np.nan, np.float32)
    xy = table[["anchor_x", "anchor_y"]].to_numpy(dtype=np.float64)
    has = np.isfinite(xy[:, 0])
    if has.any():
        # Standardised over the anchored cells: the map's units are arbitrary.
        centre, scale = xy[has].mean(axis=0), xy[has].std(axis=0)
        anchors[rows[has]] = (xy[has] - centre) / np.where(scale > 0, scale, 1.0)
    return anchors


class GuidedSource:
    """A batch source whose batches carry the feedback of their cells.

    Batches are ``{"x", "label", "anchor", "weight"}``, the images as the wrapped source gives
    them. A :class:`~workflow_scripts.training.streams.TrainingSource`, resident-capable when
    the wrapped source is.

    Parameters
    ----------
    source : TrainingSource
        The images.
    feedback : Feedback
        One row per item of ``source``.

    Raises
    ------
    ValueError
        If the two differ in length.
    """

    def __init__(self, source, feedback: Feedback):
        if len(source) != len(feedback.labels):
            raise ValueError(f"source has {len(source)} items but feedback {len(feedback.labels)}")
        self.source, self.feedback = source, feedback

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped source (the feedback is the same every epoch).

        Parameters
        ----------
        epoch : int
            The epoch about to be read.
        """
        as_training_source(self.source).set_epoch(epoch)

    def batch(self, index: np.ndarray) -> dict:
        """Read the items at ``index`` and their feedback.

        Parameters
        ----------
        index : array_like of int
            Item positions.

        Returns
        -------
        dict
            ``x`` (the wrapped source's batch), ``label``, ``anchor`` and ``weight``.
        """
        index = np.asarray(index)
        return {
            "x": self.source.batch(index),
            "label": self.feedback.labels[index],
            "anchor": self.feedback.anchors[index],
            "weight": self.feedback.weights[index],
        }

    def raw(self, index):
        """Read the wrapped source's raw items at ``index``.

        Parameters
        ----------
        index : array_like of int
            Item positions.

        Returns
        -------
        ndarray
            What the wrapped source's ``raw`` returns.
        """
        return self.source.raw(index)

    def resident_nbytes(self) -> int | None:
        """Return the bytes the wrapped source's items and the feedback take resident.

        Returns
        -------
        int or None
            None when the wrapped source cannot be held on a device.
        """
        inner = getattr(self.source, "resident_nbytes", None)
        if inner is None or not hasattr(self.source, "resident") or (nbytes := inner()) is None:
            return None
        return nbytes + self.feedback.labels.nbytes + self.feedback.anchors.nbytes + self.feedback.weights.nbytes

    def resident(self, device: torch.device) -> ResidentGuidedSource:
        """Hold the wrapped source and the feedback on ``device``.

        Parameters
        ----------
        device : torch.device
            Where the items are held.

        Returns
        -------
        ResidentGuidedSource
            Its batches equal :meth:`batch`'s.

        Raises
        ------
        TypeError
            If the wrapped source cannot be held on a device.
        """
        if not hasattr(self.source, "resident"):
            raise TypeError(f"a {type(self.source).__name__} cannot be held on a device")
        return ResidentGuidedSource(self.source.resident(device), self.feedback)
