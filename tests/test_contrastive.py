import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.sources import ArraySource
from workflow_scripts.config_check import config_errors
from workflow_scripts.features import extract_features
from workflow_scripts.models.contrastive import (
    ContrastiveNet,
    ViewAugment,
    affine_warp,
    gaussian_blur,
    intensity_jitter,
    nt_xent,
)
from workflow_scripts.models.registry import build_model
from workflow_scripts.models.spec import PRESETS, feature_layers, layer_names, resolve_model
from workflow_scripts.training.loop import TrainSettings, fit, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SMALL = {"width": 4, "depth": 2, "embed_dim": 16, "proj_dim": 8}
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def two_classes(n=64, size=16, seed=0):
    """Noise plus, for the first half, a bright square in channel 0; for the second half, a
    thin bright ring in channel 1 (two classes the views do not turn into each other)."""
    rng = np.random.default_rng(seed)
    x = 0.2 * rng.normal(size=(n, 2, size, size)).astype(np.float32)
    c = size // 2
    x[: n // 2, 0, c - 3 : c + 3, c - 3 : c + 3] += 2.0
    yy, xx = np.mgrid[:size, :size]
    ring = (np.abs(np.hypot(yy - c + 0.5, xx - c + 0.5) - size / 4) < 1).astype(np.float32)
    x[n // 2 :, 1] += 2.0 * ring
    return x


def make(**kwargs):
    torch.manual_seed(0)
    return ContrastiveNet(2, 16, **{**SMALL, **kwargs})


# -- configuration ----------------------------------------------------------------------


def test_resolve_defaults_presets_and_unknown_keys():
    quick = resolve_model("c", {"family": "contrastive"})
    assert (quick["batch_size"], quick["lr"], quick["epochs"], quick["temperature"]) == (128, 1e-3, 20, 0.2)
    assert (quick["normalize"], quick["pair_within"]) == ("cell", "Metadata_group")
    assert resolve_model("c", {"family": "contrastive", "pair_within": None})["pair_within"] is None
    assert (quick["width"], quick["depth"], quick["embed_dim"], quick["proj_dim"]) == (32, 4, 128, 64)
    full = resolve_model("c", {"family": "contrastive", "preset": "full"})
    assert (full["width"], full["depth"], full["embed_dim"], full["proj_dim"]) == (64, 5, 512, 128)
    assert (full["batch_size"], full["epochs"], full["patience"]) == (256, 100, 10)
    assert resolve_model("c", {"family": "contrastive", "preset": "full", "batch_size": 64})["batch_size"] == 64
    assert set(PRESETS["quick"]) == set(PRESETS["full"])
    with pytest.raises(ValueError, match="'latent_dim'"):
        resolve_model("c", {"family": "contrastive", "latent_dim": 8})
    with pytest.raises(ValueError, match="'temperature'"):
        resolve_model("v", {"family": "vae", "temperature": 0.5})


def test_layers_and_feature_tables():
    params = resolve_model("c", {"family": "contrastive", "depth": 3})
    assert layer_names("contrastive", params) == ["conv1", "conv2", "conv3", "embed"]
    # embed is a vector: one table whatever the pooling
    assert feature_layers("contrastive", params, ["mean", "max"]) == [
        "conv1", "conv1_max", "conv2", "conv2_max", "conv3", "conv3_max", "embed",
    ]


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_registry_builds_presets(preset):
    params = resolve_model("c", {"family": "contrastive", "preset": preset})
    model = build_model("contrastive", 3, 64, params, seed=0)
    assert isinstance(model, ContrastiveNet)
    assert model.layer_names == layer_names("contrastive", params)
    if preset == "quick":
        maps = model.eval().feature_maps(torch.randn(2, 3, 64, 64))
        assert list(maps) == model.layer_names
        assert maps["conv1"].shape == (2, 32, 32, 32) and maps["conv4"].shape == (2, 256, 4, 4)
        assert maps["embed"].shape == (2, 128)


def test_schema_accepts_the_family_and_its_keys():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["models"] = {
        "simclr": {
            "family": "contrastive",
            "preset": "full",
            "embed_dim": 256,
            "proj_dim": 64,
            "temperature": 0.1,
            "view_scale": 0.1,
            "view_shift": 0.05,
            "view_padding": "zeros",
            "view_intensity": 0.3,
            "view_offset": 0.05,
            "view_gamma": 0.2,
            "view_blur_p": 0.3,
            "view_blur_sigma": 2.0,
            "view_noise": 0.0,
        }
    }
    schema = REPO / "schemas" / "config.schema.yaml"
    assert [e for e in config_errors(config, schema) if e.startswith("models")] == []
    config["models"]["simclr"].update(view_padding="circular", temperature=0)
    errors = [e for e in config_errors(config, schema) if e.startswith("models")]
    assert any("view_padding" in e for e in errors) and any("temperature" in e for e in errors)


def test_bad_arguments_named():
    with pytest.raises(ValueError, match="view_padding"):
        ContrastiveNet(2, 16, view_padding="circular", **SMALL)
    with pytest.raises(ValueError, match="view_scale"):
        ContrastiveNet(2, 16, view_scale=1.0, **SMALL)
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveNet(2, 16, temperature=0.0, **SMALL)
    with pytest.raises(ValueError, match="input_size"):
        ContrastiveNet(2, 60, width=4, depth=3)


# -- network and features ----------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3, 5])
def test_shapes_and_extract_features(channels):
    params = resolve_model("c", {"family": "contrastive", "width": 4, "depth": 3, "embed_dim": 12, "proj_dim": 6})
    model = build_model("contrastive", channels, 64, params, seed=0).eval()
    x = np.random.default_rng(0).normal(size=(5, channels, 64, 64)).astype(np.float32)
    maps = model.feature_maps(torch.from_numpy(x))
    assert list(maps) == ["conv1", "conv2", "conv3", "embed"]
    assert [tuple(maps[f"conv{i}"].shape) for i in (1, 2, 3)] == [(5, 4, 32, 32), (5, 8, 16, 16), (5, 16, 8, 8)]
    assert maps["embed"].shape == (5, 12)
    out = model(torch.from_numpy(x))
    assert out["z1"].shape == out["z2"].shape == (5, 6)
    pairs = [("conv3", "mean"), ("conv3", "max"), ("embed", "mean")]
    feats = extract_features(model, ArraySource(x), pairs, batch_size=2)
    assert feats[("conv3", "max")].shape == (5, 16) and feats[("embed", "mean")].shape == (5, 12)
    assert np.allclose(feats[("embed", "mean")], maps["embed"].numpy(), atol=1e-5)  # no augmentation
    assert np.isfinite(feats[("embed", "mean")]).all()


# -- views -------------------------------------------------------------------------------


def test_views_keep_shape_and_dtype_and_differ():
    x = torch.from_numpy(two_classes(8, size=32))
    aug = ViewAugment()
    torch.manual_seed(1)
    a, b = aug(x), aug(x)
    assert a.shape == b.shape == x.shape and a.dtype == b.dtype == x.dtype
    assert aug(x.double()).dtype == torch.float64
    diff = lambda u, v: (u - v).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (diff(a, x) > 0.01).all() and (diff(a, b) > 0.01).all()
    # a seeded generator gives the same views; the global generator is left alone
    state = torch.get_rng_state()
    c = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(c, aug(x, torch.Generator().manual_seed(5)))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_views_do_not_mix_channels(noise):
    x = torch.zeros(6, 4, 32, 32)
    x[:, 0] = torch.from_numpy(two_classes(6, size=32)[:, 0]).abs() + 1.0
    aug = ViewAugment(noise=noise, blur_p=1.0)
    view = aug(x, torch.Generator().manual_seed(0))
    assert view[:, 0].std() > 0.1
    # empty channels have no range and no spread: nothing (not even noise, which scales with
    # the channel's own SD) reaches them
    assert torch.equal(view[:, 1:], torch.zeros_like(view[:, 1:]))
    # each channel is transformed on its own: channel 0's view does not depend on the others
    y = x.clone()
    y[:, 1:] = torch.randn(6, 3, 32, 32)
    other = aug(y, torch.Generator().manual_seed(0))
    if noise == 0:
        assert torch.allclose(other[:, 0], view[:, 0], atol=1e-5)


def test_warp_rotation_flip_zoom_shift():
    x = torch.randn(2, 3, 16, 16)
    one, zero, no = torch.ones(2), torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    still = torch.zeros(2, 2)
    assert torch.allclose(affine_warp(x, zero, no, one, still), x, atol=1e-5)
    quarter = torch.full((2,), math.pi / 2)
    assert torch.allclose(affine_warp(x, quarter, no, one, still), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(affine_warp(x, 2 * quarter, no, one, still), torch.rot90(x, 2, (-2, -1)), atol=1e-5)
    assert torch.allclose(affine_warp(x, zero, ~no, one, still), x.flip(-1), atol=1e-5)
    # a shift of 1/16 of the size moves the image by one pixel
    shifted = affine_warp(x, zero, no, one, torch.tensor([[1 / 16, 0.0]] * 2), "zeros")
    assert torch.allclose(shifted[..., :-1], x[..., 1:], atol=1e-5) and (shifted[..., -1] == 0).all()
    # zooming in (factor 2) on a centred square makes it twice as large
    sq = torch.zeros(1, 1, 32, 32)
    sq[..., 12:20, 12:20] = 1
    zoomed = affine_warp(sq, zero[:1], no[:1], 2 * one[:1], still[:1])
    assert abs(float(zoomed.sum()) - 4 * float(sq.sum())) < 1e-3


def test_blur_lowers_high_frequency_energy():
    x = torch.randn(4, 2, 32, 32)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    y = gaussian_blur(x, sigma, radius=6)
    assert y.shape == x.shape
    assert torch.allclose(y[0], x[0], atol=1e-4)  # sigma 0.1: (almost) a delta
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05)  # kernel sums to 1

    def high(v):  # energy of the upper half of the spatial frequencies
        f = torch.fft.fftshift(torch.fft.fft2(v), dim=(-2, -1)).abs() ** 2
        yy, xx = torch.meshgrid(torch.arange(32) - 16, torch.arange(32) - 16, indexing="ij")
        return f[..., torch.hypot(yy.float(), xx.float()) > 8].sum(-1).mean(-1)

    energy = high(y) / high(x)
    assert energy[1] < 0.5 and energy[2] < 0.05 and energy[3] < 1e-3
    assert (energy[1:] < energy[:-1]).all()
    # the view pipeline blurs with probability blur_p
    sharp = ViewAugment(scale=0, shift=0, intensity=0, offset=0, gamma=0, blur_p=0, noise=0)
    blurry = ViewAugment(scale=0, shift=0, intensity=0, offset=0, gamma=0, blur_p=1, blur_sigma=2, noise=0)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert high(blurry(x, g())).sum() < 0.8 * high(sharp(x, g())).sum()


def test_intensity_jitter_per_channel():
    x = torch.rand(3, 2, 8, 8) * torch.tensor([1.0, 10.0]).view(1, 2, 1, 1) - 2
    ones, zeros = torch.ones(3, 2), torch.zeros(3, 2)
    assert torch.allclose(intensity_jitter(x, ones, zeros, ones), x, atol=1e-5)
    # gain acts on the signal above the channel's minimum, the offset in units of its range
    gain = torch.tensor([[2.0, 1.0]] * 3)
    y = intensity_jitter(x, gain, zeros, ones)
    lo = x.amin(dim=(2, 3), keepdim=True)
    assert torch.allclose(y[:, 0], (lo + 2 * (x - lo))[:, 0], atol=1e-5)
    assert torch.allclose(y[:, 1], x[:, 1], atol=1e-5)
    off = intensity_jitter(x, ones, torch.tensor([[0.0, 0.1]] * 3), ones)
    span = (x.amax(dim=(2, 3)) - x.amin(dim=(2, 3)))[:, 1]
    assert torch.allclose((off - x)[:, 1].mean(dim=(1, 2)), 0.1 * span, atol=1e-5)
    # gamma keeps the channel's minimum and maximum and is monotone
    g = intensity_jitter(x, ones, zeros, torch.full((3, 2), 2.0))
    assert torch.allclose(g.amin(dim=(2, 3)), x.amin(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(g.amax(dim=(2, 3)), x.amax(dim=(2, 3)), atol=1e-5)
    order = x[0, 0].flatten().argsort()
    assert (g[0, 0].flatten()[order].diff() >= -1e-6).all()


# -- loss --------------------------------------------------------------------------------


def reference_nt_xent(z1, z2, t):
    """Row by row, as written in the SimCLR paper."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n = len(z1)
    total, correct = 0.0, 0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = torch.stack([z[i] @ z[k] / t for k in range(2 * n) if k != i])
        others = [k for k in range(2 * n) if k != i]
        total += -(z[i] @ z[j] / t - torch.logsumexp(sims, 0))
        correct += others[int(sims.argmax())] == j
    return total / (2 * n), correct / (2 * n)


def test_nt_xent_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    loss, acc = nt_xent(z1, z2, 0.3)
    expected, expected_acc = reference_nt_xent(z1, z2, 0.3)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(acc) == pytest.approx(expected_acc)
    # the same with cross_entropy over the 2N - 1 others, the positive as target
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / 0.3
    rows = [torch.cat([logits[i, :i], logits[i, i + 1 :]]) for i in range(10)]
    targets = torch.tensor([(i + 5) % 10 - ((i + 5) % 10 > i) for i in range(10)])
    assert float(loss) == pytest.approx(float(F.cross_entropy(torch.stack(rows), targets)), rel=1e-5)
    # identical views: lower loss, every positive found; random views: about log(2N - 1)
    same, same_acc = nt_xent(z1, z1, 0.3)
    assert float(same) < float(loss) and float(same_acc) == 1.0
    big1, big2 = torch.randn(256, 16, generator=g), torch.randn(256, 16, generator=g)
    assert float(nt_xent(big1, big2, 1.0)[0]) == pytest.approx(math.log(511), rel=0.02)


def test_loss_terms_and_deterministic_validation():
    model = make().eval()
    x = torch.from_numpy(two_classes(16))
    with torch.no_grad():
        terms = model.loss_terms(x, model(x))
        again = model.loss_terms(x, model(x))
    assert set(terms) == {"loss", "pos_acc", "align", "uniform"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    assert all(torch.equal(terms[k], again[k]) for k in terms)  # a seeded view generator
    assert 0 <= float(terms["pos_acc"]) <= 1 and 0 <= float(terms["align"]) <= 4
    assert -4 - 1e-6 <= float(terms["uniform"]) <= 0
    # validation leaves the global generator alone; training draws from it
    state = torch.get_rng_state()
    with torch.no_grad():
        model(x)
    assert torch.equal(state, torch.get_rng_state())
    model.train()
    with torch.no_grad():
        a, b = model(x)["z1"], model(x)["z1"]
    assert not torch.equal(a, b)
    # the figure's "reconstruction" is one seeded view of the input
    view = model.reconstruct(x)
    assert view.shape == x.shape and torch.equal(view, model.reconstruct(x)) and not torch.equal(view, x)


def test_pairs_of_cells_give_the_two_views():
    """With pair_within, a batch is {"source": A, "target": B}: one view from each cell."""
    model = make().eval()
    x = torch.from_numpy(two_classes(16))
    partner = torch.from_numpy(two_classes(16, seed=5))
    with torch.no_grad():
        same = model.loss_terms(x, model(x))
        pairs = model.loss_terms({"source": x, "target": partner}, model({"source": x, "target": partner}))
        out = model({"source": x, "target": partner})
        alone = model(x)
    assert torch.equal(out["z1"], alone["z1"]) and not torch.equal(out["z2"], alone["z2"])
    assert torch.isfinite(pairs["loss"]) and not torch.equal(pairs["loss"], same["loss"])
    assert torch.equal(model.reconstruct({"source": x, "target": partner}), model.reconstruct(x))
    opts = model.train().configure_optimizers(1e-3, 0.0)
    terms = model.training_step({"source": x, "target": partner}, opts, torch.autocast("cpu", enabled=False))
    assert torch.isfinite(terms["loss"])


def test_training_step_under_bf16_autocast():
    model = make().train()
    opts = model.configure_optimizers(1e-3, 0.0)
    x = torch.from_numpy(two_classes(8))
    for _ in range(2):
        terms = model.training_step(x, opts, torch.autocast("cpu", dtype=torch.bfloat16))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())


# -- training loop -----------------------------------------------------------------------

SETTINGS = TrainSettings(epochs=6, batch_size=16, lr=1e-2, seed=3)


def test_fit_lowers_the_loss_same_seed_same_weights_and_resumes(tmp_path):
    train, val = two_classes(64, seed=0), two_classes(16, seed=1)
    make_wider = lambda: make(width=8, embed_dim=32)  # noqa: E731
    full = fit(make_wider(), ArraySource(train), ArraySource(val), SETTINGS, device=CPU)
    h = full.history
    for col in ("train_loss", "val_loss", "train_pos_acc", "val_pos_acc", "val_align", "val_uniform"):
        assert col in h.columns and np.isfinite(h[col]).all(), col
    # Chance is log(2N - 1) = log(31) = 3.43; telling the classes apart (the cells of a class
    # differ only by pixel noise, which the views redraw) gives about log(N) = log(16) = 2.77.
    assert h["train_loss"].iloc[0] > 3.2 and h["train_loss"].iloc[-2:].mean() < 2.9  # measured 2.83
    assert h["val_loss"].iloc[-1] < 2.9 < h["val_loss"].iloc[0]  # measured 2.75 and 3.32
    again = fit(make_wider(), ArraySource(train), ArraySource(val), SETTINGS, device=CPU)
    for key in full.best_state:
        assert torch.equal(full.best_state[key], again.best_state[key]), key
    # a killed run resumes to the same weights: 4 training + 1 validation batches per epoch
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(make_wider(), ArraySource(train, fail_after=10), ArraySource(val), SETTINGS, checkpoint=ckpt,
            fingerprint="x", device=CPU)
    assert load_checkpoint(ckpt)["epoch"] == 2
    resumed = fit(make_wider(), ArraySource(train), ArraySource(val), SETTINGS, checkpoint=ckpt, fingerprint="x",
                  device=CPU)
    assert resumed.resumed_from == 2
    for key in full.best_state:
        assert torch.equal(full.best_state[key], resumed.best_state[key]), key
