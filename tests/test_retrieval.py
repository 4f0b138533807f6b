import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from workflow_scripts.metrics.retrieval import (
    aggregate_profiles,
    map_permutation_pvalues,
    mean_average_precision,
)


def _angles(degrees):
    rad = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


# Unit vectors at these angles: cosine similarity falls with the angle between them.
HAND_FEATURES = _angles([0, 10, 25, 45, 100]) * np.array([[1.0], [2.0], [0.5], [3.0], [1.0]])  # norms do not matter
HAND_LABELS = np.array(["A", "A", "B", "A", "B"])


def test_hand_computed_example():
    # Rankings (most similar first) and positives:
    #   q0 (A):  1 A, 2 B, 3 A, 4 B  -> (1/1 + 2/3) / 2 = 5/6
    #   q1 (A):  0 A, 2 B, 3 A, 4 B  -> 5/6
    #   q2 (B):  1 A, 3 A, 0 A, 4 B  -> 1/4
    #   q3 (A):  2 B, 1 A, 0 A, 4 B  -> (1/2 + 2/3) / 2 = 7/12
    #   q4 (B):  3 A, 2 B, 1 A, 0 A  -> 1/2
    result = mean_average_precision(HAND_FEATURES, HAND_LABELS)
    np.testing.assert_allclose(result["ap"], [5 / 6, 5 / 6, 1 / 4, 7 / 12, 1 / 2], rtol=1e-12)
    assert result["map"] == pytest.approx(3 / 5, rel=1e-12)
    assert result["per_class"] == pytest.approx({"A": 3 / 4, "B": 3 / 8}, rel=1e-12)
    np.testing.assert_array_equal(result["n_positives"], [2, 2, 1, 2, 1])
    np.testing.assert_array_equal(result["n_negatives"], [2, 2, 3, 2, 3])


def test_hand_computed_exclusions():
    # Rows 0 and 1 share a well: neither is the other's positive any more.
    wells = np.array(["w1", "w1", "w2", "w3", "w4"])
    result = mean_average_precision(HAND_FEATURES, HAND_LABELS, exclude_same=wells)
    #   q0: 2 B, 3 A, 4 B -> 1/2;  q1: 2 B, 3 A, 4 B -> 1/2; the rest unchanged.
    np.testing.assert_allclose(result["ap"], [1 / 2, 1 / 2, 1 / 4, 7 / 12, 1 / 2], rtol=1e-12)
    # Only row 4 may be a negative: q0 ranks 1 A, 3 A, 4 B -> 1; q3 ranks 1 A, 0 A, 4 B -> 1;
    # q2 (B) has no admissible negative but its positive -> 1; q4 likewise.
    result = mean_average_precision(HAND_FEATURES, HAND_LABELS, negative_filter=np.arange(5) == 4)
    np.testing.assert_allclose(result["ap"], [1, 1, 1, 1, 1], rtol=1e-12)


def test_ties_are_one_threshold():
    # q0's positive (row 1) and negative (row 2) are identical vectors: precision 1/2 at that threshold.
    F = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    result = mean_average_precision(F, [0, 0, 1, 1])
    assert result["ap"][0] == pytest.approx(0.5)
    assert result["ap"][0] == pytest.approx(average_precision_score([1, 0, 0], [0.7071, 0.7071, 0.0]))


def _reference_ap(F, labels, groups=None, neg_ok=None):
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    S = Fn @ Fn.T
    out = np.full(len(F), np.nan)
    for i in range(len(F)):
        pos = labels == labels[i]
        if groups is not None:
            pos &= groups != groups[i]
        pos[i] = False
        neg = labels != labels[i]
        if neg_ok is not None:
            neg &= neg_ok
        ranked = pos | neg
        if pos.any():
            out[i] = average_precision_score(pos[ranked], S[i, ranked])
    return out


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(0)
    n = 240
    labels = rng.integers(0, 4, n)
    # Rounded features: many exactly tied similarities, to exercise the tie handling.
    F = np.round(rng.normal(size=(n, 3)) + 0.7 * labels[:, None], 0) + 0.01
    groups = rng.integers(0, 12, n)
    neg_ok = rng.random(n) < 0.6
    return F, labels, groups, neg_ok


