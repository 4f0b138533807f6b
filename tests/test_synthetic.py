"""Tests of the built-in synthetic dataset generator.

They check what the rest of the pipeline relies on: shapes and dtypes, determinism per
(seed, index), balanced classes, a ground-truth table that matches the label image, and
that the images are a real test (touching and border-cut nuclei, a trajectory, a batch
effect, Otsu-segmentable nuclei, class-specific protein patterns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from skimage.filters import gaussian, threshold_otsu

from workflow_scripts.sources.synthetic import (
    CHANNELS,
    CLASSES,
    generate_field,
    generate_shard,
)

SEED = 20240611
N_FIELDS = 12  # two fields per class at the default settings
OFFSET = 100  # camera offset of the simulated camera, in counts


@pytest.fixture(scope="module")
def shard():
    """Twelve default (512 x 512) fields, generated once for the whole module."""
    return generate_shard(SEED, list(range(N_FIELDS)))


def _fields(shard):
    """Iterate (image, labels, field row, objects of that field)."""
    objects = shard["objects"]
    for k, row in shard["fields"].iterrows():
        obj = objects[objects["Metadata_image"] == row["Metadata_image"]]
        yield shard["images"][k], shard["truth_labels"][k], row, obj


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of distinct nonzero labels that share a 4-connected pixel edge."""
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= set(zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist()))
    return pairs


def _border_labels(labels: np.ndarray) -> set[int]:
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return set(np.unique(edge[edge > 0]).tolist())


# --- API, shapes and dtypes --------------------------------------------------------------


def test_constants():
    assert CHANNELS == ("nucleus", "structure", "protein")
    assert CLASSES == ("nuclear", "nucleolar", "cytoplasmic", "membrane", "puncta", "filaments")


def test_generate_field_shapes_dtypes_and_metadata():
    image, labels, meta, objects = generate_field(3, 17, size=96, cells_per_field=8)
    assert image.shape == (3, 96, 96) and image.dtype == np.uint16
    assert labels.shape == (96, 96) and labels.dtype == np.int32
    assert meta == {
        "Metadata_image": "f00017",
        "Metadata_class": CLASSES[17 % len(CLASSES)],
        "Metadata_group": "f00017",
        "Metadata_field_gain": pytest.approx(meta["Metadata_field_gain"]),
        "Metadata_field_index": 17,
    }
    assert isinstance(meta["Metadata_field_gain"], float) and meta["Metadata_field_gain"] > 0
    assert isinstance(meta["Metadata_field_index"], int)
    assert list(objects.columns) == [
        "Metadata_image",
        "truth_label",
        "Metadata_trajectory",
        "Metadata_class",
        "truth_y",
        "truth_x",
        "truth_nucleus_area",
    ]
    assert (objects["Metadata_image"] == "f00017").all()
    assert (objects["Metadata_class"] == meta["Metadata_class"]).all()
    assert objects["Metadata_trajectory"].between(0, 1).all()


def test_generate_shard_stacks_fields(shard):
    assert shard["images"].shape == (N_FIELDS, 3, 512, 512)
    assert shard["images"].dtype == np.uint16
    assert shard["truth_labels"].shape == (N_FIELDS, 512, 512)
    assert shard["truth_labels"].dtype == np.int32
    fields = shard["fields"]
    assert list(fields["Metadata_image"]) == [f"f{i:05d}" for i in range(N_FIELDS)]
    assert (fields["Metadata_group"] == fields["Metadata_image"]).all()
    assert list(fields["Metadata_field_index"]) == list(range(N_FIELDS))
    assert set(shard["objects"]["Metadata_image"]) <= set(fields["Metadata_image"])
    assert shard["objects"].index.equals(pd.RangeIndex(len(shard["objects"])))


def test_empty_shard_has_the_usual_structure():
    out = generate_shard(SEED, [], size=64)
    assert out["images"].shape == (0, 3, 64, 64) and out["images"].dtype == np.uint16
    assert out["truth_labels"].shape == (0, 64, 64) and out["truth_labels"].dtype == np.int32
    assert len(out["fields"]) == 0 and "Metadata_field_gain" in out["fields"]
    assert len(out["objects"]) == 0 and "truth_label" in out["objects"]


# --- Determinism ---------------------------------------------------------------------------


def test_field_depends_only_on_seed_and_index():
    opts = {"size": 128, "cells_per_field": 10}
    a = generate_shard(SEED, [0, 1, 2, 3], **opts)
    b = generate_shard(SEED, [9, 3], **opts)
    image, labels, meta, objects = generate_field(SEED, 3, **opts)
    np.testing.assert_array_equal(a["images"][3], b["images"][1])
    np.testing.assert_array_equal(a["images"][3], image)
    np.testing.assert_array_equal(a["truth_labels"][3], b["truth_labels"][1])
    np.testing.assert_array_equal(a["truth_labels"][3], labels)
    assert a["fields"].iloc[3].to_dict() == b["fields"].iloc[1].to_dict() == meta
    pd.testing.assert_frame_equal(
        a["objects"][a["objects"]["Metadata_image"] == "f00003"].reset_index(drop=True),
        objects,
    )


