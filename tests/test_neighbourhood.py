import tracemalloc

import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sk_trustworthiness

from workflow_scripts.metrics.neighbourhood import (
    continuity,
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
