import warnings

import numpy as np
import pytest

from workflow_scripts.metrics.classification import cv_splits, knn_accuracy, logreg_accuracy, mlp_accuracy
from workflow_scripts.metrics.sampling import stratified_subsample


def _blobs(n_per_class=60, n_classes=3, dim=8, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=sep, size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim))
    return features, labels


def _batch_effect(n_groups=60, cells_per_group=20, dim=100, seed=0):
    """Each group has one label and a random offset; within a group only noise.

    The label is predictable from the group's offset (memorising groups), never from
    anything that generalises to a new group.
    """
    rng = np.random.default_rng(seed)
    group_labels = np.tile(["ctrl", "drug"], n_groups // 2)
    offsets = rng.normal(scale=3.0, size=(n_groups, dim))
    groups = np.repeat(np.array([f"well{g:02d}" for g in range(n_groups)]), cells_per_group)
    group_index = np.repeat(np.arange(n_groups), cells_per_group)
    features = offsets[group_index] + rng.normal(size=(len(groups), dim))
    return features, group_labels[group_index], groups


def test_separable_classes_score_perfectly():
    features, labels = _blobs()
    result = logreg_accuracy(features, labels)
    assert result["accuracy_mean"] > 0.99
    assert result["cv"] == "stratified"
    assert result["n_splits"] == 5
    assert len(result["fold_accuracies"]) == 5
    assert set(result) >= {"accuracy_mean", "accuracy_sd", "fold_accuracies", "n_splits", "cv"}


def test_noise_labels_score_at_chance():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 10))
    labels = rng.integers(0, 4, size=600)
    result = logreg_accuracy(features, labels)
    assert abs(result["accuracy_mean"] - 0.25) < 0.07


def test_string_labels():
    features, labels = _blobs(n_classes=2)
    names = np.array(["mitotic", "interphase"])[labels]
    by_name, by_index = logreg_accuracy(features, names), logreg_accuracy(features, labels)
    # Classes are reported sorted, so "interphase" (1) comes before "mitotic" (0).
    assert by_name.pop("classes") == ["interphase", "mitotic"]
    assert by_index.pop("classes") == [0, 1]
    np.testing.assert_array_equal(by_name.pop("confusion"), np.array(by_index.pop("confusion"))[::-1, ::-1])
    assert by_name == by_index


def test_grouped_cv_removes_the_batch_effect():
    features, labels, groups = _batch_effect()
    stratified = logreg_accuracy(features, labels)
    grouped = logreg_accuracy(features, labels, groups=groups)
    assert stratified["cv"] == "stratified"
    assert grouped["cv"] == "grouped"
    # Seen groups: the offset identifies the group and hence its label.
    assert stratified["accuracy_mean"] > 0.95
    # Unseen groups: the offset says nothing about the label.
    assert abs(grouped["accuracy_mean"] - 0.5) < 0.15


def test_no_group_on_both_sides():
    features, labels, groups = _batch_effect(n_groups=20)
    splits = cv_splits(labels, groups, n_splits=5, seed=3)
    assert len(splits) == 5
    tested = np.concatenate([test for _, test in splits])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(labels)))
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])