def test_different_seeds_and_indices_differ():
    opts = {"size": 128, "cells_per_field": 10}
    base = generate_field(1, 0, **opts)[0]
    assert not np.array_equal(base, generate_field(2, 0, **opts)[0])
    assert not np.array_equal(base, generate_field(1, len(CLASSES), **opts)[0])


def test_class_changes_only_the_protein_channel():
    # The class must not be readable from the nucleus or structure channels.
    a_img, a_lab, _, a_obj = generate_field(5, 4, size=128, classes=("nuclear",))
    b_img, b_lab, _, b_obj = generate_field(5, 4, size=128, classes=("puncta",))
    np.testing.assert_array_equal(a_img[:2], b_img[:2])
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img[2], b_img[2])
    pd.testing.assert_frame_equal(
        a_obj.drop(columns="Metadata_class"), b_obj.drop(columns="Metadata_class")
    )


# --- Classes ---------------------------------------------------------------------------------


def test_classes_balanced_over_consecutive_fields():
    out = generate_shard(SEED, list(range(7, 7 + 3 * len(CLASSES))), size=64, cells_per_field=1)
    counts = out["fields"]["Metadata_class"].value_counts()
    assert set(counts.index) == set(CLASSES) and (counts == 3).all()
    # Any len(classes) consecutive indices cover every class once.
    for start in range(len(CLASSES)):
        window = out["fields"]["Metadata_class"].iloc[start : start + len(CLASSES)]
        assert sorted(window) == sorted(CLASSES)


def test_class_subset():
    classes = ["puncta", "membrane"]
    out = generate_shard(SEED, [0, 1, 2, 3], size=64, cells_per_field=1, classes=classes)
    assert list(out["fields"]["Metadata_class"]) == ["puncta", "membrane"] * 2


# --- Ground truth --------------------------------------------------------------------------


def test_truth_labels_match_objects(shard):
    for _, labels, _, obj in _fields(shard):
        ids = np.unique(labels)
        ids = ids[ids > 0]
        assert len(obj) == len(ids) > 0
        np.testing.assert_array_equal(np.sort(obj["truth_label"].to_numpy()), ids)
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        areas = np.bincount(labels.ravel(), minlength=len(ids) + 1)[1:]
        np.testing.assert_array_equal(obj.sort_values("truth_label")["truth_nucleus_area"], areas)
        # Each nucleus is one connected region (a proper instance mask).
        for k, box in enumerate(ndi.find_objects(labels), start=1):
            assert ndi.label(labels[box] == k)[1] == 1
        # The recorded centre lies on the nucleus for cells well inside the field.
        inside = obj[obj["truth_y"].between(20, 491) & obj["truth_x"].between(20, 491)]
        at_centre = labels[
            inside["truth_y"].round().astype(int), inside["truth_x"].round().astype(int)
        ]
        assert np.mean(at_centre == inside["truth_label"].to_numpy()) > 0.9


def test_cells_per_field_is_respected(shard):
    per_field = shard["objects"].groupby("Metadata_image").size()
    assert 30 < per_field.mean() < 60
    sparse = generate_shard(SEED, list(range(6)), size=256, cells_per_field=5)
    assert sparse["objects"].groupby("Metadata_image").size().mean() < 12


def test_touching_nuclei_in_typical_fields(shard):
    n_touching = [len(_adjacent_pairs(labels)) for _, labels, _, _ in _fields(shard)]
    assert all(n >= 1 for n in n_touching)
    assert np.mean(n_touching) >= 2


def test_border_cut_nuclei_exist(shard):
    cut, whole, centre_outside = [], [], 0
    for _, labels, _, obj in _fields(shard):
        on_border = obj["truth_label"].isin(_border_labels(labels))
        cut.append(obj.loc[on_border, "truth_nucleus_area"])
        whole.append(obj.loc[~on_border, "truth_nucleus_area"])
        outside = ~(obj["truth_y"].between(0, 511) & obj["truth_x"].between(0, 511))
        # Every nucleus centred outside the field is, necessarily, cut by the border.
        assert on_border[outside].all()
        centre_outside += outside.sum()
    cut, whole = pd.concat(cut), pd.concat(whole)
    assert len(cut) >= N_FIELDS and centre_outside >= 3
    # Part of a cut nucleus lies outside the field, so cut nuclei look smaller.
    assert cut.median() < 0.8 * whole.median()


def test_trajectory_enlarges_nuclei(shard):
    obj = shard["objects"]
    rho = spearmanr(obj["Metadata_trajectory"], obj["truth_nucleus_area"]).statistic
    assert rho > 0.3


