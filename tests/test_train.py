import numpy as np
import pytest
import torch

from tests.sources import ArraySource
from workflow_scripts.models.vae import VAE
from workflow_scripts.training.loop import TrainSettings, augment_batch, fit, load_checkpoint


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 16, 16)).astype(np.float32)
    x[: n // 2, :, 4:12, 4:12] += 2
    return x


def make_model():
    torch.manual_seed(0)
    return VAE(2, 16, latent_dim=4, width=4, depth=2)


SETTINGS = TrainSettings(epochs=4, batch_size=16, lr=3e-3, seed=3)


def test_fit_history_and_best_epoch():
    result = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, device=torch.device("cpu"))
    h = result.history
    assert list(h["epoch"]) == [1, 2, 3, 4]
    for col in ("train_loss", "val_loss", "train_recon", "val_kl", "lr", "seconds", "data_wait_fraction"):
        assert col in h.columns
    assert result.best_epoch == int(h.loc[h["val_loss"].idxmin(), "epoch"])
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]


def test_same_seed_same_weights():
    a = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, device=torch.device("cpu"))
    b = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, device=torch.device("cpu"))
    for key in a.best_state:
        assert torch.equal(a.best_state[key], b.best_state[key]), key


def test_killed_run_resumes_to_identical_weights(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    full = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, device=torch.device("cpu"))
    # 48 items / batch 16 = 3 training batches + 1 validation batch per epoch: dies in epoch 3.
    with pytest.raises(KeyboardInterrupt):
        fit(
            make_model(), ArraySource(data(), fail_after=7), ArraySource(data(16, 1)), SETTINGS,
            checkpoint=ckpt, fingerprint="x", device=torch.device("cpu"),
        )
    assert load_checkpoint(ckpt)["epoch"] == 2
    resumed = fit(
        make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS,
        checkpoint=ckpt, fingerprint="x", device=torch.device("cpu"),
    )
    assert resumed.resumed_from == 2
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    for key in full.best_state:
        assert torch.equal(full.best_state[key], resumed.best_state[key]), key


def test_checkpoint_of_other_config_ignored(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, checkpoint=ckpt, fingerprint="old",
        device=torch.device("cpu"))
    result = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), SETTINGS, checkpoint=ckpt,
                 fingerprint="new", device=torch.device("cpu"))
    assert result.resumed_from is None


def test_checkpoint_refuses_pickled_code(tmp_path):
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        load_checkpoint(path)
    assert not marker.exists()


def test_augment_is_a_square_symmetry():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).repeat(20, 1, 1, 1)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    symmetries = [torch.rot90(x[0], k, (-2, -1)) for k in range(4)]
    symmetries += [torch.rot90(x[0].flip(-1), k, (-2, -1)) for k in range(4)]
    for item in out[::2]:
        assert any(torch.equal(item, s) for s in symmetries)
    assert len({tuple(item.flatten().tolist()) for item in out[::2]}) > 2


def test_tensorboard_scalars_written(tmp_path):
    settings = TrainSettings(epochs=2, batch_size=16, seed=0, tensorboard_dir=str(tmp_path / "tb"))
    fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), settings, device=torch.device("cpu"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/loss", "train/kl"} <= set(tags)
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]


REPRO_SCRIPT = """
import hashlib, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from workflow_scripts.models.registry import build_model
from workflow_scripts.training.loop import TrainSettings, fit

class Source:
    def __init__(self, x): self.x = x
    def __len__(self): return len(self.x)
    def batch(self, index): return self.x[np.asarray(index)]

torch.randn(int(sys.argv[2]))  # consume the global RNG differently in each process
x = np.random.default_rng(0).normal(size=(32, 2, 16, 16)).astype(np.float32)
model = build_model("vae", 2, 16, {"latent_dim": 4, "width": 4, "depth": 2}, seed=7)
result = fit(model, Source(x), Source(x[:8]), TrainSettings(epochs=2, batch_size=8, seed=7), device=torch.device("cpu"))
print(hashlib.sha256(b"".join(v.numpy().tobytes() for v in result.best_state.values())).hexdigest())
"""


def test_same_config_same_weights_in_separate_processes():
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    hashes = {
        subprocess.run([sys.executable, "-c", REPRO_SCRIPT, root, n], capture_output=True, text=True, check=True).stdout
        for n in ("1", "5")
    }
    assert len(hashes) == 1, hashes


# --- precision and schedule ------------------------------------------------------------------


def test_precision_resolution_and_bad_value():
    from workflow_scripts.training.loop import cpu_has_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of .*'fp16'"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_in_each_precision_learns_and_is_deterministic(precision):
    settings = TrainSettings(epochs=3, batch_size=16, lr=3e-3, seed=3, precision=precision)
    runs = [
        fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), settings, device=torch.device("cpu"))
        for _ in range(2)
    ]
    h = runs[0].history
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    for key, value in runs[0].best_state.items():
        assert value.dtype in (torch.float32, torch.int64), key  # autocast leaves the weights in fp32
        assert torch.equal(value, runs[1].best_state[key]), key


def test_onecycle_schedule_warms_up_then_anneals():
    settings = TrainSettings(epochs=10, batch_size=16, lr=1e-2, seed=3, schedule="onecycle")
    lr = fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), settings, device=torch.device("cpu")).history[
        "lr"
    ]
    peak = int(lr.to_numpy().argmax())
    assert lr.iloc[0] == pytest.approx(1e-2 / 25)
    assert 1 <= peak <= 4 and lr.max() == pytest.approx(1e-2, rel=0.05)
    assert (np.diff(lr.to_numpy()[peak:]) < 0).all() and lr.iloc[-1] < 1e-3


def test_unknown_schedule_is_refused():
    settings = TrainSettings(epochs=2, batch_size=16, schedule="linear")
    with pytest.raises(ValueError, match="schedule must be one of .*'linear'"):
        fit(make_model(), ArraySource(data()), ArraySource(data(16, 1)), settings, device=torch.device("cpu"))
