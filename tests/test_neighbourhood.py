import tracemalloc

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.manifold import trustworthiness as sk_trustworthiness

from workflow_scripts.metrics.neighbourhood import (
    continuity,
    lcmc,
    local_quality,
    neighbourhood_curves,
    neighbourhood_sizes,
    trustworthiness,
    trustworthiness_continuity,
)

KS = [1, 5, 10, 20, 50]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 50))
    # A noisy linear projection: neither perfect nor random, so every k is informative.
    Y = X @ rng.normal(size=(50, 5)) + rng.normal(scale=2.0, size=(300, 5))
    return X, Y


def test_trustworthiness_matches_sklearn(data):
    X, Y = data
    ours = trustworthiness(X, Y, KS)
    assert list(ours) == KS
    for k in KS:
        assert ours[k] == pytest.approx(sk_trustworthiness(X, Y, n_neighbors=k), abs=1e-6)


def test_chunking_does_not_change_the_result(data):
    X, Y = data
    whole = trustworthiness(X, Y, KS, chunk_size=1024)
    assert trustworthiness(X, Y, KS, chunk_size=37) == whole
    assert trustworthiness(X, Y, KS, chunk_size=1) == whole


def test_continuity_is_trustworthiness_with_spaces_swapped(data):
    X, Y = data
    ours = continuity(X, Y, KS, chunk_size=37)
    for k in KS:
        assert ours[k] == pytest.approx(sk_trustworthiness(Y, X, n_neighbors=k), abs=1e-6)


def test_one_pass_gives_both(data):
    X, Y = data
    both = trustworthiness_continuity(X, Y, KS, chunk_size=64)
    assert both["trustworthiness"] == trustworthiness(X, Y, KS)
    assert both["continuity"] == continuity(X, Y, KS)


def test_float32_and_integer_inputs(data):
    X, Y = data
    # Distances are float64 whatever the input dtype, so a lossless cast changes nothing.
    Xi = np.round(X * 100).astype(np.int32)
    assert trustworthiness(Xi, Y, [5]) == trustworthiness(Xi.astype(np.float64), Y, [5])
    ours = trustworthiness(X.astype(np.float32), Y.astype(np.float32), [5, 10])
    ref = trustworthiness(X.astype(np.float32).astype(np.float64), Y.astype(np.float32), [5, 10])
    assert ours == ref


def test_identity_embedding_is_perfect(data):
    X, _ = data
    assert trustworthiness(X, X, KS) == {k: 1.0 for k in KS}
    assert continuity(X, X.copy(), KS) == {k: 1.0 for k in KS}


def test_random_embedding_scores_about_one_half(data):
    X, _ = data
    Y = np.random.default_rng(1).normal(size=(X.shape[0], 5))
    for value in trustworthiness(X, Y, [5, 10, 20]).values():
        assert 0.4 < value < 0.6
    for value in continuity(X, Y, [5, 10, 20]).values():
        assert 0.4 < value < 0.6


def test_exact_ties_are_ranked_by_index():
    # Four copies of each of 10 points: every sklearn-style argsort over ties is valid, ours
    # breaks them by index; scores stay in range and do not depend on the chunking.
    X = np.repeat(np.arange(10.0)[:, None], 4, axis=0)
    Y = X + np.random.default_rng(2).normal(scale=0.01, size=X.shape)
    whole = trustworthiness(X, Y, [3, 7])
    assert whole == trustworthiness(X, Y, [3, 7], chunk_size=3)
    assert all(0.0 <= v <= 1.0 for v in whole.values())


def test_large_n_is_chunked():
    # N x N float64 would be 3.2 GB; the chunked computation must stay far below that.
    n = 20_000
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 256)).astype(np.float32)
    Y = X[:, :8] + rng.normal(scale=0.1, size=(n, 8)).astype(np.float32)
    tracemalloc.start()
    try:
        result = trustworthiness(X, Y, [5], chunk_size=512)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.5 < result[5] <= 1.0
    assert peak < n * n  # < 400 MB: not even an N x N uint8 matrix fits in that


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"Y": np.zeros((299, 5))}, "X and Y"),
        ({"X": np.zeros(300)}, "X"),
        ({"Y": np.zeros((300, 0))}, "Y"),
        ({"ks": [150]}, "ks"),
        ({"ks": [0]}, "ks"),
        ({"ks": [2.5]}, "ks"),
        ({"ks": []}, "ks"),
        ({"ks": 5}, "ks"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"X": np.full((300, 50), np.nan)}, "X"),
        ({"Y": np.array([["a"] * 5] * 300)}, "Y"),
    ],
)
def test_invalid_arguments(data, kwargs, name):
    X, Y = data
    args = {"X": X, "Y": Y, "ks": [5]} | kwargs
    with pytest.raises(ValueError, match=name):
        trustworthiness(**args)