def test_crowded_field_terminates_with_a_proper_mask():
    _, labels, _, obj = generate_field(1, 0, size=64, cells_per_field=1e6)
    assert len(obj) == labels.max() > 3


# --- Image formation -------------------------------------------------------------------------


def test_gain_scales_intensity():
    # Same field, different batch_sd: only the gain changes, and the mean signal above
    # the camera offset scales with it.
    img0, _, meta0, _ = generate_field(SEED, 2, size=256, batch_sd=0.0)
    img1, _, meta1, _ = generate_field(SEED, 2, size=256, batch_sd=0.8)
    assert meta0["Metadata_field_gain"] == 1.0 and meta1["Metadata_field_gain"] != 1.0
    ratio = (img1.mean(axis=(1, 2)) - OFFSET) / (img0.mean(axis=(1, 2)) - OFFSET)
    np.testing.assert_allclose(ratio, meta1["Metadata_field_gain"], rtol=0.03)


def test_brighter_fields_have_higher_gain(shard):
    gains, brightness = [], []
    for image, labels, row, _ in _fields(shard):
        gains.append(row["Metadata_field_gain"])
        brightness.append(image[0][labels > 0].mean() - OFFSET)
    assert spearmanr(gains, brightness).statistic > 0.7


def test_otsu_separates_nuclei(shard):
    for image, labels, _, _ in _fields(shard):
        smooth = gaussian(image[0].astype(float), sigma=2, preserve_range=True)
        fg = smooth > threshold_otsu(smooth)
        truth = labels > 0
        dice = 2 * (fg & truth).sum() / (fg.sum() + truth.sum())
        assert dice > 0.8


def test_background_is_dark_and_noisy(shard):
    image, labels, _, _ = next(_fields(shard))
    far = ndi.distance_transform_edt(labels == 0) > 60
    background = image[0][far].astype(float)
    assert far.sum() > 1000
    assert OFFSET - 5 < np.median(background) < OFFSET + 40
    assert background.std() > 2  # shot and read noise
    nuclei = image[0][labels > 0].astype(float) - OFFSET
    assert np.median(nuclei) > 10 * (np.median(background) - OFFSET + 1)


def test_protein_pattern_depends_on_class(shard):
    inside = {}
    peaky = {}
    for image, labels, row, _ in _fields(shard):
        protein = image[2].astype(float)
        signal = np.clip(protein - np.median(protein), 0, None)
        nucleus = labels > 0
        name = row["Metadata_class"]
        inside.setdefault(name, []).append(signal[nucleus].sum() / signal.sum())
        # Share of the in-nucleus signal held by its brightest 10 % of pixels.
        values = np.sort(signal[nucleus])[::-1]
        peaky.setdefault(name, []).append(values[: len(values) // 10].sum() / values.sum())
    for name in ("nuclear", "nucleolar"):
        assert min(inside[name]) > 0.5, (name, inside[name])
    for name in ("cytoplasmic", "membrane", "puncta", "filaments"):
        assert max(inside[name]) < 0.2, (name, inside[name])
    # Nucleolar protein sits in a few bright spots, nuclear protein fills the nucleus.
    assert min(peaky["nucleolar"]) > max(peaky["nuclear"]) + 0.1


# --- Validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 32}, "size"),
        ({"size": 100.0}, "size"),
        ({"size": True}, "size"),
        ({"cells_per_field": 0}, "cells_per_field"),
        ({"cells_per_field": float("inf")}, "cells_per_field"),
        ({"classes": ()}, "classes"),
        ({"classes": "nuclear"}, "classes"),
        ({"classes": ("nuclear", "nuclear")}, "classes"),
        ({"classes": ("nuclear", "golgi")}, "classes"),
        ({"batch_sd": -0.1}, "batch_sd"),
    ],
)
def test_invalid_options_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}=") as info:
        generate_field(0, 0, **kwargs)
    assert "expected" in str(info.value)  # says what would have been accepted
    with pytest.raises(ValueError, match=rf"^{name}="):
        generate_shard(0, [0], **kwargs)


@pytest.mark.parametrize(
    ("args", "name"),
    [((-1, 0), "seed"), ((1.5, 0), "seed"), ((0, -3), "index"), ((0, "2"), "index")],
)
def test_invalid_seed_or_index(args, name):
    with pytest.raises(ValueError, match=rf"^{name}="):
        generate_field(*args)


@pytest.mark.parametrize(
    ("indices", "match"),
    [([0, 0], r"^indices=.*unique"), ([1, -2], r"^indices\[1\]=-2"), ("01", r"^indices=")],
)
def test_invalid_indices(indices, match):
    with pytest.raises(ValueError, match=match):
        generate_shard(0, indices, size=64)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        generate_shard(0, [0], sizes=64)
