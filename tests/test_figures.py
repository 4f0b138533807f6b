"""Tests for the figures package beyond test_plots.py: the channel-colour rule by role, shared by
the report figures and the explorer page (thumbnails and colour legend), and the one style."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.layout_engine import ConstrainedLayoutEngine
from PIL import Image

from workflow_scripts import figures
from workflow_scripts.datasets import HPA_CHANNELS, HPA_YELLOW, SYNTHETIC_CHANNELS
from workflow_scripts.explorer import build_explorer, channel_legend_html, thumbnails
from workflow_scripts.figures import channels, style


def lit(channel: int, n_channels: int, size: int = 8) -> np.ndarray:
    """Return a crop where only ``channel`` has signal (a bright square on a dark background)."""
    crop = np.zeros((n_channels, size, size))
    crop[channel, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 500.0
    return crop


# ------------------------------------------------------------------------- the rule by role


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["nucleus", "structure", "protein"], ["blue", "red", "green"]),
        (["protein", "nucleus", "structure"], ["green", "blue", "red"]),
        (["nucleus", "structure", "protein", "other"], ["blue", "red", "green", "cyan"]),
        (["other", "other", "other"], ["cyan", "yellow", "magenta"]),
        (["nucleus", "nucleus", "protein"], ["blue", "cyan", "green"]),
        (["nucleus", "protein"], ["magenta", "green"]),
        (["protein", "structure"], ["green", "magenta"]),
        (["other"], ["white"]),
        (["banana", "nucleus", "protein"], ["cyan", "blue", "green"]),  # unknown role: other
    ],
)
def test_colour_follows_the_role_not_the_position(roles, expected):
    assert figures.channel_colour_names(len(roles), roles) == expected


def test_without_roles_the_synthetic_order_is_assumed():
    for n in range(1, 10):
        assert figures.channel_colour_names(n) == figures.channel_colour_names(n, figures.default_roles(n))
    assert figures.default_roles(3) == [c["role"] for c in SYNTHETIC_CHANNELS]


def test_the_hpa_channels_get_the_hpa_colours():
    described = [*HPA_CHANNELS, HPA_YELLOW]
    names = figures.channel_colour_names(4, [c["role"] for c in described])
    assert names == ["blue", "red", "green", "cyan"]


def test_colours_are_distinct_until_they_cycle():
    for n in range(1, 11):  # three role colours and seven extras
        assert len({tuple(c) for c in figures.channel_colours(n)}) == n
    for n in range(3, 8):  # the seven extras alone
        assert len({tuple(c) for c in figures.channel_colours(n, ["other"] * n)}) == n


@pytest.mark.parametrize(("n", "roles"), [(3, ["nucleus"]), (1, "nucleus"), (2, ["a", "b", "c"])])
def test_roles_must_be_one_per_channel(n, roles):
    with pytest.raises(ValueError, match="roles"):
        figures.channel_colours(n, roles)


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_channel_count_is_checked(n):
    with pytest.raises(ValueError, match="n_channels"):
        figures.channel_colours(n)


def test_composite_colours_channels_by_role():
    roles = ["other", "protein", "nucleus"]
    np.testing.assert_allclose(figures.composite_rgb(lit(0, 3), roles=roles)[4, 4], (0, 1, 1))  # cyan
    np.testing.assert_allclose(figures.composite_rgb(lit(1, 3), roles=roles)[4, 4], (0, 1, 0))  # green
    np.testing.assert_allclose(figures.composite_rgb(lit(2, 3), roles=roles)[4, 4], (0, 0, 1))  # blue


def test_hex_colours():
    assert channels.hex_colour("blue") == "#0000ff"
    assert channels.hex_colour("white") == "#ffffff"
    assert len({channels.hex_colour(name) for name in channels.COLOURS}) == len(channels.COLOURS)


# --------------------------------------------------------- the explorer uses the same rule


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


@pytest.mark.parametrize(
    "roles", [["nucleus", "structure", "protein"], ["protein", "other", "nucleus"], ["nucleus", "protein"]]
)
def test_thumbnails_have_the_report_colours(roles):
    n = len(roles)
    crops = np.stack([lit(c, n, size=32) for c in range(n)])
    uris = thumbnails(crops, roles, size=32)
    report = figures.composite_rgb(crops, roles=roles)
    for c, uri in enumerate(uris):
        centre = _decode(uri)[16, 16].astype(float) / 255
        np.testing.assert_allclose(centre, report[c, 16, 16], atol=0.12)
        assert centre.max() > 0.8  # the colour is there, not a grey


def test_thumbnails_need_one_role_per_channel():
    with pytest.raises(ValueError, match="roles"):
        thumbnails(np.zeros((2, 3, 8, 8)), ["nucleus", "protein"])
    with pytest.raises(ValueError, match="crops"):
        thumbnails(np.zeros((3, 8, 8)), ["nucleus", "structure", "protein"])


def test_legend_lists_every_channel_escaped():
    text = channel_legend_html(3, ["DNA <Hoechst>", 'tub"ulin', "GFP & co"], ["nucleus", "structure", "protein"])
    assert "DNA &lt;Hoechst&gt; (nucleus): blue" in text
    assert "tub&quot;ulin (structure): red" in text
    assert "GFP &amp; co (protein): green" in text
    assert "<Hoechst>" not in text
    assert re.findall(r"background:(#[0-9a-f]{6})", text) == ["#0000ff", "#ff0000", "#00ff00"]


def test_legend_defaults():
    text = channel_legend_html(2)
    assert "channel 0 (nucleus): magenta" in text and "channel 1 (structure): green" in text
    with pytest.raises(ValueError, match="channel_names"):
        channel_legend_html(2, ["only one"])


def _page(tmp_path, **kwargs):
    rng = np.random.default_rng(0)
    n = 30
    table = pd.DataFrame(
        {
            "Metadata_cell": [f"c{i}" for i in range(n)],
            "Metadata_class": rng.choice(["a", "b"], n),
            "Metadata_group": rng.choice(["g1", "g2"], n),
            "Metadata_<odd>": rng.choice(["u", "v"], n),
            "local_quality": rng.random(n),
        }
    )
    crops = rng.random((n, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "page.html"
    build_explorer(
        rng.normal(size=(n, 2)), table, thumbnails(crops, ["nucleus", "structure", "protein"]), path,
        title="demo", **kwargs,
    )  # fmt: skip
    return path.read_text(encoding="utf-8")


def test_explorer_page_has_a_colour_legend(tmp_path):
    page = _page(
        tmp_path, channel_names=["DNA <b>", "tubulin", "GFP"], channel_roles=["nucleus", "structure", "protein"]
    )
    assert "channel_legend" in page and "Crop colours" in page
    # The Div's text travels in Bokeh's JSON, itself HTML-escaped in the page: the channel name
    # is escaped once by the legend and once more by Bokeh, never raw.
    assert "DNA &amp;lt;b&amp;gt; (nucleus): blue" in page
    assert "DNA <b>" not in page
    assert "#ff0000" in page and "#00ff00" in page
    assert "&amp;lt;odd&amp;gt;" in page  # metadata names in the tooltip are escaped too


def test_explorer_page_without_channels_has_no_legend(tmp_path):
    page = _page(tmp_path)
    assert "channel_legend" not in page


def test_explorer_checks_its_inputs(tmp_path):
    table = pd.DataFrame({"Metadata_cell": ["a"], "Metadata_class": ["x"]})
    with pytest.raises(ValueError, match="Metadata_group"):
        build_explorer(np.zeros((1, 2)), table, ["u"], tmp_path / "p.html", title="t")
    with pytest.raises(ValueError, match="must agree"):
        build_explorer(np.zeros((2, 2)), table, ["u"], tmp_path / "p.html", title="t")


# ------------------------------------------------------------------------- report figures


def test_report_figures_take_roles(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(90, 110, size=(2, 48, 48)).astype(np.uint16)
    labels = np.zeros((48, 48), np.int32)
    labels[10:20, 10:20] = 1
    figures.plot_segmentation_overlay(
        image, labels, tmp_path / "o.png", channel_roles=["protein", "nucleus"], nucleus_channel=1
    )
    batch = rng.gamma(2.0, 100.0, size=(3, 2, 16, 16))
    figures.plot_reconstruction_grid(batch, batch, tmp_path / "r.png", channel_roles=["nucleus", "protein"])
    for name in ("o.png", "r.png"):
        assert matplotlib.image.imread(tmp_path / name).shape[0] > 100
    with pytest.raises(ValueError, match="roles"):
        figures.plot_reconstruction_grid(batch, batch, tmp_path / "x.png", channel_roles=["nucleus"])
    assert not (tmp_path / "x.png").exists()


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["vae", "pca", "vae"],
            "layer": ["mu", "pixels", "conv"],
            "kind": ["learned", "baseline", "learned"],
            "accuracy": [0.8, 0.5, np.nan],
            "loss": [np.nan, np.nan, np.nan],
            "error": [0.1, 0.3, 0.2],
        }
    )


@pytest.mark.parametrize(
    "draw",
    [
        lambda p: figures.plot_metric_grid(
            _summary(), ["accuracy", "loss", "error"], p, lower_is_better=("error",), title="t"
        ),
        lambda p: figures.plot_confusion_matrices(
            [("vae/mu", ["a", "b"], [[3, 1], [0, 4]]), ("pca", ["a", "b"], [[2, 2], [1, 3]])], p
        ),
        lambda p: figures.plot_metric_bars(_summary(), "accuracy", p),
        lambda p: figures.plot_message("nothing to draw", p),
        lambda p: figures.plot_learning_curve(pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0]}), p),
        lambda p: figures.plot_embedding(np.random.default_rng(0).normal(size=(40, 2)), {"k": ["a", "b"] * 20}, p),
    ],
)
def test_every_figure_uses_constrained_layout(tmp_path, monkeypatch, draw):
    seen = []
    original = style.save_figure

    def spy(fig, path, dpi=110):
        seen.append((isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine), dpi))
        original(fig, path, dpi=dpi)

    monkeypatch.setattr(style, "save_figure", spy)
    draw(tmp_path / "f.png")
    assert seen == [(True, style.DPI)]
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_metric_grid_and_confusion_validation(tmp_path):
    with pytest.raises(ValueError, match="no metric column"):
        figures.plot_metric_grid(_summary(), ["loss"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no panel"):
        figures.plot_confusion_matrices([], tmp_path / "x.png")
