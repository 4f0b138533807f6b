"""Estimate the nucleus scale once per dataset, and derive every size of segmentation and cropping.

Real images come at 10x to 63x, so nuclei span 5 to 150 px across; fixed pixel sizes fit one
magnification only. :func:`estimate_scale` measures the typical nucleus diameter on a sample
of a dataset's fields (as Cellpose's automatic diameter does for its users, but with Otsu's
threshold, no trained model); :func:`resolve_segmentation` and :func:`resolve_crop` turn it
into the parameters of :func:`workflow_scripts.segment.segment_nuclei_qc` and of the crops,
keeping every value the user set; :func:`field_flags` and :func:`dataset_warnings` say when
a field or a dataset does not fit.

The estimate: each field is lightly smoothed and cut by Otsu's threshold; its typical
diameter is the median equivalent diameter of the thresholded objects (specks below a tenth
of the area-weighted median object left out). When a bright structure holds the nuclei (an
embryo, a tissue section, a vignetted corner: the first cut finds one big object), the cut is
repeated on one side (:func:`workflow_scripts.segment._otsu_levels`) or made after subtracting a
background, and the cut whose objects look most like nuclei (convex, of similar size) wins.
Fields without nuclear signal (camera noise) are left out. On the 264 images of the DSB 2018
fluorescence set the estimate is within 15% of the hand-labelled median for 83% of the images
and within 1.5x for all of them (benchmarks/segmentation_quality.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
from skimage.measure import regionprops

from .io import read_fields
from .segment import _background, _contrast_to_noise, _fill_small_holes, _gaussian, _label8, _otsu_levels, _rows

__all__ = [
    "AUTO",
    "FIELD_QC_COLUMNS",
    "FLAGS",
    "STAGE_KEYS",
    "dataset_scale",
    "dataset_warnings",
    "estimate_scale",
    "field_flags",
    "field_qc_table",
    "resolve_crop",
    "resolve_segmentation",
    "sample_fields",
    "segmentation_report",
]

log = logging.getLogger(__name__)

AUTO = "auto"

#: Keys of the ``segmentation`` section that steer the stage (QC, figures, the scale sample)
#: rather than the segmentation of a field: left out of :func:`resolve_segmentation`'s input.
STAGE_KEYS = ("save_masks", "overlay_fields", "scale_fields", "scale_tolerance", "max_dropped_fraction")

# Candidate Otsu levels (see segment._otsu_levels), plain Otsu first.
_LEVELS = (0, 1, 2, -1)
# Plain Otsu is kept unless another level finds more than twice as many nucleus-like objects.
_LEVEL_MARGIN = 0.5
# Objects smaller than this (px) are noise to the estimate, whatever the scale.
_MIN_OBJECT_PX = 9
# The sizes that follow from the diameter d (area a = pi d^2 / 4), each chosen on the DSB 2018
# development images and checked on the stardist, JUMP and synthetic fields:
_SIGMA_PER_D = 0.02  # Gaussian sigma: just enough to calm pixel noise, never to merge nuclei
_MIN_AREA_PER_A = 0.1  # debris and specks
_MAX_AREA_PER_A = 10.0  # clumps the watershed could not split, dust, out-of-focus blobs
_HOLES_PER_A = 0.5  # dark nucleoli inside a nucleus
_SEED_PER_D = 0.25  # watershed seeds: two nuclei side by side are > d/4 apart
_BACKGROUND_PER_D = 1.0  # opening radius of the background estimate (objects < 2 d wide are kept)
_WORK_D = 40.0  # segment at 1/downscale resolution once nuclei are wider than this (px)
_GAMMA = 0.65  # Otsu on intensity^0.65: dim nuclei weigh more next to bright ones
_MIN_SNR = 5.0  # camera noise scores 1 to 3.2 (sparse photon counts), the DSB 2018 fields 7.4 to 200
_SPLIT_INTENSITY = 0.5  # weight of intensity next to shape in the watershed split
_SEED_SIGMA_PER_D = 0.2  # smoothing of that intensity: one blob per nucleus
# A piece smaller than a nucleus whose peak stands < 0.05 radii above the pass to its neighbour
# is part of it (a notch, not a waist): on the DSB 2018 images such joins are right 6 times in 7.
_SEED_PROMINENCE = 0.05


def _area(diameter: float) -> float:
    return math.pi * diameter * diameter / 4.0


def _level_stats(smoothed: np.ndarray, level: int) -> tuple[int, float]:
    """Count the nucleus-like objects of ``smoothed`` cut at one Otsu level, and their diameter.

    Returns (number of nucleus-like objects, typical diameter). Nucleus-like: convex (solidity >= 0.85) and within 4x of the area-weighted median object
    area. The diameter is the median equivalent diameter of all objects of at least a tenth of
    that area (so specks of noise do not drag it down). (0, nan) when nothing is found.
    """
    lo, hi, _, _ = cv2.minMaxLoc(smoothed)
    if not hi > lo:
        return 0, float("nan")
    mask = smoothed > _otsu_levels(smoothed, lo, hi, 1.0, level)
    mask = _fill_small_holes(mask, float(mask.size), 1.0)
    labels, n = _label8(mask)
    if n == 0:
        return 0, float("nan")
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    big = areas >= _MIN_OBJECT_PX
    if not big.any():
        return 0, float("nan")
    sorted_areas = np.sort(areas[big])
    cumulative = np.cumsum(sorted_areas)
    weighted_median = sorted_areas[np.searchsorted(cumulative, cumulative[-1] / 2)]
    typical = big & (areas >= 0.25 * weighted_median) & (areas <= 4 * weighted_median)
    n_good = 0
    for region in regionprops(labels):
        if typical[region.label - 1] and region.solidity >= 0.85:
            n_good += 1
    kept = areas >= 0.1 * weighted_median
    diameter = float(np.median(np.sqrt(4.0 * areas[kept] / np.pi)))
    return n_good, diameter


def _candidates(shape) -> list[tuple[int, float]]:
    """List the (Otsu level, background radius or 0) pairs the estimate tries, plain Otsu first.

    The levels of :func:`segment._otsu_levels` on the field as it is, then plain Otsu after
    subtracting a background of radius 1/4, 1/8 and 1/16 of the field (vignetting, a bright
    corner or a glowing tissue: the nuclei are smaller than any of these, their size unknown).
    """
    side = min(shape)
    radii = [side / k for k in (4, 8, 16) if side / k >= 8]
    return [(level, 0.0) for level in _LEVELS] + [(0, r) for r in radii]


def _field_levels(nuclear: np.ndarray, min_snr: float) -> list[tuple[int, float]] | None:
    """Return :func:`_level_stats` of one field for every candidate of :func:`_candidates`, in order.

    None for a field without nuclear signal (contrast to noise below ``min_snr`` at plain Otsu:
    camera noise, an empty well), which would otherwise lend its specks to the estimate.
    """
    image = np.asarray(nuclear, dtype=np.float32)
    smoothed = _gaussian(image.copy(), 1.0, overwrite=True)
    lo, hi, _, _ = cv2.minMaxLoc(smoothed)
    if not hi > lo:
        return None
    mask = smoothed > _otsu_levels(smoothed, lo, hi, 1.0, 0)
    if _contrast_to_noise(_rows(image), _rows(mask)) < min_snr:
        return None
    return [
        _level_stats(smoothed - _background(smoothed, radius) if radius else smoothed, level)
        for level, radius in _candidates(smoothed.shape)
    ]


def estimate_scale(fields: Sequence[np.ndarray], *, min_snr: float = _MIN_SNR) -> dict:
    """Estimate the typical nucleus diameter of a dataset from a sample of its nuclear channels.

    Parameters
    ----------
    fields : sequence of (H, W) ndarray
        Nuclear channels of a sample of fields (8 to 16 spread over the dataset are enough).
    min_snr : float, optional
        Fields whose thresholded foreground stands less than this many noise SDs above the
        background hold no nuclei and are left out of the estimate.

    Returns
    -------
    scale : dict
        ``diameter`` (px, median over the fields with nuclei; NaN if none),
        ``threshold_level`` and ``background_fraction`` (the Otsu level of
        :func:`segment._otsu_levels`, and the background radius as a share of the field's
        side, whose objects looked most like nuclei over all the fields: plain Otsu unless
        another candidate finds more than twice as many), ``field_diameters`` (each field's
        own estimate with that candidate; NaN for a field without nuclear signal),
        ``n_fields`` and ``n_without_signal``.
    """
    fields = list(fields)
    if not fields:
        raise ValueError("estimate_scale needs at least one field")
    per_field = [_field_levels(field, min_snr) for field in fields]
    usable = [(stats, np.shape(field)) for stats, field in zip(per_field, fields, strict=True) if stats]
    record = {
        "diameter": float("nan"),
        "threshold_level": 0,
        "background_fraction": 0.0,
        "field_diameters": [float("nan")] * len(fields),
        "n_fields": len(fields),
        "n_without_signal": len(fields) - len(usable),
        "nucleus_like_objects": [],
    }
    if not usable:
        return record
    # Fields of one dataset may differ in size: candidates are compared by rank (level first,
    # then the background radius as a fraction of the field), not by radius in px.
    n_candidates = min(len(stats) for stats, _ in usable)
    counts = [sum(stats[i][0] for stats, _ in usable) for i in range(n_candidates)]
    best = max(range(n_candidates), key=lambda i: counts[i])
    choice = 0 if counts[0] >= _LEVEL_MARGIN * counts[best] else best
    diameters = [stats[choice][1] if stats else float("nan") for stats in per_field]
    finite = [d for d in diameters if np.isfinite(d)]
    level, radius = _candidates(usable[0][1])[choice]
    record.update(
        diameter=float(np.median(finite)) if finite else float("nan"),
        threshold_level=int(level),
        background_fraction=float(radius / min(usable[0][1])) if radius else 0.0,
        field_diameters=[float(d) for d in diameters],
        nucleus_like_objects=[int(c) for c in counts],
    )
    return record


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO


def resolve_segmentation(config: dict, scale: dict) -> tuple[dict, dict]:
    """Resolve the keyword arguments of :func:`segment.segment_nuclei_qc` for one dataset.

    Parameters
    ----------
    config : dict
        The ``segmentation`` section: every size key is a number (kept as given) or ``"auto"``
        (derived from the diameter). ``diameter`` itself is ``"auto"`` (take ``scale``'s) or a
        number in px.
    scale : dict
        The output of :func:`estimate_scale` (only ``diameter`` is read; may be empty when
        ``diameter`` is set).

    Returns
    -------
    params : dict
        Keyword arguments for ``segment_nuclei_qc``.
    info : dict
        ``diameter`` (px, the one used) and ``source``: for each parameter, ``"config"`` (set
        by the user) or ``"auto"``.
    """
    diameter = config.get("diameter", AUTO)
    if _is_auto(diameter):
        diameter = scale.get("diameter", float("nan"))
    diameter = float(diameter)
    if not (np.isfinite(diameter) and diameter > 0):
        # No nuclei to measure in the sampled fields (noise, empty wells): fall back to a
        # typical 20x nucleus; the QC of such a dataset already warns.
        diameter = 20.0
    area = _area(diameter)
    derived = {
        "downscale": max(1, int(diameter // _WORK_D)),
        "sigma": round(max(0.5, _SIGMA_PER_D * diameter), 3),
        "fill_holes": int(round(_HOLES_PER_A * area)),
        "min_area": max(1, int(round(_MIN_AREA_PER_A * area))),
        "max_area": int(round(_MAX_AREA_PER_A * area)),
        "min_distance": max(1, int(round(_SEED_PER_D * diameter))),
        "background": AUTO,
        "gamma": _GAMMA,
        "min_snr": _MIN_SNR,
        "split_intensity": _SPLIT_INTENSITY,
        "seed_sigma": round(max(1.0, _SEED_SIGMA_PER_D * diameter), 3),
        "seed_prominence": _SEED_PROMINENCE,
    }
    params, source = {}, {}
    for key, value in derived.items():
        given = config.get(key, AUTO)
        params[key] = value if _is_auto(given) else given
        source[key] = "auto" if _is_auto(given) else "config"
    if params["max_area"] is not None and params["max_area"] < params["min_area"]:
        raise ValueError(
            f"segmentation.max_area ({params['max_area']}, {source['max_area']}) is smaller than "
            f"segmentation.min_area ({params['min_area']}, {source['min_area']}): expected "
            "max_area >= min_area; set both, or neither"
        )
    params["background_radius"] = round(_BACKGROUND_PER_D * diameter, 2)
    source["background_radius"] = "auto"
    for key in ("clear_border", "split_touching"):
        params[key] = config.get(key, {"clear_border": False, "split_touching": True}[key])
        source[key] = "config"
    source["diameter"] = "auto" if _is_auto(config.get("diameter", AUTO)) else "config"
    return params, {"diameter": round(diameter, 2), "source": source}


def resolve_crop(config: dict, diameter: float) -> dict:
    """Resolve the crop section: ``size: auto`` becomes ``scale x diameter``.

    The size is rounded to an even number of px, at least 8: a window that keeps the whole
    cell around its nucleus. Within 10% of ``resize_to`` or of a multiple of it, the window
    takes that size instead, so the crops are cut at the model's resolution or shrunk by an
    exact block mean rather than resampled (no interpolation blur, and a tenth of the cost).

    Parameters
    ----------
    config : dict
        The ``crop`` section: ``size`` (px or ``"auto"``), ``resize_to``, ``edge`` and
        ``scale`` (window side in nucleus diameters, default 3.5; not passed on).
    diameter : float
        The dataset's nucleus diameter (px).

    Returns
    -------
    dict
        ``config`` without ``scale``, with ``size`` in px.

    Examples
    --------
    >>> resolve_crop({"size": "auto", "resize_to": 64, "edge": "drop"}, 30.0)
    {'size': 104, 'resize_to': 64, 'edge': 'drop'}
    >>> resolve_crop({"size": "auto", "resize_to": 64, "scale": 3.5}, 18.0)
    {'size': 64, 'resize_to': 64}
    """
    crop = dict(config)
    scale = float(crop.pop("scale", 3.5))
    if _is_auto(crop.get("size", AUTO)):
        size = max(8, 2 * int(round(scale * diameter / 2)))
        target = crop.get("resize_to")
        if target:
            multiple = max(1, round(size / target)) * target
            if abs(size - multiple) <= 0.1 * multiple:
                size = multiple
        crop["size"] = size
    return crop


def field_flags(qc: dict, diameter: float, *, tolerance: float, max_dropped_fraction: float) -> list[str]:
    """List why one field's segmentation looks wrong (empty list when it looks fine).

    ``low_contrast``: no nuclear signal above the noise (the field gave no objects);
    ``no_nuclei``: nothing left after the size filters; ``size_filters``: the area filters
    dropped more than ``max_dropped_fraction`` of the thresholded foreground;
    ``scale_mismatch``: the field's median nucleus differs from the dataset's diameter by more
    than ``tolerance`` times (another magnification mixed in, or fragments / clumps).

    Parameters
    ----------
    qc : dict
        The field's QC of :func:`workflow_scripts.segment.segment_nuclei_qc` (missing keys
        count as nothing found).
    diameter : float
        The dataset's nucleus diameter (px).
    tolerance : float
        Largest accepted ratio between the field's median nucleus and ``diameter``, either way.
    max_dropped_fraction : float
        Largest accepted share of the thresholded foreground dropped by the area filters.

    Returns
    -------
    list of str
        The flags, in the order above; ``low_contrast`` comes alone.

    Examples
    --------
    >>> field_flags({"n_objects": 30, "foreground_px": 1e4, "diameter": 40.0}, 20.0,
    ...             tolerance=1.5, max_dropped_fraction=0.5)
    ['scale_mismatch']
    >>> field_flags({"low_contrast": True}, 20.0, tolerance=1.5, max_dropped_fraction=0.5)
    ['low_contrast']
    """
    flags = []
    if qc.get("low_contrast"):
        return ["low_contrast"]
    if qc.get("n_objects", 0) == 0:
        flags.append("no_nuclei")
    foreground = qc.get("foreground_px", 0.0)
    dropped = qc.get("px_too_small", 0.0) + qc.get("px_too_large", 0.0)
    if foreground > 0 and dropped / foreground > max_dropped_fraction:
        flags.append("size_filters")
    own = qc.get("diameter", float("nan"))
    if np.isfinite(own) and diameter > 0 and not 1 / tolerance <= own / diameter <= tolerance:
        flags.append("scale_mismatch")
    return flags


def _names(fields, limit: int = 5) -> str:
    fields = list(fields)
    shown = ", ".join(str(f) for f in fields[:limit])
    return shown + (f" and {len(fields) - limit} more" if len(fields) > limit else "")


def dataset_warnings(dataset: str, table, params: dict, info: dict, *, too_many: float = 5.0) -> list[str]:
    """Write plain-language warnings for a dataset's per-field QC table.

    Each names the dataset, the fields and the key to change.

    Parameters
    ----------
    dataset : str
        Dataset name.
    table : pandas.DataFrame
        One row per field with ``Metadata_image``, ``n_objects`` and ``flags`` (a ';'-joined
        string of :func:`field_flags`), as :func:`field_qc_table` makes it.
    params : dict
        The resolved segmentation parameters (``min_snr``, ``min_area``, ``max_area`` are
        quoted).
    info : dict
        ``diameter`` (px) and ``source`` (``"config"`` or ``"auto"`` per parameter).
    too_many : float, optional
        A field with more than this many times the median count of objects (and over 20) is
        reported as crowded.

    Returns
    -------
    list of str
        The warnings; empty when every field looks fine.
    """
    warnings = []
    source = info["source"]

    def with_flag(flag):
        return table.loc[table["flags"].str.split(";").apply(lambda f: flag in f), "Metadata_image"]

    noise = with_flag("low_contrast")
    if len(noise):
        warnings.append(
            f"dataset {dataset}: {len(noise)} field(s) hold no nuclear signal above the camera noise "
            f"(contrast-to-noise below segmentation.min_snr = {params['min_snr']}), so no nuclei were "
            f"kept: {_names(noise)}. Check the nucleus channel of these fields, or lower "
            "segmentation.min_snr if their nuclei are real but faint."
        )
    filtered = with_flag("size_filters")
    if len(filtered):
        keys = [k for k in ("min_area", "max_area") if source.get(k) == "config"] or ["diameter"]
        warnings.append(
            f"dataset {dataset}: the size filters dropped most of the segmented foreground in "
            f"{len(filtered)} field(s): {_names(filtered)} (segmentation.min_area = {params['min_area']} px, "
            f"max_area = {params['max_area']} px; nuclei here measure ~{info['diameter']:.0f} px across). "
            f"Check segmentation.{' / segmentation.'.join(keys)}."
        )
    mismatch = with_flag("scale_mismatch")
    if len(mismatch):
        warnings.append(
            f"dataset {dataset}: {len(mismatch)} field(s) have nuclei of another size than the dataset's "
            f"{info['diameter']:.0f} px: {_names(mismatch)}. Mixed magnifications segment badly with one "
            "scale: put them in separate datasets, or set segmentation.diameter."
        )
    empty = with_flag("no_nuclei")
    if len(empty) and len(empty) == len(table):
        warnings.append(
            f"dataset {dataset}: no field yielded a nucleus. Check the nucleus channel "
            "(datasets.<name>.channels) and segmentation.diameter."
        )
    counts = table.loc[table["n_objects"] > 0, "n_objects"]
    if len(counts) >= 3:
        typical = float(counts.median())
        crowded = table.loc[table["n_objects"] > max(too_many * typical, 20), "Metadata_image"]
        if len(crowded):
            warnings.append(
                f"dataset {dataset}: {len(crowded)} field(s) yield far more objects than the typical "
                f"{typical:.0f}: {_names(crowded)} (noise, debris or nuclei shattered). Check these fields "
                "and segmentation.diameter / segmentation.min_distance."
            )
    return warnings


# --------------------------------------------------------------------------------------------
# The stage: a dataset's scale from a sample of its shards, and its segmentation QC report
# --------------------------------------------------------------------------------------------
def sample_fields(paths: Sequence[str], channel: int, n_fields: int) -> tuple[list[np.ndarray], list[str]]:
    """Read the nuclear channel of up to ``n_fields`` fields spread over a dataset's shards.

    Parameters
    ----------
    paths : sequence of str
        Shard files of :func:`workflow_scripts.io.write_fields`.
    channel : int
        Index of the nuclear-stain channel.
    n_fields : int
        Number of fields wanted: ``ceil(n_fields / len(paths))`` from each shard, evenly spaced
        over it (not just its first ones), until there are ``n_fields``.

    Returns
    -------
    nuclear : list of (H, W) ndarray
        The nuclear channels of the sampled fields.
    names : list of str
        Their image ids.
    """
    per_shard = max(1, -(-n_fields // max(len(paths), 1)))  # ceil: fill the sample
    nuclear, names = [], []
    for path in paths:
        images, _ = read_fields(path)
        ids = np.load(path)["image_ids"]
        for i in np.unique(np.linspace(0, len(images) - 1, min(per_shard, len(images))).round().astype(int)):
            if len(nuclear) < n_fields:
                nuclear.append(np.asarray(images[i][channel]))
                names.append(str(ids[i]))
    return nuclear, names


def dataset_scale(
    dataset: str, nuclear: Sequence[np.ndarray], names: Sequence[str], segmentation: dict, crop: dict
) -> dict:
    """Estimate a dataset's nucleus scale and resolve its segmentation and crop sizes.

    Logs the outcome, the sampled fields without nuclear signal, and a warning when no
    nucleus was found at all (the scale then falls back to a typical one).

    Parameters
    ----------
    dataset : str
        Dataset name, for messages.
    nuclear : sequence of (H, W) ndarray
        Nuclear channels of a sample of its fields (:func:`sample_fields`).
    names : sequence of str
        Their image ids.
    segmentation : dict
        The ``segmentation`` section (see :func:`resolve_segmentation`); its ``min_snr``, when
        set, is also that of the estimate.
    crop : dict
        The ``crop`` section (see :func:`resolve_crop`).

    Returns
    -------
    dict
        The record of ``qc/scale.json``: ``dataset``, ``diameter`` (px, used),
        ``estimated_diameter``, ``threshold_level``, ``sample`` (``image`` and ``diameter`` of
        each sampled field), ``segmentation`` (keyword arguments of
        :func:`workflow_scripts.segment.segment_nuclei_qc`), ``source`` and ``crop``.

    Raises
    ------
    ValueError
        If ``nuclear`` is empty.
    """
    if not nuclear:
        raise ValueError(f"dataset {dataset}: no field to estimate the nucleus scale from")
    min_snr = segmentation.get("min_snr", AUTO)  # auto: estimate_scale's default
    scale = estimate_scale(nuclear, **({} if min_snr == AUTO else {"min_snr": float(min_snr)}))
    params, info = resolve_segmentation(dict(segmentation), scale)
    crop = resolve_crop(dict(crop), info["diameter"])
    record = {
        "dataset": dataset,
        "diameter": info["diameter"],
        "estimated_diameter": scale["diameter"],
        "threshold_level": scale["threshold_level"],
        "sample": [{"image": n, "diameter": d} for n, d in zip(names, scale["field_diameters"], strict=True)],
        "segmentation": params,
        "source": info["source"],
        "crop": crop,
    }
    _log_scale(record, scale, names)
    return record


def _log_scale(record: dict, scale: dict, names: Sequence[str]) -> None:
    """Log a dataset's scale, its fields without signal, and a warning if it found no nucleus."""
    dataset, n_sampled = record["dataset"], len(names)
    log.info(
        "dataset %s: nucleus diameter %.1f px (%s; estimated %.1f px over %d fields); segmentation %s; crop %s",
        dataset,
        record["diameter"],
        record["source"]["diameter"],
        scale["diameter"],
        n_sampled,
        record["segmentation"],
        record["crop"],
    )
    if scale["n_without_signal"] and np.isfinite(scale["diameter"]):
        log.info(
            "dataset %s: %d sampled field(s) hold no nuclear signal (left out of the estimate): %s",
            dataset,
            scale["n_without_signal"],
            ", ".join(n for n, d in zip(names, scale["field_diameters"], strict=True) if not np.isfinite(d)),
        )
    if not np.isfinite(scale["diameter"]):
        log.warning(
            "dataset %s: no nucleus found in the %d sampled fields (%s); the scale falls back to %.0f px. "
            "Check the nucleus channel, or set segmentation.diameter.",
            dataset,
            n_sampled,
            ", ".join(names[:5]),
            record["diameter"],
        )