def _fields(n_classes=5, groups_per_class=4, cells_per_group=25, dim=16, signal=2.0, field_sd=1.0, seed=0):
    """A real screen's layout: few fields per class, each field one class, with a
    class-specific signal in the features and a per-field offset (batch effect) on top."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=signal, size=(n_classes, dim))
    n_groups = n_classes * groups_per_class
    group_class = np.repeat(np.arange(n_classes), groups_per_class)
    offsets = rng.normal(scale=field_sd, size=(n_groups, dim))
    group_index = np.repeat(np.arange(n_groups), cells_per_group)
    labels = np.array([f"class{c}" for c in group_class])[group_index]
    features = centres[group_class][group_index] + offsets[group_index] + rng.normal(size=(len(labels), dim))
    groups = np.array([f"field{g:02d}" for g in range(n_groups)])[group_index]
    return features, labels, groups


@pytest.mark.parametrize("cv", ["auto", "stratified_group", "leave_one_group_out"])
def test_few_fields_per_class_every_fold_trains_on_every_class_it_tests(cv):
    """5 classes x 4 fields with n_splits 5: plain GroupKFold holds out every field of some
    class in some fold (that fold cannot score it); here every fold trains on every class it
    tests, and each fold scores well above chance (0.2)."""
    features, labels, groups = _fields()
    splits = cv_splits(labels, groups, n_splits=5, cv=cv)
    assert len(splits) == (4 if cv != "leave_one_group_out" else 20)
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[test]) <= set(labels[train])
    if cv != "leave_one_group_out":
        for _, test in splits:  # four fields per class, four folds: one field of each class per fold
            assert sorted(set(labels[test])) == sorted(set(labels))
    result = logreg_accuracy(features, labels, groups=groups, n_splits=5, cv=cv)
    assert result["cv"] == "grouped" and result["protocol"]["name"] == ("leave_one_group_out" if cv == "leave_one_group_out" else "stratified_group")
    assert result["protocol"]["groups_per_class"] == {f"class{c}": 4 for c in range(5)}
    assert result["protocol"]["dropped_classes"] == []
    assert min(result["fold_accuracies"]) > 0.6
    for probe in (mlp_accuracy(features, labels, groups=groups, n_splits=5, epochs=20, cv=cv),):
        assert min(probe["fold_accuracies"]) > 0.6 and probe["protocol"] == result["protocol"]
    knn = knn_accuracy(features, labels, groups=groups, ks=(5,), n_splits=5, standardize=True, cv=cv)
    assert min(knn["by_k"][5]["fold_accuracies"]) > 0.5 and knn["protocol"] == result["protocol"]


def test_a_class_seen_in_one_field_is_left_out_and_named():
    features, labels, groups = _fields(n_classes=4, groups_per_class=3)
    lonely = labels == "class3"
    groups = groups.copy()
    groups[lonely] = "field_only"  # class3 in a single field
    result = logreg_accuracy(features, labels, groups=groups, n_splits=5)
    assert result["protocol"]["dropped_classes"] == ["class3"]
    assert result["protocol"]["n_cells_scored"] == int((~lonely).sum())
    assert result["classes"] == ["class0", "class1", "class2"] and result["n_splits"] == 3
    assert np.asarray(result["confusion"]).sum() == (~lonely).sum()
    for train, test in cv_splits(labels, groups, n_splits=5):
        assert not lonely[train].any() and not lonely[test].any()
        assert set(labels[test]) <= set(labels[train])


def test_grouped_scoring_needs_two_classes_in_two_groups():
    features, labels = _blobs(n_classes=2, n_per_class=20)
    groups = labels.astype(str)  # two groups, one class each: no class can be held out and learnt
    with pytest.raises(ValueError, match=r"at least 2 classes seen in 2 or more groups.*0: 1, 1: 1"):
        logreg_accuracy(features, labels, groups=groups)
    words = np.where(labels == 0, "ctrl", "drug").astype(object)  # string labels, as the workflow passes them
    with pytest.raises(ValueError, match="groups per class: 'ctrl': 1, 'drug': 1"):
        cv_splits(words, words.astype(str))
    with pytest.raises(ValueError, match="cv must be one of"):
        cv_splits(labels, None, cv="kfold")


def test_stratified_splits_capped_by_smallest_class():
    features, labels = _blobs(n_classes=2, n_per_class=30)
    labels[:27] = 1  # class 0 keeps 3 cells
    result = logreg_accuracy(features, labels, n_splits=10)
    assert result["n_splits"] == 3


def test_deterministic_for_a_seed():
    features, labels, groups = _batch_effect(n_groups=20)
    a = logreg_accuracy(features, labels, groups=groups, seed=7)
    b = logreg_accuracy(features, labels, groups=groups, seed=7)
    assert a == b
    first = [test.tolist() for _, test in cv_splits(labels, groups, seed=7)]
    again = [test.tolist() for _, test in cv_splits(labels, groups, seed=7)]
    other = [test.tolist() for _, test in cv_splits(labels, groups, seed=8)]
    assert first == again
    assert first != other


def test_convergence_warnings_are_counted_not_printed():
    features, labels = _blobs(dim=30, sep=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = logreg_accuracy(features, labels, max_iter=1)
    assert result["n_unconverged_folds"] == result["n_splits"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"features": np.zeros(180)}, "features"),
        ({"features": np.full((180, 8), np.nan)}, "features"),
        ({"labels": np.zeros(179)}, "labels"),
        ({"labels": np.zeros(180)}, "labels"),
        ({"labels": np.r_[np.zeros(179), 1]}, "labels"),
        ({"groups": np.zeros(180)}, "groups"),
        ({"groups": np.zeros(17)}, "groups"),
        ({"n_splits": 1}, "n_splits"),
        ({"max_iter": 0}, "max_iter"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_arguments(kwargs, name):
    features, labels = _blobs()
    args = {"features": features, "labels": labels} | kwargs
    with pytest.raises(ValueError, match=name):
        logreg_accuracy(**args)


# --- stratified_subsample (metrics/sampling.py) -------------------------------------------


@pytest.fixture
def imbalanced():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.array(["a", "b", "c", "d"]), [5000, 2500, 400, 7])
    return labels[rng.permutation(len(labels))]


def test_subsample_size_and_proportions(imbalanced):
    idx = stratified_subsample(imbalanced, 1000, seed=0)
    assert len(idx) == 1000
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    classes, counts = np.unique(imbalanced, return_counts=True)
    kept = dict(zip(*np.unique(imbalanced[idx], return_counts=True)))
    for cls, count in zip(classes, counts):
        assert abs(kept[cls] - 1000 * count / len(imbalanced)) <= 1


def test_subsample_keeps_every_class():
    labels = np.r_[np.zeros(10_000, int), 1, 2]
    idx = stratified_subsample(labels, 50, seed=0)
    assert len(idx) == 50
    assert set(labels[idx]) == {0, 1, 2}


def test_subsample_deterministic(imbalanced):
    a = stratified_subsample(imbalanced, 500, seed=3)
    np.testing.assert_array_equal(a, stratified_subsample(imbalanced, 500, seed=3))
    assert not np.array_equal(a, stratified_subsample(imbalanced, 500, seed=4))


def test_subsample_all_when_small(imbalanced):
    np.testing.assert_array_equal(stratified_subsample(imbalanced, len(imbalanced), seed=0), np.arange(len(imbalanced)))
    np.testing.assert_array_equal(stratified_subsample(np.array([]), 5, seed=0), [])


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((np.zeros((4, 2)), 2, 0), "labels"),
        ((np.arange(10), 0, 0), "max_n"),
        ((np.arange(10), 2.0, 0), "max_n"),
        ((np.arange(10), 5, 0), "max_n"),  # 10 classes cannot fit in 5 rows
        ((np.arange(10), 5, "x"), "seed"),
    ],
)
def test_subsample_invalid_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        stratified_subsample(*args)


# --- macro-F1 and confusion (all probes) ------------------------------------------------------


def test_logreg_matches_a_manual_loop_over_the_same_splits():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _blobs(sep=1.0, seed=2)  # overlapping: some errors
    result = logreg_accuracy(features, labels, seed=4)
    accuracies, f1s, confusion = [], [], np.zeros((3, 3), int)
    for train, test in cv_splits(labels, seed=4):
        model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cg", max_iter=1000))
        predicted = model.fit(features[train], labels[train]).predict(features[test])
        accuracies.append(np.mean(predicted == labels[test]))
        f1s.append(f1_score(labels[test], predicted, average="macro"))
        confusion += confusion_matrix(labels[test], predicted, labels=[0, 1, 2])
    np.testing.assert_allclose(result["fold_accuracies"], accuracies)
    np.testing.assert_allclose(result["fold_f1_macro"], f1s)
    assert result["f1_macro_mean"] == pytest.approx(np.mean(f1s))
    assert result["f1_macro_sd"] == pytest.approx(np.std(f1s, ddof=1))
    assert result["confusion"] == confusion.tolist()
    assert 0.5 < result["accuracy_mean"] < 0.99  # the toy does have errors
    assert result["classes"] == [0, 1, 2]


@pytest.mark.usefixtures("torch_one_thread")  # tiny MLPs: 2 threads only thrash
@pytest.mark.parametrize("probe", ["logreg", "mlp", "knn"])
def test_separable_classes_perfect_accuracy_f1_and_diagonal_confusion(probe):
    features, labels = _blobs(sep=8.0)
    names = np.array(["G1", "S", "M"])[labels]
    if probe == "logreg":
        result = logreg_accuracy(features, names)
    elif probe == "mlp":
        result = mlp_accuracy(features, names, epochs=50)
    else:
        full = knn_accuracy(features, names, ks=(1, 5))
        assert full["classes"] == ["G1", "M", "S"]
        result = full["by_k"][5]
    assert result["accuracy_mean"] > 0.99
    assert result["f1_macro_mean"] > 0.99
    confusion = np.array(result["confusion"])
    assert confusion.sum() == len(labels)
    np.testing.assert_array_equal(np.diag(confusion), [60, 60, 60])


@pytest.mark.usefixtures("torch_one_thread")  # tiny MLPs: 2 threads only thrash
@pytest.mark.parametrize("probe", ["logreg", "mlp", "knn"])
def test_no_probe_scores_a_class_its_training_fold_never_saw(probe):
    # Two groups, one class each: holding a group out leaves its class out of training. The
    # old fallback scored 0.0 in both folds as if it were a result; now every probe refuses.
    features, labels = _blobs(n_classes=2, n_per_class=20)
    labels = np.where(np.arange(40) < 15, labels, 1 - labels)
    groups = labels.astype(str)
    with pytest.raises(ValueError, match="groups per class: 0: 1, 1: 1"):
        if probe == "logreg":
            logreg_accuracy(features, labels, groups=groups)
        elif probe == "mlp":
            mlp_accuracy(features, labels, groups, epochs=5)
        else:
            knn_accuracy(features, labels, groups, ks=(1,))


# --- mlp_accuracy ----------------------------------------------------------------------------


@pytest.mark.usefixtures("torch_one_thread")  # tiny MLPs: 2 threads only thrash
def test_mlp_grouped_cv_removes_the_batch_effect():
    # 60 groups: with few groups the grouped accuracy varies a lot around chance (its
    # effective sample size is the number of groups; logreg gives 0.28..0.79 over seeds at 20).
    features, labels, groups = _batch_effect(n_groups=60)
    stratified = mlp_accuracy(features, labels, epochs=20)
    grouped = mlp_accuracy(features, labels, groups, epochs=20)
    assert stratified["cv"] == "stratified" and grouped["cv"] == "grouped"
    assert stratified["accuracy_mean"] > 0.95
    assert abs(grouped["accuracy_mean"] - 0.5) < 0.2


@pytest.mark.usefixtures("torch_one_thread")  # tiny MLPs: 2 threads only thrash
def test_mlp_class_weights_recover_the_rare_class():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(950, int), np.ones(50, int)]
    features = rng.normal(size=(1000, 2)) + 1.5 * labels[:, None]  # overlapping classes
    balanced = np.array(mlp_accuracy(features, labels, epochs=30, seed=1)["confusion"])
    plain = np.array(mlp_accuracy(features, labels, epochs=30, seed=1, class_weight=None)["confusion"])
    recall = lambda c: c[1, 1] / c[1].sum()  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.3
    assert recall(balanced) > 0.6


@pytest.mark.usefixtures("torch_one_thread")  # tiny MLPs: 2 threads only thrash
def test_mlp_deterministic_for_a_seed():
    features, labels = _blobs(sep=1.0, seed=3)
    a = mlp_accuracy(features, labels, epochs=10, seed=2)
    assert a == mlp_accuracy(features, labels, epochs=10, seed=2)
    assert a["fold_f1_macro"] != mlp_accuracy(features, labels, epochs=10, seed=3)["fold_f1_macro"]
    assert set(a) == {
        "accuracy_mean",
        "accuracy_sd",
        "fold_accuracies",
        "f1_macro_mean",
        "f1_macro_sd",
        "fold_f1_macro",
        "confusion",
        "classes",
        "n_splits",
        "cv",
        "protocol",
    }


# --- knn_accuracy ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("grouped", [False, True])
def test_knn_equals_sklearn_within_the_same_splits(metric, grouped):
    from sklearn.metrics import confusion_matrix
    from sklearn.neighbors import KNeighborsClassifier

    features, labels = _blobs(n_per_class=50, sep=0.7, dim=6, seed=5)  # much overlap: ties in votes
    groups = np.arange(len(labels)) % 12 if grouped else None
    ks = (1, 4, 5, 10)
    result = knn_accuracy(features, labels, groups, ks=ks, metric=metric, seed=3)
    assert result["cv"] == ("grouped" if grouped else "stratified")
    splits = cv_splits(labels, groups, seed=3)
    for k in ks:
        accuracies, confusion = [], np.zeros((3, 3), int)
        for train, test in splits:
            if groups is not None:
                assert not set(groups[train]) & set(groups[test])
            model = KNeighborsClassifier(n_neighbors=k, metric=metric).fit(features[train], labels[train])
            predicted = model.predict(features[test])
            accuracies.append(np.mean(predicted == labels[test]))
            confusion += confusion_matrix(labels[test], predicted, labels=[0, 1, 2])
        np.testing.assert_allclose(result["by_k"][k]["fold_accuracies"], accuracies)
        assert result["by_k"][k]["confusion"] == confusion.tolist()
    assert result["ks"] == list(ks) and result["metric"] == metric


def test_knn_standardize_uses_training_statistics():
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _blobs(n_per_class=40, sep=1.0, seed=6)
    features[:, 0] *= 100  # one dominating feature
    result = knn_accuracy(features, labels, ks=(3,), metric="euclidean", standardize=True)
    expected = []
    for train, test in cv_splits(labels):
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(3)).fit(features[train], labels[train])
        expected.append(np.mean(model.predict(features[test]) == labels[test]))
    np.testing.assert_allclose(result["by_k"][3]["fold_accuracies"], expected)


@pytest.mark.parametrize(
    ("probe", "kwargs", "name"),
    [
        ("mlp", {"features": np.zeros(180)}, "features"),
        ("mlp", {"hidden": 0}, "hidden"),
        ("mlp", {"epochs": 1.5}, "epochs"),
        ("mlp", {"lr": 0.0}, "lr"),
        ("mlp", {"weight_decay": -1.0}, "weight_decay"),
        ("mlp", {"class_weight": "auto"}, "class_weight"),
        ("mlp", {"n_splits": 1}, "n_splits"),
        ("knn", {"features": np.full((180, 8), np.inf)}, "features"),
        ("knn", {"ks": ()}, "ks"),
        ("knn", {"ks": (0, 1)}, "ks"),
        ("knn", {"ks": (5, 5)}, "ks"),
        ("knn", {"ks": (200,)}, "ks"),
        ("knn", {"labels": np.zeros(179)}, "labels"),
        ("knn", {"groups": np.zeros(180)}, "groups"),
    ],
)
def test_new_probes_invalid_arguments(probe, kwargs, name):
    features, labels = _blobs()
    args = {"features": features, "labels": labels} | kwargs
    with pytest.raises(ValueError, match=name):
        (mlp_accuracy if probe == "mlp" else knn_accuracy)(**args)


@pytest.mark.usefixtures("torch_one_thread")
def test_mlp_folds_trained_together_each_train_as_alone():
    """The stacked per-fold MLPs: a fold's predictions do not depend on the other folds."""
    from workflow_scripts.metrics.classification import _train_fold_mlps

    features, labels = _blobs(n_per_class=40, sep=1.5, seed=5)
    splits = list(cv_splits(labels, seed=1, n_splits=4))
    kw = dict(seed=3, hidden=16, epochs=5, batch_size=32, lr=3e-3, weight_decay=1e-4, balanced=True)
    together = _train_fold_mlps(features, labels, 3, splits, **kw)
    for fold in range(len(splits)):
        # Alone, with the fold's own seed offset: the same split at position 0 of a 1-fold run.
        alone = _train_fold_mlps(features, labels, 3, [splits[fold]], **{**kw, "seed": kw["seed"] + fold})
        np.testing.assert_array_equal(together[fold], alone[0])
