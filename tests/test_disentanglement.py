import numpy as np
import pytest
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from workflow_scripts.metrics.disentanglement import histogram_discretize, mig, sap

N = 4000


@pytest.fixture(scope="module")
def factors():
    return np.random.default_rng(0).random((N, 3))


# ---------------------------------------------------------------------------------------
# Straightforward loop implementations in the manner of disentanglement_lib.


def _loop_discretize(x, n_bins):
    out = np.zeros(x.shape, dtype=int)
    for i in range(x.shape[1]):
        out[:, i] = np.digitize(x[:, i], np.histogram(x[:, i], n_bins)[1][:-1])
    return out


def _loop_mig(z, v, n_bins, discrete):
    zd = _loop_discretize(z, n_bins)
    vd = np.array(v, dtype=float)
    for k in range(v.shape[1]):
        if not discrete[k]:
            vd[:, k] = _loop_discretize(v[:, k : k + 1], n_bins)[:, 0]
    m = np.zeros((z.shape[1], v.shape[1]))
    for i in range(z.shape[1]):
        for j in range(v.shape[1]):
            m[i, j] = mutual_info_score(vd[:, j], zd[:, i])
    entropy = np.array([mutual_info_score(vd[:, j], vd[:, j]) for j in range(v.shape[1])])
    sorted_m = np.sort(m, axis=0)[::-1]
    return np.mean((sorted_m[0, :] - sorted_m[1, :]) / entropy)


def _loop_sap(z, v, discrete, test_fraction=0.5, seed=0):
    n = z.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    test, train = perm[:n_test], perm[n_test:]
    score = np.zeros((z.shape[1], v.shape[1]))
    for i in range(z.shape[1]):
        for j in range(v.shape[1]):
            if discrete[j]:
                clf = LinearSVC(C=0.01, class_weight="balanced")
                clf.fit(z[train, i][:, None], v[train, j])
                score[i, j] = np.mean(clf.predict(z[test, i][:, None]) == v[test, j])
            else:
                c = np.cov(z[:, i], v[:, j], ddof=1)
                score[i, j] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1]) if c[0, 0] > 1e-12 else 0.0
    sorted_s = np.sort(score, axis=0)[::-1]
    return np.mean(sorted_s[0, :] - sorted_s[1, :])


# ---------------------------------------------------------------------------------------


def test_histogram_discretize_matches_the_reference():
    x = np.random.default_rng(1).normal(size=(500, 4))
    ours = histogram_discretize(x, 20)
    np.testing.assert_array_equal(ours, _loop_discretize(x, 20))
    assert ours.min() == 1 and ours.max() == 20
    np.testing.assert_array_equal(histogram_discretize(x[:, 2], 7), _loop_discretize(x[:, 2:3], 7)[:, 0])
    # Equal-width bins: 0..9.99 into 10 bins of width 1.
    np.testing.assert_array_equal(histogram_discretize(np.arange(0, 10, 0.5), 10), np.repeat(np.arange(1, 11), 2))


def test_copied_factors_are_disentangled(factors):
    rng = np.random.default_rng(2)
    codes = np.c_[factors[:, [2, 0, 1]], rng.normal(size=(N, 3))]  # a permutation plus noise dimensions
    m = mig(codes, factors)
    assert not m["discrete"].any()
    assert m["mig"] > 0.95
    s = sap(codes, factors)
    assert s["sap"] > 0.99
    np.testing.assert_allclose(s["scores"][[0, 1, 2], [2, 0, 1]], 1.0)
    # Small noise on the copies blurs the bins a little.
    noisy = codes + np.r_[[0.002] * 3, [0] * 3] * rng.normal(size=codes.shape)
    assert mig(noisy, factors)["mig"] > 0.9
    assert sap(noisy, factors)["sap"] > 0.99


def test_equally_mixed_factors_are_entangled(factors):
    # Every dimension is (+-) the same mixture of all three factors.
    mixing = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [-1, 1, 1]]) / np.sqrt(3)
    codes = factors @ mixing.T
    assert mig(codes, factors)["mig"] < 0.05
    assert sap(codes, factors)["sap"] < 0.05


def test_random_codes_score_about_zero(factors):
    codes = np.random.default_rng(3).normal(size=(N, 6))
    m = mig(codes, factors)
    assert 0 <= m["mig"] < 0.02
    assert np.all(m["mutual_information"] < 0.1)  # only the plug-in bias, about 0.05 nats
    assert 0 <= sap(codes, factors)["sap"] < 0.01


def test_exact_values_on_a_discrete_factor():
    labels = np.repeat(np.arange(4), 50)
    codes = np.c_[labels.astype(float), np.zeros(200)]
    m = mig(codes, labels)
    assert m["discrete"].tolist() == [True]
    assert m["entropy"][0] == pytest.approx(np.log(4))
    assert m["mig"] == pytest.approx(1.0)  # I(z0; v) = H(v), I(z1; v) = 0
    assert mig(np.c_[labels, labels].astype(float), labels)["mig"] == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["continuous", "discrete", "mixed"])
