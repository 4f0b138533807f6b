"""Expert feedback: reading the explorer's CSV, the guidance loss, and a guided VAE that learns it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from workflow_scripts.models.registry import build_model
from workflow_scripts.models.spec import resolve_model
from workflow_scripts.training.guided import GuidedSource, guidance_terms, read_feedback
from workflow_scripts.training.loop import _augment

CELLS = pd.DataFrame({"Metadata_cell": [f"f0-{i}" for i in range(10)]})


def write(tmp_path, text):
    path = tmp_path / "feedback.csv"
    path.write_text(text)
    return path


def test_read_feedback_aligns_labels_anchors_and_weights(tmp_path):
    path = write(
        tmp_path,
        "Metadata_cell,label,anchor_x,anchor_y,weight\n"
        "f0-3,mitotic,,,2\n"
        "f0-1,interphase,1.0,4.0,1\n"
        "f0-7,,3.0,8.0,0.5\n",
    )
    fb = read_feedback(path, CELLS)
    assert fb.classes == ["interphase", "mitotic"]
    assert fb.labels.tolist() == [-1, 0, -1, 1, -1, -1, -1, -1, -1, -1]
    assert fb.n_labelled == 2 and fb.n_anchored == 2
    # Anchors standardised over the anchored cells: (1, 4) and (3, 8) -> (-1, -1) and (1, 1).
    np.testing.assert_allclose(fb.anchors[[1, 7]], [[-1, -1], [1, 1]])
    assert np.isnan(fb.anchors[[0, 3]]).all()
    np.testing.assert_allclose(fb.weights[[1, 3, 7, 0]], [1.0, 2.0, 0.5, 0.0])


def test_labels_only_file_with_default_weights(tmp_path):
    fb = read_feedback(write(tmp_path, "Metadata_cell,label\nf0-0,a\nf0-9,b\n"), CELLS)
    assert fb.labels[[0, 9]].tolist() == [0, 1] and fb.n_anchored == 0
    assert fb.weights[[0, 9]].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label\na\n", "no Metadata_cell column"),
        ("Metadata_cell,label,colour\nf0-1,a,red\n", r"unknown column\(s\) \['colour'\]"),
        ("Metadata_cell,label\nf9-1,a\n", r"1 cell\(s\) not in this dataset's cell table, e.g. \['f9-1'\]"),
        (
            "Metadata_cell,label,anchor_x,anchor_y\nf0-1,,2.0,\n",
            r"row 2 \(cell 'f0-1'\): anchor_x and anchor_y must both",
        ),
        ("Metadata_cell,label\nf0-1,\n", r"row 2 \(cell 'f0-1'\): neither a label nor an anchor"),
        ("Metadata_cell,label,weight\nf0-1,a,-1\n", r"weight -1.0; expected a finite number >= 0"),
        ("Metadata_cell,label\nf0-1,a\nf0-1,b\n", r"cell 'f0-1' appears more than once"),
    ],
)
def test_bad_feedback_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_feedback(write(tmp_path, text), CELLS)


def test_guidance_terms_are_the_weighted_losses():
    torch.manual_seed(0)
    mu = torch.randn(4, 3)
    label_head, anchor_head = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    batch = {
        "label": torch.tensor([1, -1, 0, -1]),
        "anchor": torch.tensor([[0.5, -0.5], [float("nan")] * 2, [float("nan")] * 2, [1.0, 2.0]]),
        "weight": torch.tensor([2.0, 0.0, 1.0, 3.0]),
    }
    terms = guidance_terms(mu, batch, label_head, anchor_head)
    logits = label_head(mu)
    expected_label = (
        2.0 * F.cross_entropy(logits[0:1], torch.tensor([1])) + F.cross_entropy(logits[2:3], torch.tensor([0]))
    ) / 4
    where = anchor_head(mu)
    expected_anchor = (
        2.0 * (where[0] - torch.tensor([0.5, -0.5])).pow(2).sum()
        + 3.0 * (where[3] - torch.tensor([1.0, 2.0])).pow(2).sum()
    ) / 4
    assert terms["label_loss"].item() == pytest.approx(expected_label.item(), rel=1e-6)
    assert terms["anchor_loss"].item() == pytest.approx(expected_anchor.item(), rel=1e-6)
    none = {"label": torch.full((4,), -1), "anchor": torch.full((4, 2), float("nan")), "weight": torch.ones(4)}
    assert guidance_terms(mu, none, label_head, anchor_head)["label_loss"].item() == 0.0


def test_guided_batches_keep_their_feedback_through_augmentation(tmp_path):
    class Images:
        def __len__(self):
            return 10

        def batch(self, index):
            return np.random.default_rng(0).random((len(index), 3, 8, 8)).astype(np.float32)

    fb = read_feedback(write(tmp_path, "Metadata_cell,label\nf0-2,a\nf0-5,b\n"), CELLS)
    batch = GuidedSource(Images(), fb).batch(np.array([5, 2, 0]))
    assert batch["label"].tolist() == [1, 0, -1]
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    out = _augment(tensors, torch.Generator().manual_seed(0))
    assert out["label"].tolist() == [1, 0, -1] and out["x"].shape == (3, 3, 8, 8)


def test_guided_vae_pulls_labelled_cells_apart(torch_one_thread):
    """A few steps on random images: the labelled cells' latent means become separable by the
    label head (its loss falls), and the unguided loss terms are still there."""
    params = resolve_model("g", {"family": "vae", "latent_dim": 4, "width": 4, "depth": 2, "guided": True})
    params["guided_labels"] = 2
    model = build_model("vae", 3, 16, params, seed=0)
    assert model.label_head is not None and model.anchor_head is not None
    x = torch.randn(16, 3, 16, 16)
    batch = {
        "x": x,
        "label": torch.tensor([0, 1] * 4 + [-1] * 8),
        "anchor": torch.full((16, 2), float("nan")),
        "weight": torch.ones(16),
    }
    opt = model.configure_optimizers(1e-2, 0.0)
    autocast = torch.autocast("cpu", enabled=False)
    first = model.training_step(batch, opt, autocast)
    for _ in range(60):
        last = model.training_step(batch, opt, autocast)
    assert {"recon", "kl", "label_loss", "anchor_loss"} <= set(last)
    assert last["label_loss"] < 0.6 * first["label_loss"]
    # A plain tensor batch (feature extraction, reconstructions) still works.
    assert model.reconstruct(x).shape == x.shape


def test_unguided_vae_has_no_heads():
    params = resolve_model("v", {"family": "vae", "latent_dim": 4, "width": 4, "depth": 2})
    model = build_model("vae", 3, 16, params, seed=0)
    assert model.label_head is None and model.anchor_head is None