@pytest.mark.parametrize("options", ["plain", "groups", "negatives", "both"])
def test_matches_sklearn_per_query(mixed, options):
    F, labels, groups, neg_ok = mixed
    g = groups if options in ("groups", "both") else None
    m = neg_ok if options in ("negatives", "both") else None
    ref = _reference_ap(F, labels, g, m)
    ours = mean_average_precision(F, labels, exclude_same=g, negative_filter=m, chunk_size=50)
    np.testing.assert_allclose(ours["ap"], ref, rtol=0, atol=1e-12, equal_nan=True)
    assert ours["map"] == pytest.approx(np.nanmean(ref), abs=1e-12)
    for c in range(4):
        assert ours["per_class"][c] == pytest.approx(np.nanmean(ref[labels == c]), abs=1e-12)


def test_chunk_size_does_not_change_the_result(mixed):
    F, labels, groups, _ = mixed
    whole = mean_average_precision(F, labels, exclude_same=groups)
    for chunk_size in (1, 7, 129):
        part = mean_average_precision(F, labels, exclude_same=groups, chunk_size=chunk_size)
        np.testing.assert_allclose(part["ap"], whole["ap"], rtol=0, atol=1e-15, equal_nan=True)


def test_perfect_separation_scores_one():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 30)
    # Each class on its own axis (plus a small jitter): every positive outranks every negative.
    F = np.eye(3)[labels] * 10 + rng.uniform(0, 0.5, size=(90, 3))
    result = mean_average_precision(F, labels)
    assert result["map"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in result["per_class"].values())


def test_random_features_score_the_positive_rate():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 1500)
    result = mean_average_precision(rng.normal(size=(1500, 16)), labels)
    assert result["positive_rate"] == pytest.approx(0.25, abs=0.01)
    assert result["map"] == pytest.approx(result["positive_rate"], abs=0.02)


def test_queries_without_positives_are_nan_and_skipped():
    F = np.random.default_rng(3).normal(size=(6, 4))
    result = mean_average_precision(F, ["a", "a", "b", "b", "b", "singleton"])
    assert np.isnan(result["ap"][5])
    assert np.isnan(result["per_class"]["singleton"])
    assert result["map"] == pytest.approx(np.mean(result["ap"][:5]))


def test_memory_is_n_by_chunk():
    n = 3000
    rng = np.random.default_rng(4)
    F = rng.normal(size=(n, 32))
    labels = rng.integers(0, 5, n)
    tracemalloc.start()
    try:
        mean_average_precision(F, labels, chunk_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * n * 8 / 4


# ---------------------------------------------------------------------------------------
# Permutation p-values


def test_pvalues_small_for_separable_classes():
    rng = np.random.default_rng(5)
    labels = np.repeat(["x", "y", "z"], 12)
    F = np.eye(3)[np.repeat([0, 1, 2], 12)] * 5 + rng.normal(scale=0.3, size=(36, 3))
    result = map_permutation_pvalues(F, labels, n_permutations=99, seed=1)
    assert result["pvalue"] == {"x": 0.01, "y": 0.01, "z": 0.01}  # (1 + 0) / (1 + 99)
    assert all(result["per_class"][c] > 0.9 for c in "xyz")
    assert all(result["null_mean"][c] < 0.6 for c in "xyz")


def test_pvalues_spread_out_for_random_features():
    rng = np.random.default_rng(6)
    pvalues = []
    for _ in range(4):
        labels = rng.integers(0, 8, 120)
        result = map_permutation_pvalues(rng.normal(size=(120, 10)), labels, n_permutations=199, seed=2)
        pvalues += list(result["pvalue"].values())
    pvalues = np.array(pvalues)
    assert len(pvalues) == 32
    # Roughly uniform: centred, spread over the range, few small values.
    assert 0.3 < pvalues.mean() < 0.7
    assert np.mean(pvalues < 0.05) <= 0.15
    assert np.mean(pvalues > 0.5) >= 0.3


def test_permutation_observed_map_matches_and_is_deterministic(mixed):
    F, labels, groups, neg_ok = mixed
    kwargs = {"exclude_same": groups, "negative_filter": neg_ok}
    a = map_permutation_pvalues(F, labels, n_permutations=30, seed=7, chunk_size=64, **kwargs)
    b = map_permutation_pvalues(F, labels, n_permutations=30, seed=7, chunk_size=500, **kwargs)
    ref = mean_average_precision(F, labels, **kwargs)["per_class"]
    assert a["per_class"] == pytest.approx(ref, abs=1e-12)
    assert a["pvalue"] == b["pvalue"]
    assert a["null_mean"] == pytest.approx(b["null_mean"], abs=1e-12)
    assert a["n_permutations"] == 30
    assert all(1 / 31 <= p <= 1 for p in a["pvalue"].values())


def test_permutation_null_matches_a_direct_loop():
    # The same permutation stream, each scored from scratch with mean_average_precision.
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, 40)
    F = rng.normal(size=(40, 5)) + labels[:, None] * 0.4
    result = map_permutation_pvalues(F, labels, n_permutations=25, seed=11)
    observed = mean_average_precision(F, labels)["per_class"]
    perm_rng = np.random.default_rng(11)
    exceed = dict.fromkeys(range(3), 0)
    null = {c: [] for c in range(3)}
    for _ in range(25):
        permuted = labels[perm_rng.permutation(40)]
        per_class = mean_average_precision(F, permuted)["per_class"]
        for c in range(3):
            null[c].append(per_class[c])
            exceed[c] += per_class[c] >= observed[c] - 1e-12
    for c in range(3):
        assert result["pvalue"][c] == pytest.approx((1 + exceed[c]) / 26)
        assert result["null_mean"][c] == pytest.approx(np.mean(null[c]), abs=1e-12)


