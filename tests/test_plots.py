"""Tests for workflow_scripts.figures: colour mapping, validation, and that every figure is
written as a readable PNG of a sensible size."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from workflow_scripts import figures as plots
from workflow_scripts.figures.embedding import _is_categorical


def read_png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    return matplotlib.image.imread(path)


def assert_image_size(image: np.ndarray, low: int = 200, high: int = 5000) -> None:
    """Height and width in pixels within [low, high]: readable, not absurd."""
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert low <= image.shape[0] <= high, image.shape
    assert low <= image.shape[1] <= high, image.shape


def fake_field(size: int = 96, n_channels: int = 3, seed: int = 0):
    """A field of view (C, H, W) uint16 with a few bright square nuclei and its labels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 110, size=(n_channels, size, size)).astype(np.uint16)
    labels = np.zeros((size, size), np.int32)
    for i, (y, x) in enumerate([(10, 10), (40, 60), (70, 20)], start=1):
        labels[y : y + 12, x : x + 12] = i
        image[:, y : y + 12, x : x + 12] += np.uint16(1000)
    return image, labels


# ------------------------------------------------------------------------------- composites


def test_composite_shapes_and_range():
    rng = np.random.default_rng(0)
    batch = rng.normal(100, 30, size=(5, 4, 16, 12))
    rgb = plots.composite_rgb(batch)
    assert rgb.shape == (5, 16, 12, 3)
    assert rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    single = plots.composite_rgb(batch[0].astype(np.uint16))
    assert single.shape == (16, 12, 3)


def lit(channel: int, n_channels: int = 3) -> np.ndarray:
    """A crop where only ``channel`` has signal (a bright square on a dark background)."""
    crop = np.zeros((n_channels, 8, 8))
    crop[channel, 2:6, 2:6] = 500.0
    return crop


@pytest.mark.parametrize(
    ("channel", "colour"),
    [(0, (0, 0, 1)), (1, (1, 0, 0)), (2, (0, 1, 0))],
)
def test_three_channels_map_to_blue_red_green(channel, colour):
    rgb = plots.composite_rgb(lit(channel))
    np.testing.assert_allclose(rgb[3, 3], colour)
    np.testing.assert_array_equal(rgb[0, 0], 0.0)


def test_one_and_two_channel_colours():
    grey = plots.composite_rgb(lit(0, 1))
    np.testing.assert_allclose(grey[3, 3], (1, 1, 1))
    np.testing.assert_allclose(plots.composite_rgb(lit(0, 2))[3, 3], (1, 0, 1))  # magenta
    np.testing.assert_allclose(plots.composite_rgb(lit(1, 2))[3, 3], (0, 1, 0))  # green


def test_extra_channels_get_distinct_colours():
    colours = plots.channel_colours(6)
    assert colours.shape == (6, 3)
    assert len({tuple(c) for c in colours}) == 6
    np.testing.assert_allclose(plots.composite_rgb(lit(3, 5))[3, 3], (0, 1, 1))  # cyan
    np.testing.assert_allclose(plots.composite_rgb(lit(4, 5))[3, 3], (1, 1, 0))  # yellow
    assert plots.channel_colours(12).shape == (12, 3)


def test_stretch_is_shared_across_the_batch():
    dim = lit(2)
    bright = lit(2) * 4
    rgb = plots.composite_rgb(np.stack([dim, bright]), percentiles=(0, 100))
    np.testing.assert_allclose(rgb[1, 3, 3, 1], 1.0)
    np.testing.assert_allclose(rgb[0, 3, 3, 1], 0.25)


def test_explicit_limits_and_nan():
    crop = lit(0)
    crop[0, 0, 0] = np.nan
    rgb = plots.composite_rgb(crop, limits=[[0, 1000], [0, 1], [0, 1]])
    np.testing.assert_allclose(rgb[3, 3], (0, 0, 0.5))
    np.testing.assert_array_equal(rgb[0, 0], 0.0)


def test_contrast_limits():
    batch = np.arange(2 * 1 * 10 * 10, dtype=float).reshape(2, 1, 10, 10)
    np.testing.assert_allclose(plots.contrast_limits(batch, percentiles=(0, 100)), [[0, 199]])
    # Sparse signal: both percentiles land on the background, so min/max are used.
    sparse = np.zeros((1, 100, 100))
    sparse[0, 0, 0] = 7.0
    np.testing.assert_allclose(plots.contrast_limits(sparse), [[0, 7]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": np.zeros((4, 4))}, r"images.*\(4, 4\).*\(C, H, W\)"),
        ({"images": np.zeros((1, 1, 2, 4, 4))}, "images.*expected"),
        ({"images": np.zeros((3, 0, 4))}, "images.*empty"),
        ({"images": np.full((3, 4, 4), "a")}, "images.*dtype"),
        ({"percentiles": (99, 1)}, "percentiles.*low < high"),
        ({"percentiles": (1,)}, "percentiles"),
        ({"limits": np.zeros((2, 2))}, r"limits.*\(3, 2\)"),
    ],
)
def test_composite_validation(kwargs, match):
    args = {"images": np.zeros((3, 4, 4))} | kwargs
    images = args.pop("images")
    with pytest.raises(ValueError, match=match):
        plots.composite_rgb(images, **args)