def test_agrees_with_a_loop_implementation(kind):
    rng = np.random.default_rng(4)
    n = 1500
    cont = rng.normal(size=(n, 2))
    disc = rng.integers(0, 5, size=(n, 2)).astype(float)
    v = {"continuous": cont, "discrete": disc, "mixed": np.c_[cont[:, 0], disc[:, 0]]}[kind]
    flags = {"continuous": [False, False], "discrete": [True, True], "mixed": [False, True]}[kind]
    z = np.c_[v @ rng.normal(size=(2, 3)), rng.normal(size=(n, 2))] + rng.normal(scale=0.5, size=(n, 5))
    m = mig(z, v, discrete=np.array(flags))
    assert m["discrete"].tolist() == flags  # also what the default rule picks here
    assert mig(z, v)["mig"] == m["mig"]
    assert m["mig"] == pytest.approx(_loop_mig(z, v, 20, flags), abs=1e-12)
    assert mig(z, v, n_bins=7)["mig"] == pytest.approx(_loop_mig(z, v, 7, flags), abs=1e-12)
    s = sap(z, v, seed=5)
    assert s["sap"] == pytest.approx(_loop_sap(z, v, flags, seed=5), abs=1e-12)


def test_discrete_factor_copied_into_one_dimension():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=(3000, 2))
    codes = np.c_[labels + rng.normal(scale=0.1, size=(3000, 2)), rng.normal(size=(3000, 3))]
    s = sap(codes, labels)
    assert s["discrete"].all()
    assert s["scores"][0, 0] > 0.9 and s["scores"][1, 1] > 0.9
    assert np.all(s["scores"][2:] < 0.45)  # chance is 1/3
    assert s["sap"] > 0.45
    assert mig(codes, labels)["mig"] > 0.8


def test_constant_factor_is_skipped(factors):
    v = np.c_[factors[:, 0], np.full(N, 2.0)]
    codes = np.c_[factors[:, 0], factors[:, 1]]
    m = mig(codes, v)
    assert np.isnan(m["per_factor"][1]) and m["mig"] == m["per_factor"][0]
    s = sap(codes, v, discrete=[False, False])
    assert np.isnan(s["per_factor"][1]) and s["sap"] == pytest.approx(s["per_factor"][0])
    s = sap(codes, v)  # the constant factor counts as discrete by default
    assert np.isnan(s["per_factor"][1])


def test_constant_code_dimension_scores_zero(factors):
    codes = np.c_[factors[:, 0], np.full(N, 3.0)]
    s = sap(codes, factors[:, :1])
    assert s["scores"][1, 0] == 0.0
    assert s["sap"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (mig, {"codes": np.zeros(10)}, "codes"),
        (mig, {"codes": np.zeros((10, 1))}, "at least 2 dimensions"),
        (mig, {"factors": np.zeros((9, 1))}, "same number of rows"),
        (mig, {"factors": np.full((10, 1), np.nan)}, "finite"),
        (mig, {"n_bins": 1}, "n_bins"),
        (mig, {"discrete": [True, False]}, "discrete"),
        (sap, {"codes": np.zeros((10, 1))}, "at least 2 dimensions"),
        (sap, {"test_fraction": 1.0}, "test_fraction"),
        (sap, {"seed": -2}, "seed"),
        (sap, {"codes": np.array([["a", "b"]] * 10)}, "real numbers"),
    ],
)
def test_invalid_arguments(func, kwargs, match):
    rng = np.random.default_rng(7)
    args = {"codes": rng.normal(size=(10, 3)), "factors": rng.normal(size=(10, 1))} | kwargs
    with pytest.raises(ValueError, match=match):
        func(**args)


def test_histogram_discretize_invalid():
    with pytest.raises(ValueError, match="n_bins"):
        histogram_discretize(np.zeros((5, 2)), 0)
    with pytest.raises(ValueError, match="finite"):
        histogram_discretize(np.array([1.0, np.inf]), 5)


def test_columnwise_mutual_information_equals_sklearn_per_column():
    from sklearn.metrics import mutual_info_score

    from workflow_scripts.metrics.disentanglement import _columns_mutual_information, histogram_discretize

    rng = np.random.default_rng(3)
    v = rng.integers(0, 4, 500)
    z = rng.normal(size=(500, 12))
    z[:, 0] += 2 * v  # informative
    codes = histogram_discretize(z, 20)
    codes[:, 5] = 7  # constant column: zero MI exactly
    expected = [mutual_info_score(v, codes[:, j]) for j in range(codes.shape[1])]
    got = _columns_mutual_information(codes, v)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert got[5] == 0.0 and got[0] > 0.5
    assert (_columns_mutual_information(codes, np.zeros(500)) == 0).all()
