"""Probe accuracy: how well a label can be read off the features by a simple classifier.

Three probes share one cross-validation (:func:`cv_splits`) and one report (accuracy and
macro-F1 per fold, their mean and SD, the confusion matrix summed over folds):
:func:`logreg_accuracy` (linear), :func:`mlp_accuracy` (one hidden layer, class-weighted, as
the VAEM reference) and :func:`knn_accuracy` (k nearest neighbours, no fitting at all).

With ``groups`` (plate, well, field, donor, ...) the cross-validation holds whole groups
out, so a model cannot score by recognising the group (a batch effect) instead of the
biology: if each group carries one label, a per-group offset in the features predicts the
label perfectly under plain stratified CV and not at all on unseen groups.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import (
    BaseCrossValidator,
    GroupKFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["cv_splits", "knn_accuracy", "logreg_accuracy", "mlp_accuracy"]


#: Largest features x classes for the Newton-Cholesky solver (its Hessian is that squared).
NEWTON_MAX_PARAMS = 4096


def logreg_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict:
    """Cross-validated accuracy of standardised multinomial logistic regression.

    Parameters
    ----------
    features : ndarray of shape (N, F)
        Real-valued, finite features, one row per cell.
    labels : ndarray of shape (N,)
        Class of each cell; any hashable, sortable values (int, str, ...).
    groups : ndarray of shape (N,), optional
        Group of each cell (e.g. plate or well). When given, whole groups are held out:
        ``StratifiedGroupKFold`` if every class spans at least ``n_splits`` groups, else
        ``GroupKFold`` (both shuffled with ``seed``); ``n_splits`` is lowered to the number
        of groups if there are fewer. Without groups: ``StratifiedKFold`` with
        ``n_splits`` lowered to the size of the smallest class.
    n_splits : int, default=5
        Requested number of folds, ``>= 2``.
    seed : int, default=0
        Seed of the fold shuffling; the result is deterministic for a fixed seed.
    max_iter : int, default=1000
        Iteration limit of the lbfgs solver.

    Returns
    -------
    dict
        ``accuracy_mean`` (float), ``accuracy_sd`` (float, sample SD over folds, ddof=1),
        ``fold_accuracies`` (list of float), ``f1_macro_mean``, ``f1_macro_sd`` and
        ``fold_f1_macro`` (the same for the macro-averaged F1 score), ``confusion`` (list of
        lists of int: the confusion matrix summed over the folds' test sets, so it sums to N;
        row = true class, column = predicted class, both in the order of ``classes``),
        ``classes`` (the sorted distinct labels), ``n_splits`` (int, folds actually used),
        ``cv`` (``"grouped"`` or ``"stratified"``) and ``n_unconverged_folds`` (int, folds
        whose solver hit ``max_iter``; their accuracy is still reported).

    Notes
    -----
    The model is ``StandardScaler`` + ``LogisticRegression(C=1.0)``, fitted on the training
    folds only. The solver is Newton-Cholesky while features x classes is at most 4096 and at
    most the training cells of the smallest fold (a few exact Newton steps; on 256 learned
    features x 6 classes 2.5x faster than L-BFGS, which needed 445 iterations, for the same
    optimum) and L-BFGS above (the Hessian grows as (features x classes)^2). With grouped CV a training fold can miss classes;
    the model then simply cannot predict them, which is the honest result. If a training
    fold holds a single class, the fold predicts that class for every test cell (what any
    classifier trained on it would do) instead of failing. A fold's macro-F1 averages over the
    classes present in its test labels or predictions (sklearn's default); a class predicted
    but absent from the test fold scores F1 = 0 there.

    Raises
    ------
    ValueError
        If shapes disagree, values are not finite, fewer than two classes are present, or
        no valid split exists (a class with a single cell, or fewer than two groups).
    """
    features = _as_features(features)
    labels = _as_vector(labels, "labels", features.shape[0])
    if not isinstance(max_iter, numbers.Integral) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")

    cv, n_used, kind = _make_cv(labels, groups, n_splits, seed)
    splits = list(cv.split(features, labels, groups))
    n_params = features.shape[1] * max(len(np.unique(labels)), 2)
    # With more parameters than training cells the Hessian is near-singular and sklearn falls
    # back to a slow least-squares solve (measured: 2.5 s per Newton step at 59 cells x 324
    # features); L-BFGS is the right tool there. Below that, Newton-Cholesky reaches the same
    # optimum in ~9 steps (measured on 1,750 cells x 256 features x 6 classes: 2.7 s against
    # L-BFGS's 439 iterations in 4.7 s).
    n_train = min(len(train) for train, _ in splits)
    solver = "newton-cholesky" if n_params <= min(NEWTON_MAX_PARAMS, n_train) else "lbfgs"
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver=solver, max_iter=max_iter))
    n_unconverged = 0

    def fit_predict(fold, train, test):
        nonlocal n_unconverged
        with warnings.catch_warnings():
            # One warning per fold is noise; the count is returned instead. Only
            # ConvergenceWarning is filtered: errors and other warnings pass through.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(features[train], labels[train])
        n_unconverged += int(np.any(model[-1].n_iter_ >= max_iter))
        return model.predict(features[test])

    result = _score_folds(labels, splits, fit_predict) | {"n_splits": n_used, "cv": kind}
    result["n_unconverged_folds"] = n_unconverged
    return result


def mlp_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_splits: int = 5,
    seed: int = 0,
    hidden: int = 128,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    class_weight: str | None = "balanced",
) -> dict:
    """Cross-validated accuracy of a small MLP with class-weighted cross-entropy (VAEM's probe).

    Parameters
    ----------
    features, labels, groups, n_splits, seed
        As in :func:`logreg_accuracy`; the folds are the same (:func:`cv_splits`). ``seed``
        also seeds the weights and batch order (fold i uses ``seed + i``).
    hidden : int, default=128
        Width of the single hidden layer: standardised features -> Linear -> ReLU -> Linear.
    epochs : int, default=100
        Passes over the training fold, in shuffled mini-batches of ``batch_size``.
    lr, weight_decay : float
        Learning rate and decoupled weight decay of ``torch.optim.AdamW``.
    class_weight : {"balanced", None}, default="balanced"
        ``"balanced"`` weights each class's loss by n_train / (n_classes_train x n_class) on
        the training fold (sklearn's definition), so rare classes count as much as common ones;
        ``None`` weights every cell equally.

    Returns
    -------
    dict
        The keys of :func:`logreg_accuracy` except ``n_unconverged_folds`` (training runs a
        fixed number of epochs).

    Notes
    -----
    Written in torch rather than ``sklearn.neural_network.MLPClassifier`` because the latter
    has no class or sample weights, and resampling the training fold to balance it would
    repeat rare cells (overfitting them) or drop common ones. VAEM used stratified shuffle
    splits (test 20%); here the folds are those of the other probes, so their scores compare
    cell for cell. Deterministic for a seed on a given machine and thread count; the global
    torch RNG is left untouched. The network is tiny: under ``torch.set_num_threads(1)`` it
    trains several times faster on a busy machine than with more threads.
    """
    import torch
    from torch import nn

    features = _as_features(features)
    labels = _as_vector(labels, "labels", features.shape[0])
    for name, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    for name, value, positive in (("lr", lr, True), ("weight_decay", weight_decay, False)):
        if not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number; got {value!r}")
    if class_weight not in ("balanced", None):
        raise ValueError(f"class_weight must be 'balanced' or None; got {class_weight!r}")

    cv, n_used, kind = _make_cv(labels, groups, n_splits, seed)
    classes, y = np.unique(labels, return_inverse=True)
    splits = list(cv.split(features, labels, groups))

    def fit_predict(fold, train, test):
        scaler = StandardScaler().fit(features[train])
        x_train = torch.from_numpy(scaler.transform(features[train]).astype(np.float32))
        x_test = torch.from_numpy(scaler.transform(features[test]).astype(np.float32))
        y_train = torch.from_numpy(y[train].astype(np.int64))
        counts = np.bincount(y[train], minlength=len(classes)).astype(np.float64)
        if class_weight == "balanced":
            present = counts > 0
            weights = np.where(present, len(train) / (present.sum() * np.maximum(counts, 1)), 0.0)
        else:
            weights = np.ones(len(classes))
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + fold)
            model = nn.Sequential(nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, len(classes)))
            optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
            for _ in range(int(epochs)):
                for batch in torch.randperm(len(train)).split(int(batch_size)):
                    optimiser.zero_grad(set_to_none=True)
                    loss_fn(model(x_train[batch]), y_train[batch]).backward()
                    optimiser.step()
        with torch.no_grad():
            return classes[model(x_test).argmax(dim=1).numpy()]

    return _score_folds(labels, splits, fit_predict) | {"n_splits": n_used, "cv": kind}


def knn_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    metric: str = "cosine",
    n_splits: int = 5,
    seed: int = 0,
    standardize: bool = False,
) -> dict:
    """Cross-validated accuracy of k-nearest-neighbour majority vote, for several k at once.

    Parameters
    ----------
    features, labels, groups, n_splits, seed
        As in :func:`logreg_accuracy`; the folds are the same (:func:`cv_splits`).
    ks : sequence of int, default=(1, 5, 10)
        Neighbourhood sizes; each must not exceed the smallest training fold.
    metric : str, default="cosine"
        Any metric of ``sklearn.neighbors.NearestNeighbors`` (brute force for cosine).
    standardize : bool, default=False
        Standardise the features with training-fold statistics first (by default they are
        used as given, as is usual for cosine kNN probes of embeddings).

    Returns
    -------
    dict
        ``by_k``: {k (int): dict with the per-fold keys of :func:`logreg_accuracy`
        (``accuracy_mean``, ``accuracy_sd``, ``fold_accuracies``, ``f1_macro_mean``,
        ``f1_macro_sd``, ``fold_f1_macro``, ``confusion``)}, plus ``ks``, ``classes``,
        ``metric``, ``n_splits`` and ``cv``.

    Notes
    -----
    Each fold's neighbours are searched once, for the largest k; the vote for each k uses its
    first k (uniform weights). Tied votes go to the class that sorts first, so predictions
    equal ``sklearn.neighbors.KNeighborsClassifier(k, metric=metric)`` fitted on the fold.
    """
    from sklearn.neighbors import NearestNeighbors

    features = _as_features(features)
    labels = _as_vector(labels, "labels", features.shape[0])
    ks = list(ks)
    if not ks or any(not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a value; got {ks!r}")
    ks = [int(k) for k in ks]
    cv, n_used, kind = _make_cv(labels, groups, n_splits, seed)
    classes, y = np.unique(labels, return_inverse=True)
    splits = list(cv.split(features, labels, groups))
    smallest = min(len(train) for train, _ in splits)
    if max(ks) > smallest:
        raise ValueError(f"ks: k = {max(ks)} exceeds the smallest training fold ({smallest} cells)")

    predictions: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    for train, test in splits:
        x_train, x_test = features[train], features[test]
        if standardize:
            scaler = StandardScaler().fit(x_train)
            x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
        search = NearestNeighbors(n_neighbors=max(ks), metric=metric).fit(x_train)
        neighbours = y[train][search.kneighbors(x_test, return_distance=False)]  # (n_test, max k)
        for k in ks:
            votes = (neighbours[:, :k, None] == np.arange(len(classes))).sum(axis=1)
            predictions[k].append(classes[votes.argmax(axis=1)])

    by_k = {}
    for k in ks:
        by_k[k] = _score_folds(labels, splits, lambda fold, train, test, k=k: predictions[k][fold])
    return {
        "by_k": by_k,
        "ks": ks,
        "classes": classes.tolist(),
        "metric": metric,
        "n_splits": n_used,
        "cv": kind,
    }


def cv_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs :func:`logreg_accuracy` uses.

    Parameters
    ----------
    labels : ndarray of shape (N,)
        Class of each cell.
    groups : ndarray of shape (N,), optional
        Group of each cell; when given, no group has cells on both sides of any split.
    n_splits : int, default=5
        Requested number of folds (lowered as described in :func:`logreg_accuracy`).
    seed : int, default=0
        Shuffling seed.

    Returns
    -------
    list of (ndarray, ndarray)
        One ``(train_indices, test_indices)`` pair of int arrays per fold; the test sets
        partition ``range(N)``.
    """
    labels = _as_vector(labels, "labels", None)
    cv, _, _ = _make_cv(labels, groups, n_splits, seed)
    return list(cv.split(np.zeros((len(labels), 1)), labels, groups))


def _make_cv(labels, groups, n_splits, seed) -> tuple[BaseCrossValidator, int, str]:
    if not isinstance(n_splits, numbers.Integral) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer >= 2; got {n_splits!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    seed = int(seed)
    classes, class_index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels must contain at least 2 classes; got {classes.tolist()!r}")

    if groups is not None:
        groups = _as_vector(groups, "groups", len(labels))
        group_names, group_index = np.unique(groups, return_inverse=True)
        if len(group_names) < 2:
            raise ValueError(
                f"groups must contain at least 2 distinct groups for grouped CV; got {group_names.tolist()!r}"
            )
        n_used = min(n_splits, len(group_names))
        # Distinct groups per class: unique (class, group) pairs counted per class.
        pairs = np.unique(np.stack([class_index, group_index]), axis=1)
        groups_per_class = np.bincount(pairs[0], minlength=len(classes))
        if groups_per_class.min() >= n_used:
            cv = StratifiedGroupKFold(n_splits=n_used, shuffle=True, random_state=seed)
        else:
            cv = GroupKFold(n_splits=n_used, shuffle=True, random_state=seed)
        return cv, n_used, "grouped"

    smallest = int(np.bincount(class_index).min())
    if smallest < 2:
        raise ValueError(
            f"labels: every class needs at least 2 cells for stratified CV; class "
            f"{classes[np.argmin(np.bincount(class_index))]!r} has {smallest}"
        )
    n_used = min(n_splits, smallest)
    return StratifiedKFold(n_splits=n_used, shuffle=True, random_state=seed), n_used, "stratified"


def _score_folds(labels: np.ndarray, splits, fit_predict) -> dict:
    """Accuracy, macro-F1 and the summed confusion matrix of ``fit_predict(fold, train, test)``
    (the predicted labels of ``test`` in split number ``fold``) over ``splits``. A training fold with a single class predicts
    that class without calling ``fit_predict``."""
    classes = np.unique(labels)
    accuracies, f1s = [], []
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for fold, (train, test) in enumerate(splits):
        train_classes = np.unique(labels[train])
        if len(train_classes) == 1:
            predicted = np.full(len(test), train_classes[0], dtype=labels.dtype)
        else:
            predicted = np.asarray(fit_predict(fold, train, test))
        accuracies.append(float(accuracy_score(labels[test], predicted)))
        f1s.append(float(f1_score(labels[test], predicted, average="macro", zero_division=0.0)))
        confusion += confusion_matrix(labels[test], predicted, labels=classes)
    return {
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_sd": float(np.std(accuracies, ddof=1)),
        "fold_accuracies": accuracies,
        "f1_macro_mean": float(np.mean(f1s)),
        "f1_macro_sd": float(np.std(f1s, ddof=1)),
        "fold_f1_macro": f1s,
        "confusion": confusion.tolist(),
        "classes": classes.tolist(),
    }


def _as_features(features) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] == 0:
        raise ValueError(f"features must be a 2-D array (N, F) with F >= 1; got {features.shape}")
    if features.dtype.kind not in "fiu":
        raise ValueError(f"features must hold real numbers; got dtype {features.dtype}")
    if not np.isfinite(features).all():
        raise ValueError("features must contain only finite values; found NaN or inf")
    return features


def _as_vector(values, name: str, n: int | None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array; got shape {values.shape}")
    if n is not None and len(values) != n:
        raise ValueError(f"{name} must have one entry per row of features ({n}); got {len(values)}")
    return values
