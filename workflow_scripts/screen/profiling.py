"""The screening profiling recipe: cells to well profiles, normalised, selected, sphered, batch-corrected.

Each step takes and returns a DataFrame of ``Metadata_*`` columns and feature columns (every
other column, :func:`workflow_scripts.io.feature_columns`), one row per well, and uses
pycytominer where it has the operation:

1. :func:`well_profiles`: median (or mean) of each well's cells (``pycytominer.aggregate``),
   with the well's metadata and its number of cells.
2. :func:`normalize_plates`: each plate on its own against its negative-control wells
   (``pycytominer.normalize``): robust z-score by median and MAD, robust scaling by median
   and IQR, or standardisation by mean and SD.
3. :func:`select_features`: drop near-constant, highly correlated and missing features
   (``pycytominer.feature_select``).
4. :func:`sphere`: whiten on the control wells (typical variation normalisation, TVN;
   ``pycytominer.normalize(method="spherize")``).
5. :func:`harmony`: Harmony batch correction (``harmonypy``).
6. :func:`consensus`: one profile per perturbation (``pycytominer.consensus``).

:func:`run_recipe` runs steps 1-5 as configured and returns every step's well table, so each
step can be scored (:mod:`workflow_scripts.screen.metrics`).

The standard columns: ``Metadata_plate``, ``Metadata_well``, ``Metadata_perturbation``,
``Metadata_negcon`` (bool, negative-control well), optional ``Metadata_annotation`` (MoA,
gene; NaN for controls) and ``Metadata_batch``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pycytominer
from scipy.stats import median_abs_deviation
from sklearn.decomposition import PCA

from workflow_scripts.io import feature_columns, metadata_columns
from workflow_scripts.validation import check_bool, check_fraction, check_int, check_real, real_matrix

log = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION",
    "BATCH",
    "DEFAULT_RECIPE",
    "FEATURE_SELECT_OPERATIONS",
    "NEGCON",
    "NORMALIZE_METHODS",
    "N_CELLS",
    "N_WELLS",
    "PERTURBATION",
    "PLATE",
    "WELL",
    "check_recipe",
    "consensus",
    "harmony",
    "normalize_plates",
    "run_recipe",
    "select_features",
    "sphere",
    "well_profiles",
]

PLATE = "Metadata_plate"
WELL = "Metadata_well"
PERTURBATION = "Metadata_perturbation"
NEGCON = "Metadata_negcon"
ANNOTATION = "Metadata_annotation"
BATCH = "Metadata_batch"
N_CELLS = "Metadata_n_cells"
N_WELLS = "Metadata_n_wells"

NORMALIZE_METHODS = ("mad_robustize", "robustize", "standardize")
AGGREGATIONS = ("median", "mean")
# pycytominer.feature_select's operations that need no extra input ("blocklist" needs a
# CellProfiler feature list, "noise_removal" perturbation groups).
FEATURE_SELECT_OPERATIONS = (
    "variance_threshold",
    "frequency_threshold",
    "correlation_threshold",
    "drop_na_columns",
    "drop_outliers",
)
SPHERE_METHODS = ("ZCA", "ZCA-cor", "PCA", "PCA-cor")

# The recipe's configuration (``profiles:`` in the workflow's config). Keys:
#   well_how       "median" | "mean": aggregation of cells into wells
#   normalize      "mad_robustize" | "robustize" | "standardize" | "none": per plate
#   normalize_on   "controls" | "all": the wells whose statistics normalise each plate
#   feature_select list of pycytominer.feature_select operations; [] skips the step
#   corr_threshold float in [0, 1]: correlation_threshold's cut
#   sphere         bool: whiten on the control wells
#   harmony        bool: Harmony batch correction
#   harmony_batch  str: the batch column Harmony corrects
#   consensus      "median" | "mean": aggregation of wells into perturbations (metrics)
#: Below this many control wells on a plate, normalising against them is flagged (a warning):
#: the error of their medians and spreads is shared by every well of the plate, a plate effect
#: of its own that cosine similarity picks up over many features. On the synthetic screen
#: (README "Screens") 4 controls per plate raised the plate-label mAP of learned features from
#: 0.26 to 0.52 (chance 0.24) and 16 still by 0.07-0.17, where all 48 wells kept it within 0.02.
FEW_CONTROLS = 32

DEFAULT_RECIPE = {
    "well_how": "median",
    "normalize": "mad_robustize",
    "normalize_on": "controls",
    "feature_select": ["variance_threshold", "correlation_threshold", "drop_na_columns"],
    "corr_threshold": 0.9,
    "sphere": False,
    "harmony": False,
    "harmony_batch": PLATE,
    "consensus": "median",
}


def well_profiles(cells: pd.DataFrame, how: str = "median") -> pd.DataFrame:
    """Aggregate single cells into one profile per (plate, well).

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell: ``Metadata_plate``, ``Metadata_well``, further ``Metadata_*``
        columns and numeric feature columns.
    how : {"median", "mean"}, default="median"
        Per-feature aggregation (``pycytominer.aggregate``).

    Returns
    -------
    pandas.DataFrame
        One row per well, sorted by plate and well: ``Metadata_plate``, ``Metadata_well``,
        the other ``Metadata_*`` columns that are constant within every well (perturbation,
        negcon, annotation, batch, ...), ``Metadata_n_cells``, then the aggregated features
        (float64).

    Raises
    ------
    ValueError
        If a column is missing, plate or well is missing in some row, a feature is not
        numeric, or ``Metadata_perturbation`` or ``Metadata_negcon`` differs between the
        cells of one well (the error names the well and the values).

    Examples
    --------
    >>> cells = pd.DataFrame({"Metadata_plate": ["p"] * 3, "Metadata_well": ["A01", "A01", "A02"],
    ...                       "Metadata_perturbation": ["x", "x", "y"], "f": [1.0, 3.0, 5.0]})
    >>> well_profiles(cells)
      Metadata_plate Metadata_well Metadata_perturbation  Metadata_n_cells    f
    0              p           A01                     x                 2  2.0
    1              p           A02                     y                 1  5.0
    """
    how = _choice("how", how, AGGREGATIONS)
    strata = [PLATE, WELL]
    _require_columns(cells, strata, "well_profiles")
    features = _features(cells, "well_profiles")
    for column in strata:
        if cells[column].isna().any():
            raise ValueError(f"well_profiles: column {column!r} is missing in {int(cells[column].isna().sum())} row(s)")
    with warnings.catch_warnings():
        # pycytominer.aggregate inserts one column at a time into its result (pandas warns
        # "highly fragmented" from 100 features); harmless, and not ours to fix.
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        profiles = pycytominer.aggregate(cells[strata + features], strata=strata, features=features, operation=how)
    meta = _group_metadata(cells, strata, required=(PERTURBATION, NEGCON), where="well_profiles")
    meta[N_CELLS] = cells.groupby(strata, sort=True).size().to_numpy()
    out = meta.merge(profiles, on=strata, how="inner", validate="one_to_one")
    return out.reset_index(drop=True)


def normalize_plates(wells: pd.DataFrame, method: str = "mad_robustize", samples: str = "controls") -> pd.DataFrame:
    """Normalise each plate's wells against that plate's negative controls (or all its wells).

    ``pycytominer.normalize`` runs once per plate with ``samples="Metadata_negcon == True"``
    (or ``"all"``): the scaler is fitted on the plate's reference wells and applied to all its
    wells. ``mad_robustize`` gives ``(x - median) / (1.4826 * MAD)`` (a robust z-score),
    ``robustize`` ``(x - median) / IQR``, ``standardize`` ``(x - mean) / SD``.

    Parameters
    ----------
    wells : pandas.DataFrame
        Well profiles (:func:`well_profiles`) with ``Metadata_plate`` and, for
        ``samples="controls"``, a boolean ``Metadata_negcon``.
    method : {"mad_robustize", "robustize", "standardize"}, default="mad_robustize"
        pycytominer's normalisation method.
    samples : {"controls", "all"}, default="controls"
        The reference wells the scaler is fitted on.

    Returns
    -------
    pandas.DataFrame
        The same rows in the same order, features normalised. With ``mad_robustize``,
        features whose MAD over some plate's reference wells is zero (a constant feature:
        its z-score would be infinite) are dropped, with a warning.

    Raises
    ------
    ValueError
        If a plate has no control wells (the error names the plate), ``Metadata_negcon`` is
        not boolean, or every feature has zero MAD on some plate.
    """
    method = _choice("method", method, NORMALIZE_METHODS)
    samples = _choice("samples", samples, ("controls", "all"))
    _require_columns(wells, [PLATE], "normalize_plates")
    features = _features(wells, "normalize_plates")
    reference = _negcon(wells, "normalize_plates") if samples == "controls" else np.ones(len(wells), dtype=bool)
    constant: set[str] = set()
    few: list[str] = []
    for plate, rows in wells.groupby(PLATE, sort=True).indices.items():
        n_ref = int(reference[rows].sum())
        if samples == "controls" and 0 < n_ref < FEW_CONTROLS:
            few.append(f"{plate} ({n_ref})")
        if n_ref == 0:
            raise ValueError(
                f"normalize_plates: plate {plate!r} ({PLATE}) has no negative-control wells ({NEGCON} == True); "
                "it cannot be normalised against controls: add control wells to it or normalise on samples='all'"
            )
        if method == "mad_robustize":
            mad = median_abs_deviation(wells[features].to_numpy(np.float64)[rows[reference[rows]]], axis=0)
            constant.update(f for f, m in zip(features, mad, strict=True) if not m > 0)
    if few:
        log.warning(
            "normalize_plates: plates with fewer than %d control wells: %s. Their medians and spreads are "
            "noisy and give every well of a plate the same error, a plate effect of its own; with few "
            "controls per plate set profiles.normalize_on: all (see the plate-label mAP in metrics/screen.csv)",
            FEW_CONTROLS,
            ", ".join(few),
        )
    if constant:
        features = _drop_constant(features, constant)
    query = f"{NEGCON} == True" if samples == "controls" else "all"
    meta = metadata_columns(wells)
    table = wells[meta + features].reset_index(drop=True)  # positions: any index, duplicates included
    if samples == "controls":
        table[NEGCON] = reference
    parts = []
    for _, part in table.groupby(PLATE, sort=True):
        parts.append(pycytominer.normalize(part, features=features, meta_features=meta, samples=query, method=method))
    out = pd.concat(parts).sort_index()
    out.index = wells.index
    if samples == "controls":
        out[NEGCON] = wells[NEGCON]
    return out[[c for c in wells.columns if c in out.columns]]


def select_features(
    df: pd.DataFrame,
    operations: Sequence[str] = ("variance_threshold", "correlation_threshold", "drop_na_columns"),
    corr_threshold: float = 0.9,
) -> pd.DataFrame:
    """Drop uninformative features with ``pycytominer.feature_select`` over all wells.

    Parameters
    ----------
    df : pandas.DataFrame
        Well profiles (usually normalised).
    operations : sequence of str, default=("variance_threshold", "correlation_threshold", "drop_na_columns")
        pycytominer operations, applied in order: ``variance_threshold`` (variance below
        1e-6), ``frequency_threshold`` (few distinct values), ``correlation_threshold``
        (one of each pair correlated above ``corr_threshold``), ``drop_na_columns`` (more
        than 5% missing), ``drop_outliers`` (values beyond 500). Empty: nothing is dropped.
    corr_threshold : float, default=0.9
        Absolute Pearson correlation above which ``correlation_threshold`` drops a feature.

    Returns
    -------
    pandas.DataFrame
        ``df`` with the dropped feature columns removed; the kept features are its feature
        columns.

    Raises
    ------
    ValueError
        If an operation is unknown, or the operations would drop every feature (the table
        would have no profile left).
    """
    if isinstance(operations, str):
        raise ValueError(f"operations must be a list of operation names; got the string {operations!r}")
    ops = list(operations)
    unknown = [op for op in ops if op not in FEATURE_SELECT_OPERATIONS]
    if unknown:
        raise ValueError(
            f"feature_select: unknown operation(s) {unknown}; expected some of {list(FEATURE_SELECT_OPERATIONS)}"
        )
    corr_threshold = check_fraction("corr_threshold", corr_threshold)
    features = _features(df, "select_features")
    if not ops:
        return df.copy()
    none_left = ValueError(
        f"feature_select {ops} would drop all {len(features)} features (corr_threshold={corr_threshold}); "
        "keep at least one: remove an operation or raise corr_threshold"
    )
    try:
        out = pycytominer.feature_select(df, features=features, operation=ops, corr_threshold=corr_threshold)
    except ValueError as err:
        # scikit-learn's VarianceThreshold (under variance_threshold) refuses to drop every feature.
        if "No feature in X meets the variance threshold" in str(err):
            raise none_left from err
        raise
    if not feature_columns(out):
        raise none_left
    return out[[c for c in df.columns if c in out.columns]]


def sphere(df: pd.DataFrame, samples: str = "controls", *, method: str = "ZCA", epsilon: float = 0.1) -> pd.DataFrame:
    """Whiten the profiles on the control wells (typical variation normalisation).

    The sphering transform is fitted on the reference wells with
    ``pycytominer.normalize(method="spherize")`` and applied to every well, so the controls'
    covariance becomes the identity and directions of large control (nuisance) variation are
    shrunk.

    Parameters
    ----------
    df : pandas.DataFrame
        Well profiles of all plates (normalised, usually feature-selected).
    samples : {"controls", "all"}, default="controls"
        The wells the transform is fitted on.
    method : {"ZCA", "ZCA-cor", "PCA", "PCA-cor"}, default="ZCA"
        pycytominer's spherize method. ZCA keeps the feature axes, PCA rotates to
        components; ``*-cor`` first scales each feature to unit SD over the reference wells
        (after :func:`normalize_plates` on controls they are about 1 already, and plain ZCA
        also accepts a feature that is constant over the controls).
    epsilon : float, default=0.1
        Regularisation, relative: ``epsilon`` times the root-mean-square singular value of
        the (centred) reference wells is added to each of their singular values before they
        are inverted (pycytominer's absolute ``spherize_epsilon``). 0 is the plain whitening;
        see Notes.

    Returns
    -------
    pandas.DataFrame
        The same rows in the same order with sphered features. The feature columns are
        kept, except when the reference wells are exactly rank deficient (see Notes): then
        they are ``PC1 .. PCr``.

    Raises
    ------
    ValueError
        If there are fewer than 2 reference wells, or ``Metadata_negcon`` is not boolean.

    Notes
    -----
    With ``n`` reference wells and ``d`` features pycytominer needs the centred reference
    matrix to have rank ``min(d, n - 1)``. Fewer control wells than features is fine: the
    rank is then ``n - 1`` and pycytominer gives the ``d - n + 1`` directions the controls
    do not span the smallest observed singular value (a regularised inverse). It fails only
    on exact linear dependencies: a feature constant over the controls, duplicated features
    or duplicated control wells. Then the profiles are first projected on their top ``r``
    principal components over all wells (``r`` the controls' rank), which keeps the
    directions where the wells vary most, signal included, and leaves the controls of full
    rank; a warning says so. With ``*-cor`` a feature constant over the controls is such a
    dependency too.

    When the number of reference wells is close to the number of features, the smallest
    singular values of the reference matrix approach zero (the Marchenko-Pastur edge) and
    the plain whitening multiplies those noise directions by up to their inverse, burying
    the signal. The relative ``epsilon`` caps that gain at ``1 / epsilon`` times the typical
    one. On a synthetic screen of 256 control wells and 256 features (8 plates, 120
    perturbations of 20 MoAs) the plain whitening cut phenotypic-activity mAP from 0.999 to
    0.70 and consistency mAP from 1.0 to 0.33; ``epsilon=0.1`` kept 0.98 and 1.0. With many
    more controls than features, or many fewer, it changes little.
    """
    samples = _choice("samples", samples, ("controls", "all"))
    method = _choice("method", method, SPHERE_METHODS)
    epsilon = check_real("epsilon", epsilon, 0.0)
    features = _features(df, "sphere")
    reference = _negcon(df, "sphere") if samples == "controls" else np.ones(len(df), dtype=bool)
    if reference.sum() < 2:
        raise ValueError(f"sphere: needs at least 2 reference wells ({samples}); got {int(reference.sum())}")
    meta = metadata_columns(df)
    X = real_matrix(df[features].to_numpy(), "sphere features")
    table = df[meta + features]
    rank, ready, rms = _sphere_rank(X[reference], method)
    if not ready:
        warnings.warn(
            f"sphere: the {int(reference.sum())} reference wells have rank {rank} over {len(features)} features "
            "(exact linear dependencies); sphering their top principal components over all wells instead",
            stacklevel=2,
        )
        scores = PCA(n_components=rank, svd_solver="full").fit_transform(X)
        features = [f"PC{i + 1}" for i in range(rank)]
        table = pd.concat([df[meta], pd.DataFrame(scores, columns=features, index=df.index)], axis=1)
        rank, ready, rms = _sphere_rank(scores[reference], method)
        if not ready:
            raise ValueError(f"sphere: the reference wells stay rank deficient after PCA to {rank} components")
    query = f"{NEGCON} == True" if samples == "controls" else "all"
    fit_table = table.assign(**{NEGCON: reference}) if samples == "controls" else table
    out = pycytominer.normalize(
        fit_table,
        features=features,
        meta_features=meta + ([NEGCON] if samples == "controls" and NEGCON not in meta else []),
        samples=query,
        method="spherize",
        spherize_method=method,
        spherize_epsilon=epsilon * rms,
    )
    out = out.drop(columns=[NEGCON]) if NEGCON not in df.columns else out.assign(**{NEGCON: df[NEGCON]})
    return out[meta + feature_columns(out)]


def harmony(df: pd.DataFrame, batch_column: str = PLATE, seed: int = 0) -> pd.DataFrame:
    """Correct the batch effect of ``batch_column`` with Harmony (``harmonypy``).

    Harmony runs on the features themselves, not on a truncated PCA: the wells are few
    (hundreds to thousands), so it is cheap; its clustering (on L2-normalised rows) and its
    per-cluster ridge correction are unchanged by a rotation, so this equals Harmony on all
    principal components; and the corrected table keeps its feature columns for the next
    steps. A truncated PCA would drop the low-variance directions in which perturbations
    can differ.

    Parameters
    ----------
    df : pandas.DataFrame
        Well profiles (normalised).
    batch_column : str, default="Metadata_plate"
        The batch to correct: plate, or ``Metadata_batch``.
    seed : int, default=0
        Harmony's ``random_state`` (k-means initialisation); same seed, same result.

    Returns
    -------
    pandas.DataFrame
        The same rows, columns and order, with corrected features.

    Raises
    ------
    ValueError
        If ``batch_column`` is missing, has missing values or fewer than 2 batches.
    """
    import harmonypy  # optional: only the Harmony step needs it

    seed = check_int("seed", seed, 0)
    _require_columns(df, [batch_column], "harmony")
    batches = df[batch_column]
    if batches.isna().any():
        raise ValueError(f"harmony: batch column {batch_column!r} is missing in {int(batches.isna().sum())} row(s)")
    if batches.nunique() < 2:
        raise ValueError(
            f"harmony: batch column {batch_column!r} has a single value {batches.iloc[0]!r}; "
            "Harmony needs at least 2 batches (turn harmony off or choose another harmony_batch)"
        )
    features = _features(df, "harmony")
    X = real_matrix(df[features].to_numpy(), "harmony features")
    # harmonypy's default number of clusters, round(N / 30) capped at 100, is 0 below 15 wells.
    n_clusters = int(min(max(round(len(df) / 30), 2), 100))
    result = harmonypy.run_harmony(
        X,
        pd.DataFrame({batch_column: batches.astype(str).to_numpy()}),
        [batch_column],
        nclust=n_clusters,
        random_state=seed,
        verbose=False,
        ncores=1,
    )
    Z = np.asarray(result.Z_corr, dtype=np.float64)
    if Z.shape != X.shape:
        Z = Z.T
    out = df.copy()
    out[features] = Z
    return out


def consensus(df: pd.DataFrame, by: str | Sequence[str] = PERTURBATION, how: str = "median") -> pd.DataFrame:
    """Aggregate wells into one consensus profile per perturbation (``pycytominer.consensus``).

    Parameters
    ----------
    df : pandas.DataFrame
        Well profiles.
    by : str or sequence of str, default="Metadata_perturbation"
        The grouping column(s), e.g. ``["Metadata_perturbation", "Metadata_batch"]``.
    how : {"median", "mean"}, default="median"
        Per-feature aggregation.

    Returns
    -------
    pandas.DataFrame
        One row per value of ``by``, sorted: ``by``, the ``Metadata_*`` columns constant
        within every group (``Metadata_annotation``, ``Metadata_negcon``, ...),
        ``Metadata_n_wells``, then the features.

    Raises
    ------
    ValueError
        If ``by`` is missing or has missing values.

    Examples
    --------
    >>> wells = pd.DataFrame({"Metadata_perturbation": ["x", "x", "y"], "Metadata_plate": ["p", "q", "p"],
    ...                       "f": [1.0, 3.0, 5.0]})
    >>> consensus(wells)
      Metadata_perturbation  Metadata_n_wells    f
    0                     x                 2  2.0
    1                     y                 1  5.0
    """
    how = _choice("how", how, AGGREGATIONS)
    by = [by] if isinstance(by, str) else list(by)
    _require_columns(df, by, "consensus")
    for column in by:
        if df[column].isna().any():
            raise ValueError(f"consensus: column {column!r} is missing in {int(df[column].isna().sum())} row(s)")
    features = _features(df, "consensus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)  # as in well_profiles
        profiles = pycytominer.consensus(df[by + features], replicate_columns=by, operation=how, features=features)
    meta = _group_metadata(df, by, required=(), where="consensus")
    meta[N_WELLS] = df.groupby(by, sort=True).size().to_numpy()
    out = meta.merge(profiles, on=by, how="inner", validate="one_to_one")
    return out.reset_index(drop=True)


def check_recipe(config: Mapping | None) -> dict:
    """Return the recipe configuration with defaults filled in, after checking every key.

    Parameters
    ----------
    config : mapping or None
        Some of the keys of :data:`DEFAULT_RECIPE` (``well_how``, ``normalize``,
        ``feature_select``, ``corr_threshold``, ``sphere``, ``harmony``, ``harmony_batch``,
        ``consensus``); None for all defaults.

    Returns
    -------
    dict
        Every key of :data:`DEFAULT_RECIPE`.

    Raises
    ------
    ValueError
        On an unknown key or a bad value, naming the key, the value and what is expected.

    Examples
    --------
    >>> check_recipe({"normalize": "none", "feature_select": []})["sphere"]
    False
    """
    config = dict(config or {})
    unknown = sorted(set(config) - set(DEFAULT_RECIPE))
    if unknown:
        raise ValueError(f"profiles: unknown key(s) {unknown}; expected some of {sorted(DEFAULT_RECIPE)}")
    out = {**DEFAULT_RECIPE, **config}
    _choice("profiles.well_how", out["well_how"], AGGREGATIONS)
    _choice("profiles.consensus", out["consensus"], AGGREGATIONS)
    _choice("profiles.normalize", out["normalize"], NORMALIZE_METHODS + ("none",))
    _choice("profiles.normalize_on", out["normalize_on"], ("controls", "all"))
    ops = out["feature_select"]
    if isinstance(ops, str) or not isinstance(ops, Sequence) or any(op not in FEATURE_SELECT_OPERATIONS for op in ops):
        raise ValueError(
            f"profiles.feature_select={ops!r} is invalid: expected a list of some of {list(FEATURE_SELECT_OPERATIONS)}"
        )
    out["feature_select"] = list(ops)
    out["corr_threshold"] = check_fraction("profiles.corr_threshold", out["corr_threshold"])
    out["sphere"] = check_bool("profiles.sphere", out["sphere"])
    out["harmony"] = check_bool("profiles.harmony", out["harmony"])
    if not isinstance(out["harmony_batch"], str) or not out["harmony_batch"].startswith("Metadata_"):
        raise ValueError(f"profiles.harmony_batch={out['harmony_batch']!r} is invalid: expected a Metadata_* column")
    return out


def run_recipe(cells: pd.DataFrame, *, config: Mapping | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Run the recipe on a cell table and return each step's well profiles, in order.

    Parameters
    ----------
    cells : pandas.DataFrame
        One row per cell (see :func:`well_profiles`).
    config : mapping, optional
        The recipe (:func:`check_recipe`, :data:`DEFAULT_RECIPE`): ``well_how``;
        ``normalize`` (a method, or ``"none"`` to skip); ``feature_select`` (operations,
        ``[]`` to skip) and ``corr_threshold``; ``sphere`` (on controls); ``harmony`` and
        ``harmony_batch``. ``consensus`` is not used here (the metrics aggregate wells).
    seed : int, default=0
        Seed of the random steps (Harmony).

    Returns
    -------
    dict of str to pandas.DataFrame
        Step name to well table, in the order run: ``"raw"`` (:func:`well_profiles`), then
        ``"normalized"``, ``"feature_selected"``, ``"sphered"`` and ``"harmony"`` for the
        steps that are on (skipped steps are absent). Each step works on the previous one.
    """
    config = check_recipe(config)
    seed = check_int("seed", seed, 0)
    steps = {"raw": well_profiles(cells, how=config["well_how"])}
    current = steps["raw"]
    if config["normalize"] != "none":
        current = steps["normalized"] = normalize_plates(
            current, method=config["normalize"], samples=config["normalize_on"]
        )
    if config["feature_select"]:
        current = steps["feature_selected"] = select_features(
            current, config["feature_select"], corr_threshold=config["corr_threshold"]
        )
    if config["sphere"]:
        current = steps["sphered"] = sphere(current)
    if config["harmony"]:
        steps["harmony"] = harmony(current, batch_column=config["harmony_batch"], seed=seed)
    return steps


# --------------------------------------------------------------------------------------
# Helpers


def _choice(name: str, value, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: expected one of {list(allowed)}")
    return value


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: column(s) {missing} missing; the table has {metadata_columns(df)}")


def _features(df: pd.DataFrame, where: str) -> list[str]:
    features = feature_columns(df)
    if not features:
        raise ValueError(f"{where}: the table has no feature columns (every column is Metadata_*)")
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c]) or df[c].dtype == bool]
    if bad:
        raise ValueError(f"{where}: feature columns must be numeric; got non-numeric {bad[:5]}")
    return features