# ----------------------------------------------------------------------------- segmentation


def test_segmentation_overlay(tmp_path):
    image, labels = fake_field()
    path = tmp_path / "overlay.png"
    plots.plot_segmentation_overlay(image, labels, path, title="A01", channel_names=["DNA", "tubulin", "protein"])
    assert_image_size(read_png(path))


def test_segmentation_overlay_single_channel_2d(tmp_path):
    image, labels = fake_field(n_channels=1)
    path = tmp_path / "overlay.png"
    plots.plot_segmentation_overlay(image[0], labels, path)
    assert_image_size(read_png(path))


def test_segmentation_overlays(tmp_path):
    fields = [fake_field(96, seed=s) for s in range(3)]
    images = [f[0] for f in fields]
    labels = [f[1] for f in fields]
    images[2], labels[2] = images[2][:, :48], labels[2][:48]  # fields may differ in size
    path = tmp_path / "overlays.png"
    plots.plot_segmentation_overlays(images, labels, ["a", "b", "c"], path, title="QC")
    image = read_png(path)
    assert_image_size(image)
    assert image.shape[0] > image.shape[1]  # one row per field


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda im, lab: (im[None], lab), r"images\[0\].*\(C, H, W\)"),
        (lambda im, lab: (im, lab[:-1]), r"labels\[0\].*\(95, 96\).*\(96, 96\)"),
        (lambda im, lab: (im, lab.astype(float)), r"labels\[0\].*integer"),
    ],
)
def test_segmentation_overlay_validation(tmp_path, change, match):
    image, labels = change(*fake_field())
    with pytest.raises(ValueError, match=match):
        plots.plot_segmentation_overlay(image, labels, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_segmentation_overlays_validation(tmp_path):
    image, labels = fake_field()
    with pytest.raises(ValueError, match="names.*lengths 1, 1, 2"):
        plots.plot_segmentation_overlays([image], [labels], ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="channel_names.*expected 3"):
        plots.plot_segmentation_overlays([image], [labels], ["a"], tmp_path / "x.png", channel_names=["DNA"])
    with pytest.raises(ValueError, match=r"images\[1\].*1 channels, expected 3"):
        plots.plot_segmentation_overlays([image, image[:1]], [labels, labels], ["a", "b"], tmp_path / "x.png")


# --------------------------------------------------------------------------------- training


def history(n_epochs: int = 25) -> pd.DataFrame:
    epoch = np.arange(1, n_epochs + 1)
    recon = 1000 * np.exp(-epoch / 4) + 20
    kl = 3 + 10 * (1 - np.exp(-epoch / 5))
    val_recon = recon * 1.1 + np.maximum(epoch - 15, 0) ** 2
    table = pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": recon + kl,
            "val_loss": val_recon + kl,
            "train_recon": recon,
            "val_recon": val_recon,
            "train_kl": kl,
            "val_kl": kl + 0.5,
        }
    )
    table.loc[3, "val_kl"] = np.nan  # an epoch without validation is skipped
    return table


def test_learning_curve(tmp_path):
    path = tmp_path / "curve.png"
    plots.plot_learning_curve(history(), path, title="vae")
    assert_image_size(read_png(path))


def test_learning_curve_train_only_single_epoch(tmp_path):
    path = tmp_path / "curve.png"
    plots.plot_learning_curve(pd.DataFrame({"epoch": [0], "train_loss": [1.5]}), path)
    assert_image_size(read_png(path))