def test_too_few_samples():
    with pytest.raises(ValueError, match="at least 3"):
        continuity(np.zeros((2, 3)), np.zeros((2, 1)), [1])


# ---------------------------------------------------------------------------------------
# Co-ranking matrix reference (Lee & Verleysen 2009), full N x N: small N only.


def _rank_matrix(A):
    """``R[i, j]`` = rank of ``j`` among the neighbours of ``i`` (1 = nearest; stable ties)."""
    d = cdist(A, A, "sqeuclidean")
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, A.shape[0] + 1)[None, :], axis=1)
    return ranks  # the diagonal holds N (self is last)


def _coranking(X, Y):
    """``Q[k - 1, l - 1] = #{(i, j), i != j : rank_X(i, j) = k, rank_Y(i, j) = l}``."""
    n = X.shape[0]
    rx, ry = _rank_matrix(X), _rank_matrix(Y)
    off = ~np.eye(n, dtype=bool)
    Q = np.zeros((n - 1, n - 1), dtype=np.int64)
    np.add.at(Q, (rx[off] - 1, ry[off] - 1), 1)
    return Q


def _from_coranking(Q, k):
    n = Q.shape[0] + 1
    rho = np.arange(1, n)[:, None]  # rank in X (rows)
    r = np.arange(1, n)[None, :]  # rank in Y (columns)
    scale = 2.0 / (n * k * (2 * n - 3 * k - 1))
    # Intrusions: neighbours in Y (r <= k) that were not in X (rho > k), penalised by rho - k.
    trust = 1 - scale * np.sum(Q * (rho - k) * ((rho > k) & (r <= k)))
    # Extrusions: neighbours in X (rho <= k) lost in Y (r > k), penalised by r - k.
    cont = 1 - scale * np.sum(Q * (r - k) * ((rho <= k) & (r > k)))
    q_nx = Q[:k, :k].sum() / (n * k)
    return {"trustworthiness": trust, "continuity": cont, "q_nx": q_nx, "lcmc": q_nx - k / (n - 1)}


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 20))
    Y = X @ rng.normal(size=(20, 3)) + rng.normal(scale=1.5, size=(120, 3))
    return X, Y


SMALL_KS = [1, 3, 7, 12, 30, 59]


def test_curves_match_the_coranking_matrix(small):
    X, Y = small
    Q = _coranking(X, Y)
    assert Q.sum() == 120 * 119
    curves = neighbourhood_curves(X, Y, SMALL_KS, chunk_size=17)
    for k in SMALL_KS:
        ref = _from_coranking(Q, k)
        assert curves["q_nx"][k] == pytest.approx(ref["q_nx"], abs=1e-12)
        assert curves["lcmc"][k] == pytest.approx(ref["lcmc"], abs=1e-12)
        assert curves["trustworthiness"][k] == pytest.approx(ref["trustworthiness"], abs=1e-6)
        assert curves["continuity"][k] == pytest.approx(ref["continuity"], abs=1e-6)
        # ... and the co-ranking trustworthiness is sklearn's.
        assert ref["trustworthiness"] == pytest.approx(sk_trustworthiness(X, Y, n_neighbors=k), abs=1e-6)
        assert ref["continuity"] == pytest.approx(sk_trustworthiness(Y, X, n_neighbors=k), abs=1e-6)


def test_lcmc_matches_the_coranking_matrix(small):
    X, Y = small
    Q = _coranking(X, Y)
    ours = lcmc(X, Y, SMALL_KS)
    assert list(ours) == SMALL_KS
    for k in SMALL_KS:
        assert ours[k] == pytest.approx(_from_coranking(Q, k)["lcmc"], abs=1e-12)


def test_lcmc_by_neighbour_sets(small):
    # The Chen & Buja definition written with explicit neighbour sets.
    X, Y = small
    n = X.shape[0]
    rx, ry = _rank_matrix(X), _rank_matrix(Y)
    for k in (2, 10):
        shared = sum(len(set(np.flatnonzero(rx[i] <= k)) & set(np.flatnonzero(ry[i] <= k))) for i in range(n))
        assert lcmc(X, Y, [k])[k] == pytest.approx(shared / (n * k) - k / (n - 1), abs=1e-12)


def test_curves_agree_with_the_single_metric_functions(data):
    X, Y = data
    ks = [50, 5, 20, 5]
    curves = neighbourhood_curves(X, Y, ks, chunk_size=64)
    assert curves["ks"] == [5, 20, 50]
    assert list(curves["lcmc"]) == [5, 20, 50]
    assert curves["trustworthiness"] == trustworthiness(X, Y, [5, 20, 50])
    assert curves["continuity"] == continuity(X, Y, [5, 20, 50])
    assert curves["lcmc"] == lcmc(X, Y, [5, 20, 50])
    for k in curves["ks"]:
        assert curves["trustworthiness"][k] == pytest.approx(sk_trustworthiness(X, Y, n_neighbors=k), abs=1e-6)


