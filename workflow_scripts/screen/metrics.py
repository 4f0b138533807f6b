"""Screening metrics of well profiles: phenotypic activity, consistency, plate effect, NSC/NSCB.

The two questions of a screen, answered with mean average precision (mAP) as copairs does
(Kalinin et al. 2025):

- **Phenotypic activity** (:func:`phenotypic_activity`): can a perturbation's replicate
  wells be told apart from the negative-control wells? Each of its wells is a query; the
  ranked list holds its replicates (positives) and the control wells (negatives), by cosine
  similarity. A perturbation's mAP is the mean AP of its wells.
- **Consistency** (:func:`consistency`): do perturbations with the same annotation (mechanism
  of action, gene) look alike? Each perturbation's consensus profile is a query; positives
  are the other perturbations with its annotation, negatives those with another one.

Each mAP gets a permutation p-value from copairs (the null of a random ranking with the
query's numbers of positives and ranked rows, averaged over the group's queries), and the
Benjamini-Hochberg q-value over the groups; a group is *active* (or *consistent*) when
``q < fdr``. The APs come from the chunked
:func:`workflow_scripts.metrics.retrieval.mean_average_precision` (memory
``O(chunk x N)``), not from copairs' pair lists, which hold every pair (the known 14 GB at
9,216 wells).

Also: :func:`label_map`, the mAP of retrieving wells by a label such as the plate (how much
plate effect is left), and :func:`nsc_accuracy`, BBBC021's not-same-compound (NSC) and
not-same-compound-or-batch (NSCB) 1-nearest-neighbour MoA accuracy (Ljosa et al. 2013).
:func:`screen_metrics` scores every step of :func:`workflow_scripts.screen.profiling.run_recipe`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from copairs.map import mean_average_precision as copairs_map
from copairs.map.normalization import expected_ap

from workflow_scripts.io import feature_columns
from workflow_scripts.metrics.retrieval import mean_average_precision
from workflow_scripts.screen.profiling import (
    ANNOTATION,
    NEGCON,
    PERTURBATION,
    PLATE,
    _features,
    _negcon,
    _require_columns,
    consensus,
)
from workflow_scripts.validation import check_bool, check_fraction, check_int, real_matrix

log = logging.getLogger(__name__)

__all__ = [
    "consistency",
    "label_map",
    "nsc_accuracy",
    "phenotypic_activity",
    "screen_metrics",
]

# Columns of the per-group tables.
TABLE_COLUMNS = ["mAP", "normalized_mAP", "p_value", "q_value", "active", "n_queries"]
_CHUNK = 1024


def phenotypic_activity(
    wells: pd.DataFrame,
    *,
    null_size: int = 10000,
    fdr: float = 0.05,
    seed: int = 0,
    across_plates: bool = True,
    chunk_size: int = _CHUNK,
) -> tuple[pd.DataFrame, dict]:
    """Score each perturbation's replicate wells against the negative-control wells.

    Each non-control well is a query. Its positives are the other wells of its perturbation
    (``Metadata_perturbation``) and, with ``across_plates``, only those on another plate:
    replicates on the query's own plate share its plate and position effects and would score
    activity for a plate artefact; they are left out of its ranking. Its negatives are all
    control wells (``Metadata_negcon``), on every plate; wells of other perturbations are not
    ranked. In copairs' terms: ``pos_sameby=[perturbation]``, ``pos_diffby=[plate]``,
    ``neg_sameby=[]``, ``neg_diffby=[negcon]``.

    Parameters
    ----------
    wells : pandas.DataFrame
        Well profiles with ``Metadata_perturbation``, boolean ``Metadata_negcon`` and
        (``across_plates``) ``Metadata_plate``; no all-zero feature row.
    null_size : int, default=10000
        Size of copairs' null distribution of each mAP; the smallest p-value is
        ``1 / (null_size + 1)``.
    fdr : float, default=0.05
        A perturbation is active when its Benjamini-Hochberg q-value is below ``fdr``.
    seed : int, default=0
        Seed of the null distributions.
    across_plates : bool, default=True
        Whether positives must be on another plate than the query.
    chunk_size : int, default=1024
        Queries per block of the AP computation.

    Returns
    -------
    table : pandas.DataFrame
        One row per scored perturbation (sorted): ``Metadata_perturbation``, ``mAP``,
        ``normalized_mAP`` (copairs' chance-corrected mAP: 0 random, 1 perfect),
        ``p_value``, ``q_value``, ``active`` (bool), ``n_queries`` (wells scored).
    summary : dict
        ``activity_map`` (mean mAP over the perturbations), ``activity_fraction`` (the
        fraction active) and ``n_perturbations``.

    Raises
    ------
    ValueError
        If a column is missing, there is no control well or no treated well, a perturbation
        name is used by both control and treated wells, or (``across_plates``) a
        perturbation is on a single plate: each error names the column and the value.
    """
    check_bool("across_plates", across_plates)
    _require_columns(wells, [PERTURBATION, NEGCON] + ([PLATE] if across_plates else []), "phenotypic_activity")
    negcon = _negcon(wells, "phenotypic_activity")
    perts = _labels(wells, PERTURBATION, "phenotypic_activity")
    _check_activity_layout(wells, perts, negcon, across_plates)
    X = real_matrix(wells[_features(wells, "phenotypic_activity")].to_numpy(), "phenotypic_activity features")
    plates = wells[PLATE].astype(str).to_numpy() if across_plates else None
    ap = _activity_ap(X, perts, plates, negcon, check_int("chunk_size", chunk_size, 1))
    table = _map_table(ap, PERTURBATION, null_size, fdr, seed)
    summary = {
        "activity_map": _mean(table["mAP"]),
        "activity_fraction": _mean(table["active"]),
        "n_perturbations": len(table),
    }
    return table, summary


def consistency(
    profiles: pd.DataFrame,
    *,
    annotation: str = ANNOTATION,
    by: str = PERTURBATION,
    null_size: int = 10000,
    fdr: float = 0.05,
    seed: int = 0,
    chunk_size: int = _CHUNK,
) -> tuple[pd.DataFrame, dict]:
    """Score how well perturbations that share an annotation retrieve each other.

    Usually on consensus profiles (one row per perturbation,
    :func:`~workflow_scripts.screen.profiling.consensus`). Control rows
    (``Metadata_negcon``) and rows without an annotation are left out. Each row is a query;
    its positives are the rows with its annotation but another ``by`` value (so wells of
    one perturbation do not retrieve each other), its negatives the rows with another
    annotation. copairs: ``pos_sameby=[annotation]``, ``pos_diffby=[by]``,
    ``neg_diffby=[annotation]``.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Consensus or well profiles with ``annotation`` and, if present, ``by`` and
        ``Metadata_negcon``.
    annotation : str, default="Metadata_annotation"
        The shared label (MoA, gene).
    by : str, default="Metadata_perturbation"
        The perturbation column; ignored when absent.
    null_size, fdr, seed, chunk_size
        As in :func:`phenotypic_activity`.

    Returns
    -------
    table : pandas.DataFrame
        One row per annotation with at least two perturbations (sorted): ``annotation``,
        ``mAP``, ``normalized_mAP``, ``p_value``, ``q_value``, ``active`` (consistent),
        ``n_queries``.
    summary : dict
        ``consistency_map`` (mean mAP over those annotations, NaN if none),
        ``consistency_fraction`` (the fraction with ``q < fdr``) and ``n_annotations``.

    Raises
    ------
    ValueError
        If ``annotation`` is missing.
    """
    _require_columns(profiles, [annotation], "consistency")
    keep = profiles[annotation].notna().to_numpy().copy()
    if NEGCON in profiles.columns:
        keep &= ~_negcon(profiles, "consistency")
    rows = profiles.loc[keep]
    labels = rows[annotation].astype(str).to_numpy()
    groups = rows[by].astype(str).to_numpy() if by in rows.columns else np.arange(len(rows)).astype(str)
    # An annotation needs two perturbations to have a positive pair.
    n_groups = pd.Series(groups).groupby(labels).nunique()
    empty = pd.DataFrame(columns=[annotation] + TABLE_COLUMNS)
    if len(rows) < 2 or not (n_groups >= 2).any():
        return empty, {"consistency_map": float("nan"), "consistency_fraction": float("nan"), "n_annotations": 0}
    X = real_matrix(rows[_features(rows, "consistency")].to_numpy(), "consistency features")
    result = mean_average_precision(X, labels, exclude_same=groups, chunk_size=check_int("chunk_size", chunk_size, 1))
    ap = pd.DataFrame(
        {
            annotation: labels,
            "average_precision": result["ap"],
            "n_pos_pairs": result["n_positives"],
            "n_total_pairs": result["n_positives"] + result["n_negatives"],
        }
    )
    table = _map_table(ap, annotation, null_size, fdr, seed)
    summary = {
        "consistency_map": _mean(table["mAP"]),
        "consistency_fraction": _mean(table["active"]),
        "n_annotations": len(table),
    }
    return table, summary


def label_map(wells: pd.DataFrame, label: str = PLATE, *, chunk_size: int = _CHUNK) -> dict:
    """Return the mAP of retrieving wells with the same ``label`` (e.g. plate), and its chance level.

    Every well is a query; positives are the other wells with its label, negatives all
    the others. With the plate as label this measures the plate effect left in the
    profiles: well above chance before normalisation, near chance after a good one.

    Parameters
    ----------
    wells : pandas.DataFrame
        Well profiles with a ``label`` column.
    label : str, default="Metadata_plate"
        The column to retrieve by.
    chunk_size : int, default=1024
        Queries per block.

    Returns
    -------
    dict
        ``map`` (float) and ``chance`` (float): the mean over queries of the fraction of
        positives among the ranked wells, about the mAP of random profiles.

    Raises
    ------
    ValueError
        If ``label`` is missing or has missing values.

    Examples
    --------
    >>> wells = pd.DataFrame({"Metadata_plate": ["a", "a", "b", "b"],
    ...                       "f0": [1.0, 0.9, 0.0, 0.1], "f1": [0.0, 0.1, 1.0, 0.9]})
    >>> label_map(wells)
    {'map': 1.0, 'chance': 0.3333333333333333}
    """
    _require_columns(wells, [label], "label_map")
    labels = _labels(wells, label, "label_map")
    X = real_matrix(wells[_features(wells, "label_map")].to_numpy(), "label_map features", min_rows=2)
    result = mean_average_precision(X, labels, chunk_size=check_int("chunk_size", chunk_size, 1))
    return {"map": result["map"], "chance": result["positive_rate"]}


def nsc_accuracy(
    profiles: pd.DataFrame, *, moa: str, compound: str, batch: str | None = None, chunk_size: int = _CHUNK
) -> float:
    """Return BBBC021's not-same-compound 1-nearest-neighbour MoA accuracy (NSC, or NSCB with ``batch``).

    Each treatment profile (one row per compound and concentration) takes the MoA of its
    nearest neighbour by cosine similarity among the profiles of *other compounds*
    (Ljosa et al. 2013), and with ``batch`` also of other batches (NSCB, Ando et al.
    2017). Rows without a MoA and control rows (``Metadata_negcon``) are left out, as is a
    query with no eligible neighbour of its own MoA (it cannot be right: for NSCB, BBBC021's
    MoAs seen in a single batch). Exact ties go to the first row in table order.

    Parameters
    ----------
    profiles : pandas.DataFrame
        Treatment profiles: feature columns and the ``moa``, ``compound`` (and ``batch``)
        columns.
    moa : str
        The mechanism-of-action column (the class).
    compound : str
        The compound column: a query's own compound is never its neighbour.
    batch : str, optional
        The batch column (NSCB): the query's own batch is excluded too.
    chunk_size : int, default=1024
        Queries per block of similarities.

    Returns
    -------
    float
        The fraction of scored queries whose neighbour has their MoA; NaN if none is scored.

    Raises
    ------
    ValueError
        If a column is missing, or ``compound`` or ``batch`` has missing values.

    Examples
    --------
    Two MoAs of two compounds each, at angles 0, -22, 15 and 25 degrees: the nearest other
    compound of ``a1`` is ``b1`` (MoA Y), the others find their own MoA:

    >>> p = pd.DataFrame({"Metadata_moa": ["X", "X", "Y", "Y"], "Metadata_compound": ["a1", "a2", "b1", "b2"],
    ...                   "f0": [1.0, 1.0, 1.0, 1.0], "f1": [0.0, -0.4, 0.27, 0.47]})
    >>> nsc_accuracy(p, moa="Metadata_moa", compound="Metadata_compound")
    0.75
    """
    _require_columns(profiles, [moa, compound] + ([batch] if batch else []), "nsc_accuracy")
    keep = profiles[moa].notna().to_numpy().copy()
    if NEGCON in profiles.columns:
        keep &= ~_negcon(profiles, "nsc_accuracy")
    rows = profiles.loc[keep]
    if len(rows) < 2:
        return float("nan")
    X = real_matrix(rows[_features(rows, "nsc_accuracy")].to_numpy(), "nsc_accuracy features")
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise ValueError(f"nsc_accuracy: {int((norms == 0).sum())} all-zero profile(s): cosine similarity is undefined")
    F = X / norms[:, None]
    moas = pd.factorize(rows[moa].astype(str))[0]
    exclude = [_labels(rows, compound, "nsc_accuracy")] + ([_labels(rows, batch, "nsc_accuracy")] if batch else [])
    exclude = [pd.factorize(values)[0] for values in exclude]
    correct, scored = 0, 0
    for start in range(0, len(F), check_int("chunk_size", chunk_size, 1)):
        q = np.arange(start, min(start + chunk_size, len(F)))
        sim = F[q] @ F.T
        eligible = np.ones(sim.shape, dtype=bool)
        for codes in exclude:
            eligible &= codes[None, :] != codes[q][:, None]
        same_moa = moas[None, :] == moas[q][:, None]
        ok = (eligible & same_moa).any(axis=1)  # a right answer exists
        nearest = np.argmax(np.where(eligible, sim, -np.inf), axis=1)
        correct += int(np.sum(ok & (moas[nearest] == moas[q])))
        scored += int(ok.sum())
    return correct / scored if scored else float("nan")


def screen_metrics(
    steps: Mapping[str, pd.DataFrame],
    *,
    consensus_how: str = "median",
    null_size: int = 10000,
    fdr: float = 0.05,
    seed: int = 0,
    nsc: Mapping | None = None,
    across_plates: bool = True,
) -> dict:
    """Score every step of the recipe: activity, consistency, plate effect and (BBBC021) NSC/NSCB.

    Parameters
    ----------
    steps : mapping of str to pandas.DataFrame
        Step name to well table (:func:`~workflow_scripts.screen.profiling.run_recipe`).
    consensus_how : {"median", "mean"}, default="median"
        Aggregation of wells into the consensus profiles scored for consistency and NSC.
    null_size, fdr, seed, across_plates
        As in :func:`phenotypic_activity`.
    nsc : mapping, optional
        ``{"moa": column, "compound": column, "batch": column or None}``: also score NSC on
        the consensus profile of each perturbation, and NSCB (with ``batch``) on the
        consensus of each perturbation within each batch.

    Returns
    -------
    dict
        Step name to a JSON-ready dict (NaN where undefined): ``n_wells``, ``n_features``,
        ``activity_map``, ``activity_fraction``, ``n_perturbations``, ``consistency_map``,
        ``consistency_fraction``, ``n_annotations`` (the three consistency entries are
        present only when the wells have ``Metadata_annotation``), ``plate_map``,
        ``plate_chance``, ``nsc`` and ``nscb`` (when asked), and the per-group tables as
        lists of records: ``activity`` (``perturbation``, ``mAP``, ``normalized_mAP``,
        ``p_value``, ``q_value``, ``active``, ``n_queries``) and, with annotations,
        ``consistency`` (``annotation`` and the same).

    Raises
    ------
    ValueError
        If ``nsc`` has unknown or missing keys, or as the metrics do.
    """
    nsc = _check_nsc(nsc)
    check_fraction("fdr", fdr)
    out = {}
    for name, wells in steps.items():
        wells, n_zero = _rankable(wells, name)
        table, activity = phenotypic_activity(
            wells, null_size=null_size, fdr=fdr, seed=seed, across_plates=across_plates
        )
        plate = label_map(wells, PLATE)
        record = {"n_wells": len(wells), "n_zero_wells": n_zero, "n_features": len(feature_columns(wells)), **activity}
        record.update(plate_map=plate["map"], plate_chance=plate["chance"])
        per_group = {"activity": _records(table, PERTURBATION, "perturbation")}
        treatments = consensus(wells, by=PERTURBATION, how=consensus_how)
        if ANNOTATION in wells.columns:
            # Consistency among the phenotypically active perturbations, as in the field's
            # recipe (Kalinin et al. 2025, JUMP): an inactive one looks like the controls, and
            # after normalising on them its profile is noise, whatever its annotation.
            active = set(table.loc[table["active"], PERTURBATION].astype(str))
            scored = treatments[treatments[PERTURBATION].astype(str).isin(active)]
            ctable, csummary = consistency(scored, null_size=null_size, fdr=fdr, seed=seed)
            record.update(csummary)
            per_group["consistency"] = _records(ctable, ANNOTATION, "annotation")
        if nsc is not None:
            record["nsc"] = nsc_accuracy(treatments, moa=nsc["moa"], compound=nsc["compound"])
            if nsc["batch"]:
                by_batch = consensus(wells, by=[PERTURBATION, nsc["batch"]], how=consensus_how)
                record["nscb"] = nsc_accuracy(by_batch, moa=nsc["moa"], compound=nsc["compound"], batch=nsc["batch"])
        out[name] = {**record, **per_group}
    return out


# --------------------------------------------------------------------------------------
# Helpers


def _rankable(wells: pd.DataFrame, step: str) -> tuple[pd.DataFrame, int]:
    """Leave out the wells that cannot be scored, with a warning naming them.

    A well whose profile is all zeros has no direction (cosine similarity is undefined):
    after per-plate normalisation a well exactly at the controls' median on every feature
    (e.g. a one-feature table such as the cell count) is one. A perturbation left with wells
    on a single plate (its other wells filtered out upstream, or zero) has no replicate on
    another plate to retrieve.
    """
    X = wells[feature_columns(wells)].to_numpy(np.float64)
    zero = ~np.any(X != 0, axis=1)
    if zero.any():
        log.warning("%s: %d of %d wells have an all-zero profile and are left out of the scores", step, zero.sum(), len(X))
    kept = wells[~zero]
    treated = kept[~kept[NEGCON].astype(bool)]
    plates = treated.groupby(PERTURBATION, observed=True)[PLATE].nunique()
    alone = sorted(plates.index[plates < 2].astype(str))
    if alone:
        log.warning(
            "%s: perturbation(s) %s have wells left on a single plate and are left out of the activity scores",
            step,
            alone,
        )
        kept = kept[~kept[PERTURBATION].astype(str).isin(alone)]
    return kept, int(zero.sum())


def _labels(df: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = df[column]
    if values.isna().any():
        raise ValueError(f"{where}: column {column!r} is missing in {int(values.isna().sum())} row(s)")
    return values.astype(str).to_numpy()


def _check_activity_layout(wells: pd.DataFrame, perts: np.ndarray, negcon: np.ndarray, across_plates: bool) -> None:
    """Raise on a layout phenotypic activity cannot score, naming the column and the value."""
    if not negcon.any():
        raise ValueError(f"phenotypic_activity: no negative-control well ({NEGCON} is never True)")
    if negcon.all():
        raise ValueError(f"phenotypic_activity: every well is a negative control ({NEGCON} is always True)")
    shared = sorted(set(perts[negcon]) & set(perts[~negcon]))
    if shared:
        raise ValueError(
            f"phenotypic_activity: {PERTURBATION} value(s) {shared[:5]} name both control and treated wells "
            f"({NEGCON} True and False)"
        )
    if across_plates:
        treated = wells.loc[~negcon]
        n_plates = treated.groupby(perts[~negcon])[PLATE].nunique()
        single = n_plates.index[n_plates.to_numpy() < 2].tolist()
        if single:
            plate = treated.loc[perts[~negcon] == single[0], PLATE].iloc[0]
            raise ValueError(
                f"phenotypic_activity: {PERTURBATION} {single[0]!r} is on a single plate ({PLATE} {plate!r})"
                + (f", and {len(single) - 1} more" if len(single) > 1 else "")
                + ": its replicates must be on at least 2 plates (or score with across_plates=False)"
            )


def _activity_ap(
    X: np.ndarray, perts: np.ndarray, plates: np.ndarray | None, negcon: np.ndarray, chunk_size: int
) -> pd.DataFrame:
    """AP of every treated well against the controls: columns perturbation, AP and copairs' pair counts.

    A query ranks only the controls and its own perturbation's wells, so its AP is the same
    in any subset of rows that holds those. ``mean_average_precision`` ranks every row of
    its input for every query (``O(N^2)``); calling it on the controls plus a batch of
    about as many treated wells at a time, whole perturbations per batch, costs about
    ``4 N C`` similarities for ``C`` controls instead of ``N^2`` (5x less at 5% controls),
    with the same memory bound and the same AP.
    """
    controls = np.flatnonzero(negcon)
    treated = np.flatnonzero(~negcon)
    target = max(len(controls), 256)
    batches, current = [], []
    for rows in pd.Series(treated).groupby(perts[treated], sort=True).indices.values():
        current.append(treated[rows])
        if sum(map(len, current)) >= target:
            batches.append(np.concatenate(current))
            current = []
    if current:
        batches.append(np.concatenate(current))
    parts = []
    for wells in batches:
        batch = np.r_[controls, wells]
        result = mean_average_precision(
            X[batch],
            perts[batch],
            exclude_same=None if plates is None else plates[batch],
            negative_filter=negcon[batch],
            chunk_size=chunk_size,
        )
        k = len(controls)
        n_pos, n_neg = result["n_positives"][k:], result["n_negatives"][k:]
        parts.append(
            pd.DataFrame(
                {
                    PERTURBATION: perts[wells],
                    "average_precision": result["ap"][k:],
                    "n_pos_pairs": n_pos,
                    "n_total_pairs": n_pos + n_neg,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _map_table(ap: pd.DataFrame, group: str, null_size: int, fdr: float, seed: int) -> pd.DataFrame:
    """Per-group mAP, p-value (copairs' null), BH q-value and ``q < fdr`` from a table of APs."""
    null_size = check_int("null_size", null_size, 1)
    fdr = check_fraction("fdr", fdr)
    seed = check_int("seed", seed, 0)
    ap = ap[ap["n_pos_pairs"] > 0].reset_index(drop=True)
    if ap.empty:
        return pd.DataFrame(columns=[group] + TABLE_COLUMNS)
    ap["normalized_average_precision"] = _normalized_ap(ap)
    # copairs caches null distributions on disk by (positives, total) only, but draws them
    # with seeds that depend on the whole set of configurations: a cache shared between
    # calls would make p-values depend on earlier calls. A fresh directory keeps them a
    # function of the inputs and the seed.
    with tempfile.TemporaryDirectory(prefix="copairs-null-") as cache:
        scores = copairs_map(
            ap, [group], null_size=null_size, threshold=fdr, seed=seed, progress_bar=False, cache_dir=cache
        )
    counts = ap.groupby(group).size()
    table = pd.DataFrame(
        {
            group: scores[group].to_numpy(),
            "mAP": scores["mean_average_precision"].to_numpy(np.float64),
            "normalized_mAP": scores["mean_normalized_average_precision"].to_numpy(np.float64),
            "p_value": scores["p_value"].to_numpy(np.float64),
            "q_value": scores["corrected_p_value"].to_numpy(np.float64),
            "active": scores["below_corrected_p"].to_numpy(bool),
            "n_queries": counts.loc[scores[group]].to_numpy(),
        }
    )
    return table.sort_values(group, kind="stable").reset_index(drop=True)


def _normalized_ap(ap: pd.DataFrame) -> np.ndarray:
    """Chance-corrected AP ``(AP - mu0) / (1 - mu0)`` as in copairs, ``mu0`` computed once per configuration.

    ``copairs.map.normalization.normalize_ap`` recomputes a harmonic number per row in
    Python (seconds at thousands of rows); the configurations (positives, negatives) are few.
    """
    M = ap["n_pos_pairs"].to_numpy(np.int64)
    N = ap["n_total_pairs"].to_numpy(np.int64) - M
    confs, inverse = np.unique(np.stack([M, N], axis=1), axis=0, return_inverse=True)
    mu0 = np.array([expected_ap(int(m), int(n)) for m, n in confs])[inverse.reshape(-1)]
    normalized = (ap["average_precision"].to_numpy(np.float64) - mu0) / np.maximum(1 - mu0, 1e-10)
    return np.clip(normalized, -1.0, 1.0)


def _check_nsc(nsc: Mapping | None) -> dict | None:
    if nsc is None:
        return None
    if not isinstance(nsc, Mapping):
        raise ValueError(f"nsc must be a mapping with keys moa, compound and batch; got {type(nsc).__name__}")
    unknown = sorted(set(nsc) - {"moa", "compound", "batch"})
    missing = sorted({"moa", "compound"} - set(nsc))
    if unknown or missing:
        raise ValueError(f"nsc: unknown key(s) {unknown}, missing key(s) {missing}; expected moa, compound, batch")
    return {"moa": nsc["moa"], "compound": nsc["compound"], "batch": nsc.get("batch")}


def _records(table: pd.DataFrame, column: str, name: str) -> list[dict]:
    rows = table.rename(columns={column: name})
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in rows.to_dict(orient="records")
    ]


def _mean(values: Sequence | pd.Series) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()) if values.size else float("nan")
