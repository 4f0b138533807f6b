"""Probe accuracy: how well a label can be read off the features by a simple classifier.

Three probes share one cross-validation (:func:`cv_splits`) and one report (accuracy and
macro-F1 per fold, their mean and SD, the confusion matrix summed over folds):
:func:`logreg_accuracy` (linear), :func:`mlp_accuracy` (one hidden layer, class-weighted, as
the VAEM reference) and :func:`knn_accuracy` (k nearest neighbours, no fitting at all).

With ``groups`` (plate, well, field, donor, ...) the cross-validation holds whole groups
out, so a model cannot score by recognising the group (a batch effect) instead of the
biology: if each group carries one label, a per-group offset in the features predicts the
label perfectly under plain stratified CV and not at all on unseen groups. Real layouts have
few groups per class (4 fields, 3 wells): the folds are then built so that every training
fold holds every class it is tested on, and a class seen in one group only is left out and
named, never scored as if a model could have learnt it (:func:`_plan_cv`).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workflow_scripts.validation import check_int, check_real, real_matrix

__all__ = ["CV_PROTOCOLS", "cv_splits", "knn_accuracy", "logreg_accuracy", "mlp_accuracy"]


#: The solver of every logistic-regression probe. Newton-CG (Hessian-vector products, never
#: the Hessian itself) reaches the optimum of Newton-Cholesky and L-BFGS, to the solver
#: tolerance, in ~12 steps; measured on 2,158 cells x 8 classes, 5 folds, one core:
#: 256 learned features 1.2 s (Newton-Cholesky 16.5 s, L-BFGS 27 s), 324 hand-crafted
#: 0.7 s (27.9 s, 6.9 s), 50 PCA 0.13 s (2.2 s, 0.15 s); fold accuracies differ by at most
#: one test cell in a fold.
SOLVER = "newton-cg"


def logreg_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    max_iter: int = 1000,
    cv: str = "auto",
) -> dict:
    """Cross-validated accuracy of standardised multinomial logistic regression.

    Parameters
    ----------
    features : ndarray of shape (N, F)
        Real-valued, finite features, one row per cell.
    labels : ndarray of shape (N,)
        Class of each cell; any hashable, sortable values (int, str, ...).
    groups : ndarray of shape (N,), optional
        Group of each cell (e.g. plate, well or field). When given, whole groups are held out,
        and never so that a fold trains without a class it tests: a class seen in a single
        group is left out of the scoring (named in ``protocol``), and the folds are those of
        ``cv``. Without groups: ``StratifiedKFold`` with ``n_splits`` lowered to the size of
        the smallest class.
    n_splits : int, default=5
        Requested number of folds, ``>= 2``.
    seed : int, default=0
        Seed of the fold shuffling; the result is deterministic for a fixed seed.
    max_iter : int, default=1000
        Iteration limit of the solver.
    cv : {"auto", "stratified_group", "leave_one_group_out"}, default="auto"
        With groups: ``stratified_group`` (and ``auto``) makes ``min(n_splits, fewest groups
        of a class)`` folds of whole groups with every class in every fold (each class's
        groups dealt round-robin, seeded); ``leave_one_group_out`` holds out one group per fold.

    Returns
    -------
    dict
        ``accuracy_mean`` (float), ``accuracy_sd`` (float, sample SD over folds, ddof=1),
        ``fold_accuracies`` (list of float), ``f1_macro_mean``, ``f1_macro_sd`` and
        ``fold_f1_macro`` (the same for the macro-averaged F1 score), ``confusion`` (list of
        lists of int: the confusion matrix summed over the folds' test sets, so it sums to N;
        row = true class, column = predicted class, both in the order of ``classes``),
        ``classes`` (the sorted distinct labels scored), ``n_splits`` (int, folds actually
        used), ``cv`` (``"grouped"`` or ``"stratified"``), ``protocol`` (``name``, ``folds``,
        ``groups_per_class``, ``dropped_classes``, ``n_cells_scored``) and
        ``n_unconverged_folds`` (int, folds whose solver hit ``max_iter``; their accuracy is
        still reported).

    Notes
    -----
    The model is ``StandardScaler`` + ``LogisticRegression(C=1.0)``, fitted on the training
    folds only, with the Newton-CG solver (:data:`SOLVER`: the optimum of the other solvers in
    a tenth of their time, as it never forms the (features x classes)^2 Hessian). With grouped CV
    every training fold holds every class it is tested on (see ``cv``). If a training
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
    features = real_matrix(features, "features", as_float=False)
    labels = _as_vector(labels, "labels", features.shape[0])
    check_int("max_iter", max_iter, 1)

    keep, splits, info = _plan_cv(labels, groups, n_splits, seed, cv)
    if keep is not None:
        features, labels = features[keep], labels[keep]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, solver=SOLVER, max_iter=max_iter))
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

    result = _score_folds(labels, splits, fit_predict) | info
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
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    class_weight: str | None = "balanced",
    cv: str = "auto",
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
        Passes over the training fold, in shuffled mini-batches of about ``batch_size``.
    lr, weight_decay : float
        Learning rate and decoupled weight decay of ``torch.optim.AdamW``. At 3e-3 (the
        default) 30 epochs score as well as or better than 50 at 1e-3 on the synthetic default's
        feature tables (measured: within -0.3 to +3.5 points), in 40 % of the steps.
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
    torch RNG is left untouched. The folds' networks train together (:func:`_train_fold_mlps`).
    The network is tiny: under ``torch.set_num_threads(1)`` it trains several times faster on
    a busy machine than with more threads.
    """
    features = real_matrix(features, "features", as_float=False)
    labels = _as_vector(labels, "labels", features.shape[0])
    for name, value in (("hidden", hidden), ("epochs", epochs), ("batch_size", batch_size)):
        check_int(name, value, 1)
    check_real("lr", lr, 0.0, strict=True)
    check_real("weight_decay", weight_decay, 0.0)
    if class_weight not in ("balanced", None):
        raise ValueError(f"class_weight must be 'balanced' or None; got {class_weight!r}")

    keep, splits, info = _plan_cv(labels, groups, n_splits, seed, cv)
    if keep is not None:
        features, labels = features[keep], labels[keep]
    classes, y = np.unique(labels, return_inverse=True)
    predicted = _train_fold_mlps(
        features,
        y,
        len(classes),
        splits,
        seed=int(seed),
        hidden=int(hidden),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        weight_decay=float(weight_decay),
        balanced=class_weight == "balanced",
    )
    return _score_folds(labels, splits, lambda fold, train, test: classes[predicted[fold]]) | info


def _train_fold_mlps(features, y, n_classes, splits, *, seed, hidden, epochs, batch_size, lr, weight_decay, balanced):
    """Train one MLP per fold, all folds at once; return each fold's predicted class indices.

    The K folds' networks are stacked along a leading axis and trained by batched matrix
    products (``torch.baddbmm``): one optimiser step moves all K, so a 5-fold probe costs one
    Python loop instead of five (4-5x faster on the small feature tables, where the per-step
    overhead dominates). Each fold still has its own scaler, initial weights (``nn.Linear``'s
    initialisation seeded ``seed + fold``), batch order and class weights, and as Adam(W) is
    elementwise and each fold's loss touches only its own weights, every fold trains exactly
    as it would alone. An epoch deals each fold's shuffled training cells into the same number
    of batches (``ceil(largest fold / batch_size)``, sizes within one of each other); batches
    shorter than the longest of their step are padded with masked rows.
    """
    import torch  # lazy: the logistic-regression and kNN probes run without torch

    x, params, class_w = _stacked_networks(features, y, n_classes, splits, seed=seed, hidden=hidden, balanced=balanced)
    targets = torch.from_numpy(y.astype(np.int64))
    generators = [np.random.default_rng(seed + fold) for fold in range(len(splits))]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = max(1, -(-max(len(train) for train, _ in splits) // batch_size))
    for _ in range(epochs):
        for rows, mask in _epoch_batches(splits, generators, steps):
            loss = _weighted_loss(x, params, class_w, targets, rows, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return _predict_folds(x, params, splits)


def _stacked_networks(features, y, n_classes, splits, *, seed, hidden, balanced):
    """Each fold's scaled cells, initial weights and class weights, stacked along a fold axis.

    Returns ``x`` (K, N, F): every cell scaled by each fold's training statistics; the
    parameters ``[w1, b1, w2, b2]`` of the K networks; ``class_w`` (K, C).
    """
    import torch
    from torch import nn

    xs, w1, b1, w2, b2, class_w = [], [], [], [], [], []
    for fold, (train, _) in enumerate(splits):
        scaler = StandardScaler().fit(features[train])
        xs.append(torch.from_numpy(scaler.transform(features).astype(np.float32)))
        with torch.random.fork_rng(devices=[]):  # the global torch RNG is left untouched
            torch.manual_seed(seed + fold)
            first, second = nn.Linear(features.shape[1], hidden), nn.Linear(hidden, n_classes)
        w1.append(first.weight.detach().T)
        b1.append(first.bias.detach()[None])
        w2.append(second.weight.detach().T)
        b2.append(second.bias.detach()[None])
        class_w.append(torch.tensor(_class_weights(y[train], n_classes, balanced), dtype=torch.float32))
    params = [nn.Parameter(torch.stack(t).contiguous()) for t in (w1, b1, w2, b2)]
    return torch.stack(xs), params, torch.stack(class_w)


def _class_weights(y_train: np.ndarray, n_classes: int, balanced: bool) -> np.ndarray:
    """Loss weight per class: sklearn's "balanced" n_train / (n_classes_train x n_class), or 1."""
    if not balanced:
        return np.ones(n_classes)
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    present = counts > 0
    return np.where(present, len(y_train) / (present.sum() * np.maximum(counts, 1)), 0.0)


