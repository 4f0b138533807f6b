import pytest

from workflow_scripts import datasets


def test_shards_cover_fields_once():
    entry = {"source": "synthetic", "n_fields": 10, "shard_size": 4}
    names = datasets.shard_names(entry)
    assert names == ["s0000", "s0001", "s0002"]
    fields = [i for name in names for i in datasets.shard_fields(entry, name)]
    assert fields == list(range(10))


def test_shards_grow_past_max_shards_and_still_cover_fields_once():
    """100,000 fields at 16 per shard would be 6,250 shards (12,500 jobs to plan); max_shards
    (default 1,000) caps them, each shard taking ceil(fields / max_shards) fields."""
    entry = {"source": "synthetic", "n_fields": 100_000, "shard_size": 16}
    names = datasets.shard_names(entry)
    assert len(names) == datasets.MAX_SHARDS == 1000
    assert len(datasets.shard_fields(entry, names[0])) == 100
    fields = [i for name in names for i in datasets.shard_fields(entry, name)]
    assert fields == list(range(100_000))
    # Below the cap shard_size is kept; an odd total leaves a short last shard.
    small = {"source": "synthetic", "n_fields": 16_000, "shard_size": 16}
    assert len(datasets.shard_names(small)) == 1000
    odd = {"source": "synthetic", "n_fields": 1001, "shard_size": 1, "max_shards": 10}
    sizes = [len(datasets.shard_fields(odd, n)) for n in datasets.shard_names(odd)]
    assert sizes == [101] * 9 + [92]
    with pytest.raises(ValueError, match="max_shards must be >= 1, got 0"):
        datasets.effective_shard_size({"shard_size": 4, "max_shards": 0}, 10)


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