def test_curves_do_not_depend_on_chunk_size(data):
    X, Y = data
    ks = neighbourhood_sizes(X.shape[0])
    whole = neighbourhood_curves(X, Y, ks, chunk_size=1024)
    for chunk_size in (1, 7, 64):
        assert neighbourhood_curves(X, Y, ks, chunk_size=chunk_size) == whole
    # Swapping the spaces makes X the cheaper one to recompute: same numbers, swapped.
    swapped = neighbourhood_curves(Y, X, ks, chunk_size=64)
    assert swapped["trustworthiness"] == whole["continuity"]
    assert swapped["continuity"] == whole["trustworthiness"]
    assert swapped["lcmc"] == whole["lcmc"]  # the shared-neighbour count is symmetric


def test_identical_spaces_are_perfect(data):
    X, _ = data
    n = X.shape[0]
    ks = [1, 10, 100]
    curves = neighbourhood_curves(X, X.copy(), ks)
    for k in ks:
        assert curves["trustworthiness"][k] == 1.0
        assert curves["continuity"][k] == 1.0
        assert curves["q_nx"][k] == 1.0
        assert curves["lcmc"][k] == pytest.approx(1 - k / (n - 1), abs=1e-15)
    np.testing.assert_array_equal(local_quality(X, X, k=10), np.ones(n))
    np.testing.assert_array_equal(local_quality(X, X, max_rank=50, max_rank_diff=0), np.ones(n))


def test_random_embedding_has_lcmc_about_zero(data):
    X, _ = data
    Y = np.random.default_rng(5).normal(size=(X.shape[0], 5))
    for value in lcmc(X, Y, [5, 20, 50]).values():
        assert abs(value) < 0.03


def test_auc_is_the_normalised_trapezoid(data):
    X, Y = data
    ks = [2, 10, 40]
    curves = neighbourhood_curves(X, Y, ks)
    for name in ("trustworthiness", "continuity", "q_nx", "lcmc"):
        v = [curves[name][k] for k in ks]
        expected = ((v[0] + v[1]) / 2 * 8 + (v[1] + v[2]) / 2 * 30) / 38
        assert curves["auc"][name] == pytest.approx(expected, rel=1e-12)
    single = neighbourhood_curves(X, Y, [7])
    assert single["auc"] == {name: single[name][7] for name in ("trustworthiness", "continuity", "q_nx", "lcmc")}
    # Identity: T = C = 1 everywhere, so the normalised area is exactly 1.
    perfect = neighbourhood_curves(X, X, ks)["auc"]
    assert perfect["trustworthiness"] == pytest.approx(1.0) and perfect["continuity"] == pytest.approx(1.0)


def test_local_quality_is_the_per_point_q_nx(small):
    X, Y = small
    n = X.shape[0]
    rx, ry = _rank_matrix(X), _rank_matrix(Y)
    for k in (1, 5, 20):
        ours = local_quality(X, Y, k=k, chunk_size=13)
        expected = np.count_nonzero((rx <= k) & (ry <= k), axis=1) / k
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-15)
        assert ours.shape == (n,) and ours.min() >= 0 and ours.max() <= 1
        assert ours.mean() == pytest.approx(neighbourhood_curves(X, Y, [k])["q_nx"][k], abs=1e-12)
    # k up to N - 1 is allowed: every other point is then a shared neighbour.
    np.testing.assert_array_equal(local_quality(X, Y, k=n - 1), np.ones(n))


@pytest.mark.parametrize(("max_rank", "max_rank_diff"), [(10, 3), (25, 0), (40, None), (500, 30), (119, 119)])
def test_local_quality_reference_variant(small, max_rank, max_rank_diff):
    X, Y = small
    n = X.shape[0]
    rx, ry = _rank_matrix(X), _rank_matrix(Y)
    np.fill_diagonal(rx, n + 10**6)  # self never counts
    np.fill_diagonal(ry, n + 10**6)
    m = min(max_rank, n - 1)
    either = (rx <= m) | (ry <= m)
    both = (rx <= m) & (ry <= m)
    if max_rank_diff is not None:
        both &= np.abs(rx - ry) <= max_rank_diff
    expected = both.sum(axis=1) / either.sum(axis=1)
    ours = local_quality(X, Y, chunk_size=31, max_rank=max_rank, max_rank_diff=max_rank_diff)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-15)


