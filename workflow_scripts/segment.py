"""Nuclear segmentation of one field of view, and per-object measurements on label images.

The pipeline follows the paired-cell-inpainting reference (smooth, Otsu threshold, fill holes,
label, clear border, size filter) with its bugs fixed:

* Otsu's threshold is computed on the *smoothed* image it is applied to (the reference computed
  it on the raw image, so the cut-off did not match the data it was cutting);
* every label is kept, including the last one (the reference looped over ``range(1, n)``);
* objects are measured with labelled-array operations (``bincount``, ``ndimage.find_objects``),
  never with one full-image comparison per object, which was O(objects x pixels);
* labels are ``int32``: a field can hold more than 65,535 objects, which overflows ``uint16``.

All functions are pure: arrays in, arrays (or a DataFrame) out, inputs never modified.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

__all__ = ["match_labels", "object_table", "segment_nuclei"]

# 8-connectivity: a nucleus whose pixels touch only diagonally is still one nucleus.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# Above this many (label, truth) cells the dense contingency table of ``match_labels`` would
# need more than ~128 MB; beyond it the sparse path (sorting the observed pairs) is used.
_DENSE_TABLE_MAX = 1 << 24


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_integer(name: str, value, minimum: int) -> int:
    # bool is an Integral subclass, but ``downscale=True`` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")
    return int(value)


def _check_real(name: str, value, minimum: float = 0.0) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number >= {minimum}")
    return float(value)


def _check_bool(name: str, value) -> bool:
    # Exact type, not isinstance/truthiness: 0, 1 and "yes" are mistakes here, not flags.
    if type(value) not in (bool, np.bool_):
        raise ValueError(f"{name}={value!r} is invalid: expected True or False")
    return bool(value)


def _check_label_image(name: str, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(
            f"{name} has shape {labels.shape} (ndim={labels.ndim}): expected a 2-D label image"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"{name} has dtype {labels.dtype}: expected an integer label image")
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"{name} has minimum {labels.min()}: expected non-negative labels (0 = background)"
        )
    return labels


# --------------------------------------------------------------------------------------------
# Segmentation steps
# --------------------------------------------------------------------------------------------
def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor x factor`` blocks, as float32.

    The image is padded by edge replication up to a multiple of ``factor`` (not with zeros, as
    ``skimage.transform.downscale_local_mean`` does) so the last block row/column is not darkened
    and nuclei at the bottom/right edges are not lost to the threshold.
    """
    h, w = image.shape
    ph, pw = -h % factor, -w % factor
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)), mode="edge")
    hb, wb = image.shape[0] // factor, image.shape[1] // factor
    blocks = image.reshape(hb, factor, wb, factor)
    # Accumulate in float64: a float32 sum over many uint16 pixels loses precision.
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _fill_small_holes(mask: np.ndarray, max_area: float, pixel_area: float) -> np.ndarray:
    """Fill background components smaller than ``max_area`` full-resolution pixels.

    Unlike ``skimage.morphology.remove_small_holes``, background regions touching the image
    border are not holes (they are the outside) and are never filled.
    """
    if max_area <= 0:
        return mask
    background, _ = ndi.label(~mask)  # 4-connected background pairs with 8-connected objects
    sizes = np.bincount(background.ravel()) * pixel_area
    is_hole = sizes < max_area
    is_hole[0] = False  # label 0 of ``background`` is the foreground itself
    edge_ids = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    is_hole[edge_ids] = False
    return mask | is_hole[background]


def _split_touching(mask: np.ndarray, min_distance: int) -> np.ndarray:
    """Label ``mask``, splitting touching nuclei with a distance-transform watershed.

    Works one connected component at a time, on its bounding box: the distance to the
    background, one marker per local maximum of it (``peak_local_max``, peaks more than
    ``min_distance`` apart), then the watershed of the inverted distance inside the component.
    Only the box is touched, so the cost is proportional to the foreground, not to
    objects x pixels, and neighbouring components never suppress each other's peaks.

    Returns an int32 label image whose labels are unique but not consecutive.
    """
    labels, n_components = ndi.label(mask, structure=_EIGHT_CONNECTED)
    height, width = mask.shape
    next_label = n_components
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        # Two kept peaks are more than ``min_distance`` apart (Chebyshev), which needs a box
        # side of at least min_distance + 2: smaller components cannot split, skip them cheaply.
        if box is None or max(s.stop - s.start for s in box) < min_distance + 2:
            continue
        # One pixel of margin so the component's outline has background around it (at the
        # image edge there is none, as for a whole-image distance transform).
        box = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, (height, width), strict=True)
        )
        component = labels[box] == index
        distance = ndi.distance_transform_edt(component)
        peaks = peak_local_max(
            distance,
            min_distance=min_distance,
            labels=component.view(np.uint8),
            exclude_border=False,
        )
        n_markers = len(peaks)
        if n_markers < 2:
            continue
        # peak_local_max already thinned flat ridges to peaks > min_distance apart, so each
        # peak is its own marker.
        markers = np.zeros(component.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, n_markers + 1, dtype=np.int32)
        pieces = watershed(-distance, markers, mask=component, connectivity=2)
        # Pixels no marker reached keep the component's own label.
        split = component & (pieces > 0)
        labels[box][split] = pieces[split] + next_label
        next_label += n_markers
    return labels