#: Columns of the per-field segmentation QC table (``qc/segmentation_fields.csv``).
FIELD_QC_COLUMNS = [
    "Metadata_image",
    "n_objects",
    "n_crops",
    "diameter",
    "snr",
    "foreground_px",
    "kept_px",
    "kept_fraction",
    "n_too_small",
    "n_too_large",
    "background_corrected",
    "flags",
]

#: The flags of :func:`field_flags`, counted in the summary of :func:`segmentation_report`.
FLAGS = ("low_contrast", "no_nuclei", "size_filters", "scale_mismatch")


def field_qc_table(records: Sequence[dict], diameter: float, *, tolerance: float, max_dropped_fraction: float):
    """Tabulate the per-field segmentation QC of a dataset, with each field's flags.

    Parameters
    ----------
    records : sequence of dict
        Per-field records of :func:`workflow_scripts.cells.segment_shard` (the QC of
        :func:`workflow_scripts.segment.segment_nuclei_qc` with ``image`` and ``n_crops``).
    diameter : float
        The dataset's nucleus diameter (px).
    tolerance, max_dropped_fraction : float
        As for :func:`field_flags`.

    Returns
    -------
    pandas.DataFrame
        One row per record, columns :data:`FIELD_QC_COLUMNS`: the counts, ``kept_fraction``
        (kept / thresholded pixels, NaN without foreground) and ``flags`` (';'-joined).

    Examples
    --------
    >>> qc = {"image": "f0", "n_objects": 12, "n_crops": 10, "diameter": 20.0, "snr": 30.0,
    ...       "foreground_px": 4000.0, "kept_px": 3000.0, "n_too_small": 3, "n_too_large": 0,
    ...       "px_too_small": 1000.0, "px_too_large": 0.0, "background_corrected": False}
    >>> table = field_qc_table([qc], 20.0, tolerance=1.5, max_dropped_fraction=0.2)
    >>> table[["Metadata_image", "kept_fraction", "flags"]]
      Metadata_image  kept_fraction         flags
    0             f0           0.75  size_filters
    """
    rows = []
    for qc in records:
        flags = field_flags(qc, diameter, tolerance=tolerance, max_dropped_fraction=max_dropped_fraction)
        foreground = qc["foreground_px"]
        rows.append(
            {
                "Metadata_image": qc["image"],
                **{k: qc[k] for k in ("n_objects", "n_crops", "diameter", "snr", "foreground_px", "kept_px")},
                "kept_fraction": qc["kept_px"] / foreground if foreground else float("nan"),
                "n_too_small": qc["n_too_small"],
                "n_too_large": qc["n_too_large"],
                "background_corrected": qc["background_corrected"],
                "flags": ";".join(flags),
            }
        )
    return pd.DataFrame(rows, columns=FIELD_QC_COLUMNS)