def _negcon(df: pd.DataFrame, where: str) -> np.ndarray:
    """``Metadata_negcon`` as a bool array; an error naming the column and value if it is not boolean."""
    _require_columns(df, [NEGCON], where)
    values = df[NEGCON]
    if values.dtype != bool:
        odd = [v for v in pd.unique(values) if not isinstance(v, bool | np.bool_)]
        if odd:
            raise ValueError(f"{where}: column {NEGCON!r} must be True or False; found {odd[:3]!r}")
    return values.to_numpy(dtype=bool)


def _group_metadata(df: pd.DataFrame, by: list[str], *, required: Sequence[str], where: str) -> pd.DataFrame:
    """One row per group (sorted): ``by`` and the metadata constant within every group.

    A column in ``required`` that varies within a group is an error naming the group.
    """
    others = [c for c in metadata_columns(df) if c not in by and c not in (N_CELLS, N_WELLS)]
    grouped = df.groupby(by, sort=True)
    counts = grouped[others].nunique(dropna=False) if others else pd.DataFrame(index=grouped.size().index)
    for column in required:
        if column in others and (counts[column] > 1).any():
            group = counts.index[(counts[column] > 1).to_numpy()][0]
            values = df.loc[grouped.indices[group], column].unique().tolist()
            raise ValueError(f"{where}: column {column!r} differs within {by} = {group!r}: {values[:5]!r}")
    constant = [c for c in others if (counts[c] <= 1).all()]
    return grouped[constant].first().reset_index() if constant else grouped.size().index.to_frame(index=False)


