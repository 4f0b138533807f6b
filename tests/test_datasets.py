import pytest

from workflow_scripts import datasets


def test_shards_cover_fields_once():
    entry = {"source": "synthetic", "n_fields": 10, "shard_size": 4}
    names = datasets.shard_names(entry)
    assert names == ["s0000", "s0001", "s0002"]
    fields = [i for name in names for i in datasets.shard_fields(entry, name)]
    assert fields == list(range(10))


def test_bad_shard_named():
    entry = {"source": "synthetic", "n_fields": 4, "shard_size": 4}
    with pytest.raises(ValueError, match="s0001"):
        datasets.shard_fields(entry, "s0001")
    with pytest.raises(ValueError, match="x1"):
        datasets.shard_fields(entry, "x1")


def test_synthetic_channels_agree_with_generator():
    from workflow_scripts.sources import synthetic

    assert [c["name"] for c in datasets.SYNTHETIC_CHANNELS] == list(synthetic.CHANNELS)
    assert datasets.channel_index({"source": "synthetic"}, "nucleus") == 0
    with pytest.raises(ValueError, match="marker"):
        datasets.channel_index({"source": "synthetic"}, "marker")
