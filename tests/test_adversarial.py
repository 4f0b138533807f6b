import contextlib

import numpy as np
import pytest
import torch

from tests.sources import ArraySource
from workflow_scripts.models.adversarial import AdversarialNet, gradient_penalty

NULL = contextlib.nullcontext()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny(gan_loss="bce", **kw):
    kw = {"latent_dim": 8, "width": 8, "depth": 3, "gan_loss": gan_loss, **kw}
    return AdversarialNet(3, 32, **kw)


def tiny_data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.3
    x[:, :, 8:24, 8:24] += 1.0
    return x


@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
@pytest.mark.parametrize("channels", [1, 3, 7])
@pytest.mark.parametrize("size", [64, 128])
def test_shapes(gan_loss, channels, size):
    model = AdversarialNet(channels, size, latent_dim=8, width=8, depth=4, gan_loss=gan_loss).eval()
    x = torch.randn(2, channels, size, size)
    assert model.layer_names == ["conv1", "conv2", "conv3", "conv4", "z"]
    maps = model.feature_maps(x)
    assert list(maps) == model.layer_names
    for i, c in enumerate([8, 16, 32, 64]):
        s = size // 2 ** (i + 1)
        assert maps[f"conv{i + 1}"].shape == (2, c, s, s)
    assert maps["z"].shape == (2, 8)
    assert model.sample(3).shape == (3, channels, size, size)
    assert model.reconstruct(x).shape == x.shape
    out = model(x)
    assert out["logit"].shape == (2,) and out["z"].shape == (2, 8) and out["recon"].shape == x.shape
    with torch.no_grad():
        terms = model.loss_terms(x, out)
    assert {"loss", "mi_loss", "recon", "d_loss", "g_loss", "d_real", "d_fake"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    # Validation uses a fixed set of z: the same numbers twice.
    with torch.no_grad():
        again = model.loss_terms(x, model(x))
    assert torch.equal(terms["loss"], again["loss"])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="gan_loss"):
        AdversarialNet(3, 64, gan_loss="hinge")
    with pytest.raises(ValueError, match="divisible"):
        AdversarialNet(3, 40, depth=4)
    with pytest.raises(ValueError, match="label_smoothing"):
        AdversarialNet(3, 64, label_smoothing=0.5)
    with pytest.raises(ValueError, match="n_critic"):
        AdversarialNet(3, 64, n_critic=0)


@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
def test_trunk_features_do_not_depend_on_batch_or_mode(gan_loss):
    bn = torch.nn.modules.batchnorm._BatchNorm
    model = tiny(gan_loss)
    assert not any(isinstance(m, bn) for m in model.trunk.modules())
    x = tiny_data(6)
    train_maps = model.train().feature_maps(x)
    eval_maps = model.eval().feature_maps(x)
    alone = model.feature_maps(x[:1])
    for name in model.layer_names:
        assert torch.allclose(train_maps[name], eval_maps[name], atol=1e-6)
        assert torch.allclose(alone[name], eval_maps[name][:1], atol=1e-5)


def _linear_critic(w):
    return lambda x: (x * w).flatten(1).sum(1)


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_linear_critic(norm, expected):
    torch.manual_seed(0)
    w = torch.randn(1, 3, 8, 8)
    w = w / w.norm() * norm
    real, fake = torch.randn(5, 3, 8, 8), torch.randn(5, 3, 8, 8)
    gp = gradient_penalty(_linear_critic(w), real, fake)
    assert gp.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_penalty_zero_gradient_is_finite():
    w = torch.zeros(1, 3, 8, 8, requires_grad=True)
    gp = gradient_penalty(_linear_critic(w), torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    assert torch.isfinite(gp) and gp.item() == pytest.approx(1.0, abs=1e-5)
    gp.backward()
    assert torch.isfinite(w.grad).all()


def test_gradient_penalty_interpolates_per_sample():
    # A critic whose gradient norm depends on x: |grad| = 2|x| per sample for f = sum x^2.
    # With real == fake the interpolation coefficient cannot matter.
    x = torch.full((3, 1, 2, 2), 0.25)  # grad = 0.5 per pixel, norm = 0.5 * 2 = 1
    gp = gradient_penalty(lambda v: v.pow(2).flatten(1).sum(1), x, x.clone())
    assert gp.item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_penalty_on_model_critic():
    torch.manual_seed(0)
    model = tiny("wgan-gp")
    gp = gradient_penalty(model.critic, tiny_data(4), model.sample(4))
    gp.backward()
    assert torch.isfinite(gp)
    assert all(torch.isfinite(p.grad).all() for p in model.trunk.parameters() if p.grad is not None)


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(module, before):
    return any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))