def _drop_constant(features: list[str], constant: set[str]) -> list[str]:
    kept = [f for f in features if f not in constant]
    if not kept:
        raise ValueError(
            f"normalize_plates: all {len(features)} features have zero MAD on the control wells of some plate "
            "(too few or identical control wells): the robust z-score is undefined"
        )
    example = sorted(constant)[:5]
    warnings.warn(
        f"normalize_plates: dropping {len(constant)} feature(s) with zero MAD on some plate's control wells "
        f"(e.g. {example}): their robust z-score would be infinite",
        stacklevel=3,
    )
    return kept


def _sphere_rank(X: np.ndarray, method: str) -> tuple[int, bool, float]:
    """Rank of the reference wells as pycytominer's Spherize computes it, whether it can sphere them, RMS singular value.

    pycytominer centres the reference matrix (and scales it to unit SD for ``*-cor``, which
    fails on a constant feature), needs rank ``min(d, n - 1)`` and inverts the singular
    values of that matrix; the RMS is over its ``rank`` nonzero singular values.
    """
    n, d = X.shape
    centred = X - X.mean(axis=0)
    if method.endswith("-cor"):
        sd = X.std(axis=0)
        if (sd == 0).any():
            return int(np.linalg.matrix_rank(centred)), False, 0.0
        centred = centred / sd
    rank = int(np.linalg.matrix_rank(centred))
    rms = float(np.sqrt(np.sum(centred**2) / max(rank, 1)))
    return rank, rank == min(d, n - 1), rms
