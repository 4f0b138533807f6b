"""Tests of workflow_scripts.segment: nuclear segmentation and label-image measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.draw import disk
from skimage.filters import threshold_otsu

from workflow_scripts import segment
from workflow_scripts.segment import match_labels, object_table, segment_nuclei

DATA = Path(__file__).parent / "data"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every (pred object, truth object) pair from one contingency bincount."""
    # Compress both label sets to 0..k so the table is dense and small (mask2d has gaps).
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    p, t = p.ravel(), t.ravel()
    n, m = p.max() + 1, t.max() + 1
    inter = np.bincount(p * m + t, minlength=n * m).reshape(n, m)
    union = inter.sum(1)[:, None] + inter.sum(0)[None, :] - inter
    # Row/column 0 is background in both (both images contain background pixels).
    return inter[1:, 1:] / union[1:, 1:]


def _f1_at_iou(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5):
    """Object-level F1: one-to-one matching, a match counts when IoU >= threshold."""
    iou = _iou_matrix(pred, truth)
    rows, cols = linear_sum_assignment(-iou)
    tp = int(np.count_nonzero(iou[rows, cols] >= threshold))
    fp, fn = iou.shape[0] - tp, iou.shape[1] - tp
    return 2 * tp / (2 * tp + fp + fn), tp, fp, fn


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = pred > 0, truth > 0
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _discs(shape, centres_radii, value=200.0):
    """Float image of bright discs on a dark background."""
    image = np.full(shape, 10.0)
    for (y, x), r in centres_radii:
        image[disk((y, x), r, shape=shape)] = value
    return image


# Everything except thresholding switched off: the output is the thresholded smoothed image.
_BARE = dict(fill_holes=0, min_area=0, max_area=None, split_touching=False)


# --------------------------------------------------------------------------------------------
# Real image with ground truth
# --------------------------------------------------------------------------------------------
def test_stardist_nuclei_f1_and_dice():
    """Score against the hand-made labels of a 2018 Data Science Bowl image (125 nuclei).

    Parameters chosen for this image (nuclei ~25 px across): sigma=2 (the default), markers
    min_distance=7 (instead of 5, to stop elongated nuclei splitting), min_area=50 (keeps the
    smaller nuclei; the image has several of 35-100 px). Measured: 110 objects, F1 = 0.732 at
    IoU >= 0.5 (TP 86, FP 24, FN 39), foreground Dice = 0.833. With all defaults F1 = 0.703.
    Most misses are dim nuclei that Otsu's global threshold only partly covers (a limit of the
    reference method, not of the implementation).
    """
    image = tifffile.imread(DATA / "stardist_nuclei" / "img2d.tif")
    truth = tifffile.imread(DATA / "stardist_nuclei" / "mask2d.tif")
    labels = segment_nuclei(image, sigma=2.0, min_distance=7, min_area=50)

    f1, tp, fp, fn = _f1_at_iou(labels, truth)
    dice = _dice(labels, truth)
    print(
        f"stardist img2d: {labels.max()} objects, F1@0.5={f1:.3f} (TP {tp}, FP {fp}, FN {fn}), "
        f"Dice={dice:.3f}"
    )
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert f1 >= 0.7
    assert dice >= 0.8

    # match_labels agrees with the IoU matching: every true positive's best truth is its match.
    best = match_labels(labels, truth)
    iou = _iou_matrix(labels, truth)
    truth_ids = np.unique(truth)[1:]
    pred_idx, truth_idx = np.nonzero(iou >= 0.5)
    np.testing.assert_array_equal(best[pred_idx], truth_ids[truth_idx])


# --------------------------------------------------------------------------------------------
# Reference bugs that must stay fixed
# --------------------------------------------------------------------------------------------
def test_otsu_threshold_is_computed_on_the_smoothed_image():
    # A 48x48 square of 1.0 plus sparse single-pixel spikes of 8.0 in the background. On the raw
    # image Otsu separates the spikes (threshold ~1.02, above everything once smoothed); on the
    # smoothed image the spikes are faint (~0.33) and Otsu (~0.48) finds the square.
    image = np.zeros((128, 128), dtype=np.float32)
    image[40:88, 40:88] = 1.0
    spikes = np.zeros(image.shape, dtype=bool)
    spikes[4::8, 4::8] = True
    spikes[36:92, 36:92] = False
    image[spikes] = 8.0

    smoothed = ndi.gaussian_filter(image, 2.0)
    from_smoothed = smoothed > threshold_otsu(smoothed)
    from_raw = smoothed > threshold_otsu(image)
    assert from_smoothed.sum() != from_raw.sum()  # the two choices really differ here

    labels = segment_nuclei(image, sigma=2.0, **_BARE)
    np.testing.assert_array_equal(labels > 0, from_smoothed)
    assert labels.max() == 1
    assert abs(np.count_nonzero(labels) - 48 * 48) < 0.05 * 48 * 48


