import numpy as np
import pytest
from scipy import stats

from workflow_scripts.metrics.trajectory import backbone, project_onto_polyline

SQRT2 = np.sqrt(2.0)


def _line(n=1000, width=12, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.gamma(2.0, size=n)  # skewed: quantile bins are not evenly spaced in t
    direction = rng.normal(size=width)
    return 3.0 + t[:, None] * direction, t


def test_straight_line_is_perfect():
    X, t = _line()
    result = backbone(X, t, n_folds=None)
    assert result["tortuosity"] == pytest.approx(1.0, abs=1e-12)
    assert result["tortuosity"] >= 1.0
    assert result["arc_length"] == pytest.approx(result["chord_length"], rel=1e-12)
    assert result["centroid_spearman"] == pytest.approx(1.0)
    assert result["centroid_kendall"] == pytest.approx(1.0)
    assert result["cell_spearman"] == pytest.approx(1.0, abs=1e-12)
    assert result["cell_kendall"] == pytest.approx(1.0, abs=1e-12)
    # The centroid positions from the other centroids are their own arc positions.
    np.testing.assert_allclose(result["centroid_position"], result["centroid_arclength"], atol=1e-9)
    # Cross-fitted: fold polylines lie on the same line, so the order is (almost exactly) kept.
    crossed = backbone(X, t)
    assert crossed["cell_spearman"] > 0.999 and crossed["cell_kendall"] > 0.99
    assert crossed["tortuosity"] == result["tortuosity"]


def test_shape_of_the_output():
    X, t = _line(n=500)
    result = backbone(X, t, n_bins=7)
    assert result["n_bins"] == 7
    assert result["centroids"].shape == (7, 12)
    assert result["segment_lengths"].shape == (6,)
    assert result["bin_edges"].shape == (8,)
    assert result["bin"].shape == (500,) and result["bin"].max() == 6
    assert result["bin_counts"].sum() == 500 and result["bin_counts"].min() >= 70
    assert np.all(np.diff(result["bin_t"]) > 0)
    assert result["cell_position"].shape == (500,)
    np.testing.assert_allclose(result["centroid_arclength"][-1], result["arc_length"])
    for b in range(7):
        np.testing.assert_allclose(result["centroids"][b], X[result["bin"] == b].mean(axis=0))


def test_known_zig_zag():
    # Four bins whose cells sit exactly on (0,0), (1,1), (2,0), (3,1).
    corners = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    m = 25
    t = np.repeat(np.arange(4.0), m) + np.tile(np.linspace(0, 0.5, m), 4)
    X = np.repeat(corners, m, axis=0)
    result = backbone(X, t, n_bins=4, n_folds=None)
    np.testing.assert_allclose(result["centroids"], corners, atol=1e-12)
    np.testing.assert_allclose(result["segment_lengths"], [SQRT2] * 3, rtol=1e-12)
    assert result["arc_length"] == pytest.approx(3 * SQRT2, rel=1e-12)
    assert result["chord_length"] == pytest.approx(np.sqrt(10.0), rel=1e-12)
    assert result["tortuosity"] == pytest.approx(3 * SQRT2 / np.sqrt(10.0), rel=1e-12)
    np.testing.assert_allclose(result["centroid_arclength"], [0, SQRT2, 2 * SQRT2, 3 * SQRT2], atol=1e-12)
    # Leave-one-out projections, worked by hand: (0,0) onto (1,1)-(2,0)-(3,1) lands on (1,1);
    # (1,1) onto (0,0)-(2,0) lands mid-segment (at arc sqrt2); (2,0) onto (1,1)-(3,1) lands
    # mid-segment (2 sqrt2); (3,1) onto the extended (1,1)-(2,0) lands on (2,0).
    np.testing.assert_allclose(result["centroid_position"], [SQRT2, SQRT2, 2 * SQRT2, 2 * SQRT2], atol=1e-12)
    # Every cell sits on its own vertex: its position is that vertex's arc length.
    np.testing.assert_allclose(result["cell_position"], np.repeat(result["centroid_arclength"], m), atol=1e-12)
    expected_tau = stats.kendalltau(t, np.repeat(np.arange(4), m)).statistic
    assert result["cell_kendall"] == pytest.approx(expected_tau, abs=1e-12)
    # Cross-fitted: every fold has the same corners, so cells and centroids sit on their own vertex.
    crossed = backbone(X, t, n_bins=4)
    np.testing.assert_allclose(crossed["cell_position"], result["cell_position"], atol=1e-12)
    np.testing.assert_allclose(crossed["centroid_position"], result["centroid_arclength"], atol=1e-12)
    assert crossed["centroid_spearman"] == pytest.approx(1.0)


def test_shuffled_positions_do_not_correlate():
    rng = np.random.default_rng(1)
    cell_rho, centroid_rho = [], []
    for _ in range(40):
        X = rng.normal(size=(300, 16))
        t = rng.random(300)
        result = backbone(X, t, n_bins=10, seed=int(rng.integers(1000)))
        cell_rho.append(result["cell_spearman"])
        centroid_rho.append(result["centroid_spearman"])
        assert result["tortuosity"] > 3  # a random walk through noise centroids
    assert abs(np.mean(cell_rho)) < 0.03
    # 10 points per run: sd about 0.35, so the mean of 40 runs has sd about 0.055.
    assert abs(np.mean(centroid_rho)) < 0.2
    # Shuffling the true positions of a perfect line destroys the order as well.
    X, t = _line(n=1000)
    shuffled = backbone(X, rng.permutation(t))
    assert abs(shuffled["cell_spearman"]) < 0.1


def test_cross_fitting_removes_the_in_sample_bias():
    # 256 features, 100 cells per bin: in-sample, a cell pulls its own centroid towards itself.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1000, 256))
    t = rng.random(1000)
    assert backbone(X, t, n_folds=None)["cell_spearman"] > 0.2
    assert abs(backbone(X, t, n_folds=5)["cell_spearman"]) < 0.08


def test_curved_trajectory_scores_high_order_and_some_tortuosity():
    rng = np.random.default_rng(3)
    t = rng.random(3000)
    angle = t * np.pi  # a half circle
    X = np.c_[np.cos(angle), np.sin(angle)] + rng.normal(scale=0.05, size=(3000, 2))
    result = backbone(X, t)
    assert 1.3 < result["tortuosity"] < np.pi / 2
    assert result["cell_spearman"] > 0.99
    assert result["centroid_spearman"] == pytest.approx(1.0)


def test_tied_positions_drop_empty_bins():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 5, 400).astype(float)  # five distinct values, ten bins requested
    X = t[:, None] * np.array([[1.0, -2.0]]) + rng.normal(scale=0.01, size=(400, 2))
    result = backbone(X, t, n_bins=10)
    assert result["n_bins"] == 5
    np.testing.assert_array_equal(result["bin_t"], np.arange(5.0))
    assert result["centroid_spearman"] == pytest.approx(1.0)


