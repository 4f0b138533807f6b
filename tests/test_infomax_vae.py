import copy

import numpy as np
import pytest
import torch

from workflow_scripts.models.infomax_vae import InfoMaxVAE

NO_AUTOCAST = torch.autocast("cpu", enabled=False)
SMALL = {"latent_dim": 8, "width": 8, "depth": 3, "critic_dim": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def blobs(n, size=32, channels=3, seed=0):
    """Noise plus one bright square per image at a random place and intensity."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, channels, size, size, generator=g)
    side = size // 4
    pos = torch.randint(0, size - side, (n, 2), generator=g)
    level = 2 * torch.rand(n, generator=g)
    for i in range(n):
        x[i, :, pos[i, 0] : pos[i, 0] + side, pos[i, 1] : pos[i, 1] + side] += level[i]
    return x


def state(module):
    """Parameters and buffers (batch-norm statistics)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("channels", [1, 3, 7])
@pytest.mark.parametrize("size", [64, 128])
def test_shapes(channels, size):
    torch.manual_seed(0)
    model = InfoMaxVAE(channels, size, latent_dim=8, width=8, depth=4, critic_dim=16).eval()
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out["out"].shape == x.shape
    assert out["mu"].shape == out["z"].shape == (2, 8)
    assert model.reconstruct(x).shape == x.shape
    maps = model.feature_maps(x)
    assert list(maps) == model.layer_names == ["conv1", "conv2", "conv3", "conv4", "mu"]
    assert maps["conv1"].shape == (2, 8, size // 2, size // 2)
    assert maps["conv4"].shape == (2, 64, size // 16, size // 16)
    assert maps["mu"].shape == (2, 8)
    assert model.critic(x, out["z"]).shape == (2, 2)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_layer_names_are_the_vaes(depth):
    model = InfoMaxVAE(3, 64, latent_dim=4, width=4, depth=depth, critic_dim=8)
    assert model.layer_names == [f"conv{i}" for i in range(1, depth + 1)] + ["mu"]
    assert model.family == "infomax_vae"


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="bound"):
        InfoMaxVAE(3, 64, bound="dv")
    with pytest.raises(ValueError, match="alpha"):
        InfoMaxVAE(3, 64, bound="interpolated", alpha=-0.1)
    with pytest.raises(ValueError, match="mi_weight"):
        InfoMaxVAE(3, 64, mi_weight=-1)
    with pytest.raises(ValueError, match="critic_lr_factor"):
        InfoMaxVAE(3, 64, critic_lr_factor=0)
    with pytest.raises(ValueError, match="critic_dim"):
        InfoMaxVAE(3, 64, critic_dim=0)
    with pytest.raises(ValueError, match="input_size"):
        InfoMaxVAE(3, 60, depth=4)


@pytest.mark.parametrize("bound", ["infonce", "interpolated"])
def test_optimizers_split_the_parameters(bound):
    model = InfoMaxVAE(3, 32, bound=bound, **SMALL)
    opts = model.configure_optimizers(1e-3, 0.01)
    assert set(opts) == {"model", "critic"}
    model_params = {id(p) for g in opts["model"].param_groups for p in g["params"]}
    critic_params = {id(p) for g in opts["critic"].param_groups for p in g["params"]}
    assert not model_params & critic_params
    assert model_params | critic_params == {id(p) for p in model.parameters()}
    assert model_params == {id(p) for p in model.vae.parameters()}
    assert opts["critic"].param_groups[0]["lr"] == pytest.approx(5e-3)
    assert opts["model"].param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("bound", ["infonce", "nwj", "interpolated"])
def test_training_step_updates_each_player_with_its_own_gradients(bound):
    torch.manual_seed(0)
    model = InfoMaxVAE(3, 32, bound=bound, **SMALL).train()
    opts = model.configure_optimizers(1e-3, 0.0)
    x = blobs(16)
    model.training_step(x, opts, NO_AUTOCAST)  # Adam state exists from here on
    vae_before, critic_before = params(model.vae), state(model.critic)
    seen = {}
    critic_step = opts["critic"].step

    def spy_critic_step(*args, **kwargs):
        seen["vae_grads"] = [p.grad for p in model.vae.parameters()]
        result = critic_step(*args, **kwargs)
        seen["vae"] = params(model.vae)
        seen["critic"] = state(model.critic)
        seen["critic_grads"] = [p.grad.clone() for p in model.critic_parameters()]
        return result

    opts["critic"].step = spy_critic_step
    terms = model.training_step(x, opts, NO_AUTOCAST)
    assert set(terms) == {"loss", "recon", "kl", "mi", "mse"}
    assert all(torch.isfinite(v) for v in terms.values())
    # (a) the critic step sees no VAE gradients and leaves the VAE alone ...
    assert all(g is None for g in seen["vae_grads"])
    assert same(seen["vae"], vae_before)
    assert not same(seen["critic"], critic_before)
    # (b) ... and the model step changes the VAE but neither the critic's weights, its batch-norm
    # statistics nor the gradients the critic optimizer stepped with.
    assert not same(params(model.vae), vae_before)
    assert same(state(model.critic), seen["critic"])
    assert all(torch.equal(p.grad, g) for p, g in zip(model.critic_parameters(), seen["critic_grads"]))
    assert all(p.requires_grad for p in model.critic_parameters())


def test_training_reduces_loss_and_learns_mi():
    torch.manual_seed(0)
    model = InfoMaxVAE(3, 32, bound="infonce", **SMALL).train()
    opts = model.configure_optimizers(2e-3, 0.0)
    x, x_val = blobs(256), blobs(64, seed=1)
    g = torch.Generator().manual_seed(0)
    losses, mis = [], []
    for _ in range(50):
        terms = model.training_step(x[torch.randint(0, 256, (32,), generator=g)], opts, NO_AUTOCAST)
        losses.append(float(terms["loss"]))
        mis.append(float(terms["mi"]))
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])  # measured: 0.86
    assert np.mean(mis[-5:]) > 0.5 > np.mean(mis[:5])
    model.eval()
    with torch.no_grad():
        val = model.loss_terms(x_val[:32], model(x_val[:32]))
    assert set(val) == {"loss", "recon", "kl", "mi", "mse"}
    assert float(val["mi"]) > 0.5
    assert float(val["loss"]) == pytest.approx(float(val["recon"] + model.vae.beta * val["kl"] - val["mi"]), rel=1e-5)