def test_last_label_kept_labels_int32_consecutive():
    image = _discs((100, 100), [((20, 20), 6), ((20, 70), 6), ((80, 50), 6)])
    labels = segment_nuclei(image, sigma=1.0, min_area=10)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2, 3])
    # The last label in raster order (bottom disc) is present and measured.
    assert labels[80, 50] == 3
    table = object_table(labels)
    assert table["label"].tolist() == [1, 2, 3]
    assert table.iloc[-1][["y", "x"]].tolist() == pytest.approx([80, 50], abs=1e-9)


def test_more_than_65535_objects():
    # 342 x 342 = 116,964 isolated single-pixel objects: overflows uint16 labels.
    image = np.zeros((1024, 1024), dtype=np.uint8)
    image[::3, ::3] = 255
    labels = segment_nuclei(
        image, sigma=0, fill_holes=0, min_area=1, max_area=None, split_touching=False
    )
    n = 342 * 342
    assert labels.dtype == np.int32
    assert labels.max() == n
    assert np.count_nonzero(labels) == n
    assert labels[1023, 1023] == n  # the last object is kept
    table = object_table(labels)
    assert len(table) == n and table["label"].iloc[-1] == n
    assert table[["y", "x"]].iloc[-1].tolist() == [1023.0, 1023.0]


# --------------------------------------------------------------------------------------------
# Degenerate input and validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "image",
    [
        np.zeros((50, 60), dtype=np.uint16),
        np.full((50, 60), 7.5, dtype=np.float32),
        np.zeros((0, 60), dtype=np.uint8),
    ],
    ids=["zeros", "constant", "empty"],
)
def test_constant_or_empty_image_gives_no_labels(image):
    labels = segment_nuclei(image)
    assert labels.shape == image.shape and labels.dtype == np.int32
    assert not labels.any()


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_input_raises(bad, word):
    image = _discs((40, 40), [((20, 20), 5)])
    image[3, 3] = bad
    with pytest.raises(ValueError, match=word):
        segment_nuclei(image)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(downscale=0), "downscale"),
        (dict(downscale=1.5), "downscale"),
        (dict(sigma=-1), "sigma"),
        (dict(min_area=-5), "min_area"),
        (dict(min_area=200, max_area=100), "max_area"),
        (dict(min_distance=0), "min_distance"),
        (dict(clear_border=1), "clear_border"),
        (dict(fill_holes=float("nan")), "fill_holes"),
    ],
)
def test_invalid_parameters_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        segment_nuclei(np.zeros((10, 10)), **kwargs)


@pytest.mark.parametrize(
    "image, word",
    [(np.zeros((2, 10, 10)), "2-D"), (np.zeros((10, 10), dtype=complex), "dtype")],
)
def test_invalid_image_raises(image, word):
    with pytest.raises(ValueError, match=word):
        segment_nuclei(image)


# --------------------------------------------------------------------------------------------
# Individual steps
# --------------------------------------------------------------------------------------------
def test_downscale_returns_full_resolution_labels_with_similar_areas():
    # Odd shape: the last block row/column is partial.
    spec = [((30, 30), 12), ((30, 120), 15), ((110, 60), 10), ((140, 150), 13)]
    image = _discs((171, 203), spec)
    full = segment_nuclei(image, downscale=1, sigma=2.0)
    half = segment_nuclei(image, downscale=2, sigma=2.0)
    assert half.shape == image.shape and half.dtype == np.int32
    assert full.max() == half.max() == len(spec)
    full_t, half_t = object_table(full), object_table(half)
    np.testing.assert_allclose(half_t["area"], full_t["area"], rtol=0.1)
    np.testing.assert_allclose(half_t[["y", "x"]], full_t[["y", "x"]], atol=1.0)
    # A label image made by nearest-neighbour upscaling is blocky at factor 2.
    np.testing.assert_array_equal(half[:170:2, :202:2], half[1:171:2, 1:203:2])


def test_downscale_converts_area_thresholds_to_full_resolution():
    # Disc areas ~113 and ~1257 full-resolution px; the threshold of 500 px must separate them
    # at downscale 4 as well (where the discs cover ~7 and ~79 working pixels).
    image = _discs((200, 200), [((50, 50), 6), ((130, 130), 20)])
    for factor in (1, 4):
        labels = segment_nuclei(image, downscale=factor, sigma=1.0, min_area=500)
        assert labels.max() == 1 and labels[130, 130] == 1, factor


