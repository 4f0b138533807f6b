"""Tests of the built-in synthetic dataset generator.

They check what the rest of the pipeline relies on: shapes and dtypes, determinism per
(seed, index), balanced classes, a ground-truth table that matches the label image, and
that the images are a real test (touching and border-cut nuclei, a trajectory, a batch
effect, Otsu-segmentable nuclei, class-specific protein patterns), and the ``difficulty``
options: "standard" is the original simulation bit for bit, "hard" adds near-twin classes
and cell / field variation, each knob validated and doing what it says.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.stats import spearmanr
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu

from workflow_scripts.sources.registry import source_spec
from workflow_scripts.sources.synthetic import (
    CHANNELS,
    CLASSES,
    CONTROL,
    DIFFICULTIES,
    FIELD_COLUMNS,
    HARD_CLASSES,
    LAYOUT_COLUMNS,
    STANDARD_CLASSES,
    generate_field,
    generate_shard,
    plate_format,
    plate_layout,
    well_name,
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
    assert STANDARD_CLASSES == (
        "nuclear",
        "nucleolar",
        "cytoplasmic",
        "membrane",
        "puncta",
        "filaments",
    )
    assert CLASSES[:6] == STANDARD_CLASSES and len(set(CLASSES)) == len(CLASSES)
    assert set(HARD_CLASSES) <= set(CLASSES) and len(HARD_CLASSES) == 8
    assert DIFFICULTIES["standard"]["classes"] == STANDARD_CLASSES
    assert DIFFICULTIES["hard"]["classes"] == HARD_CLASSES


def test_generate_field_shapes_dtypes_and_metadata():
    image, labels, meta, objects = generate_field(3, 17, size=96, cells_per_field=8)
    assert image.shape == (3, 96, 96) and image.dtype == np.uint16
    assert labels.shape == (96, 96) and labels.dtype == np.int32
    gain = meta["Metadata_field_gain"]
    assert meta == {
        "Metadata_image": "f00017",
        "Metadata_class": STANDARD_CLASSES[17 % len(STANDARD_CLASSES)],
        "Metadata_group": "f00017",
        "Metadata_field_gain": pytest.approx(gain),
        "Metadata_field_index": 17,
        # standard: no per-channel gain, background or defocus of its own
        "Metadata_field_gain_nucleus": gain,
        "Metadata_field_gain_structure": gain,
        "Metadata_field_gain_protein": gain,
        "Metadata_field_background": 0.0,
        "Metadata_field_defocus": 0.0,
        "Metadata_field_out_of_focus": False,
    }
    assert list(meta) == list(FIELD_COLUMNS)
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
    assert len(out["fields"]) == 0 and list(out["fields"].columns) == list(FIELD_COLUMNS)
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


@pytest.mark.parametrize("difficulty", ["standard", "hard"])
def test_classes_balanced_over_consecutive_fields(difficulty):
    classes = DIFFICULTIES[difficulty]["classes"]
    out = generate_shard(
        SEED,
        list(range(7, 7 + 3 * len(classes))),
        size=64,
        cells_per_field=1,
        difficulty=difficulty,
    )
    counts = out["fields"]["Metadata_class"].value_counts()
    assert set(counts.index) == set(classes) and (counts == 3).all()
    # Any len(classes) consecutive indices cover every class once.
    for start in range(len(classes)):
        window = out["fields"]["Metadata_class"].iloc[start : start + len(classes)]
        assert sorted(window) == sorted(classes)


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
        ({"classes": ("nuclear", "mitochondria")}, "classes"),
        ({"batch_sd": -0.1}, "batch_sd"),
        ({"difficulty": "extreme"}, "difficulty"),
        ({"difficulty": None}, "difficulty"),
        ({"expression_sd": -0.1}, "expression_sd"),
        ({"expression_sd": float("nan")}, "expression_sd"),
        ({"dim_fraction": 1.5}, "dim_fraction"),
        ({"dim_fraction": True}, "dim_fraction"),
        ({"channel_gain_sd": -1}, "channel_gain_sd"),
        ({"channel_gain_sd": "0.3"}, "channel_gain_sd"),
        ({"background": -0.01}, "background"),
        ({"defocus": float("inf")}, "defocus"),
        ({"out_of_focus_fraction": -0.1}, "out_of_focus_fraction"),
        ({"difficulty": "hard", "out_of_focus_fraction": 2}, "out_of_focus_fraction"),
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


# --- Difficulty ------------------------------------------------------------------------------

# Hash of three small fields (images and truth labels) made by the original simulation,
# before the difficulty options existed (commit 68b71de). "standard" must reproduce it.
STANDARD_REFERENCE = "0d831c8120ffd216bdd0c7bf0bf3d7c17041f78b5281a7f619f4ef7d65f79a84"
STANDARD_OFF = {
    "expression_sd": 0.25,
    "dim_fraction": 0.0,
    "channel_gain_sd": 0.0,
    "background": 0.0,
    "defocus": 0.0,
    "out_of_focus_fraction": 0.0,
}


def _digest(**kwargs) -> str:
    digest = hashlib.sha256()
    for index in (0, 4, 5):
        image, labels, _, _ = generate_field(11, index, size=96, cells_per_field=6, **kwargs)
        digest.update(image.tobytes())
        digest.update(labels.tobytes())
    return digest.hexdigest()


def test_standard_is_the_original_simulation_bit_for_bit():
    assert _digest() == STANDARD_REFERENCE
    assert _digest(difficulty="standard") == STANDARD_REFERENCE
    # Every knob at its standard value, given explicitly, is the same simulation.
    assert _digest(classes=STANDARD_CLASSES, **STANDARD_OFF) == STANDARD_REFERENCE
    # ... and so is "hard" with every knob and the class list set back to standard's.
    hard_off = _digest(difficulty="hard", classes=STANDARD_CLASSES, **STANDARD_OFF)
    assert hard_off == STANDARD_REFERENCE


def test_hard_fields_differ_but_keep_the_cells():
    for index in (0, 3):
        std_img, std_lab, std_meta, std_obj = generate_field(SEED, index, size=128)
        hard_img, hard_lab, hard_meta, hard_obj = generate_field(
            SEED, index, size=128, difficulty="hard"
        )
        assert hard_meta["Metadata_class"] == HARD_CLASSES[index % len(HARD_CLASSES)]
        for c in range(len(CHANNELS)):
            assert not np.array_equal(std_img[c], hard_img[c])
        # The geometry has its own random stream: same nuclei, same truth.
        np.testing.assert_array_equal(std_lab, hard_lab)
        pd.testing.assert_frame_equal(
            std_obj.drop(columns="Metadata_class"), hard_obj.drop(columns="Metadata_class")
        )
        assert hard_meta["Metadata_field_background"] > 0
        assert hard_meta["Metadata_field_defocus"] > 0
        gains = [hard_meta[f"Metadata_field_gain_{c}"] for c in CHANNELS]
        assert len(set(gains)) == 3  # independent per channel


def test_knob_overrides_the_difficulty():
    # None takes the difficulty's value; a number replaces it, whatever the difficulty.
    a = generate_field(SEED, 5, size=96, difficulty="hard", defocus=None)
    b = generate_field(SEED, 5, size=96, difficulty="hard", defocus=0.8)
    np.testing.assert_array_equal(a[0], b[0])
    c = generate_field(SEED, 5, size=96, difficulty="hard", background=0.0)
    assert c[2]["Metadata_field_background"] == 0.0 < a[2]["Metadata_field_background"]
    # Only the background changed: same blur, same gains, less light in every channel.
    for key in FIELD_COLUMNS:
        if key != "Metadata_field_background":
            assert c[2][key] == a[2][key], key
    assert (a[0].mean(axis=(1, 2)) > c[0].mean(axis=(1, 2))).all()


def test_hard_shard_metadata_columns_and_dtypes():
    out = generate_shard(SEED, list(range(4)), size=64, cells_per_field=2, difficulty="hard")
    fields = out["fields"]
    assert list(fields.columns) == list(FIELD_COLUMNS)
    for column in FIELD_COLUMNS:
        if column.startswith("Metadata_field_gain") or column in (
            "Metadata_field_background",
            "Metadata_field_defocus",
        ):
            assert fields[column].dtype == float, column
    assert fields["Metadata_field_out_of_focus"].dtype == bool
    assert fields["Metadata_field_background"].between(0, 0.15).all()
    assert list(fields["Metadata_class"]) == list(HARD_CLASSES[:4])


def _far_background(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    far = ndi.distance_transform_edt(labels == 0) > 45
    assert far.sum() > 500
    return image[:, far].astype(float)


def test_per_channel_gains_scale_each_channel_and_are_recorded():
    img0, _, meta0, _ = generate_field(SEED, 2, size=256)
    img1, _, meta1, _ = generate_field(SEED, 2, size=256, channel_gain_sd=0.5)
    assert meta1["Metadata_field_gain"] == meta0["Metadata_field_gain"]
    ratio = (img1.mean(axis=(1, 2)) - OFFSET) / (img0.mean(axis=(1, 2)) - OFFSET)
    expected = [meta1[f"Metadata_field_gain_{c}"] / meta0["Metadata_field_gain"] for c in CHANNELS]
    np.testing.assert_allclose(ratio, expected, rtol=0.03)
    assert np.ptp(expected) > 0.05  # the channels moved apart, not together


def test_background_raises_the_floor_and_is_recorded():
    img0, labels, meta0, _ = generate_field(SEED, 2, size=256, cells_per_field=10)
    img1, _, meta1, _ = generate_field(SEED, 2, size=256, cells_per_field=10, background=0.5)
    level = meta1["Metadata_field_background"]
    assert 0 < level <= 0.5
    rise = np.median(_far_background(img1, labels), axis=1) - np.median(
        _far_background(img0, labels), axis=1
    )
    # level x the channel's typical in-cell photons, times gain and illumination (0.7-1).
    reference = np.array([1100.0, 320.0, 300.0]) * level * meta0["Metadata_field_gain"]
    assert (rise > 0.6 * reference).all() and (rise < 1.05 * reference).all()


def _high_frequency_share(channel: np.ndarray) -> float:
    x = channel.astype(float)
    x -= x.mean()
    return float((ndi.laplace(ndi.gaussian_filter(x, 0.7)) ** 2).sum() / (x**2).sum())


def test_out_of_focus_fields_are_blurrier_and_say_so():
    for index in (1, 4):
        opts = {"size": 192, "cells_per_field": 8}
        img0, labels, meta0, _ = generate_field(SEED, index, **opts)
        img1, _, meta1, _ = generate_field(SEED, index, out_of_focus_fraction=1.0, **opts)
        img2, _, meta2, _ = generate_field(SEED, index, defocus=0.8, **opts)
        assert not meta0["Metadata_field_out_of_focus"] and meta0["Metadata_field_defocus"] == 0
        assert meta1["Metadata_field_out_of_focus"] and 2 <= meta1["Metadata_field_defocus"] <= 3
        assert not meta2["Metadata_field_out_of_focus"]
        assert 0 < meta2["Metadata_field_defocus"] <= 0.8
        for c in (0, 1):  # the class-independent channels, same cells in all three
            sharp = _high_frequency_share(img0[c])
            assert _high_frequency_share(img1[c]) < 0.5 * sharp
            assert _high_frequency_share(img2[c]) < sharp
        # Blur and haze spread the DNA stain's light outside the nuclei.
        distance = ndi.distance_transform_edt(labels == 0)
        near = (distance > 5) & (distance < 12)
        assert img1[0][near].mean() > img0[0][near].mean() + 5


def test_hard_draws_out_of_focus_fields_at_about_the_set_rate():
    out = generate_shard(SEED, list(range(200)), size=64, cells_per_field=1, difficulty="hard")
    fraction = out["fields"]["Metadata_field_out_of_focus"].mean()
    assert 0.04 <= fraction <= 0.17
    in_focus = out["fields"].loc[~out["fields"]["Metadata_field_out_of_focus"]]
    assert in_focus["Metadata_field_defocus"].between(0, 0.8).all()
    assert in_focus["Metadata_field_defocus"].std() > 0.15  # spread, not one value


def _nucleus_means(image: np.ndarray, labels: np.ndarray, objects: pd.DataFrame) -> np.ndarray:
    """Mean protein signal above the camera offset of each nucleus whose centre is well
    inside the field."""
    ids = objects.loc[
        objects["truth_y"].between(20, labels.shape[0] - 21)
        & objects["truth_x"].between(20, labels.shape[1] - 21),
        "truth_label",
    ].to_numpy()
    protein = image[2].astype(float) - OFFSET
    return np.asarray(ndi.mean(protein, labels, ids))


def test_expression_sd_and_dim_cells():
    opts = {"size": 384, "cells_per_field": 40, "classes": ("nuclear",)}
    img0, labels, _, obj = generate_field(SEED, 0, **opts)
    img1, _, _, _ = generate_field(SEED, 0, expression_sd=0.8, **opts)
    # Same cells, same normal deviates: the log ratio per cell is (0.8 - 0.25) z, a little
    # compressed by the light every cell has whatever its expression.
    change = np.log(_nucleus_means(img1, labels, obj) / _nucleus_means(img0, labels, obj))
    assert 0.4 < change.std() < 0.6
    # All cells dim: about a tenth of the signal (plus the unchanged autofluorescence).
    dim = generate_field(SEED, 0, dim_fraction=1.0, **opts)[0]
    ratio = (_nucleus_means(dim, labels, obj) - 15) / (_nucleus_means(img0, labels, obj) - 15)
    assert 0.07 < np.median(ratio) < 0.14
    # A tenth of the cells dim: the others keep their brightness, some drop ~10x.
    some = generate_field(SEED, 0, dim_fraction=0.1, **opts)[0]
    ratio = _nucleus_means(some, labels, obj) / _nucleus_means(img0, labels, obj)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    assert 0 < (ratio < 0.3).mean() < 0.3


# --- Hard classes: each shows its pattern ------------------------------------------------
# The class changes only the protein channel, so the same field (seed, index) in two
# classes has the same cells: the comparisons below are paired.


def _class_field(name: str, index: int):
    return generate_field(7, index, size=256, cells_per_field=16, classes=(name,))


def _inside(objects: pd.DataFrame, margin: int = 40) -> pd.DataFrame:
    keep = objects["truth_y"].between(margin, 255 - margin)
    return objects[keep & objects["truth_x"].between(margin, 255 - margin)]


def test_twins_have_the_same_brightness_per_cell():
    def total(name):
        out = 0.0
        for index in range(3):
            image, labels, _, _ = _class_field(name, index)
            protein = image[2].astype(float)
            out += (protein - np.median(_far_background(image, labels)[2])).sum()
        return out

    for a, b in [
        ("nuclear", "nuclear_speckles"),
        ("cytoplasmic", "er"),
        ("cytoplasmic", "golgi"),
        ("puncta", "fine_puncta"),
    ]:
        assert total(b) / total(a) == pytest.approx(1.0, abs=0.2), (a, b)


def test_nuclear_speckles_are_textured_nuclear_is_diffuse():
    for index in range(2):
        cv = {}
        for name in ("nuclear", "nuclear_speckles"):
            image, labels, _, objects = _class_field(name, index)
            protein = image[2].astype(float) - OFFSET
            values = []
            for label in _inside(objects)["truth_label"]:
                inner = ndi.binary_erosion(labels == label, iterations=2)
                values.append(protein[inner].std() / protein[inner].mean())
            cv[name] = np.median(values)
        assert cv["nuclear_speckles"] > 1.6 * cv["nuclear"], cv


def _cytoplasm_near_nuclei(labels: np.ndarray) -> np.ndarray:
    return (labels == 0) & (ndi.distance_transform_edt(labels == 0) < 20)


def test_fine_puncta_are_more_and_smaller_than_puncta():
    for index in range(2):
        count, width = {}, {}
        for name in ("puncta", "fine_puncta"):
            image, labels, _, objects = _class_field(name, index)
            protein = image[2].astype(float) - OFFSET
            cyto = _cytoplasm_near_nuclei(labels)
            floor = np.percentile(protein, 10)
            top = np.percentile(protein[cyto], 99)
            peaks = peak_local_max(
                protein, min_distance=1, threshold_abs=floor + 0.1 * (top - floor), exclude_border=2
            )
            count[name] = cyto[peaks[:, 0], peaks[:, 1]].sum() / len(objects)
            # Spot size: correlation of the in-cell signal with itself 2 px away.
            fg = cyto & (protein > floor + 0.2 * (top - floor))
            x = protein - protein[fg].mean()
            pair = fg[:, :-2] & fg[:, 2:]
            width[name] = (x[:, :-2][pair] * x[:, 2:][pair]).mean() / (x[fg] ** 2).mean()
        assert count["fine_puncta"] > 1.4 * count["puncta"], count
        assert width["fine_puncta"] < width["puncta"] - 0.03, width


def test_golgi_is_a_cap_on_one_side_of_the_nucleus():
    yy, xx = np.mgrid[:256, :256]
    for index in range(2):
        asymmetry = {}
        for name in ("cytoplasmic", "er", "golgi"):
            image, labels, _, objects = _class_field(name, index)
            protein = image[2].astype(float) - OFFSET
            values = []
            for row in _inside(objects).itertuples():
                radius = np.sqrt(row.truth_nucleus_area / np.pi)
                dy, dx = yy - row.truth_y, xx - row.truth_x
                ring = (np.hypot(dy, dx) < 1.8 * radius) & (labels == 0)
                w = protein[ring]
                # First angular moment of the perinuclear signal: 0 all round, 1 one-sided.
                values.append(abs((w * (dx + 1j * dy)[ring] / np.hypot(dx, dy)[ring]).sum()) / w.sum())
            asymmetry[name] = np.median(values)
        assert asymmetry["golgi"] > 0.5 > 0.2 > max(asymmetry["cytoplasmic"], asymmetry["er"])


def test_er_is_a_finer_texture_than_cytoplasmic():
    for index in range(2):
        share = {}
        for name in ("cytoplasmic", "er"):
            image, labels, _, _ = _class_field(name, index)
            protein = image[2].astype(float) - OFFSET
            cyto = _cytoplasm_near_nuclei(labels)
            floor = np.percentile(protein, 10)
            fg = cyto & (protein > floor + 0.2 * (np.percentile(protein[cyto], 99) - floor))
            detail = protein - ndi.gaussian_filter(protein, 2.0)
            share[name] = (detail[fg] ** 2).sum() / ((protein[fg] - protein[fg].mean()) ** 2).sum()
        assert share["er"] > 1.5 * share["cytoplasmic"], share


def test_otsu_finds_nuclei_in_hard_fields():
    out = generate_shard(SEED, list(range(8)), size=256, cells_per_field=14, difficulty="hard")
    for image, labels, row, _ in _fields(out):
        smooth = gaussian(image[0].astype(float), sigma=2, preserve_range=True)
        fg = smooth > threshold_otsu(smooth)
        truth = labels > 0
        dice = 2 * (fg & truth).sum() / (fg.sum() + truth.sum())
        assert dice > (0.6 if row["Metadata_field_out_of_focus"] else 0.8), row.to_dict()


# --- Plate layout (plates > 0) -----------------------------------------------------------

# Digests of small shards made before the plate layout existed: without ``plates`` every
# image, label, field and object must stay bit for bit what it was.
PRE_LAYOUT_DIGESTS = {
    "standard": "e54b8ad4395c3ee871bc4d04cac6b3e8b538c05b30b4f137d2c6cfe6edeb7ee3",
    "hard": "f5a7caad8991d423b335747951f4839e72ab1dedab37017aca9e4479565cb911",
}
PRE_LAYOUT_SHARDS = {
    "standard": {"size": 96, "cells_per_field": 6},
    "hard": {"size": 128, "cells_per_field": 10, "difficulty": "hard"},
}


def _shard_digest(shard) -> str:
    digest = hashlib.sha256()
    digest.update(shard["images"].tobytes())
    digest.update(shard["truth_labels"].tobytes())
    fields, objects = shard["fields"], shard["objects"]
    digest.update(fields.select_dtypes("number").to_numpy(dtype=float).tobytes())
    digest.update("|".join(fields["Metadata_class"]).encode())
    digest.update(objects.select_dtypes("number").to_numpy(dtype=float).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("preset", sorted(PRE_LAYOUT_SHARDS))
def test_without_plates_every_field_is_what_it_was(preset):
    options = PRE_LAYOUT_SHARDS[preset]
    shard = generate_shard(3, [0, 1, 5, 13], **options)
    assert _shard_digest(shard) == PRE_LAYOUT_DIGESTS[preset]
    assert list(shard["fields"].columns) == list(FIELD_COLUMNS)
    # The layout's own options do nothing while plates is 0.
    ignored = {"plate_effect_sd": 2.0, "well_effect": 1.0, "controls_per_plate": 7, "n_fields": 5}
    assert _shard_digest(generate_shard(3, [0, 1, 5, 13], plates=0, **ignored, **options)) == PRE_LAYOUT_DIGESTS[preset]


def test_plate_layout_design():
    plates, n_fields, controls = 4, 96, 4
    layout = plate_layout(7, n_fields, plates, controls)
    assert list(layout.columns[1:5]) == list(LAYOUT_COLUMNS)
    assert layout["Metadata_field_index"].tolist() == list(range(n_fields))
    assert layout["Metadata_plate"].tolist() == [f"p0{1 + i // 24}" for i in range(n_fields)]
    assert plate_format(24) == (4, 6)
    wells = [f"{r}{c:02d}" for r in "ABCD" for c in range(1, 7)]
    assert layout["Metadata_well"].tolist() == wells * plates  # field i is well i % 24 of plate i // 24

    control_sets = []
    for _, plate in layout.groupby("Metadata_plate"):
        is_control = plate["Metadata_perturbation"] == CONTROL
        assert is_control.sum() == controls
        control_sets.append(frozenset(plate.loc[is_control, "Metadata_well"]))
        # Every perturbation exactly once per plate: replicates lie on different plates.
        treated = plate.loc[~is_control, "Metadata_perturbation"]
        assert sorted(treated) == [f"pert{k:02d}" for k in range(1, 21)]
    assert len(set(control_sets)) == plates  # control positions differ between plates

    # Phenotypes cycle over the standard classes; controls show the first (no phenotype).
    first = layout.drop_duplicates("Metadata_perturbation").set_index("Metadata_perturbation")
    assert first.loc[CONTROL, "Metadata_class"] == STANDARD_CLASSES[0]
    assert first.loc[CONTROL, "Metadata_moa"] == CONTROL
    for k in range(1, 21):
        name = f"pert{k:02d}"
        assert first.loc[name, "Metadata_class"] == first.loc[name, "Metadata_moa"] == STANDARD_CLASSES[(k - 1) % 6]
    inactive = layout.loc[layout["Metadata_perturbation"] != CONTROL].query("Metadata_class == 'nuclear'")
    assert inactive["Metadata_perturbation"].nunique() == 4  # pert01, 07, 13, 19 look like controls
    # Every perturbation at more than one position across plates (shuffled layouts).
    positions = layout.groupby("Metadata_perturbation")["Metadata_well"].nunique()
    assert (positions.drop(CONTROL) > 1).all()
    # Edge weights: the outer ring 1, the next 0.5 (a 4 x 6 plate has no third ring).
    edge = layout[layout["Metadata_plate"] == "p02"].set_index("Metadata_well").loc[["A01", "B02", "C05", "D06"], "Metadata_edge"]
    assert edge.tolist() == [1.0, 0.5, 0.5, 1.0]


def test_plate_layout_is_a_function_of_its_arguments():
    a = plate_layout(3, 48, 2, 3, difficulty="hard")
    pd.testing.assert_frame_equal(a, plate_layout(3, 48, 2, 3, difficulty="hard"))
    assert set(a["Metadata_class"]) <= set(HARD_CLASSES)
    other = plate_layout(4, 48, 2, 3, difficulty="hard")
    assert not a["Metadata_perturbation"].equals(other["Metadata_perturbation"])


def test_well_names_follow_the_plate_grid():
    assert plate_format(96) == (8, 12) and plate_format(384) == (16, 24) and plate_format(1536) == (32, 48)
    assert [well_name(p, 12) for p in (0, 11, 12, 95)] == ["A01", "A12", "B01", "H12"]
    assert well_name(32 * 48 - 1, 48) == "AF48"
    layout = plate_layout(0, 2 * 384, 2, 16)
    assert layout["Metadata_well"].iloc[383] == "P24"


def test_fields_with_plates_carry_the_layout_and_its_effects():
    options = {"size": 96, "cells_per_field": 5, "plates": 3, "n_fields": 36, "plate_effect_sd": 0.5, "well_effect": 0.4}
    shard = generate_shard(SEED, list(range(36)), **options)
    fields = shard["fields"]
    assert list(fields.columns) == [*FIELD_COLUMNS, *LAYOUT_COLUMNS]
    layout = plate_layout(SEED, 36, 3, 4)
    for column in (*LAYOUT_COLUMNS, "Metadata_class"):
        assert fields[column].tolist() == layout[column].tolist(), column
    assert (shard["objects"]["Metadata_class"].to_numpy() == fields.set_index("Metadata_image").loc[
        shard["objects"]["Metadata_image"], "Metadata_class"].to_numpy()).all()  # fmt: skip
    # A field is the same whichever shard it is generated in.
    again = generate_shard(SEED, [17, 5], **options)
    assert np.array_equal(again["images"][1], shard["images"][5])
    # Standard difficulty has no per-field channel gain: channel gain / shared gain is the
    # plate's gain (one per plate and channel) times the well's edge gain.
    gain = fields[[f"Metadata_field_gain_{c}" for c in CHANNELS]].to_numpy() / fields[["Metadata_field_gain"]].to_numpy()
    plate_gain = gain / np.exp(0.4 * layout[["Metadata_edge"]].to_numpy())
    for _, rows in fields.groupby("Metadata_plate").indices.items():
        np.testing.assert_allclose(plate_gain[rows], plate_gain[rows[:1]].repeat(len(rows), 0), rtol=1e-9)
    per_plate = plate_gain[[0, 12, 24]]
    assert np.abs(np.log(per_plate)).max() > 0.1 and len({tuple(np.round(r, 6)) for r in per_plate}) == 3
    assert (fields["Metadata_field_defocus"] > 0).all()  # every plate blurs a little


def test_plates_change_only_the_class_when_their_effects_are_off():
    # With zero plate and well effects a well is the field of the same index without plates,
    # except for the class its perturbation shows (the protein channel).
    options = {"size": 96, "cells_per_field": 6}
    layout = {"plates": 2, "n_fields": 12, "controls_per_plate": 2, "plate_effect_sd": 0.0, "well_effect": 0.0}
    for index in range(12):
        plain, plain_labels, plain_meta, _ = generate_field(SEED, index, **options)
        well, well_labels, well_meta, _ = generate_field(SEED, index, **options, **layout)
        assert np.array_equal(plain[:2], well[:2]) and np.array_equal(plain_labels, well_labels)
        if well_meta["Metadata_class"] == plain_meta["Metadata_class"]:
            assert np.array_equal(plain, well)
        assert well_meta["Metadata_image"] == plain_meta["Metadata_image"] == well_meta["Metadata_group"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"plates": 3, "n_fields": 40}, r"n_fields=40, plates=3: expected n_fields divisible by plates"),
        ({"plates": 1, "n_fields": 40}, r"plates=1: expected 0 .* or at least 2"),
        ({"plates": 2}, r"plates=2: n_fields is required"),
        ({"plates": 2, "n_fields": 8, "controls_per_plate": 4}, r"controls_per_plate=4: expected fewer than the 4 wells"),
        ({"plates": -1}, r"plates"),
        ({"plates": 2, "n_fields": 8, "plate_effect_sd": -0.1}, r"plate_effect_sd"),
        ({"plates": 2, "n_fields": 8, "well_effect": float("nan")}, r"well_effect"),
        ({"plates": 2, "n_fields": 2 * 1537}, r"1537 wells per plate; expected at most 1536"),
        ({"plates": 2, "n_fields": 4, "controls_per_plate": 1}, r"index=5: expected < n_fields=4"),
    ],
)
def test_bad_plate_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        generate_field(0, 5, size=64, cells_per_field=2, **options)


def test_the_synthesis_job_gets_the_layout_options_only_with_plates():
    entry = {"source": "synthetic", "n_fields": 8, "field_size": 64, "cells_per_field": 3, "batch_sd": 0.3}
    entry |= {"difficulty": "standard", "plates": 0, "controls_per_plate": 4, "plate_effect_sd": 0.3, "well_effect": 0.2}
    plain = source_spec("synthetic").options(entry)
    # Without plates the job's options (Snakemake params) are what they were: no re-run.
    assert not {"plates", "n_fields", "controls_per_plate", "plate_effect_sd", "well_effect"} & set(plain)
    screen = source_spec("synthetic").options(entry | {"plates": 2, "controls_per_plate": 1, "well_effect": 0.5})
    assert screen == plain | {"plates": 2, "n_fields": 8, "controls_per_plate": 1, "plate_effect_sd": 0.3, "well_effect": 0.5}
    fields = generate_shard(0, [6, 7], **screen)["fields"]
    assert fields["Metadata_plate"].tolist() == ["p02", "p02"] and fields["Metadata_well"].tolist() == ["A03", "B01"]
