import json

import numpy as np
import pytest
import torch

from workflow_scripts.models.registry import build_model, load_trained, save_trained
from workflow_scripts.models.spec import layer_names
from workflow_scripts.models.vae import VAE

PARAMS = {"family": "vae", "latent_dim": 8, "width": 8, "depth": 4, "likelihood": "gaussian", "beta": 1.0}


@pytest.mark.parametrize("channels", [1, 3, 7])
@pytest.mark.parametrize("size", [64, 128])
def test_vae_shapes(channels, size):
    model = build_model("vae", channels, size, PARAMS).eval()
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out["out"].shape == x.shape
    assert out["mu"].shape == (2, 8)
    maps = model.feature_maps(x)
    assert list(maps) == layer_names("vae", PARAMS) == ["conv1", "conv2", "conv3", "conv4", "mu"]
    assert maps["conv1"].shape == (2, 8, size // 2, size // 2)
    assert maps["conv4"].shape == (2, 64, size // 16, size // 16)
    assert maps["mu"].shape == (2, 8)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_vae_loss_decreases(likelihood):
    torch.manual_seed(0)
    model = VAE(3, 32, latent_dim=4, width=8, depth=3, likelihood=likelihood)
    x = torch.rand(16, 3, 32, 32)
    x[:, :, 8:24, 8:24] += 1.0
    if likelihood == "bernoulli":
        x = (x > 0.9).float()  # binarised inputs, as the Bernoulli likelihood expects
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        terms = model.loss_terms(x, model(x))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(float(terms["loss"].detach()))
    assert set(terms) == {"loss", "recon", "kl", "mse"}
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_gaussian_nll_matches_torch():
    model = VAE(2, 16, latent_dim=2, width=4, depth=2)
    with torch.no_grad():
        model.likelihood.log_scale.copy_(torch.tensor([0.3, -0.2]))
    x = torch.randn(3, 2, 16, 16)
    out = model(x)
    terms = model.loss_terms(x, out)
    sigma = torch.exp(model.likelihood.log_scale).view(1, -1, 1, 1).expand_as(x)
    expected = -torch.distributions.Normal(out["out"], sigma).log_prob(x).flatten(1).sum(1).mean()
    assert torch.allclose(terms["recon"], expected, rtol=1e-5)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(out["mu"], torch.exp(0.5 * out["logvar"])), torch.distributions.Normal(0.0, 1.0)
    )
    assert torch.allclose(terms["kl"], kl.sum(1).mean(), rtol=1e-5)


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="input_size"):
        VAE(3, 60, depth=4)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(3, 64, likelihood="poisson")
    with pytest.raises(ValueError, match="family"):
        build_model("gan9000", 3, 64, PARAMS)


def test_safetensors_round_trip(tmp_path):
    model = build_model("vae", 3, 64, PARAMS).eval()
    weights, config = tmp_path / "w.safetensors", tmp_path / "model.json"
    save_trained(model, model.state_dict(), weights, config, {"family": "vae", "in_channels": 3, "input_size": 64, "params": PARAMS})
    assert json.loads(config.read_text())["layers"] == layer_names("vae", PARAMS)
    loaded, record = load_trained(weights, config)
    x = torch.randn(2, 3, 64, 64)
    for name, value in model.feature_maps(x).items():
        assert torch.equal(value, loaded.feature_maps(x)[name])
    # safetensors holds tensors only: no pickle is involved in loading.
    assert weights.read_bytes()[8:9] == b"{"


@pytest.mark.parametrize("family", ["ae", "scvae"])
@pytest.mark.parametrize("channels", [1, 3, 7])
def test_ae_and_scvae_shapes(family, channels):
    params = {"latent_dim": 8, "width": 8, "depth": 3, "likelihood": "gaussian", "beta": 1.0}
    model = build_model(family, channels, 64, params).eval()
    x = torch.randn(2, channels, 64, 64)
    assert model.reconstruct(x).shape == x.shape
    maps = model.feature_maps(x)
    assert list(maps) == layer_names(family, params)
    assert maps[layer_names(family, params)[-1]].shape == (2, 8)


def test_scvae_blocks_carry_skip_connections():
    plain = build_model("vae", 3, 64, PARAMS)
    skip = build_model("scvae", 3, 64, PARAMS)
    assert all(block.skip is None for block in plain.encoder.blocks)
    assert all(block.skip is not None for block in skip.encoder.blocks)
    assert all(block.skip is not None for block in skip.decoder.blocks)
    assert skip.family == "scvae"


@pytest.mark.parametrize("family", ["ae", "scvae"])
def test_ae_scvae_loss_decreases(family):
    torch.manual_seed(0)
    model = build_model(family, 2, 32, {"latent_dim": 4, "width": 8, "depth": 3})
    x = torch.rand(16, 2, 32, 32)
    x[:, :, 8:24, 8:24] += 1.0
    opts = model.configure_optimizers(3e-3, 0.0)
    first = [float(model.training_step(x, opts, torch.autocast("cpu", enabled=False))["loss"]) for _ in range(3)]
    for _ in range(25):
        last = float(model.training_step(x, opts, torch.autocast("cpu", enabled=False))["loss"])
    assert last < 0.8 * np.mean(first)
