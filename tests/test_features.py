import numpy as np
import pandas as pd
import pytest
import torch

from workflow_scripts.features import extract_features, feature_table, pool
from workflow_scripts.models.registry import build_model


class Source:
    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def batch(self, index):
        return self.x[index]


def test_pool():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(pool(maps, "mean"), maps.mean((2, 3)))
    assert torch.equal(pool(maps, "max"), maps.amax((2, 3)))
    assert torch.equal(pool(maps[:, :, 0, 0], "max"), maps[:, :, 0, 0])
    with pytest.raises(ValueError, match="pooling"):
        pool(maps, "median")


def test_extract_one_row_per_cell_batched_like_unbatched():
    model = build_model("vae", 3, 32, {"latent_dim": 4, "width": 4, "depth": 2}).eval()
    x = np.random.default_rng(0).normal(size=(10, 3, 32, 32)).astype(np.float32)
    pairs = [("conv1", "mean"), ("conv1", "max"), ("mu", "mean")]
    small = extract_features(model, Source(x), pairs, batch_size=3)
    big = extract_features(model, Source(x), pairs, batch_size=64)
    for pair in pairs:
        assert small[pair].shape[0] == 10
        assert np.allclose(small[pair], big[pair], atol=1e-5)
    assert small[("conv1", "mean")].shape == (10, 4)
    assert not np.allclose(small[("conv1", "mean")], small[("conv1", "max")])
    with pytest.raises(ValueError, match="conv9"):
        extract_features(model, Source(x), [("conv9", "mean")])


def test_feature_table_metadata_first():
    meta = pd.DataFrame({"Metadata_cell": ["a", "b"], "QC_x": [1, 2], "Metadata_image": ["i", "i"]})
    table = feature_table(meta, np.ones((2, 3), np.float32), "conv2")
    assert list(table.columns) == ["Metadata_cell", "Metadata_image", "conv2_0", "conv2_1", "conv2_2"]