def segmentation_report(
    dataset: str, records: Sequence[dict], scale: dict, *, tolerance: float, max_dropped_fraction: float
) -> tuple[pd.DataFrame, dict]:
    """Build a dataset's segmentation QC: the per-field table and the summary with its warnings.

    Parameters
    ----------
    dataset : str
        Dataset name, for the warnings.
    records : sequence of dict
        Per-field QC records of all its shards (see :func:`field_qc_table`).
    scale : dict
        The dataset's ``qc/scale.json`` record (:func:`dataset_scale`).
    tolerance, max_dropped_fraction : float
        As for :func:`field_flags`.

    Returns
    -------
    table : pandas.DataFrame
        See :func:`field_qc_table`.
    summary : dict
        ``dataset``, ``diameter``, ``diameter_source``, ``n_fields``, ``n_objects``,
        ``kept_fraction`` (over all fields), ``n_flagged_fields``, ``flag_counts`` (fields per
        flag of :data:`FLAGS`) and ``warnings`` (:func:`dataset_warnings`).
    """
    table = field_qc_table(records, scale["diameter"], tolerance=tolerance, max_dropped_fraction=max_dropped_fraction)
    info = {"diameter": scale["diameter"], "source": scale["source"]}
    warnings = dataset_warnings(dataset, table, scale["segmentation"], info)
    flagged = table[table["flags"] != ""]
    summary = {
        "dataset": dataset,
        "diameter": scale["diameter"],
        "diameter_source": scale["source"]["diameter"],
        "n_fields": int(len(table)),
        "n_objects": int(table["n_objects"].sum()),
        "kept_fraction": float(table["kept_px"].sum() / max(table["foreground_px"].sum(), 1.0)),
        "n_flagged_fields": int(len(flagged)),
        "flag_counts": {
            flag: int(table["flags"].str.split(";").apply(lambda f, flag=flag: flag in f).sum()) for flag in FLAGS
        },
        "warnings": warnings,
    }
    return table, summary