def _filter_and_relabel(
    labels: np.ndarray,
    *,
    pixel_area: float,
    min_area: float,
    max_area: float | None,
    clear_border: bool,
) -> np.ndarray:
    """Drop border / too small / too large objects and renumber the rest 1..n (int32).

    Everything is decided on per-label vectors (one ``bincount``) and applied with a single
    lookup-table pass over the image.
    """
    areas = np.bincount(labels.ravel()) * pixel_area
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    keep[0] = False
    if clear_border:
        keep[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False
    lut = np.zeros(keep.size, dtype=np.int32)
    lut[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return lut[labels]


def segment_nuclei(
    nuclear: np.ndarray,
    *,
    downscale: int = 1,
    sigma: float = 2.0,
    fill_holes: int = 300,
    min_area: int = 100,
    max_area: int | None = 5000,
    clear_border: bool = False,
    split_touching: bool = True,
    min_distance: int = 5,
) -> np.ndarray:
    """Segment nuclei in a 2-D nuclear-stain image.

    Steps: optional block-mean downscale -> Gaussian smoothing -> Otsu threshold computed on
    the smoothed image -> fill small holes -> optional split of touching nuclei (distance
    transform + ``peak_local_max`` markers + watershed inside the mask) -> label (8-connected)
    -> optional clear border -> area filter -> consecutive relabelling -> nearest-neighbour
    upscale of the labels back to the input shape.

    Parameters
    ----------
    nuclear : (H, W) ndarray, any integer or floating dtype
        Nuclear channel (bright nuclei on a dark background). Must be finite.
    downscale : int, optional
        Integer block-mean downscaling factor applied before segmenting (1 = none). Speeds up
        large fields; labels are returned at full resolution.
    sigma : float, optional
        Standard deviation of the Gaussian smoothing, in full-resolution pixels (divided by
        ``downscale`` internally). 0 disables smoothing.
    fill_holes : int, optional
        Background regions enclosed by a nucleus and smaller than this many full-resolution
        pixels are filled. 0 disables filling.
    min_area, max_area : int, optional
        Objects with area < ``min_area`` or > ``max_area`` full-resolution pixels are removed.
        ``max_area=None`` disables the upper bound.
    clear_border : bool, optional
        Remove objects touching the image border.
    split_touching : bool, optional
        Split touching nuclei with a distance-transform watershed.
    min_distance : int, optional
        Minimum distance between watershed markers, in full-resolution pixels (divided by
        ``downscale`` internally, at least 1). Larger values merge more.

    Returns
    -------
    labels : (H, W) ndarray of int32
        Same shape as ``nuclear``; 0 = background, nuclei labelled 1..n consecutively. All
        zeros for a constant or empty image, where Otsu's threshold is undefined.

    Raises
    ------
    ValueError
        If ``nuclear`` is not 2-D, has a non-numeric dtype or holds NaN/inf, or a parameter is
        out of range.

    Notes
    -----
    Areas are measured at the working (downscaled) resolution and multiplied by
    ``downscale**2`` before being compared with the full-resolution thresholds.
    """
    nuclear = np.asarray(nuclear)
    if nuclear.ndim != 2:
        raise ValueError(
            f"nuclear has shape {nuclear.shape} (ndim={nuclear.ndim}): expected a 2-D (H, W) image"
        )
    if not (
        np.issubdtype(nuclear.dtype, np.integer)
        or np.issubdtype(nuclear.dtype, np.floating)
        or nuclear.dtype == bool
    ):
        raise ValueError(f"nuclear has dtype {nuclear.dtype}: expected an integer or float dtype")
    if np.issubdtype(nuclear.dtype, np.floating):
        n_nan = int(np.count_nonzero(np.isnan(nuclear)))
        n_inf = int(np.count_nonzero(np.isinf(nuclear)))
        if n_nan or n_inf:
            raise ValueError(
                f"nuclear contains {n_nan} NaN and {n_inf} inf values: expected finite intensities"
            )
    downscale = _check_integer("downscale", downscale, 1)
    sigma = _check_real("sigma", sigma)
    fill_holes = _check_real("fill_holes", fill_holes)
    min_area = _check_real("min_area", min_area)
    if max_area is not None:
        max_area = _check_real("max_area", max_area)
        if max_area < min_area:
            raise ValueError(
                f"max_area={max_area!r} is invalid: "
                f"expected None or a value >= min_area={min_area!r}"
            )
    clear_border = _check_bool("clear_border", clear_border)
    split_touching = _check_bool("split_touching", split_touching)
    min_distance = _check_integer("min_distance", min_distance, 1)

    empty = np.zeros(nuclear.shape, dtype=np.int32)
    if nuclear.size == 0:
        return empty

    if downscale > 1:
        work = _block_mean(nuclear, downscale)
    else:
        # float32 halves memory traffic; exact for integers up to 2**24 (all 8/16-bit images).
        work = nuclear.astype(np.float32)
    pixel_area = float(downscale * downscale)

    if sigma > 0:
        work = ndi.gaussian_filter(work, sigma / downscale)
    lo, hi = work.min(), work.max()
    if not hi > lo:
        return empty  # constant image: Otsu undefined, nothing to segment
    mask = work > threshold_otsu(work)

    mask = _fill_small_holes(mask, fill_holes, pixel_area)
    if split_touching:
        labels = _split_touching(mask, max(1, round(min_distance / downscale)))
    else:
        labels, _ = ndi.label(mask, structure=_EIGHT_CONNECTED)
    labels = _filter_and_relabel(
        labels,
        pixel_area=pixel_area,
        min_area=min_area,
        max_area=max_area,
        clear_border=clear_border,
    )

    if downscale > 1:
        # Nearest-neighbour upscale, aligned with the blocks of ``_block_mean``; every block
        # covers at least one real pixel, so no label disappears when cropping the padding.
        labels = np.repeat(np.repeat(labels, downscale, axis=0), downscale, axis=1)
        labels = np.ascontiguousarray(labels[: nuclear.shape[0], : nuclear.shape[1]])
    return labels


# --------------------------------------------------------------------------------------------
# Measurements on label images
# --------------------------------------------------------------------------------------------
def object_table(labels: np.ndarray) -> pd.DataFrame:
    """Centre of mass and area of every object in a label image.

    Parameters
    ----------
    labels : (H, W) ndarray of non-negative int
        Label image, 0 = background. Labels need not be consecutive.

    Returns
    -------
    table : pandas.DataFrame
        One row per label present (the last label included), sorted by label, with columns
        ``label`` (int64), ``y``, ``x`` (float64, unweighted centre of mass in pixels of
        ``labels``) and ``area`` (int64, pixels).
    """
    labels = _check_label_image("labels", labels)
    # Three bincounts over the foreground pixels give every object's moments at once.
    flat = labels.ravel()
    index = np.flatnonzero(flat)
    lab = flat[index]
    row, col = np.divmod(index, labels.shape[1])
    area = np.bincount(lab)
    sum_y = np.bincount(lab, weights=row)
    sum_x = np.bincount(lab, weights=col)
    ids = np.flatnonzero(area)
    return pd.DataFrame(
        {
            "label": ids.astype(np.int64),
            "y": sum_y[ids] / area[ids],
            "x": sum_x[ids] / area[ids],
            "area": area[ids].astype(np.int64),
        }
    )


def match_labels(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Best-overlapping ground-truth label of every predicted label.

    Parameters
    ----------
    labels : (H, W) ndarray of non-negative int
        Predicted label image, 0 = background.
    truth : (H, W) ndarray of non-negative int
        Ground-truth label image of the same shape, 0 = background.

    Returns
    -------
    best : (labels.max(),) ndarray of int64
        ``best[i]`` is the truth label sharing the most pixels with label ``i + 1`` (ties go to
        the smallest truth label); 0 if that label overlaps no truth object or is absent.

    Notes
    -----
    The overlaps come from one ``bincount`` over (label, truth) pair codes, i.e. a dense
    contingency table. When that table would be very large (many objects in both images) the
    observed pairs are counted sparsely with ``np.unique`` instead; the result is the same.
    """
    labels = _check_label_image("labels", labels)
    truth = _check_label_image("truth", truth)
    if labels.shape != truth.shape:
        raise ValueError(
            f"truth has shape {truth.shape}: expected the shape of labels, {labels.shape}"
        )
    n = int(labels.max()) if labels.size else 0
    best = np.zeros(n, dtype=np.int64)
    both = (labels > 0) & (truth > 0)
    if n == 0 or not both.any():
        return best
    m = int(truth.max()) + 1
    codes = labels[both].astype(np.int64) * m + truth[both]
    if (n + 1) * m <= _DENSE_TABLE_MAX:
        table = np.bincount(codes, minlength=(n + 1) * m).reshape(n + 1, m)
        has_overlap = table[1:].any(axis=1)
        best[has_overlap] = table[1:][has_overlap].argmax(axis=1)  # argmax: first = smallest
        return best
    pairs, counts = np.unique(codes, return_counts=True)
    lab, tru = pairs // m, pairs % m
    # Sort by label, then count, then descending truth: the last row of each label group is
    # its largest overlap, ties resolved to the smallest truth label as in the dense path.
    order = np.lexsort((-tru, counts, lab))
    lab, tru = lab[order], tru[order]
    last = np.flatnonzero(np.r_[lab[1:] != lab[:-1], True])
    best[lab[last] - 1] = tru[last]
    return best