@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
def test_training_steps_update_both_players(gan_loss):
    torch.manual_seed(0)
    model = tiny(gan_loss, n_critic=2).train()
    opts = model.configure_optimizers(1e-3, 0.0)
    assert set(opts) == {"generator", "discriminator"}
    x = tiny_data(8)
    g0, d0 = _snapshot(model.generator), [p.detach().clone() for p in model.discriminator_parameters()]
    terms = model.training_step(x, opts, NULL)
    # First call: discriminator only (n_critic = 2).
    assert not _changed(model.generator, g0)
    assert any(not torch.equal(p, q) for p, q in zip(model.discriminator_parameters(), d0))
    terms = model.training_step(x, opts, NULL)
    assert _changed(model.generator, g0)
    expected = {"d_loss", "g_loss", "mi_loss", "d_real", "d_fake", "recon", "loss"}
    if gan_loss == "wgan-gp":
        expected.add("gp")
    assert set(terms) == expected
    for _ in range(3):
        terms = model.training_step(x, opts, NULL)
    assert all(torch.isfinite(v) and not v.requires_grad for v in terms.values())
    assert int(model.step_count) == 5


@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
def test_latent_recovery_improves(gan_loss):
    torch.manual_seed(0)
    model = tiny(gan_loss).train()
    opts = model.configure_optimizers(2e-3, 0.0)
    x = tiny_data(16)
    mi = [float(model.training_step(x, opts, NULL)["mi_loss"]) for _ in range(40)]
    assert np.mean(mi[-5:]) < 0.6 * np.mean(mi[:5])


def test_step_counter_survives_state_dict():
    torch.manual_seed(0)
    model = tiny("wgan-gp", n_critic=3).train()
    opts = model.configure_optimizers(1e-3, 0.0)
    x = tiny_data(4)
    for _ in range(2):
        model.training_step(x, opts, NULL)
    state = model.state_dict()
    assert int(state["step_count"]) == 2
    restored = tiny("wgan-gp", n_critic=3).train()
    restored.load_state_dict(state)
    assert int(restored.step_count) == 2
    # The third call (counter 2) is a generator step in the restored model.
    opts = restored.configure_optimizers(1e-3, 0.0)
    before = _snapshot(restored.generator)
    restored.training_step(x, opts, NULL)
    assert _changed(restored.generator, before)
    # and safetensors (what the workflow writes) keeps the scalar buffer
    safetensors = pytest.importorskip("safetensors.torch")
    loaded = safetensors.load(safetensors.save({k: v.contiguous() for k, v in restored.state_dict().items()}))
    assert int(loaded["step_count"]) == 3




@pytest.mark.parametrize("gan_loss", ["bce", "wgan-gp"])
def test_fit_and_resume(tmp_path, gan_loss):
    """The training loop runs the family; a killed run resumes to the same weights (CPU)."""
    from workflow_scripts.training.loop import TrainSettings, fit, load_checkpoint

    def make():
        torch.manual_seed(0)
        return AdversarialNet(2, 16, latent_dim=4, width=4, depth=2, gan_loss=gan_loss, n_critic=2)

    rng = np.random.default_rng(0)
    train, val = (rng.normal(size=(n, 2, 16, 16)).astype(np.float32) for n in (48, 16))
    settings = TrainSettings(epochs=3, batch_size=16, lr=1e-3, seed=3)
    cpu = torch.device("cpu")
    full = fit(make(), ArraySource(train), ArraySource(val), settings, device=cpu)
    h = full.history
    for col in ("train_loss", "val_loss", "train_d_loss", "train_g_loss", "val_mi_loss", "val_recon"):
        assert col in h.columns and np.isfinite(h[col]).all(), col
    assert int(full.best_state["step_count"]) == 3 * full.best_epoch  # 3 batches per epoch
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):  # 3 training + 1 validation batch per epoch: dies in epoch 2
        fit(
            make(),
            ArraySource(train, fail_after=5),
            ArraySource(val),
            settings,
            checkpoint=ckpt,
            fingerprint="x",
            device=cpu,
        )
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = fit(make(), ArraySource(train), ArraySource(val), settings, checkpoint=ckpt, fingerprint="x", device=cpu)
    assert resumed.resumed_from == 1
    for key in full.best_state:
        assert torch.equal(full.best_state[key], resumed.best_state[key]), key


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_registry_build_and_saved_weights(tmp_path, preset):
    """The registry builds the family from a resolved config entry (layer names agree with the
    spec) and the safetensors weights, step counter included, round-trip."""
    from workflow_scripts.models.registry import build_model, load_trained, save_trained
    from workflow_scripts.models.spec import resolve_model

    params = resolve_model("gan", {"family": "adversarial", "preset": preset})
    model = build_model("adversarial", 3, 64, params)
    assert isinstance(model, AdversarialNet)
    if preset == "quick":
        model.train()
        opts = model.configure_optimizers(1e-4, 0.0)
        model.training_step(torch.randn(4, 3, 64, 64), opts, NULL)
    record = {"family": "adversarial", "in_channels": 3, "input_size": 64, "params": params}
    save_trained(model, model.state_dict(), tmp_path / "w.safetensors", tmp_path / "model.json", record)
    loaded, _ = load_trained(tmp_path / "w.safetensors", tmp_path / "model.json")
    assert int(loaded.step_count) == int(model.step_count)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    for name, value in model.feature_maps(x).items():
        assert torch.equal(value, loaded.feature_maps(x)[name]), name