def test_neighbourhood_sizes():
    ks = neighbourhood_sizes(1000)
    assert len(ks) == 20 and ks == sorted(set(ks))
    assert ks[0] == 10 and ks[-1] == 200
    assert neighbourhood_sizes(1000, count=5) == [10, 58, 105, 152, 200]
    assert neighbourhood_sizes(10_000, cap=500)[-1] == 500
    assert max(neighbourhood_sizes(10_000, cap=500)) <= 500
    # Small N: at least 1, below N / 2, fewer than 20 after deduplication.
    assert neighbourhood_sizes(20) == [1, 2, 3, 4]
    assert neighbourhood_sizes(3) == [1]
    assert neighbourhood_sizes(4, hi=0.9) == [1]
    # linspace(30, 90, 20) rounded, everything above 49 (< N / 2) clipped to 49 and merged.
    assert neighbourhood_sizes(100, lo=0.3, hi=0.9) == [30, 33, 36, 39, 43, 46, 49]
    # Every size is a valid argument of the metrics.
    X = np.random.default_rng(6).normal(size=(25, 3))
    assert len(neighbourhood_curves(X, X[:, :2], neighbourhood_sizes(25, hi=0.5))["ks"]) >= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 2}, "n"),
        ({"n": 10.0}, "n"),
        ({"count": 0}, "count"),
        ({"lo": 0}, "lo"),
        ({"hi": float("nan")}, "hi"),
        ({"lo": 0.3, "hi": 0.2}, "lo"),
        ({"cap": 0}, "cap"),
    ],
)
def test_neighbourhood_sizes_invalid(kwargs, name):
    with pytest.raises(ValueError, match=name):
        neighbourhood_sizes(**({"n": 100} | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0}, "k"),
        ({"k": 300}, "k"),
        ({"k": 2.0}, "k"),
        ({"max_rank_diff": 3}, "max_rank_diff needs max_rank"),
        ({"max_rank": 0}, "max_rank"),
        ({"max_rank": 10, "max_rank_diff": -1}, "max_rank_diff"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"Y": np.zeros((299, 5))}, "X and Y"),
        ({"X": np.full((300, 50), np.inf)}, "X"),
    ],
)
def test_local_quality_invalid(data, kwargs, name):
    X, Y = data
    with pytest.raises(ValueError, match=name):
        local_quality(**({"X": X, "Y": Y} | kwargs))


def test_lcmc_and_curves_validate_like_trustworthiness(data):
    X, Y = data
    with pytest.raises(ValueError, match="ks"):
        lcmc(X, Y, [150])
    with pytest.raises(ValueError, match="ks"):
        neighbourhood_curves(X, Y, [])
    with pytest.raises(ValueError, match="chunk_size"):
        neighbourhood_curves(X, Y, [5], chunk_size=-1)


def test_curves_memory_is_n_by_chunk():
    # N x N float64 would be 72 MB; one pass with chunks of 256 rows must stay under a quarter of it.
    n = 3000
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 40))
    Y = X[:, :4] + rng.normal(scale=0.5, size=(n, 4))
    ks = neighbourhood_sizes(n)
    for run in (
        lambda: neighbourhood_curves(X, Y, ks, chunk_size=256),
        lambda: lcmc(X, Y, ks, chunk_size=256),
        lambda: local_quality(X, Y, chunk_size=256, max_rank=500, max_rank_diff=300),
    ):
        tracemalloc.start()
        try:
            run()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < n * n * 8 / 4


def test_float32_precision_is_close_to_float64(data):
    """``precision="float32"`` (the workflow's default) only swaps near-tied neighbours: the
    scores stay within rounding of the float64 reference and do not depend on chunking."""
    X, Y = data
    ks = [5, 10, 20, 50]
    ref = neighbourhood_curves(X, Y, ks)
    fast = neighbourhood_curves(X.astype(np.float32), Y, ks, chunk_size=64, precision="float32")
    assert fast == neighbourhood_curves(X.astype(np.float32), Y, ks, chunk_size=7, precision="float32")
    for k in ks:
        assert fast["trustworthiness"][k] == pytest.approx(ref["trustworthiness"][k], abs=1e-5)
        assert fast["continuity"][k] == pytest.approx(ref["continuity"][k], abs=1e-5)
        assert fast["lcmc"][k] == pytest.approx(ref["lcmc"][k], abs=1e-3)
    quality = local_quality(X, Y, k=10, precision="float32")
    assert quality.mean() == pytest.approx(local_quality(X, Y, k=10).mean(), abs=1e-3)


@pytest.mark.parametrize("precision", ["float16", "double", None])
def test_unknown_precision_is_rejected(data, precision):
    X, Y = data
    with pytest.raises(ValueError, match=r"precision must be one of \('float64', 'float32'\)"):
        trustworthiness(X, Y, [5], precision=precision)
    with pytest.raises(ValueError, match="precision"):
        local_quality(X, Y, k=5, precision=precision)