def test_validation_terms():
    torch.manual_seed(0)
    model = InfoMaxVAE(2, 32, bound="interpolated", alpha=0.3, mi_weight=2.5, beta=0.5, **SMALL).eval()
    x = blobs(8, channels=2)
    with torch.no_grad():
        out = model(x)
        terms = model.loss_terms(x, out)
        again = model.loss_terms(x, model(x))
    assert torch.equal(out["z"], out["mu"])  # deterministic validation
    assert set(terms) == {"loss", "recon", "kl", "mi", "mse"}
    assert all(not v.requires_grad and v.ndim == 0 for v in terms.values())
    assert float(terms["loss"]) == pytest.approx(
        float(terms["recon"] + 0.5 * terms["kl"] - 2.5 * terms["mi"]), rel=1e-5
    )
    assert all(torch.equal(terms[k], again[k]) for k in terms)
    with torch.no_grad():
        single = model.loss_terms(x[:1], model(x[:1]))
    assert float(single["mi"]) == 0.0  # no negatives in a batch of one


def test_default_training_step_path_is_overridden():
    """A model copied for the best weights keeps both players; state dict round-trips."""
    torch.manual_seed(0)
    model = InfoMaxVAE(3, 32, bound="interpolated", **SMALL)
    clone = InfoMaxVAE(3, 32, bound="interpolated", **SMALL)
    clone.load_state_dict(copy.deepcopy(model.state_dict()))
    x = blobs(4)
    model.eval()
    clone.eval()
    with torch.no_grad():
        a, b = model.loss_terms(x, model(x)), clone.loss_terms(x, clone(x))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "critic_log_baseline" in model.state_dict()


@pytest.mark.parametrize("bound", ["infonce", "nwj", "interpolated"])
def test_training_step_under_bf16_autocast(bound):
    """The loop runs CUDA batches under bf16 autocast; the bound's scores stay float32."""
    torch.manual_seed(0)
    model = InfoMaxVAE(3, 32, bound=bound, **SMALL)
    opts = model.configure_optimizers(1e-3, 0.0)
    for _ in range(2):
        terms = model.training_step(blobs(8), opts, torch.autocast("cpu", dtype=torch.bfloat16))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