def test_clear_border_removes_objects_touching_the_edge():
    image = _discs((100, 100), [((50, 50), 8), ((3, 40), 8), ((60, 97), 8)])
    kept = segment_nuclei(image, sigma=1.0, clear_border=False, min_area=10)
    cleared = segment_nuclei(image, sigma=1.0, clear_border=True, min_area=10)
    assert kept.max() == 3
    assert cleared.max() == 1 and cleared[50, 50] == 1
    edge = np.concatenate([cleared[0], cleared[-1], cleared[:, 0], cleared[:, -1]])
    assert not edge.any()


def test_min_and_max_area_filters():
    # Areas: r=4 -> ~50 px, r=10 -> ~317 px, r=25 -> ~1960 px.
    image = _discs((150, 150), [((20, 20), 4), ((40, 100), 10), ((100, 60), 25)])
    labels = segment_nuclei(image, sigma=1.0, min_area=100, max_area=1000)
    assert labels.max() == 1 and labels[40, 100] == 1
    labels = segment_nuclei(image, sigma=1.0, min_area=100, max_area=None)
    assert labels.max() == 2 and labels[100, 60] == 2
    labels = segment_nuclei(image, sigma=1.0, min_area=0, max_area=None)
    assert labels.max() == 3


def test_fill_holes_fills_only_small_enclosed_holes():
    image = np.full((120, 120), 10.0)
    image[disk((40, 40), 20)] = 200.0
    image[disk((40, 40), 4)] = 10.0  # hole of ~50 px
    image[disk((80, 80), 30, shape=image.shape)] = 200.0
    image[disk((85, 85), 12)] = 10.0  # hole of ~450 px
    kwargs = dict(sigma=0, min_area=0, max_area=None, split_touching=False)
    filled = segment_nuclei(image, fill_holes=300, **kwargs)
    assert filled[40, 40] > 0  # small hole filled
    assert filled[85, 85] == 0  # large hole kept
    assert segment_nuclei(image, fill_holes=0, **kwargs)[40, 40] == 0


def test_split_touching_separates_two_overlapping_discs():
    image = _discs((80, 120), [((40, 45), 16), ((40, 75), 16)])
    split = segment_nuclei(image, sigma=1.0, split_touching=True, min_distance=5)
    merged = segment_nuclei(image, sigma=1.0, split_touching=False)
    assert merged.max() == 1
    assert split.max() == 2
    assert split[40, 35] != split[40, 85]
    np.testing.assert_array_equal(split > 0, merged > 0)  # splitting only relabels


def _capsule(shape, centre, length, radius, value=200.0):
    """Float image of one elongated nucleus: a bar with round ends, along the x axis."""
    image = np.full(shape, 10.0)
    (y, x), half = centre, length / 2
    image[y - radius : y + radius + 1, int(x - half) : int(x + half) + 1] = value
    image[disk((y, x - half), radius, shape=shape)] = value
    image[disk((y, x + half), radius, shape=shape)] = value
    return image


@pytest.mark.parametrize("split_intensity", [0.0, 0.5])
def test_an_elongated_nucleus_is_not_cut_where_its_seeds_are_not_prominent(split_intensity):
    """A capsule (555 px, 1.8 nuclei of radius 2 x min_distance) has a flat distance ridge, so
    the watershed cuts it at every seed (3 pieces); the pieces stand no higher than the pass
    between them, so ``seed_prominence`` joins them again."""
    image = _capsule((60, 120), (30, 60), 16, 9)
    kwargs = dict(sigma=1.0, fill_holes=0, min_area=10, max_area=None, min_distance=5, split_intensity=split_intensity)
    if split_intensity:
        kwargs["seed_sigma"] = 2.0
    assert segment_nuclei(image, seed_prominence=0.0, **kwargs).max() >= 2  # cut along the ridge
    whole = segment_nuclei(image, seed_prominence=0.05, **kwargs)
    assert whole.max() == 1
    np.testing.assert_array_equal(whole > 0, segment_nuclei(image, split_touching=False, **kwargs) > 0)


def test_seed_prominence_keeps_nuclei_with_a_waist_and_whole_nuclei_apart():
    """Two small discs with a deep waist, and two large discs (each a whole nucleus, above 0.8
    of a nucleus of radius 2 x min_distance) stay two objects."""
    small = _discs((60, 80), [((30, 33), 8), ((30, 47), 8)])
    large = _discs((80, 120), [((40, 45), 16), ((40, 75), 16)])
    for image in (small, large):
        for split_intensity in (0.0, 0.5):
            labels = segment_nuclei(
                image, sigma=1.0, fill_holes=0, min_area=10, max_area=None, min_distance=5,
                split_intensity=split_intensity, seed_sigma=2.0, seed_prominence=0.05,
            )
            assert labels.max() == 2