def _epoch_batches(splits, generators, steps):
    """Yield one epoch's batches: ``rows`` (K, B) int64 and ``mask`` (K, B) float32 tensors.

    Each fold's training cells, shuffled by its own generator, are dealt into ``steps``
    batches; a fold's batch shorter than the step's longest is padded with masked rows.
    """
    import torch

    dealt = [np.array_split(train[rng.permutation(len(train))], steps) for (train, _), rng in zip(splits, generators)]
    for step in range(steps):
        parts = [d[step] for d in dealt]
        width = max(len(part) for part in parts)
        rows = np.zeros((len(splits), width), dtype=np.int64)
        mask = np.zeros((len(splits), width), dtype=np.float32)
        for fold, part in enumerate(parts):
            rows[fold, : len(part)], mask[fold, : len(part)] = part, 1.0
        yield torch.from_numpy(rows), torch.from_numpy(mask)


def _weighted_loss(x, params, class_w, targets, rows, mask):
    """Sum over folds of each fold's class-weighted mean cross-entropy on its batch."""
    import torch
    from torch import nn

    folds = torch.arange(x.shape[0])[:, None]
    hidden_out = torch.relu(torch.baddbmm(params[1], x[folds, rows], params[0]))
    logits = torch.baddbmm(params[3], hidden_out, params[2])  # (K, B, C)
    y_batch = targets[rows]
    losses = nn.functional.cross_entropy(logits.transpose(1, 2), y_batch, reduction="none")
    weight = class_w.gather(1, y_batch) * mask
    # Each fold's class-weighted mean, as nn.CrossEntropyLoss(weight=...) computes it.
    return ((losses * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1e-12)).sum()


