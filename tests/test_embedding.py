"""Tests for workflow_scripts.embedding."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from workflow_scripts.embedding import embed_2d, standardise


def blobs(n_per: int = 60, dim: int = 20, n_blobs: int = 3, seed: int = 0):
    """Well-separated Gaussian blobs: (n_blobs * n_per, dim) features and integer labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, size=(n_blobs, dim))
    labels = np.repeat(np.arange(n_blobs), n_per)
    return centres[labels] + rng.normal(0.0, 1.0, size=(labels.size, dim)), labels


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # t-SNE's OpenMP loops spin-wait at every iteration; on a shared, oversubscribed test
    # machine that turns a 0.5 s fit into 20 s. One thread keeps the test time predictable.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data():
    return blobs()


def knn_accuracy(coords: np.ndarray, labels: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(5), coords, labels, cv=5).mean())


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
def test_shape_dtype_and_separation(data, method):
    x, labels = data
    coords = embed_2d(x, method=method, seed=0)
    assert coords.shape == (x.shape[0], 2)
    assert coords.dtype == np.float32
    assert np.isfinite(coords).all()
    assert knn_accuracy(coords, labels) > 0.95


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
def test_deterministic_for_fixed_seed(data, method):
    x, _ = data
    first = embed_2d(x, method=method, seed=3)
    second = embed_2d(x, method=method, seed=3)
    np.testing.assert_array_equal(first, second)


def test_umap_seed_changes_layout(data):
    x, _ = data
    assert not np.allclose(embed_2d(x, seed=0), embed_2d(x, seed=1))


def test_pca_is_first_two_components_of_standardised_features(data):
    x, _ = data
    x = x * np.linspace(1.0, 100.0, x.shape[1])  # units differ per column
    expected = PCA(2).fit_transform((x - x.mean(0)) / x.std(0))
    coords = embed_2d(x, method="pca")
    # Principal axes are defined up to sign.
    for k in range(2):
        sign = np.sign(expected[:, k] @ coords[:, k])
        np.testing.assert_allclose(coords[:, k], sign * expected[:, k], rtol=1e-4, atol=1e-4)


def test_constant_columns_are_dropped(data):
    x, _ = data
    padded = np.hstack([np.full((x.shape[0], 1), 7.0), x, np.zeros((x.shape[0], 2))])
    np.testing.assert_allclose(embed_2d(padded, method="pca"), embed_2d(x, method="pca"))
    z = standardise(padded)
    assert z.shape == x.shape
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1.0)


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
def test_one_informative_column_is_laid_out_on_a_line(method):
    x = np.column_stack([np.arange(10.0), np.ones(10)])
    coords = embed_2d(x, method=method)
    np.testing.assert_allclose(coords[:, 0], (x[:, 0] - 4.5) / x[:, 0].std(), rtol=1e-6)
    np.testing.assert_array_equal(coords[:, 1], 0.0)


def test_all_constant_features_give_zeros():
    np.testing.assert_array_equal(embed_2d(np.ones((5, 4))), np.zeros((5, 2), np.float32))


@pytest.mark.parametrize("method", ["umap", "tsne", "pca"])
@pytest.mark.parametrize("n", [3, 5, 12])
def test_small_n(method, n):
    x = np.random.default_rng(n).normal(size=(n, 6))
    coords = embed_2d(x, method=method, n_neighbors=15)
    assert coords.shape == (n, 2)
    assert np.isfinite(coords).all()


def test_integer_and_float32_input(data):
    x, _ = data
    assert embed_2d(np.rint(x).astype(np.int16), method="pca").shape == (x.shape[0], 2)
    assert embed_2d(x.astype(np.float32), method="pca").dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": np.zeros(10)}, "features.*2-D"),
        ({"features": np.zeros((2, 4))}, "features.*at least 3"),
        ({"features": np.zeros((5, 0))}, "features.*at least one column"),
        ({"features": np.array([[1.0, np.nan]] * 5)}, "features.*NaN"),
        ({"features": np.array([["a", "b"]] * 5)}, "features.*dtype"),
        ({"method": "mds"}, "method.*'mds'"),
        ({"seed": -1}, "seed.*-1"),
        ({"n_neighbors": 1}, "n_neighbors.*>= 2"),
        ({"min_dist": 2.0}, r"min_dist.*\[0, 1\]"),
        ({"perplexity": 0}, "perplexity"),
    ],
)
def test_validation_names_the_argument(kwargs, match):
    args = {"features": np.random.default_rng(0).normal(size=(10, 3))} | kwargs
    features = args.pop("features")
    with pytest.raises(ValueError, match=match):
        embed_2d(features, **args)


def test_best_layer_map_reuses_the_explorer_pages_umap(tmp_path):
    import pandas as pd

    from workflow_scripts.maps import reusable_umap

    page = tmp_path / "explorer" / "vae" / "mu.coords.parquet"
    page.parent.mkdir(parents=True)
    cells = np.array([f"c{i}" for i in range(6)])
    pd.DataFrame({"Metadata_cell": cells, "UMAP_1": np.arange(6.0), "UMAP_2": -np.arange(6.0)}).to_parquet(page)
    order = cells[[3, 0, 5, 1, 4, 2]]
    got = reusable_umap([str(page)], "vae", "mu", order)
    np.testing.assert_array_equal(got[:, 0], [3, 0, 5, 1, 4, 2])  # in the order asked for
    np.testing.assert_array_equal(got[:, 1], [-3, 0, -5, -1, -4, -2])
    assert reusable_umap([str(page)], "vae", "conv2", order) is None  # no page for that layer
    assert reusable_umap([str(page)], "vae", "mu", cells[:4]) is None  # the page shows other cells
    assert reusable_umap([str(page)], "vae", "mu", np.array(["x", *cells[1:]])) is None