def test_deterministic_for_a_seed():
    X = np.random.default_rng(5).normal(size=(300, 6))
    t = np.random.default_rng(6).random(300)
    a, b = backbone(X, t, seed=3), backbone(X, t, seed=3, chunk_size=7)
    np.testing.assert_allclose(a["cell_position"], b["cell_position"], rtol=0, atol=1e-12)
    assert a["cell_spearman"] == pytest.approx(b["cell_spearman"])


def _brute_projection(points, vertices, coords):
    out = []
    for x in points:
        best = (np.inf, None)
        for s in range(len(vertices) - 1):
            a, d = vertices[s], vertices[s + 1] - vertices[s]
            lam = 0.0 if d @ d == 0 else (x - a) @ d / (d @ d)
            if s > 0:
                lam = max(lam, 0.0)
            if s < len(vertices) - 2:
                lam = min(lam, 1.0)
            dist = np.linalg.norm(x - a - lam * d)
            if dist < best[0]:
                best = (dist, coords[s] + lam * (coords[s + 1] - coords[s]))
        out.append(best[1])
    return np.array(out)


def test_projection_matches_a_loop():
    rng = np.random.default_rng(7)
    vertices = rng.normal(size=(6, 5)) * 3
    vertices[3] = vertices[2]  # a zero-length segment
    points = rng.normal(size=(200, 5)) * 4
    coords = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(vertices, axis=0), axis=1))])
    ours = project_onto_polyline(points, vertices, chunk_size=17)
    np.testing.assert_allclose(ours, _brute_projection(points, vertices, coords), atol=1e-9)
    other = np.array([0.0, 1, 2, 3, 4, 5])
    np.testing.assert_allclose(
        project_onto_polyline(points, vertices, other), _brute_projection(points, vertices, other), atol=1e-9
    )


def test_projection_extends_the_ends():
    vertices = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    points = np.array([[-2.0, 0.1], [1.1, 3.0], [0.5, -0.2]])
    np.testing.assert_allclose(project_onto_polyline(points, vertices), [-2.0, 4.0, 0.5])
    # Two vertices: a line, open at both ends.
    np.testing.assert_allclose(project_onto_polyline(points, vertices[:2]), [-2.0, 1.1, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": np.zeros(10)}, "features"),
        ({"features": np.full((30, 2), np.nan)}, "finite"),
        ({"t": np.zeros(29)}, "t must be 1-D"),
        ({"t": np.full(30, np.inf)}, "t must contain"),
        ({"n_bins": 2}, "n_bins"),
        ({"n_bins": 4.0}, "n_bins"),
        ({"n_folds": 1}, "n_folds"),
        ({"seed": -1}, "seed"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"t": np.r_[np.zeros(28), 1.0, 2.0]}, "at least 3 non-empty"),
        ({"n_bins": 20}, "at least 2 cells"),  # 30 cells in 20 bins: some hold one
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"features": np.random.default_rng(8).normal(size=(30, 2)), "t": np.arange(30.0)} | kwargs
    with pytest.raises(ValueError, match=match):
        backbone(**args)


def test_projection_invalid_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        project_onto_polyline(np.zeros((3, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="same width"):
        project_onto_polyline(np.zeros((3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="coords"):
        project_onto_polyline(np.zeros((3, 2)), np.zeros((4, 2)), coords=[0, 1])