# ---------------------------------------------------------------------------------------
# Profiles


@pytest.fixture
def cells():
    rng = np.random.default_rng(9)
    return pd.DataFrame(
        {
            "plate": rng.choice(["p1", "p2"], 200),
            "well": rng.choice(["A01", "A02", "B01"], 200),
            "f1": rng.normal(size=200),
            "f2": rng.integers(0, 100, 200),
            "other": rng.normal(size=200),
        }
    )


@pytest.mark.parametrize("how", ["mean", "median"])
def test_aggregate_profiles(cells, how):
    out = aggregate_profiles(cells, ["plate", "well"], ["f1", "f2"], how=how, count_column="n_cells")
    assert list(out.columns) == ["plate", "well", "f1", "f2", "n_cells"]
    assert len(out) == cells.groupby(["plate", "well"]).ngroups
    for _, row in out.iterrows():
        members = cells[(cells.plate == row.plate) & (cells.well == row.well)]
        for f in ("f1", "f2"):
            expected = members[f].mean() if how == "mean" else members[f].median()
            assert row[f] == pytest.approx(expected, rel=1e-12)
        assert row.n_cells == len(members)
    assert out[["plate", "well"]].equals(out[["plate", "well"]].sort_values(["plate", "well"]))
    assert out.index.equals(pd.RangeIndex(len(out)))


def test_aggregate_then_map(cells):
    out = aggregate_profiles(cells, "well", ["f1", "f2"])
    assert list(out.columns) == ["well", "f1", "f2"]
    result = mean_average_precision(out[["f1", "f2"]].to_numpy(), out["well"].to_numpy())
    assert np.isnan(result["map"])  # one profile per well: nothing to retrieve


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": np.zeros((3, 3))}, "DataFrame"),
        ({"by": []}, "by"),
        ({"features": []}, "features"),
        ({"how": "sum"}, "how"),
        ({"by": "nope"}, "not in table"),
        ({"features": ["f1", "plate"], "by": "well"}, "numeric"),
        ({"features": ["f1", "well"]}, "both"),
        ({"count_column": "f1"}, "clashes"),
    ],
)
def test_aggregate_profiles_invalid(cells, kwargs, match):
    args = {"table": cells, "by": ["plate", "well"], "features": ["f1", "f2"]} | kwargs
    with pytest.raises(ValueError, match=match):
        aggregate_profiles(**args)


def test_aggregate_profiles_rejects_nan(cells):
    cells.loc[3, "f1"] = np.nan
    with pytest.raises(ValueError, match="finite"):
        aggregate_profiles(cells, "well", ["f1"])
    cells.loc[3, "f1"] = 0.0
    cells.loc[4, "well"] = None
    with pytest.raises(ValueError, match="missing"):
        aggregate_profiles(cells, "well", ["f1"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": np.zeros(5)}, "2-D"),
        ({"features": np.zeros((5, 2))}, "all-zero"),
        ({"features": np.full((5, 2), np.nan)}, "finite"),
        ({"labels": ["a"] * 4}, "labels"),
        ({"labels": np.array([0, 1, np.nan, 1, 0])}, "NaN"),
        ({"exclude_same": [1, 2]}, "exclude_same"),
        ({"negative_filter": [1, 0, 1, 0, 1]}, "negative_filter"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_map_invalid(kwargs, match):
    args = {"features": HAND_FEATURES, "labels": HAND_LABELS} | kwargs
    with pytest.raises(ValueError, match=match):
        mean_average_precision(**args)


@pytest.mark.parametrize(("kwargs", "match"), [({"n_permutations": 0}, "n_permutations"), ({"seed": -1}, "seed")])
def test_permutation_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        map_permutation_pvalues(HAND_FEATURES, HAND_LABELS, **kwargs)
