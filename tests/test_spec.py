import pytest

from workflow_scripts.models.spec import (
    FAMILIES,
    feature_layers,
    layer_names,
    resolve_model,
    split_feature_layer,
)


def test_resolution_order_defaults_preset_entry():
    quick = resolve_model("m", {"family": "vae"})
    assert quick["width"] == 32 and quick["depth"] == 4 and quick["input"] == "cells"
    full = resolve_model("m", {"family": "vae", "preset": "full"})
    assert full["depth"] == 5 and full["epochs"] == 100
    mine = resolve_model("m", {"family": "vae", "preset": "full", "depth": 3})
    assert mine["depth"] == 3
    assert resolve_model("g", {"family": "adversarial"})["lr"] == 2e-4
    assert resolve_model("g", {"family": "adversarial"})["mi_weight"] == 1.0
    assert resolve_model("g", {"family": "adversarial", "gan_loss": "wgan-gp"})["mi_weight"] == 10.0
    assert resolve_model("g", {"family": "adversarial", "gan_loss": "wgan-gp", "mi_weight": 2})["mi_weight"] == 2
    assert list(quick) == sorted(quick)  # canonical order: reordering keys never looks like a change


def test_keys_of_other_families_rejected_by_name():
    with pytest.raises(ValueError, match="'bound'"):
        resolve_model("m", {"family": "vae", "bound": "nwj"})
    with pytest.raises(ValueError, match="models.m.family"):
        resolve_model("m", {"family": "transformer"})
    with pytest.raises(ValueError, match="preset"):
        resolve_model("m", {"family": "ae", "preset": "huge"})
    with pytest.raises(ValueError, match="models.p.pair_within"):
        resolve_model("p", {"family": "paired_inpainting", "pair_within": None})


def test_normalize_defaults_per_family():
    assert resolve_model("m", {"family": "vae"})["normalize"] == "cell"
    assert resolve_model("m", {"family": "paired_inpainting"})["normalize"] == "cell"
    assert resolve_model("m", {"family": "contrastive"})["normalize"] == "cell"
    assert resolve_model("m", {"family": "vae", "normalize": "field"})["normalize"] == "field"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_layers(family):
    params = resolve_model("m", {"family": family})
    names = layer_names(family, params)
    assert len(names) >= 4 and len(set(names)) == len(names)


def test_pooling_variants():
    params = resolve_model("m", {"family": "vae", "depth": 2})
    assert feature_layers("vae", params, ["mean"]) == ["conv1", "conv2", "mu"]
    assert feature_layers("vae", params, ["max", "mean"]) == ["conv1", "conv1_mean", "conv2", "conv2_mean", "mu"]
    assert split_feature_layer("conv2_mean", ["max", "mean"]) == ("conv2", "mean")
    assert split_feature_layer("conv2", ["max", "mean"]) == ("conv2", "max")
    assert split_feature_layer("mu", ["max", "mean"]) == ("mu", "max")