def test_merge_shallow_pieces_joins_the_shallowest_pass_first():
    """Three pieces in a row: 1 | 2 | 3 with peaks 1.0, 0.95, 1.0; passes 0.93 (1-2) and 0.5
    (2-3). Piece 2 stands 0.02 above its pass to 1: joined to 1; then 3 stands 0.5 above the
    joined piece: kept."""
    pieces = np.repeat(np.array([[1, 1, 2, 2, 3, 3]]), 3, axis=0)
    relief = np.repeat(np.array([[1.0, 0.93, 0.95, 0.5, 0.5, 1.0]]), 3, axis=0)
    lut = segment._merge_shallow_pieces(pieces, relief, np.array([1.0, 0.95, 1.0]), 0.05, 100)
    assert lut.tolist() == [0, 1, 1, 3]
    # the same relief, but pieces too large to be parts of one nucleus: nothing joined
    lut = segment._merge_shallow_pieces(pieces, relief, np.array([1.0, 0.95, 1.0]), 0.05, 6)
    assert lut.tolist() == [0, 1, 2, 3]
    # a higher prominence joins all three
    lut = segment._merge_shallow_pieces(pieces, relief, np.array([1.0, 0.95, 1.0]), 0.6, 100)
    assert lut.tolist() == [0, 1, 1, 1]


def _blobby_fields(n: int, size: int = 256):
    """Fields of random overlapping discs of radius 4-16 px (many touching pairs and chains,
    some elongated), with noise: hard cases for the marker search."""
    rng = np.random.default_rng(7)
    for _ in range(n):
        image = np.full((size, size), 20.0)
        for _ in range(60):
            y, x = rng.uniform(-5, size + 5, 2)
            image[disk((y, x), rng.uniform(4, 16), shape=image.shape)] += rng.uniform(80, 160)
        yield image + rng.normal(0, 8, image.shape)


@pytest.mark.parametrize("min_distance", [1, 2, 5, 9])
def test_watershed_markers_are_those_of_peak_local_max(monkeypatch, min_distance):
    """The split's own marker search (``_distance_peaks``: same rule and order as
    ``skimage.feature.peak_local_max``, without its fixed cost) gives the same labels, pixel
    for pixel, as calling ``peak_local_max`` for every component."""
    fields = list(_blobby_fields(6))
    kwargs = dict(sigma=1.0, fill_holes=50, min_area=10, max_area=None, min_distance=min_distance)
    fast = [segment_nuclei(f, **kwargs) for f in fields]
    calls = []

    def only_peak_local_max(*args):
        calls.append(1)
        return None  # "not reproduced": the caller runs peak_local_max

    monkeypatch.setattr(segment, "_distance_peaks", only_peak_local_max)
    slow = [segment_nuclei(f, **kwargs) for f in fields]
    assert len(calls) > 100
    assert sum(int(s.max()) for s in slow) > sum(len(np.unique(ndi.label(s > 0)[0])) - 1 for s in slow)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


def test_labelling_and_distance_transform_are_scipys():
    """The OpenCV labelling numbers objects as ``scipy.ndimage.label`` (raster order of their
    first pixel; with one or several OpenCV threads) and the distance transform returns
    ``distance_transform_edt``'s values exactly: the split's ties depend on them."""
    import cv2

    rng = np.random.default_rng(3)
    threads = cv2.getNumThreads()
    try:
        for n_threads in (1, 4):
            cv2.setNumThreads(n_threads)
            for size in (7, 64, 700):
                mask = ndi.binary_opening(rng.random((size, size)) < 0.55)
                labels, n = segment._label8(mask)
                want, n_want = ndi.label(mask, structure=np.ones((3, 3), bool))
                assert n == n_want and labels.dtype == np.int32
                np.testing.assert_array_equal(labels, want)
    finally:
        cv2.setNumThreads(threads)
    for trial in range(200):
        h, w = rng.integers(2, 90, 2)
        component = rng.random((h, w)) < rng.uniform(0.6, 0.97)
        if trial % 2:
            component = ndi.binary_closing(component)
        if component.all():
            continue
        squared = ndi.distance_transform_edt(component) ** 2
        np.testing.assert_array_equal(segment._squared_distance(component), np.rint(squared))
    assert segment._squared_distance(np.ones((5, 9), bool)) is None  # no background: scipy's