def test_learning_curve_validation(tmp_path):
    with pytest.raises(ValueError, match="history.*'epoch'"):
        plots.plot_learning_curve(history().drop(columns="epoch"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="history.*'train_<term>'"):
        plots.plot_learning_curve(pd.DataFrame({"epoch": [1], "lr": [0.1]}), tmp_path / "x.png")
    with pytest.raises(ValueError, match="history.*'train_loss'.*numbers"):
        plots.plot_learning_curve(pd.DataFrame({"epoch": [1], "train_loss": ["high"]}), tmp_path / "x.png")
    with pytest.raises(TypeError, match="history.*DataFrame"):
        plots.plot_learning_curve({"epoch": [1]}, tmp_path / "x.png")


def test_reconstruction_grid(tmp_path):
    rng = np.random.default_rng(0)
    originals = rng.gamma(2.0, 100.0, size=(6, 3, 32, 32)).astype(np.float32)
    reconstructions = originals * 0.8 + 10
    path = tmp_path / "recon.png"
    plots.plot_reconstruction_grid(
        originals, reconstructions, path, channel_names=["DNA", "tubulin", "protein"], title="t"
    )
    image = read_png(path)
    assert_image_size(image)
    assert image.shape[0] > image.shape[1]  # 8 rows, 6 columns


def test_reconstruction_grid_validation(tmp_path):
    x = np.zeros((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"originals.*\(3, 8, 8\).*\(N, C, H, W\)"):
        plots.plot_reconstruction_grid(x[0], x[0], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"reconstructions.*\(2, 3, 8, 4\).*\(2, 3, 8, 8\)"):
        plots.plot_reconstruction_grid(x, x[..., :4], tmp_path / "x.png")


# ------------------------------------------------------------------------------- embeddings


def test_embedding_mixed_colourings(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    coords = rng.normal(size=(n, 2))
    classes = np.array(["Nucleoli", "ER", "Golgi"], dtype=object)[rng.integers(0, 3, n)]
    classes[:5] = None  # missing values are drawn grey
    colour_by = {
        "class": classes,
        "field": [f"f{i}" for i in rng.integers(0, 40, n)],  # > 20 categories: no legend
        "trajectory": rng.uniform(0, 1, n),
        "plate": rng.integers(1, 4, n),
        "group": pd.Categorical(rng.choice(["a", "b"], n)),
        "flag": rng.random(n) > 0.5,
    }
    path = tmp_path / "embedding.png"
    plots.plot_embedding(coords, colour_by, path, title="vae / latent", axis_label="t-SNE")
    assert_image_size(read_png(path))


def test_embedding_without_colouring_and_large_n(tmp_path):
    path = tmp_path / "embedding.png"
    coords = np.random.default_rng(0).normal(size=(20000, 2))
    plots.plot_embedding(coords, {}, path)
    assert_image_size(read_png(path))


def test_categorical_detection():
    assert _is_categorical(pd.Series(["a", "b"]))
    assert _is_categorical(pd.Series(np.arange(20)))
    assert not _is_categorical(pd.Series(np.arange(21)))
    assert not _is_categorical(pd.Series([0.5, 1.5]))
    assert _is_categorical(pd.Series([True, False]))


def test_embedding_validation(tmp_path):
    coords = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"coords.*\(10, 3\).*\(N, 2\)"):
        plots.plot_embedding(np.zeros((10, 3)), {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="coords.*finite"):
        plots.plot_embedding(np.full((10, 2), np.nan), {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"colour_by\['class'\].*9 values, expected 10"):
        plots.plot_embedding(coords, {"class": ["a"] * 9}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="colour_by.*mapping"):
        plots.plot_embedding(coords, ["a"] * 10, tmp_path / "x.png")


# ---------------------------------------------------------------------------------- metrics


def summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["vae", "pci", "pci", "pca", "random_cnn"],
            "layer": ["latent", "conv3", "conv5", "pixels", "conv5"],
            "accuracy": [0.71, 0.83, 0.79, 0.52, np.nan],
        }
    )


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_metric_bars(tmp_path, higher_is_better):
    path = tmp_path / "bars.png"
    plots.plot_metric_bars(summary(), "accuracy", path, title="accuracy", higher_is_better=higher_is_better)
    assert_image_size(read_png(path), low=100)


def test_metric_bars_negative_values(tmp_path):
    table = summary().assign(accuracy=[-0.2, 0.3, -0.05, 0.1, 0.0])
    path = tmp_path / "bars.png"
    plots.plot_metric_bars(table, "accuracy", path)
    assert_image_size(read_png(path), low=100)


def test_metric_bars_validation(tmp_path):
    with pytest.raises(ValueError, match=r"summary.*missing columns \['f1'\]"):
        plots.plot_metric_bars(summary(), "f1", tmp_path / "x.png")
    with pytest.raises(ValueError, match="metric.*'model'.*numbers"):
        plots.plot_metric_bars(summary().assign(model2=1), "model", tmp_path / "x.png")
    doubled = pd.concat([summary(), summary().iloc[:1]])
    with pytest.raises(ValueError, match="summary.*vae/latent.*more than once"):
        plots.plot_metric_bars(doubled, "accuracy", tmp_path / "x.png")
    with pytest.raises(ValueError, match="summary.*no finite value"):
        plots.plot_metric_bars(summary().assign(accuracy=np.nan), "accuracy", tmp_path / "x.png")