def _predict_folds(x, params, splits) -> list[np.ndarray]:
    """Each fold's predicted class indices for its test cells."""
    import torch

    predicted = []
    with torch.no_grad():
        for fold, (_, test) in enumerate(splits):
            hidden_out = torch.relu(x[fold, torch.from_numpy(test)] @ params[0][fold] + params[1][fold])
            predicted.append((hidden_out @ params[2][fold] + params[3][fold]).argmax(dim=1).numpy())
    return predicted


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
    cv: str = "auto",
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
    features = real_matrix(features, "features", as_float=False)
    labels = _as_vector(labels, "labels", features.shape[0])
    ks = list(ks)
    if not ks or any(not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers; got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a value; got {ks!r}")
    ks = [int(k) for k in ks]
    keep, splits, info = _plan_cv(labels, groups, n_splits, seed, cv)
    if keep is not None:
        features, labels = features[keep], labels[keep]
    classes, y = np.unique(labels, return_inverse=True)
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
        **info,
    }


def cv_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    n_splits: int = 5,
    seed: int = 0,
    cv: str = "auto",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the (train, test) index pairs :func:`logreg_accuracy` uses.

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
    cv : str, default="auto"
        The grouped protocol (see :func:`logreg_accuracy`).

    Returns
    -------
    list of (ndarray, ndarray)
        One ``(train_indices, test_indices)`` pair of int arrays per fold, indices into the
        ``N`` cells; the test sets partition the cells scored (all of them, except with groups
        the cells of classes seen in a single group).
    """
    labels = _as_vector(labels, "labels", None)
    keep, splits, _ = _plan_cv(labels, groups, n_splits, seed, cv)
    if keep is None:
        return splits
    rows = np.flatnonzero(keep)
    return [(rows[train], rows[test]) for train, test in splits]


#: ``metrics.cv``: how whole groups are held out (README, "Evaluation protocol").
CV_PROTOCOLS = ("auto", "stratified_group", "leave_one_group_out")


class _ClassGroupFolds:
    """``n_splits`` folds of whole groups in which every class has a group in every fold.

    Each group goes with its most frequent class; each class's groups, shuffled with ``seed``,
    are dealt round-robin over the folds from a random starting fold. With at least
    ``n_splits`` groups per class, every test fold holds every class and every training fold
    holds every class it is tested on. Written here because ``StratifiedGroupKFold`` balances
    class proportions only approximately: with few groups per class it can put all of a
    class's groups in one fold, and that fold's model never sees the class it is scored on.
    """

    def __init__(self, n_splits: int, seed: int):
        self.n_splits, self.seed = n_splits, seed

    def split(self, labels, groups):
        """Yield the folds' ``(train, test)`` index arrays.

        Parameters
        ----------
        labels : numpy.ndarray
            Class of each cell.
        groups : numpy.ndarray
            Group of each cell.

        Yields
        ------
        tuple of numpy.ndarray
            Train and test indices of one fold.
        """
        rng = np.random.default_rng(self.seed)
        group_names, group_index = np.unique(groups, return_inverse=True)
        classes, class_index = np.unique(labels, return_inverse=True)
        counts = np.zeros((len(group_names), len(classes)), dtype=np.int64)
        np.add.at(counts, (group_index, class_index), 1)
        main_class = counts.argmax(axis=1)
        fold_of_group = np.empty(len(group_names), dtype=np.int64)
        for c in range(len(classes)):
            members = np.flatnonzero(main_class == c)
            members = members[rng.permutation(len(members))]
            start = int(rng.integers(self.n_splits))
            fold_of_group[members] = (start + np.arange(len(members))) % self.n_splits
        fold = fold_of_group[group_index]
        for k in range(self.n_splits):
            yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)


def _plan_cv(labels, groups, n_splits, seed, cv="auto"):
    """Plan the cross-validation of the probes: ``(keep, splits, info)``.

    ``keep`` is None or a bool mask of the cells scored (grouped CV leaves out the classes
    seen in a single group: with that group held out no model could have seen them);
    ``splits`` are (train, test) index pairs into the kept cells; ``info`` holds
    ``n_splits``, ``cv`` (``"grouped"`` or ``"stratified"``) and ``protocol``: its name,
    the folds, the groups per class, the classes left out and the cells scored.
    """
    check_int("n_splits", n_splits, 2)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if cv not in CV_PROTOCOLS:
        raise ValueError(f"cv must be one of {list(CV_PROTOCOLS)}; got {cv!r}")
    seed = int(seed)
    classes, class_index = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"labels must contain at least 2 classes; got {classes.tolist()!r}")

    if groups is None:
        smallest = int(np.bincount(class_index).min())
        if smallest < 2:
            raise ValueError(
                f"labels: every class needs at least 2 cells for stratified CV; class "
                f"{classes[np.argmin(np.bincount(class_index))]!r} has {smallest}"
            )
        n_used = min(n_splits, smallest)
        splitter = StratifiedKFold(n_splits=n_used, shuffle=True, random_state=seed)
        splits = list(splitter.split(np.zeros((len(labels), 1)), labels))
        protocol = {"name": "stratified", "folds": n_used, "dropped_classes": [], "n_cells_scored": len(labels)}
        return None, splits, {"n_splits": n_used, "cv": "stratified", "protocol": protocol}

    groups = _as_vector(groups, "groups", len(labels))
    group_names, group_index = np.unique(groups, return_inverse=True)
    if len(group_names) < 2:
        raise ValueError(f"groups must contain at least 2 distinct groups for grouped CV; got {group_names.tolist()!r}")
    pairs = np.unique(np.stack([class_index, group_index]), axis=1)
    groups_per_class = np.bincount(pairs[0], minlength=len(classes))
    dropped = classes[groups_per_class < 2]
    kept_classes = classes[groups_per_class >= 2]
    if len(kept_classes) < 2:
        raise ValueError(
            "grouped CV needs at least 2 classes seen in 2 or more groups each (a class in a single group "
            "cannot be tested with its group held out); groups per class: "
            + ", ".join(f"{_plain(c)!r}: {int(n)}" for c, n in zip(classes, groups_per_class, strict=True))
        )
    keep = np.isin(labels, kept_classes) if len(dropped) else None
    kept_labels = labels if keep is None else labels[keep]
    kept_groups = groups if keep is None else groups[keep]
    min_groups = int(groups_per_class[groups_per_class >= 2].min())
    if cv == "leave_one_group_out":
        splits = list(LeaveOneGroupOut().split(kept_labels, kept_labels, kept_groups))
        name = "leave_one_group_out"
    else:
        n_used = min(n_splits, min_groups)
        splits = list(_ClassGroupFolds(n_used, seed).split(kept_labels, kept_groups))
        name = "stratified_group"
    protocol = {
        "name": name,
        "folds": len(splits),
        "groups_per_class": {str(c): int(n) for c, n in zip(classes, groups_per_class, strict=True)},
        "dropped_classes": [str(c) for c in dropped],
        "n_cells_scored": int(len(kept_labels)),
    }
    return keep, splits, {"n_splits": len(splits), "cv": "grouped", "protocol": protocol}


def _plain(value):
    """Return a numpy scalar as the Python value it holds (for messages: 0, not np.int64(0))."""
    return value.item() if isinstance(value, np.generic) else value


def _score_folds(labels: np.ndarray, splits, fit_predict) -> dict:
    """Score ``fit_predict`` over ``splits``: accuracy, macro-F1 and the summed confusion matrix.

    ``fit_predict(fold, train, test)`` returns the predicted labels of ``test`` in split number
    ``fold``. A training fold with a single class predicts that class without calling
    ``fit_predict``.
    """
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


def _as_vector(values, name: str, n: int | None) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array; got shape {values.shape}")
    if n is not None and len(values) != n:
        raise ValueError(f"{name} must have one entry per row of features ({n}); got {len(values)}")
    return values