def _reference_split(mask: np.ndarray, min_distance: int) -> np.ndarray:
    """The split written with scipy and scikit-image only: per 8-connected component, on its
    box with one pixel of margin, ``distance_transform_edt``, ``peak_local_max`` markers and
    ``watershed`` of the inverted distance; new labels numbered after the components'."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    labels, next_label = ndi.label(mask, structure=np.ones((3, 3), bool))
    labels = labels.astype(np.int32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, mask.shape))
        component = labels[box] == index
        distance = ndi.distance_transform_edt(component)
        peaks = peak_local_max(distance, min_distance=min_distance, labels=component.view(np.uint8), exclude_border=False)
        if len(peaks) < 2:
            continue
        markers = np.zeros(component.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        pieces = watershed(-distance, markers, mask=component, connectivity=2)
        split = component & (pieces > 0)
        labels[box][split] = pieces[split] + next_label
        next_label += len(peaks)
    return labels


@pytest.mark.parametrize("min_distance", [1, 3, 5, 9])
def test_split_equals_the_scipy_skimage_split(min_distance):
    """The fast split (OpenCV labelling and squared distances, own marker search) labels every
    pixel as the plain scipy + scikit-image version does, components at the image edge and
    touching chains included."""
    for image in _blobby_fields(4):
        smooth = ndi.gaussian_filter(image, 1.0)
        mask = smooth > threshold_otsu(smooth)
        np.testing.assert_array_equal(segment._split_touching(mask, min_distance), _reference_split(mask, min_distance))


def test_gaussian_and_otsu_agree_with_scipy_and_skimage():
    """OpenCV's smoothing = scipy's ``gaussian_filter`` (same kernel, mirrored edges) to float32
    rounding, also for a kernel wider than the image; the bincount histogram gives skimage's
    Otsu threshold."""
    for image in _blobby_fields(3, size=200):
        image = image.astype(np.float32)
        for sigma in (0.5, 2.0, 7.3, 60.0):
            ours = segment._gaussian(image, sigma)
            scipy_ = ndi.gaussian_filter(image, sigma)
            np.testing.assert_allclose(ours, scipy_, rtol=0, atol=1e-4 * float(np.abs(scipy_).max()))
            lo, hi = ours.min(), ours.max()
            assert segment._otsu_threshold(ours, lo, hi) == pytest.approx(threshold_otsu(ours), abs=1e-3 * (hi - lo))


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------
def test_object_table_centres_and_areas():
    labels = np.zeros((10, 12), dtype=np.int32)
    labels[1:3, 1:5] = 2  # rows 1-2, cols 1-4 -> centre (1.5, 2.5), area 8
    labels[6:9, 9:12] = 5  # 3x3 -> centre (7, 10), area 9; labels need not be consecutive
    table = object_table(labels)
    assert list(table.columns) == ["label", "y", "x", "area"]
    assert table["label"].tolist() == [2, 5]
    assert table["y"].tolist() == [1.5, 7.0]
    assert table["x"].tolist() == [2.5, 10.0]
    assert table["area"].tolist() == [8, 9]
    assert len(object_table(np.zeros((4, 4), dtype=np.int32))) == 0


def test_match_labels_small_example():
    labels = np.array(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 2, 2, 0, 0],
            [0, 0, 2, 2, 0, 4],
            [0, 0, 0, 0, 0, 4],
        ]
    )
    truth = np.array(
        [
            [7, 7, 0, 0, 0, 0],
            [7, 3, 3, 3, 3, 0],
            [0, 0, 3, 9, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    # label 1: 3 px on 7, 1 px on 3 -> 7; label 2: 3 px on 3, 1 on 9 -> 3;
    # label 3 absent -> 0; label 4 overlaps no truth object -> 0.
    best = match_labels(labels, truth)
    assert best.dtype == np.int64
    np.testing.assert_array_equal(best, [7, 3, 0, 0])
    # Ties go to the smallest truth label.
    np.testing.assert_array_equal(match_labels(np.array([[1, 1]]), np.array([[5, 2]])), [2])
    assert match_labels(np.zeros((3, 3), int), truth[:3, :3]).shape == (0,)


def test_match_labels_sparse_path_agrees_with_dense(monkeypatch):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 40, size=(60, 60))
    truth = rng.integers(0, 25, size=(60, 60))
    dense = match_labels(labels, truth)
    monkeypatch.setattr(segment, "_DENSE_TABLE_MAX", 0)
    np.testing.assert_array_equal(match_labels(labels, truth), dense)


def test_match_labels_shape_mismatch_raises():
    with pytest.raises(ValueError, match="truth"):
        match_labels(np.zeros((4, 4), int), np.zeros((4, 5), int))
