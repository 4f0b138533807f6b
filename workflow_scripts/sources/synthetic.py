"""Built-in synthetic source: fluorescence microscopy fields of view with ground truth.

Each field of view imitates a widefield image of cultured cells in three channels
(:data:`CHANNELS`): a DNA stain, a cell-body structure marker (tubulin-like) and a protein
of interest whose subcellular localisation is one of :data:`CLASSES`. One class per field,
like one protein per well. The simulation goes object by object (all per-object work is
restricted to the object's bounding box) and then through a simple optical and camera
model: uneven illumination, a per-field brightness batch effect, out-of-focus haze,
Gaussian point-spread function, Poisson shot noise, Gaussian read noise and a camera
offset, clipped to ``uint16``.

Every field is a pure function of ``(seed, index)`` and the keyword options, so a field
is bit-identical whichever shard it is generated in.

Ground truth per cell: its nuclear instance label, class, nucleus centre and area, and a
continuous latent ``Metadata_trajectory`` in [0, 1] that enlarges the cell and
strengthens the protein pattern (a stand-in for, e.g., progression through the cell cycle).

``difficulty`` picks one of two presets (:data:`DIFFICULTIES`). ``"standard"`` is the
original simulation: six classes that differ in gross location, mild cell-to-cell and
field-to-field variation. ``"hard"`` imitates what real screens (Human Protein Atlas, Cell
Painting) look like: classes that come in near twins differing only in a subtle spatial
pattern (:data:`HARD_CLASSES`), protein abundance that varies ~10x from cell to cell with
some cells barely expressing, independent per-channel exposure / gain and an additive
background per field, slight defocus everywhere and a few out-of-focus fields. Every
setting of a preset is also a keyword of its own (``None`` = the preset's value).

``plates`` > 0 lays the fields out as the wells of a screen (:func:`plate_layout`): the
``n_fields`` fields fill ``plates`` plates of ``n_fields / plates`` wells, each plate with
``controls_per_plate`` negative-control wells (perturbation :data:`CONTROL`, the first class:
no phenotype) at positions that differ from plate to plate, and every other well holding one
perturbation, each perturbation once per plate (its replicates lie on different plates) at a
shuffled position. A perturbation's phenotype is a class (cycled over the perturbations, so
some share the controls' class: inactive ones), its annotation (``Metadata_moa``) the class
name. Each plate multiplies every channel by a gain of its own, adds a background of its own
and blurs a little (``plate_effect_sd``), and wells near the plate's edge are brighter
(``well_effect``): technical effects that per-plate normalisation against the controls can
remove. Without ``plates`` every field is bit-identical to before: the layout and its effects
draw from streams of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from workflow_scripts.validation import check_fraction, check_int, check_real

__all__ = [
    "CHANNELS",
    "CLASSES",
    "CONTROL",
    "DIFFICULTIES",
    "HARD_CLASSES",
    "LAYOUT_COLUMNS",
    "PLATE_FORMATS",
    "STANDARD_CLASSES",
    "generate_field",
    "generate_shard",
    "plate_format",
    "plate_layout",
    "well_name",
]

CHANNELS: tuple[str, ...] = ("nucleus", "structure", "protein")
#: Every localisation class the generator can draw. The first six are the original classes
#: (difficulty "standard"); the last four are subtle-pattern near twins of some of them:
#:
#: - ``nuclear_speckles``: splicing-factor speckles (SC35 / SRSF2-like): 10-30 nuclear bodies
#:   of ~2-3 px on a diffuse nucleoplasmic pool; twin of ``nuclear`` (diffuse nucleoplasm).
#: - ``er``: endoplasmic reticulum (calnexin / SEC61B-like): a fine reticular network
#:   through the cytoplasm, densest around the nucleus, continuous with a faint nuclear
#:   envelope rim; twin of ``cytoplasmic`` (diffuse cytosol).
#: - ``golgi``: Golgi apparatus (GOLGA2 / GM130-like): a compact cap of small stacks on one
#:   side of the nucleus; twin of ``cytoplasmic`` (same compartment, whole of it).
#: - ``fine_puncta``: peroxisome-like dots (PEX14 / catalase-like): 60-150 per cell,
#:   PSF-sized and dim, spread evenly through the cytoplasm; twin of ``puncta``
#:   (endosome / lysosome-like vesicles: fewer, larger, brighter, perinuclear).
#:
#: A twin's photons per unit pattern are set so that its mean integrated protein
#: intensity per cell equals its partner's (measured on ~600 whole cells of 18 fields: within
#: 3 %), so the total brightness of a cell does not tell twins apart.
CLASSES: tuple[str, ...] = (
    "nuclear",
    "nucleolar",
    "cytoplasmic",
    "membrane",
    "puncta",
    "filaments",
    "nuclear_speckles",
    "er",
    "golgi",
    "fine_puncta",
)
#: Default classes of difficulty "standard": the original six, gross locations.
STANDARD_CLASSES: tuple[str, ...] = CLASSES[:6]
#: Default classes of difficulty "hard": four compartments, each with classes that differ
#: in pattern rather than place (nucleus: nuclear / nuclear_speckles / nucleolar;
#: cytoplasm: cytoplasmic / er / golgi; cytoplasmic dots: puncta / fine_puncta).
HARD_CLASSES: tuple[str, ...] = (
    "nuclear",
    "nuclear_speckles",
    "nucleolar",
    "cytoplasmic",
    "er",
    "golgi",
    "puncta",
    "fine_puncta",
)

#: Settings of each difficulty: the value a keyword takes when it is ``None``.
DIFFICULTIES: dict[str, dict] = {
    "standard": {
        "classes": STANDARD_CLASSES,
        "expression_sd": 0.25,
        "dim_fraction": 0.0,
        "channel_gain_sd": 0.0,
        "background": 0.0,
        "defocus": 0.0,
        "out_of_focus_fraction": 0.0,
    },
    "hard": {
        "classes": HARD_CLASSES,
        # HPA / Cell Painting: a protein's abundance spans ~10x across the cells of one
        # well (95 % range exp(+-1.96 * 0.6), a factor 10.5) ...
        "expression_sd": 0.6,
        # ... and a minority of cells hardly express it at all.
        "dim_fraction": 0.1,
        # Exposure time / gain / lamp power and staining efficiency differ per well and
        # per channel, independently (on top of the shared batch_sd).
        "channel_gain_sd": 0.3,
        # Medium autofluorescence, unbound dye, stray light: up to 15 % of each channel's
        # typical in-cell level, flat over the field, different per well.
        "background": 0.15,
        # Autofocus is never perfect: up to 0.8 px extra blur SD on every field ...
        "defocus": 0.8,
        # ... and about one field in ten is clearly out of focus.
        "out_of_focus_fraction": 0.1,
    },
}

FIELD_COLUMNS: tuple[str, ...] = (
    "Metadata_image",
    "Metadata_class",
    "Metadata_group",
    "Metadata_field_gain",
    "Metadata_field_index",
    "Metadata_field_gain_nucleus",
    "Metadata_field_gain_structure",
    "Metadata_field_gain_protein",
    "Metadata_field_background",
    "Metadata_field_defocus",
    "Metadata_field_out_of_focus",
)
#: Columns the plate layout adds to the field table (``plates`` > 0), after FIELD_COLUMNS.
LAYOUT_COLUMNS: tuple[str, ...] = (
    "Metadata_plate",
    "Metadata_well",
    "Metadata_perturbation",
    "Metadata_moa",
)
#: Perturbation (and annotation) of the negative-control wells of the plate layout.
CONTROL = "control"
#: Standard microplate formats, (rows, columns), smallest first: 6 to 1536 wells.
PLATE_FORMATS: tuple[tuple[int, int], ...] = ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48))
OBJECT_COLUMNS: tuple[str, ...] = (
    "Metadata_image",
    "truth_label",
    "Metadata_trajectory",
    "Metadata_class",
    "truth_y",
    "truth_x",
    "truth_nucleus_area",
)

# --- Geometry (pixels). Sizes are physical, so they do not scale with the field size. ---
_NUC_RADIUS = (7.5, 10.5)  # base mean nuclear radius, before the trajectory scaling
_TRAJ_SCALE = (0.8, 1.3)  # linear size factor at trajectory t = 0 and t = 1
_AXIS_RATIO = (0.65, 1.0)  # minor / major nuclear semi-axis
_NUC_WOBBLE_SD = 0.03  # SD of each nuclear boundary harmonic (k = 2..5): slight irregularity
_CELL_FACTOR = (2.0, 2.6)  # cell-body radius / nuclear radius
# SD of the cell outline harmonics k = 1..6: k = 1 puts the nucleus off-centre, k = 2
# elongates the cell, higher ones make it lobed.
_CELL_WOBBLE_SD = (0.10, 0.2, 0.1, 0.05, 0.035, 0.025)
_TOUCH_PROB = 0.12  # chance a new cell is placed touching an existing nucleus
_TOUCH_GAP = (0.88, 0.98)  # centre distance / sum of boundary radii for touching pairs
_SEPARATION = 1.1  # min centre distance / sum of max radii for all other pairs
_BORDER_MARGIN = 0.6  # centres may lie this many nuclear radii outside the field
_PLACEMENT_TRIES = 30
_MAX_FAILED_CELLS = 25  # stop early once the field is evidently full

# --- Photometry (expected photo-electrons per pixel before illumination and gain). ---
_NUCLEUS_PHOTONS = 1100.0
_STRUCTURE_PHOTONS = 320.0
_FIBRE_PHOTONS = 150.0
_PROTEIN_PHOTONS = {
    "nuclear": 650.0,
    "nucleolar": 1400.0,
    "cytoplasmic": 380.0,
    "membrane": 900.0,
    "puncta": 1600.0,
    "filaments": 900.0,
    # Twins: calibrated so the mean integrated protein per cell equals the partner's
    # (nuclear_speckles ~ nuclear, er ~ golgi ~ cytoplasmic, fine_puncta ~ puncta).
    "nuclear_speckles": 885.0,
    "er": 715.0,
    "golgi": 1900.0,
    "fine_puncta": 2350.0,
}
_PROTEIN_NONSPECIFIC = 0.025  # diffuse cytoplasmic signal of every protein, relative
_AUTOFLUORESCENCE = (8.0, 20.0, 15.0)  # per channel, photons per pixel
_HAZE = 0.06  # out-of-focus light, fraction of the local (heavily blurred) signal
_CELL_BRIGHTNESS_SD = 0.2  # log-normal cell-to-cell variation of each channel
_ILLUMINATION_MIN = (0.7, 0.85)  # darkest corner relative to the brightest point
_PSF_SIGMA = 1.0
_READ_NOISE = 2.5
_CAMERA_OFFSET = 100.0

# --- Field and cell effects of the "hard" settings (see DIFFICULTIES). ---
_DIM_LEVEL = 0.1  # expression of a dim (barely expressing) cell, relative to its draw
# Typical in-cell photons per pixel of each channel: the unit of the `background` option.
_BACKGROUND_REFERENCE = (_NUCLEUS_PHOTONS, _STRUCTURE_PHOTONS, 300.0)
_OUT_OF_FOCUS_SIGMA = (2.0, 3.0)  # extra blur SD (px) of an out-of-focus field
_OUT_OF_FOCUS_HAZE = 0.25  # out-of-focus light of such a field (in focus: _HAZE)

# --- Plate layout (plates > 0). Its random streams are SeedSequence(seed) children with
# spawn keys of their own, far from the field streams' (0..6 under entropy [seed, index]),
# so no draw of a field changes. ---
_LAYOUT_KEY = 0x4C41594F  # ASCII "LAYO": the well positions of controls and perturbations
_PLATE_KEY = 0x504C4154  # ASCII "PLAT": the technical effects of each plate
# Largest additive background of a plate per unit of plate_effect_sd, as a fraction of each
# channel's typical in-cell level (the unit of `background`): 0.3 gives up to 15 %.
_PLATE_BACKGROUND = 0.5
# Largest extra blur SD (px) of a plate per unit of plate_effect_sd: 0.3 gives up to 0.6 px.
_PLATE_BLUR = 2.0


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _check_difficulty(difficulty) -> str:
    if not (isinstance(difficulty, str) and difficulty in DIFFICULTIES):
        raise ValueError(f"difficulty={difficulty!r}: expected one of {tuple(DIFFICULTIES)}")
    return difficulty


def _check_classes(classes) -> tuple[str, ...]:
    # A bare string is a Sequence of characters; accepting it would silently mean
    # classes ("n", "u", ...), so it is rejected explicitly.
    valid = isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes) > 0
    if not valid:
        raise ValueError(
            f"classes={classes!r}: expected a non-empty sequence of class names from {CLASSES}"
        )
    classes = tuple(classes)
    unknown = [c for c in classes if not isinstance(c, str) or c not in CLASSES]
    if unknown:
        raise ValueError(f"classes={classes!r}: unknown {unknown}; expected names from {CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes={classes!r}: expected unique names")
    return classes


def _check_options(
    *,
    size: int = 512,
    cells_per_field: float = 45.0,
    classes: Sequence[str] | None = None,
    batch_sd: float = 0.3,
    difficulty: str = "standard",
    expression_sd: float | None = None,
    dim_fraction: float | None = None,
    channel_gain_sd: float | None = None,
    background: float | None = None,
    defocus: float | None = None,
    out_of_focus_fraction: float | None = None,
    plates: int = 0,
    n_fields: int | None = None,
    controls_per_plate: int = 4,
    plate_effect_sd: float = 0.3,
    well_effect: float = 0.2,
) -> dict:
    """Validate the keyword options of :func:`generate_field` and :func:`generate_shard`.

    ``None`` is resolved from ``difficulty``; an unknown keyword raises ``TypeError`` as
    for any call.
    """
    preset = DIFFICULTIES[_check_difficulty(difficulty)]

    def pick(name, value):
        return preset[name] if value is None else value

    nonneg = {
        "expression_sd": expression_sd,
        "channel_gain_sd": channel_gain_sd,
        "background": background,
        "defocus": defocus,
    }
    fractions = {"dim_fraction": dim_fraction, "out_of_focus_fraction": out_of_focus_fraction}
    return {
        "size": check_int("size", size, 64),
        "cells_per_field": check_real("cells_per_field", cells_per_field, 0.0, strict=True),
        "classes": _check_classes(pick("classes", classes)),
        "batch_sd": check_real("batch_sd", batch_sd, 0.0, strict=False),
        "difficulty": difficulty,
        **{k: check_real(k, pick(k, v), 0.0, strict=False) for k, v in nonneg.items()},
        **{k: check_fraction(k, pick(k, v)) for k, v in fractions.items()},
        **_check_layout(plates, n_fields, controls_per_plate, plate_effect_sd, well_effect),
    }


def _check_layout(plates, n_fields, controls_per_plate, plate_effect_sd, well_effect) -> dict:
    """Validate the plate-layout options (see :func:`generate_field`); ``n_fields`` only with plates."""
    plates = check_int("plates", plates, 0)
    options = {
        "plates": plates,
        "n_fields": None,
        "controls_per_plate": check_int("controls_per_plate", controls_per_plate, 1),
        "plate_effect_sd": check_real("plate_effect_sd", plate_effect_sd, 0.0, strict=False),
        "well_effect": check_real("well_effect", well_effect, 0.0, strict=False),
    }
    if plates == 0:
        return options
    if plates == 1:
        raise ValueError(
            "plates=1: expected 0 (no plate layout) or at least 2 (a perturbation's replicates lie on different plates)"
        )
    if n_fields is None:
        raise ValueError(f"plates={plates}: n_fields is required with a plate layout (the wells of all plates)")
    n_fields = check_int("n_fields", n_fields, 1)
    if n_fields % plates:
        raise ValueError(
            f"n_fields={n_fields}, plates={plates}: expected n_fields divisible by plates "
            f"(each plate holds n_fields / plates wells), e.g. n_fields={plates * max(n_fields // plates, 2)}"
        )
    wells = n_fields // plates
    largest = PLATE_FORMATS[-1][0] * PLATE_FORMATS[-1][1]
    if wells > largest:
        raise ValueError(f"n_fields={n_fields}, plates={plates}: {wells} wells per plate; expected at most {largest}")
    if options["controls_per_plate"] >= wells:
        raise ValueError(
            f"controls_per_plate={options['controls_per_plate']}: expected fewer than the {wells} wells per plate "
            f"(n_fields={n_fields} / plates={plates}), so that perturbations fit"
        )
    return {**options, "n_fields": n_fields}


# ---------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------


def _harmonics(z: np.ndarray, coef: np.ndarray, first: int) -> np.ndarray:
    """``sum_k c_k cos(k phi + p_k)`` for ``k = first, first + 1, ...``.

    ``z = exp(i phi)`` and ``coef[..., j] = c_k exp(i p_k)`` (broadcast against ``z``),
    so the sum is the real part of a polynomial in ``z``, evaluated by Horner's rule: no
    trigonometric function per pixel.
    """
    poly = np.zeros_like(z)
    for j in range(coef.shape[-1] - 1, -1, -1):
        poly = (poly + coef[..., j]) * z
    if first > 1:
        poly = poly * z ** (first - 1)
    return poly.real


def _nucleus_radius(cells: dict, i, z: np.ndarray) -> np.ndarray:
    """Boundary radius of nucleus ``i`` in the directions ``z = exp(i phi)``.

    ``i`` is an index, or an index array matching ``z``.
    An ellipse with mean radius ``r`` (semi-axes ``r / sqrt(q)`` and ``r * sqrt(q)``, so
    its area is ``pi r**2`` whatever the axis ratio ``q``) times a few low harmonics
    (k = 2..5) that make the outline slightly irregular.
    """
    a, b = cells["semi_a"][i], cells["semi_b"][i]
    rel = z * cells["rot"][i]  # direction relative to the major axis
    ellipse = a * b / np.sqrt((b * rel.real) ** 2 + (a * rel.imag) ** 2)
    return ellipse * (1.0 + _harmonics(z, cells["nuc_coef"][i], 2))


def _cell_radius(cells: dict, i, z: np.ndarray) -> np.ndarray:
    """Boundary radius of the body of cell ``i`` in the directions ``z = exp(i phi)``.

    ``i`` is an index, or an index array matching ``z``; the radius is the one before the
    partition between neighbouring cells.
    """
    wobble = _harmonics(z, cells["cell_coef"][i], 1)
    return cells["cell_r"][i] * np.maximum(1.0 + wobble, 0.5)


def _draw_cells(rng: np.random.Generator, n: int) -> dict:
    """Shape parameters of ``n`` cells (everything except their positions).

    Arrays whose first axis is the cell.
    """
    t = rng.uniform(size=n)
    scale = _TRAJ_SCALE[0] + (_TRAJ_SCALE[1] - _TRAJ_SCALE[0]) * t
    r = rng.uniform(*_NUC_RADIUS, n) * scale
    q = np.sqrt(rng.uniform(*_AXIS_RATIO, n))
    theta = rng.uniform(0.0, math.pi, n)
    nuc_amp = rng.normal(0.0, _NUC_WOBBLE_SD, (n, 4))
    cell_amp = rng.normal(0.0, 1.0, (n, 6)) * np.asarray(_CELL_WOBBLE_SD)
    cell_r = r * rng.uniform(*_CELL_FACTOR, n)
    return {
        "t": t,
        "r": r,
        "semi_a": r / q,
        "semi_b": r * q,
        "theta": theta,
        "rot": np.exp(-1j * theta),
        "nuc_coef": nuc_amp * np.exp(1j * rng.uniform(0.0, 2 * math.pi, (n, 4))),
        "nuc_max": r / q * (1.0 + np.abs(nuc_amp).sum(axis=1)),
        "cell_coef": cell_amp * np.exp(1j * rng.uniform(0.0, 2 * math.pi, (n, 6))),
        "cell_r": cell_r,
        "cell_max": cell_r * (1.0 + np.abs(cell_amp).sum(axis=1)),
    }


def _place_cells(rng: np.random.Generator, size: int, cells_per_field: float) -> dict:
    """Draw cell parameters and positions.

    Returns a dict of per-cell arrays (first axis: the ``n`` cells placed), with centres
    ``cy``, ``cx`` in pixel coordinates (pixel ``(i, j)`` has its centre at ``(i, j)``),
    possibly just outside the field so that border-cut cells occur.
    """
    # More nuclei than could ever fit side by side are pointless (and a huge
    # cells_per_field must not exhaust memory), so cap the draw.
    most = int((size + 2 * _NUC_RADIUS[1]) ** 2 / (math.pi * (_NUC_RADIUS[0] * 0.8) ** 2))
    n_wanted = min(int(rng.poisson(cells_per_field)), most)
    cells = _draw_cells(rng, n_wanted)
    cy_all, cx_all = np.full(n_wanted, np.nan), np.full(n_wanted, np.nan)
    placed: list[int] = []
    failed_in_row = 0
    for i in range(n_wanted):
        lo, hi = -_BORDER_MARGIN * cells["r"][i], size - 1 + _BORDER_MARGIN * cells["r"][i]
        touch = bool(placed) and rng.uniform() < _TOUCH_PROB
        others = np.asarray(placed, dtype=np.intp)
        reach = cells["nuc_max"][others] + cells["nuc_max"][i]
        position = None
        for _ in range(_PLACEMENT_TRIES):
            partner = -1
            if touch:
                # Put the new nucleus against a random existing one: the centre distance
                # is a little less than the sum of the two boundary radii along the line
                # joining them, so the nuclei share a boundary but barely overlap.
                partner = int(rng.integers(len(placed)))
                j = placed[partner]
                z = np.exp(1j * rng.uniform(-math.pi, math.pi, 1))
                dist = _nucleus_radius(cells, j, z) + _nucleus_radius(cells, i, -z)
                dist = float(dist[0]) * rng.uniform(*_TOUCH_GAP)
                cy = cy_all[j] + dist * z[0].imag
                cx = cx_all[j] + dist * z[0].real
            else:
                cy, cx = rng.uniform(lo, hi, 2)
            if not (lo <= cy <= hi and lo <= cx <= hi):
                continue
            gap = np.hypot(cy_all[others] - cy, cx_all[others] - cx) / reach
            if partner >= 0:
                gap[partner] = np.inf
            if gap.size and gap.min() < _SEPARATION:
                continue
            position = (cy, cx)
            break
        if position is None:
            # Give up on this cell; stop altogether once the field is evidently full, so
            # that a huge cells_per_field cannot make generation run for ever.
            failed_in_row += 1
            if failed_in_row >= _MAX_FAILED_CELLS:
                break
            continue
        failed_in_row = 0
        cy_all[i], cx_all[i] = position
        placed.append(i)
    cells["cy"], cells["cx"] = cy_all, cx_all
    keep = np.asarray(placed, dtype=np.intp)
    return {key: value[keep] for key, value in cells.items()}


def _bbox(cy: float, cx: float, radius: float, size: int):
    """Slices of the field covering a disc, clipped; ``None`` if entirely outside."""
    y0, y1 = max(math.floor(cy - radius), 0), min(math.ceil(cy + radius) + 1, size)
    x0, x1 = max(math.floor(cx - radius), 0), min(math.ceil(cx + radius) + 1, size)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _polar(box, cy: float, cx: float):
    """Distance to ``(cy, cx)`` and unit direction ``exp(i phi)`` for the pixels of ``box``.

    The direction is 1 at the centre itself.
    """
    dy = np.arange(box[0].start, box[0].stop, dtype=float)[:, None] - cy
    dx = np.arange(box[1].start, box[1].stop, dtype=float)[None, :] - cx
    vec = dx + 1j * dy
    dist = np.abs(vec)
    return dist, np.where(dist > 0, vec / np.maximum(dist, 1e-12), 1.0)


def _rasterize(cells: dict, size: int):
    """Paint nuclei and cell bodies.

    Returns
    -------
    nuc_id : (size, size) int32
        Internal cell id + 1 of the nucleus covering each pixel, 0 elsewhere. Where two
        nuclei overlap the pixel goes to the one whose boundary is relatively farther
        away, which gives touching nuclei a clean shared edge.
    nuc_rho : (size, size) float32
        Normalised radius (0 at the centre, 1 at the boundary) inside nuclei, else 1.
    cell_id : (size, size) int32
        Cell id + 1 of the cell body covering each pixel (nucleus included), 0 for
        background. Bodies are a multiplicatively weighted nearest-nucleus partition,
        limited to each cell's own irregular outline.
    cell_rho : (size, size) float32
        Normalised radius of the cell body (0 at the nucleus centre, 1 at the outline).
    """
    nuc_rho = np.ones((size, size), np.float32)
    nuc_id = np.zeros((size, size), np.int32)
    cell_rho = np.ones((size, size), np.float32)
    cell_id = np.zeros((size, size), np.int32)
    for i in range(len(cells["cy"])):
        cy, cx = cells["cy"][i], cells["cx"][i]
        box = _bbox(cy, cx, cells["cell_max"][i], size)
        if box is None:
            continue
        dist, z = _polar(box, cy, cx)
        rho = dist / _cell_radius(cells, i, z)
        win = rho < cell_rho[box]
        cell_rho[box][win] = rho[win]
        cell_id[box][win] = i + 1
        box = _bbox(cy, cx, cells["nuc_max"][i], size)
        if box is None:
            continue
        dist, z = _polar(box, cy, cx)
        rho = dist / _nucleus_radius(cells, i, z)
        win = rho < nuc_rho[box]
        nuc_rho[box][win] = rho[win]
        nuc_id[box][win] = i + 1
    # A nucleus always belongs to its own cell, whatever the body partition said.
    inside = nuc_id > 0
    cell_id[inside] = nuc_id[inside]
    return nuc_id, nuc_rho, cell_id, cell_rho


def _lerp_last(a: np.ndarray, size: int, step: int) -> np.ndarray:
    """Interpolate linearly along the last axis from samples every ``step`` pixels.

    Sample ``j`` lies at pixel ``j * step``; the result has ``size`` pixels and the end is
    held constant.
    """
    padded = np.concatenate([a, a[..., -1:]], axis=-1)
    w = np.arange(step, dtype=np.float32) / step
    out = padded[..., :-1, None] * (1.0 - w) + padded[..., 1:, None] * w
    return out.reshape(*a.shape[:-1], -1)[..., :size]


def _upsample(small: np.ndarray, size: int, step: int) -> np.ndarray:
    """Upsample the last two axes bilinearly to (size, size), elementwise.

    BLAS matrix products or ``ndimage.zoom`` are several times slower, the former badly so
    on a busy machine.
    """
    rows = _lerp_last(small.astype(np.float32), size, step)
    return _lerp_last(rows.swapaxes(-1, -2), size, step).swapaxes(-1, -2)


def _texture(rng: np.random.Generator, size: int, sigma: float, step: int = 1) -> np.ndarray:
    """Smooth Gaussian random field with zero mean and unit SD, (size, size) float32.

    Coarse textures (``sigma`` of several pixels) are drawn on a grid ``step`` times
    coarser and interpolated, which costs a fraction of a full-resolution filter.
    """
    n = -(-size // step)
    field = ndi.gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), sigma / step)
    if step > 1:
        field = _upsample(field, size, step)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _splat(
    ys: np.ndarray,
    xs: np.ndarray,
    weights: np.ndarray,
    owner: np.ndarray,
    keep: np.ndarray,
    size: int,
) -> np.ndarray:
    """Accumulate point sources into a (size, size) float32 image.

    ``keep`` is a (size, size) int32 map; a point counts only where ``keep`` equals its
    ``owner``, which confines each cell's fibres and dots to that cell's own region.
    """
    iy, ix = np.rint(ys).astype(np.intp), np.rint(xs).astype(np.intp)
    ok = (iy >= 0) & (iy < size) & (ix >= 0) & (ix < size)
    flat = iy[ok] * size + ix[ok]
    ok_owner = keep.ravel()[flat] == owner[ok]
    image = np.bincount(flat[ok_owner], weights[ok][ok_owner], minlength=size * size)
    return image.reshape(size, size).astype(np.float32)


def _fibres(
    starts_y: np.ndarray,
    starts_x: np.ndarray,
    headings: np.ndarray,
    lengths: np.ndarray,
    curvature: np.ndarray,
    step: float = 0.6,
):
    """Sample points every ``step`` pixels along circular arcs (vectorised over fibres).

    Fibre ``j`` starts at ``(starts_y[j], starts_x[j])`` with direction ``headings[j]``
    (radians, as ``arctan2(dy, dx)``) and turns by ``curvature[j]`` radians per pixel.
    Returns flattened ``ys``, ``xs`` and the index of each point's fibre.
    """
    counts = np.ceil(lengths / step).astype(np.intp)
    fibre = np.repeat(np.arange(len(lengths)), counts)
    first = np.cumsum(counts) - counts
    s = (np.arange(fibre.size) - first[fibre]) * step
    # Closed form of the arc: the chord from the start has length s * sinc(k s / 2) and
    # points along the mean heading h0 + k s / 2 (well-behaved as k -> 0).
    k = curvature[fibre]
    chord = s * np.sinc(k * s / (2 * math.pi))
    mid = headings[fibre] + 0.5 * k * s
    return starts_y[fibre] + chord * np.sin(mid), starts_x[fibre] + chord * np.cos(mid), fibre


def _per_cell(rng: np.random.Generator, n_cells: int, low: int, high: int) -> np.ndarray:
    """Owner cell index of each of ``low..high-1`` (uniform) items drawn per cell."""
    return np.repeat(np.arange(n_cells), rng.integers(low, high, n_cells))


# ---------------------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------------------


def _nucleoli(rng: np.random.Generator, cells: dict, nuc_id: np.ndarray, size: int):
    """1-4 nucleoli per nucleus as Gaussian blobs of peak ~1, (size, size) float32.

    Drawn for every cell (not only for the nucleolar class) because nucleoli exclude DNA
    in every cell; the nucleolar class just puts its protein there.
    """
    owner = _per_cell(rng, len(cells["cy"]), 1, 5)
    rho = np.sqrt(rng.uniform(0.0, 0.45**2, owner.size))
    ang = rng.uniform(0.0, 2 * math.pi, owner.size)
    # Position in the nucleus's own frame (u along the major axis), then rotated.
    u = rho * cells["semi_a"][owner] * np.cos(ang)
    v = rho * cells["semi_b"][owner] * np.sin(ang)
    th = cells["theta"][owner]
    ys = cells["cy"][owner] + u * np.sin(th) + v * np.cos(th)
    xs = cells["cx"][owner] + u * np.cos(th) - v * np.sin(th)
    # Point sources blurred once are far cheaper than drawing each blob; the brightness
    # varies from nucleolus to nucleolus, the size only through the PSF applied later.
    weight = rng.uniform(0.7, 1.5, owner.size) * (2 * math.pi * 1.3**2)
    points = _splat(ys, xs, weight, owner + 1, nuc_id, size)
    return np.minimum(ndi.gaussian_filter(points, 1.3), 1.0)


def _structure_fibres(rng, cells: dict, cell_id: np.ndarray, size: int) -> np.ndarray:
    """Microtubule-like network, (size, size) float32 (point sources).

    Many thin, curving fibres growing from around the nucleus towards the cell periphery.
    """
    owner = _per_cell(rng, len(cells["cy"]), 50, 90)
    if owner.size == 0:
        return np.zeros((size, size), np.float32)
    n = owner.size
    phi = rng.uniform(-math.pi, math.pi, n)
    r0 = cells["r"][owner] * rng.uniform(0.3, 1.3, n)
    y, x, f = _fibres(
        cells["cy"][owner] + r0 * np.sin(phi),
        cells["cx"][owner] + r0 * np.cos(phi),
        phi + rng.normal(0.0, 0.7, n),
        _cell_radius(cells, owner, np.exp(1j * phi)) * rng.uniform(0.5, 1.3, n),
        rng.normal(0.0, 0.05, n),
    )
    weight = rng.lognormal(0.0, 0.4, n)
    # Microtubules are thinner than the optical resolution: the PSF alone sets their width.
    return _splat(y, x, weight[f], owner[f] + 1, cell_id, size)


def _protein_pattern(
    name: str,
    rng: np.random.Generator,
    cells: dict,
    maps: dict,
    size: int,
) -> np.ndarray:
    """Unit-strength protein pattern of class ``name`` (before per-cell amplitude).

    (size, size) float32 with values of order 1 where the protein is.
    """
    return _PATTERNS[name](rng, cells, _Compartments(maps), size)


class _Compartments:
    """The label maps of a field and the masks the patterns derive from them."""

    def __init__(self, maps: dict):
        self.nuc_id, self.cell_id, self.cell_rho = maps["nuc_id"], maps["cell_id"], maps["cell_rho"]
        self.nucleoli = maps["nucleoli"]
        self.nucleus = self.nuc_id > 0
        self.cyto_id = np.where(self.nucleus, 0, self.cell_id)
        self.cyto = self.cyto_id > 0


def _nuclear(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Diffuse nucleoplasm with speckle texture, dimmer in the nucleoli."""
    texture = _texture(rng, size, 1.5)
    return m.nucleus * np.clip(1.0 + 0.25 * texture, 0.2, None) * (1 - 0.6 * m.nucleoli)


def _nucleolar(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Bright nucleoli on a faint nucleoplasmic background."""
    return m.nucleoli + 0.15 * m.nucleus


def _cytoplasmic(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Diffuse, brighter near the nucleus where the cytoplasm is thicker."""
    texture = _texture(rng, size, 1.5)
    thickness = np.clip(1.2 - 0.8 * m.cell_rho, 0.3, None)
    return m.cyto * thickness * np.clip(1.0 + 0.2 * texture, 0.2, None)


def _membrane(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """One-pixel outline of each cell body, softened into a rim ~2-3 px wide."""
    texture = _texture(rng, size, 1.5)
    cell_id = m.cell_id
    edge = np.zeros((size, size), bool)
    for axis in (0, 1):
        diff = np.diff(cell_id, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(0, -1)
        trail = [slice(None)] * 2
        trail[axis] = slice(1, None)
        edge[tuple(lead)] |= diff
        edge[tuple(trail)] |= diff
    edge &= cell_id > 0
    rim = ndi.gaussian_filter(edge.astype(np.float32), 0.7) * (cell_id > 0)
    return 2.2 * rim * np.clip(1.0 + 0.3 * texture, 0.2, None)


def _puncta(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Vesicle-like dots scattered through the cytoplasm, denser near the nucleus.

    Uniform in radius rather than in area.
    """
    n_cells = len(cells["cy"])
    owner = np.repeat(np.arange(n_cells), rng.poisson(40, n_cells) + 10)
    z = np.exp(1j * rng.uniform(-math.pi, math.pi, owner.size))
    rad = rng.uniform(0.3, 1.0, owner.size) * _cell_radius(cells, owner, z)
    ys, xs = cells["cy"][owner] + rad * z.imag, cells["cx"][owner] + rad * z.real
    weight = rng.lognormal(0.0, 0.4, owner.size)
    points = _splat(ys, xs, weight, owner + 1, m.cyto_id, size)
    # Vesicles somewhat larger than the PSF: with it, dots end up ~3-4 px across.
    return ndi.gaussian_filter(points, 0.8) * (2 * math.pi * 0.8**2)


def _filaments(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Stress-fibre-like straight bundles sharing a dominant orientation per cell.

    They spread across the whole cell body.
    """
    n_cells = len(cells["cy"])
    owner = _per_cell(rng, n_cells, 10, 22)
    n = owner.size
    psi = rng.uniform(0.0, math.pi, n_cells)[owner] + rng.normal(0.0, 0.12, n)
    span = cells["cell_r"][owner]
    off = rng.uniform(-0.9, 0.9, n) * span
    along = rng.uniform(-0.4, 0.4, n) * span
    length = rng.uniform(1.0, 2.0, n) * span
    y0 = cells["cy"][owner] + off * np.cos(psi) - (along + length / 2) * np.sin(psi)
    x0 = cells["cx"][owner] - off * np.sin(psi) - (along + length / 2) * np.cos(psi)
    ys, xs, f = _fibres(y0, x0, psi, length, rng.normal(0.0, 0.004, n))
    weight = rng.lognormal(0.0, 0.5, n) * 0.25
    points = _splat(ys, xs, weight[f], owner[f] + 1, m.cyto_id, size)
    # Fibre bundles are below the resolution: the PSF alone sets their width.
    # Actin-like proteins also keep a diffuse (monomeric) cytoplasmic pool.
    return points + 0.08 * m.cyto


def _nuclear_speckles(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Splicing speckles: 10-30 irregular nuclear bodies a little larger than the PSF.

    ~2-3 px across with it, scattered through the nucleoplasm but not in the nucleoli, on
    a diffuse nucleoplasmic pool holding about half of the protein.
    """
    nuc = cells["semi_a"], cells["semi_b"]
    owner = _per_cell(rng, len(cells["cy"]), 10, 31)
    rho = np.sqrt(rng.uniform(0.0, 0.8**2, owner.size))
    ang = rng.uniform(0.0, 2 * math.pi, owner.size)
    u, v = rho * nuc[0][owner] * np.cos(ang), rho * nuc[1][owner] * np.sin(ang)
    th = cells["theta"][owner]
    ys = cells["cy"][owner] + u * np.sin(th) + v * np.cos(th)
    xs = cells["cx"][owner] + u * np.cos(th) - v * np.sin(th)
    weight = rng.lognormal(0.0, 0.4, owner.size) * (2 * math.pi * 0.9**2)
    points = _splat(ys, xs, weight, owner + 1, m.nuc_id, size)
    speckles = ndi.gaussian_filter(points, 0.9)
    return (0.35 * m.nucleus + speckles) * (1 - 0.8 * m.nucleoli)


def _er(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Reticular network: the zero set of a smooth random field.

    A mesh of curved lines a few pixels apart, like the ER's tubules and sheets seen at
    widefield resolution. Densest around the nucleus (as cytoplasmic, but steeper), on an
    unresolved diffuse part, plus a faint nuclear-envelope rim continuous with it.
    """
    field = _texture(rng, size, 1.6)
    mesh = np.exp(-((field / 0.3) ** 2))
    thickness = np.clip(1.4 - 1.1 * m.cell_rho, 0.2, None)
    envelope = np.clip(
        ndi.gaussian_filter((m.cyto_id > 0).astype(np.float32), 1.0) * 2.0, 0.0, 1.0
    ) * m.nucleus
    return m.cyto * thickness * (0.3 + mesh) + 0.3 * envelope


def _golgi(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Golgi ribbon: 12-24 small stacks in a compact cap against one side of the nucleus.

    Within ~0.5 nuclear radii of its edge, spread over ~+-30 degrees.
    """
    n_cells = len(cells["cy"])
    owner = _per_cell(rng, n_cells, 12, 25)
    side = rng.uniform(-math.pi, math.pi, n_cells)[owner] + rng.normal(0.0, 0.5, owner.size)
    z = np.exp(1j * side)
    rad = _nucleus_radius(cells, owner, z) * rng.uniform(1.05, 1.55, owner.size)
    ys, xs = cells["cy"][owner] + rad * z.imag, cells["cx"][owner] + rad * z.real
    weight = rng.lognormal(0.0, 0.4, owner.size) * (2 * math.pi * 1.0**2)
    points = _splat(ys, xs, weight, owner + 1, m.cyto_id, size)
    return ndi.gaussian_filter(points, 1.0)


def _fine_puncta(rng, cells: dict, m: _Compartments, size: int) -> np.ndarray:
    """Peroxisome-like dots: many (60-150 per cell), dim and below the resolution.

    The PSF alone sets their size; they spread evenly over the cytoplasm's area.
    """
    owner = _per_cell(rng, len(cells["cy"]), 60, 151)
    z = np.exp(1j * rng.uniform(-math.pi, math.pi, owner.size))
    rad = np.sqrt(rng.uniform(0.1, 0.95**2, owner.size)) * _cell_radius(cells, owner, z)
    ys, xs = cells["cy"][owner] + rad * z.imag, cells["cx"][owner] + rad * z.real
    weight = rng.lognormal(0.0, 0.5, owner.size)
    return _splat(ys, xs, weight, owner + 1, m.cyto_id, size)


#: Class name -> its pattern; every name of :data:`CLASSES` has one.
_PATTERNS = {
    "nuclear": _nuclear,
    "nucleolar": _nucleolar,
    "cytoplasmic": _cytoplasmic,
    "membrane": _membrane,
    "puncta": _puncta,
    "filaments": _filaments,
    "nuclear_speckles": _nuclear_speckles,
    "er": _er,
    "golgi": _golgi,
    "fine_puncta": _fine_puncta,
}


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth vignetting, (size, size) float32.

    1 on an off-centre optical axis, falling quadratically (slightly anisotropically) to
    0.7-0.85 at the farthest corner.
    """
    coord = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y0, x0 = rng.uniform(-0.35, 0.35, 2)
    ay, ax = rng.uniform(0.8, 1.2, 2)
    q = ay * (coord[:, None] - y0) ** 2 + ax * (coord[None, :] - x0) ** 2
    low = rng.uniform(*_ILLUMINATION_MIN)
    return 1.0 - (1.0 - low) / q.max() * q


def _haze(signal: np.ndarray) -> np.ndarray:
    """Out-of-focus light: the (C, H, W) signal blurred over ~10 px.

    Computed on a 4x decimated grid (a full-resolution wide Gaussian would dominate the
    run time) and brought back by pixel replication: the haze is a few percent of a field
    that varies over ~10 px, so its 4-px steps are far below the shot noise, and the PSF
    smooths them further.
    """
    size = signal.shape[-1]
    small = ndi.gaussian_filter(signal[:, ::4, ::4], (0, 2.5, 2.5))
    return small.repeat(4, axis=1).repeat(4, axis=2)[:, :size, :size]


def _objects_frame(image_id, name, t, cy, cx, areas) -> pd.DataFrame:
    """Ground-truth table with fixed columns and dtypes (also when empty)."""
    n = len(t)
    return pd.DataFrame(
        {
            "Metadata_image": pd.Series([image_id] * n, dtype=object),
            "truth_label": np.arange(1, n + 1, dtype=np.int64),
            "Metadata_trajectory": np.asarray(t, dtype=float),
            "Metadata_class": pd.Series([name] * n, dtype=object),
            "truth_y": np.asarray(cy, dtype=float),
            "truth_x": np.asarray(cx, dtype=float),
            "truth_nucleus_area": np.asarray(areas, dtype=np.int64),
        },
        columns=list(OBJECT_COLUMNS),
    )


# ---------------------------------------------------------------------------------------
# Plate layout
# ---------------------------------------------------------------------------------------


def plate_format(wells: int) -> tuple[int, int]:
    """Return the (rows, columns) of the smallest standard plate with at least ``wells`` wells.

    Parameters
    ----------
    wells : int
        Wells per plate, 1 to 1536.

    Returns
    -------
    tuple of int
        Rows and columns, from :data:`PLATE_FORMATS`.

    Raises
    ------
    ValueError
        If ``wells`` is out of range.

    Examples
    --------
    >>> plate_format(24), plate_format(30), plate_format(96)
    ((4, 6), (6, 8), (8, 12))
    """
    wells = check_int("wells", wells, 1)
    for rows, columns in PLATE_FORMATS:
        if rows * columns >= wells:
            return rows, columns
    raise ValueError(f"wells={wells}: expected at most {rows * columns} wells per plate")


def well_name(position: int, columns: int) -> str:
    """Return the name of the well at a row-major ``position`` of a plate with ``columns`` columns.

    Rows are lettered A..Z, then AA..AF (1536-well plates); columns are numbered from 01.

    Parameters
    ----------
    position : int
        Row-major well position, >= 0.
    columns : int
        Columns of the plate.

    Returns
    -------
    str
        E.g. ``"B02"``.

    Examples
    --------
    >>> well_name(0, 12), well_name(13, 12), well_name(95, 12), well_name(26 * 48, 48)
    ('A01', 'B02', 'H12', 'AA01')
    """
    row, column = divmod(position, columns)
    letters = chr(ord("A") + row) if row < 26 else "A" + chr(ord("A") + row - 26)
    return f"{letters}{column + 1:02d}"


@lru_cache(maxsize=16)
def _well_contents(seed: int, n_fields: int, plates: int, controls: int) -> np.ndarray:
    """Return what each well of each plate holds, (plates, wells) int: -1 a control, k perturbation k.

    Each plate draws a permutation of its well positions from the layout stream: the first
    ``controls`` positions take the controls, the rest the perturbations in order, so every
    perturbation is on every plate. A plate whose control positions repeat an earlier plate's
    draws again while other position sets remain.
    """
    wells = n_fields // plates
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LAYOUT_KEY,)))
    contents = np.empty((plates, wells), np.int64)
    seen: set[tuple[int, ...]] = set()
    for p in range(plates):
        order = rng.permutation(wells)
        while tuple(sorted(order[:controls])) in seen and len(seen) < math.comb(wells, controls):
            order = rng.permutation(wells)
        seen.add(tuple(sorted(order[:controls])))
        contents[p, order[:controls]] = -1
        contents[p, order[controls:]] = np.arange(wells - controls)
    contents.setflags(write=False)
    return contents


def _names(prefix: str, n: int) -> list[str]:
    """``prefix`` + 1-based numbers of ``n`` items, zero-padded to a common width (>= 2)."""
    width = max(2, len(str(n)))
    return [f"{prefix}{k + 1:0{width}d}" for k in range(n)]


def plate_layout(
    seed: int,
    n_fields: int,
    plates: int,
    controls_per_plate: int = 4,
    classes: Sequence[str] | None = None,
    difficulty: str = "standard",
) -> pd.DataFrame:
    """Return the plate layout of a synthetic screen: which well each field is and what it holds.

    Field ``i`` is well position ``i % W`` (row-major, see :func:`well_name`) of plate
    ``i // W``, ``W = n_fields / plates``. Each plate has ``controls_per_plate`` control
    wells (:data:`CONTROL`, the first class) at positions of its own; every other well holds
    one of the ``W - controls_per_plate`` perturbations, each once per plate, at a shuffled
    position. Perturbation ``k`` shows class ``classes[k % len(classes)]``. A function of
    its arguments only.

    Parameters
    ----------
    seed : int
        Dataset seed, >= 0.
    n_fields : int
        Fields (wells) of all plates, a multiple of ``plates``.
    plates : int
        Number of plates, >= 2.
    controls_per_plate : int, optional
        Negative-control wells per plate, >= 1 and fewer than the wells per plate.
    classes : sequence of str, optional
        Phenotype classes, as for :func:`generate_field` (default: the difficulty's).
    difficulty : {"standard", "hard"}, optional
        The preset giving the default ``classes``.

    Returns
    -------
    pandas.DataFrame
        One row per field, in field order: ``Metadata_field_index`` (int), and the
        :data:`LAYOUT_COLUMNS` ``Metadata_plate`` (``p01``, ...), ``Metadata_well``
        (``A01``, ...), ``Metadata_perturbation`` (:data:`CONTROL` or ``pert01``, ...),
        ``Metadata_moa`` (the annotation: the class name, :data:`CONTROL` for controls),
        then ``Metadata_class`` (the phenotype shown) and ``Metadata_edge`` (1 for the
        outer ring of wells, halving per ring inwards: the weight of ``well_effect``).

    Raises
    ------
    ValueError
        If an argument is out of range or the fields do not divide into the plates.

    Examples
    --------
    >>> layout = plate_layout(0, n_fields=48, plates=2, controls_per_plate=4)
    >>> layout.groupby("Metadata_plate")["Metadata_perturbation"].apply(lambda p: (p == "control").sum()).tolist()
    [4, 4]
    >>> int((layout["Metadata_perturbation"] == "pert01").sum())
    2
    >>> layout.loc[0, ["Metadata_plate", "Metadata_well"]].tolist()
    ['p01', 'A01']
    """
    seed = check_int("seed", seed, 0)
    opts = _check_options(
        classes=classes, difficulty=difficulty, plates=plates, n_fields=n_fields, controls_per_plate=controls_per_plate
    )
    plates, n_fields, classes = opts["plates"], opts["n_fields"], opts["classes"]
    if plates == 0:
        raise ValueError("plates=0: expected at least 2 plates for a plate layout")
    contents = _well_contents(seed, n_fields, plates, opts["controls_per_plate"])
    wells = contents.shape[1]
    rows, columns = plate_format(wells)
    position = np.arange(wells)
    row, column = np.divmod(position, columns)
    depth = np.minimum.reduce([row, column, rows - 1 - row, columns - 1 - column])
    perturbations = np.asarray(_names("pert", wells - opts["controls_per_plate"]), dtype=object)
    code = contents.ravel()
    moa = np.where(code < 0, CONTROL, np.asarray(classes, dtype=object)[np.maximum(code, 0) % len(classes)])
    return pd.DataFrame(
        {
            "Metadata_field_index": np.arange(n_fields, dtype=np.int64),
            "Metadata_plate": np.repeat(_names("p", plates), wells),
            "Metadata_well": np.tile([well_name(k, columns) for k in position], plates),
            "Metadata_perturbation": np.where(code < 0, CONTROL, perturbations[np.maximum(code, 0)]),
            "Metadata_moa": moa,
            "Metadata_class": np.where(code < 0, classes[0], moa),
            "Metadata_edge": np.tile(0.5**depth, plates),
        }
    )


def _field_layout(seed: int, index: int, opts: dict) -> dict | None:
    """Return the layout row of field ``index`` as a dict (see :func:`plate_layout`); None without plates."""
    if opts["plates"] == 0:
        return None
    if index >= opts["n_fields"]:
        raise ValueError(f"index={index}: expected < n_fields={opts['n_fields']} with a plate layout")
    layout = _cached_layout(seed, opts["n_fields"], opts["plates"], opts["controls_per_plate"], opts["classes"])
    return layout[index]


@lru_cache(maxsize=16)
def _cached_layout(seed: int, n_fields: int, plates: int, controls: int, classes: tuple[str, ...]) -> tuple[dict, ...]:
    """:func:`plate_layout` as one dict per field, computed once per design."""
    table = plate_layout(seed, n_fields, plates, controls, classes)
    return tuple(table.to_dict("records"))


def _plate_effects(seed: int, plate: int, edge: float, opts: dict) -> dict:
    """Return the technical effects of a field's plate and well position.

    Per plate (its own stream, so the same for all its wells): a log gain per channel
    ``plate_effect_sd * z`` (``z ~ N(0, 1)``), an additive background per channel up to
    ``_PLATE_BACKGROUND * plate_effect_sd`` of the channel's typical level, and an extra blur
    up to ``_PLATE_BLUR * plate_effect_sd`` px. Per well position: a log gain
    ``well_effect * edge`` shared by the channels (edge wells brighter; ``edge`` is the
    well's weight, see :func:`plate_layout`).
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLATE_KEY, plate)))
    z = rng.standard_normal(len(CHANNELS))
    background_u = rng.uniform(size=len(CHANNELS))
    blur_u = float(rng.uniform())
    sd = opts["plate_effect_sd"]
    return {
        "gain": np.exp(sd * z + opts["well_effect"] * edge),
        "background": _PLATE_BACKGROUND * sd * background_u,
        "blur": _PLATE_BLUR * sd * blur_u,
    }


def _with_plate_effects(effects: dict, plate: dict) -> dict:
    """Return the field's effects with its plate's and well's folded in.

    Gains multiply, blurs add in quadrature, the plate's background is added by
    :func:`_image_formation`.
    """
    return {
        **effects,
        "channel_gain": effects["channel_gain"] * plate["gain"],
        "defocus_sigma": math.hypot(effects["defocus_sigma"], plate["blur"]),
        "plate_background": plate["background"],
    }


# ---------------------------------------------------------------------------------------
# Field assembly (the steps of generate_field)
# ---------------------------------------------------------------------------------------

#: Names of the random streams of a field, in :class:`numpy.random.SeedSequence` spawn order.
_STREAMS = ("geom", "cell", "struct", "protein", "optics", "field", "expression")


def _field_streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    """Independent random streams of field ``(seed, index)``, by name (:data:`_STREAMS`).

    Geometry and the class-independent channels do not depend on the class (changing
    ``classes`` only changes the protein channel), and nothing depends on how many random
    numbers another stage consumed. The first five are the original simulation's; the field
    and cell effects of the difficulty options draw from the last two (``spawn(7)[:5]``
    equals ``spawn(5)``), so with those effects off a field is bit-identical to the original.
    """
    streams = np.random.SeedSequence([seed, index]).spawn(len(_STREAMS))
    return dict(zip(_STREAMS, map(np.random.default_rng, streams)))


def _field_effects(rng: np.random.Generator, opts: dict) -> dict:
    """Per-field channel gains, background, defocus and focus state of the difficulty options.

    Always the same draws in the same order, whatever the options.
    """
    channel_z = rng.standard_normal(len(CHANNELS))
    background_u, defocus_u, out_of_focus_u, out_of_focus_sigma_u = rng.uniform(size=4)
    out_of_focus = bool(out_of_focus_u < opts["out_of_focus_fraction"])
    if out_of_focus:
        low, high = _OUT_OF_FOCUS_SIGMA
        defocus_sigma = low + (high - low) * float(out_of_focus_sigma_u)
    else:
        defocus_sigma = opts["defocus"] * float(defocus_u)
    return {
        "channel_gain": np.exp(opts["channel_gain_sd"] * channel_z),
        "background": opts["background"] * float(background_u),
        "out_of_focus": out_of_focus,
        "defocus_sigma": defocus_sigma,
    }


def _field_signal(name: str, rng: dict, cells: dict, opts: dict):
    """Photons per pixel of each channel, (3, size, size) float32, and the nucleus id map.

    The signal is what the sample emits, before haze, optics and camera.
    """
    size = opts["size"]
    nuc_id, nuc_rho, cell_id, cell_rho = _rasterize(cells, size)
    dna, body, protein_amp = _cell_amplitudes(rng["cell"], rng["expression"], cells, opts)
    nucleoli, dna_signal = _nucleus_signal(rng["cell"], cells, nuc_id, nuc_rho, dna, size)
    structure_signal = _structure_signal(rng["struct"], cells, nuc_id, cell_id, cell_rho, body, size)
    maps = {"nuc_id": nuc_id, "cell_id": cell_id, "cell_rho": cell_rho, "nucleoli": nucleoli}
    protein_signal = _protein_signal(name, rng["protein"], cells, maps, protein_amp, size)
    signal = np.stack(
        [
            _NUCLEUS_PHOTONS * dna_signal,
            structure_signal,
            _PROTEIN_PHOTONS[name] * protein_signal,
        ]
    ).astype(np.float32)
    return signal, nuc_id


def _cell_amplitudes(rng_cell, rng_expression, cells: dict, opts: dict):
    """Per-cell brightness of the DNA, structure and protein channels, index 0 background.

    The protein pattern strengthens along the trajectory (x0.35 at t=0 to x1.65 at t=1),
    and a ``dim_fraction`` of the cells barely express it.
    """
    n = len(cells["cy"])

    def per_cell(sd: float) -> np.ndarray:
        return np.concatenate([[0.0], rng_cell.lognormal(0.0, sd, n)]).astype(np.float32)

    dna, body = per_cell(_CELL_BRIGHTNESS_SD), per_cell(_CELL_BRIGHTNESS_SD)
    strength = 0.35 + 1.3 * cells["t"]
    protein_amp = per_cell(opts["expression_sd"]) * np.concatenate([[0.0], strength]).astype(
        np.float32
    )
    dim = rng_expression.uniform(size=n) < opts["dim_fraction"]
    if dim.any():
        protein_amp[1:][dim] *= np.float32(_DIM_LEVEL)
    return dna, body, protein_amp


def _nucleus_signal(rng, cells: dict, nuc_id, nuc_rho, dna, size: int):
    """Nucleoli map and DNA channel: chromatin speckle, brighter periphery, dark nucleoli."""
    nucleoli = _nucleoli(rng, cells, nuc_id, size)
    chromatin = _texture(rng, size, 1.2)
    nucleus = nuc_id > 0
    dna_signal = (
        dna[nuc_id]
        * np.clip(1.0 + 0.18 * chromatin, 0.3, None)
        * (0.9 + 0.2 * nuc_rho**2)
        * (1.0 - 0.45 * nucleoli)
        * nucleus
    )
    return nucleoli, dna_signal


def _structure_signal(rng, cells: dict, nuc_id, cell_id, cell_rho, body, size: int):
    """Structure channel: diffuse cell body plus radiating fibres.

    The body thins towards the edge and is dimmer over the nucleus (out of its focal
    plane).
    """
    body_texture = _texture(rng, size, 3.0, step=2)
    thickness = np.where(nuc_id > 0, 0.55, 1.0 - 0.45 * np.minimum(cell_rho, 1.0) ** 2)
    fibres = _structure_fibres(rng, cells, cell_id, size)
    return body[cell_id] * (
        _STRUCTURE_PHOTONS * thickness * np.clip(1.0 + 0.25 * body_texture, 0.2, None)
        + _FIBRE_PHOTONS * fibres
    )


def _protein_signal(name: str, rng, cells: dict, maps: dict, protein_amp, size: int):
    """Protein channel: the class pattern plus a faint diffuse cytoplasmic pool, per cell.

    Every protein has such a pool, as real stainings do.
    """
    pattern = _protein_pattern(name, rng, cells, maps, size)
    cell_id = maps["cell_id"]
    nonspecific = _PROTEIN_NONSPECIFIC * ((cell_id > 0) & ~(maps["nuc_id"] > 0))
    return protein_amp[cell_id] * (pattern + nonspecific)


def _image_formation(signal: np.ndarray, rng, effects: dict, batch_sd: float):
    """Camera counts (uint16) of a photon ``signal`` (C, H, W) and the field's batch gain.

    Haze, autofluorescence and background are added, then the PSF (widened by defocus),
    the batch and channel gains and the illumination, then shot and read noise and the
    camera offset.
    """
    signal += (_OUT_OF_FOCUS_HAZE if effects["out_of_focus"] else _HAZE) * _haze(signal)
    signal += np.asarray(_AUTOFLUORESCENCE, np.float32)[:, None, None]
    reference = np.asarray(_BACKGROUND_REFERENCE, np.float32)[:, None, None]
    if effects["background"] > 0:
        signal += np.float32(effects["background"]) * reference
    if "plate_background" in effects:  # plate layout only
        signal += effects["plate_background"].astype(np.float32)[:, None, None] * reference
    size = signal.shape[-1]
    # The gain is exp(batch_sd * z) with z fixed by (seed, index): changing batch_sd
    # rescales every field's log gain and changes nothing else.
    gain = float(np.exp(batch_sd * rng.standard_normal()))
    illumination = _illumination(rng, size)
    # Read noise is drawn before the shot noise: the number of random numbers Poisson
    # sampling consumes depends on the rates, and drawing it first keeps the nucleus and
    # structure channels bit-identical whatever the protein channel holds.
    read_noise = rng.standard_normal(signal.shape, dtype=np.float32)
    # Defocus widens the PSF (Gaussian blurs add in quadrature).
    defocus_sigma = effects["defocus_sigma"]
    blur = math.hypot(_PSF_SIGMA, defocus_sigma) if defocus_sigma > 0 else _PSF_SIGMA
    expected = ndi.gaussian_filter(signal, (0, blur, blur), truncate=3.0)
    expected *= gain * illumination
    channel_gain = effects["channel_gain"]
    if (channel_gain != 1.0).any():
        expected *= channel_gain.astype(np.float32)[:, None, None]
    counts = rng.poisson(np.maximum(expected, 0.0)).astype(np.float32)
    counts += _CAMERA_OFFSET + _READ_NOISE * read_noise
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16), gain


def _truth_labels(nuc_id: np.ndarray, n: int):
    """Keep only nuclei with pixels in the field, numbered 1..N in placement order.

    Returns the label image, the internal ids of the kept cells and every id's area.
    """
    areas = np.bincount(nuc_id.ravel(), minlength=n + 1)
    present = np.flatnonzero(areas[1:] > 0)
    lut = np.zeros(n + 1, np.int32)
    lut[present + 1] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[nuc_id], present, areas


def _field_metadata(index: int, name: str, gain: float, effects: dict) -> dict:
    """Return the metadata dict of one field (see :func:`generate_field`)."""
    image_id = f"f{index:05d}"
    return {
        "Metadata_image": image_id,
        "Metadata_class": name,
        "Metadata_group": image_id,
        "Metadata_field_gain": gain,
        "Metadata_field_index": index,
        **{
            f"Metadata_field_gain_{channel}": gain * float(effects["channel_gain"][c])
            for c, channel in enumerate(CHANNELS)
        },
        "Metadata_field_background": effects["background"],
        "Metadata_field_defocus": effects["defocus_sigma"],
        "Metadata_field_out_of_focus": effects["out_of_focus"],
    }


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def generate_field(
    seed: int,
    index: int,
    *,
    size: int = 512,
    cells_per_field: float = 45.0,
    classes: Sequence[str] | None = None,
    batch_sd: float = 0.3,
    difficulty: str = "standard",
    expression_sd: float | None = None,
    dim_fraction: float | None = None,
    channel_gain_sd: float | None = None,
    background: float | None = None,
    defocus: float | None = None,
    out_of_focus_fraction: float | None = None,
    plates: int = 0,
    n_fields: int | None = None,
    controls_per_plate: int = 4,
    plate_effect_sd: float = 0.3,
    well_effect: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, dict, pd.DataFrame]:
    """Simulate one fluorescence microscopy field of view with ground truth.

    Parameters
    ----------
    seed : int
        Dataset seed, >= 0.
    index : int
        Field index, >= 0. The field is a function of ``(seed, index)`` and the options
        only, so it is identical whichever shard it is generated in.
    size : int, optional
        Side of the square field in pixels, >= 64. Cell sizes are physical (nuclear radius
        ~6-14 px), so a smaller field holds fewer cells' worth of room.
    cells_per_field : float, optional
        Mean number of cells; the number drawn is Poisson-distributed. Fewer are placed
        when the field is too crowded to fit them without overlapping nuclei.
    classes : sequence of str, optional
        Localisation classes to cycle through, unique names from :data:`CLASSES`. Field
        ``index`` shows ``classes[index % len(classes)]``, so any ``len(classes)``
        consecutive indices cover every class once. Default (``None``): the
        difficulty's, :data:`STANDARD_CLASSES` or :data:`HARD_CLASSES`.
    batch_sd : float, optional
        SD (>= 0) of the per-field log brightness gain, a batch effect multiplying all
        channels: the gain is ``exp(batch_sd * z)`` with ``z ~ N(0, 1)`` fixed by
        ``(seed, index)``, so ``batch_sd=0`` gives the same field with gain 1.
    difficulty : {"standard", "hard"}, optional
        Preset of the options below and of ``classes`` (values in :data:`DIFFICULTIES`).
        "standard" with none of them given is the original simulation, bit for bit.
    expression_sd : float, optional
        SD (>= 0) of the log-normal cell-to-cell variation of protein abundance
        (standard 0.25, hard 0.6: a ~10x range within a field).
    dim_fraction : float, optional
        Fraction in [0, 1] of cells that barely express the protein (abundance x0.1;
        standard 0, hard 0.1). They keep their field's label.
    channel_gain_sd : float, optional
        SD (>= 0) of an extra per-field log gain drawn independently for each channel
        (exposure, staining), on top of the shared ``batch_sd`` gain (standard 0, hard 0.3).
    background : float, optional
        Largest per-field additive background (>= 0), as a fraction of each channel's
        typical in-cell level; each field draws its level uniformly in ``[0, background]``
        (standard 0, hard 0.15).
    defocus : float, optional
        Largest extra blur SD in pixels (>= 0) of an in-focus field, drawn uniformly in
        ``[0, defocus]`` per field and added in quadrature to the PSF (standard 0,
        hard 0.8).
    out_of_focus_fraction : float, optional
        Fraction in [0, 1] of fields that are out of focus: extra blur SD 2-3 px and
        about four times the out-of-focus haze (standard 0, hard 0.1).
    plates : int, optional
        0 (default): no plate layout, field ``index`` shows ``classes[index % len(classes)]``.
        ``P >= 2``: the fields are the wells of a screen of ``P`` plates (see
        :func:`plate_layout`): the field's class is its well's phenotype, and its plate and
        well position add the technical effects below.
    n_fields : int, optional
        Fields of the whole dataset, a multiple of ``plates``; required with ``plates``
        (ignored without), and ``index`` must be below it.
    controls_per_plate : int, optional
        Negative-control wells per plate (>= 1, fewer than the wells per plate), at
        positions that differ from plate to plate.
    plate_effect_sd : float, optional
        Size (>= 0) of each plate's technical effects: a log gain per channel
        ``plate_effect_sd * z`` (``z ~ N(0, 1)`` per plate and channel), an additive
        background per channel up to ``plate_effect_sd / 2`` of the channel's typical
        in-cell level, and an extra blur SD up to ``2 * plate_effect_sd`` px, drawn once
        per plate.
    well_effect : float, optional
        Log gain (>= 0) of the wells on the plate's edge, shared by the channels; it halves
        with each ring of wells inwards (edge wells brighter, as evaporation makes them).

    Every random draw of these options comes from streams of its own, fixed by
    ``(seed, index)`` (the plate effects and layout: by ``seed`` and the plate): changing one
    of them changes only its own effect (the cells, their shapes and the noise stay), and a
    0 turns it off.

    Returns
    -------
    image : (3, size, size) uint16
        Channels in :data:`CHANNELS` order (nucleus, structure, protein), camera counts
        including an offset of ~100.
    truth_labels : (size, size) int32
        Nuclear instance mask: 0 is background, 1..N are the nuclei with at least one
        pixel in the field, numbered in order of placement.
    metadata : dict
        ``Metadata_image`` (str, ``f"f{index:05d}"``), ``Metadata_class`` (str),
        ``Metadata_group`` (str, same as ``Metadata_image``: a field plays the role of a
        well), ``Metadata_field_gain`` (float, the shared batch gain),
        ``Metadata_field_index`` (int), ``Metadata_field_gain_<channel>`` for each of
        :data:`CHANNELS` (float, the total gain of that channel: shared times its own),
        ``Metadata_field_background`` (float, the field's additive background as a
        fraction of each channel's typical in-cell level), ``Metadata_field_defocus``
        (float, extra blur SD in pixels) and ``Metadata_field_out_of_focus`` (bool); with
        ``plates``, also :data:`LAYOUT_COLUMNS` (``Metadata_plate``, ``Metadata_well``,
        ``Metadata_perturbation``, ``Metadata_moa``; see :func:`plate_layout`), and the
        gains and defocus include the plate's and the well's.
    objects : pandas.DataFrame
        One row per label of ``truth_labels`` in label order, columns
        ``Metadata_image``, ``truth_label`` (int), ``Metadata_trajectory`` (float in
        [0, 1]), ``Metadata_class``, ``truth_y``, ``truth_x`` (float, nucleus centre in
        pixel coordinates; may lie just outside the field for border-cut cells) and
        ``truth_nucleus_area`` (int, pixels of the label inside the field).

    Raises
    ------
    ValueError
        If an argument is out of range; the message names it.

    Examples
    --------
    >>> image, labels, meta, objects = generate_field(0, 2, size=128, cells_per_field=5)
    >>> image.shape, image.dtype, labels.dtype
    ((3, 128, 128), dtype('uint16'), dtype('int32'))
    >>> meta["Metadata_class"]
    'cytoplasmic'
    """
    seed = check_int("seed", seed, 0)
    index = check_int("index", index, 0)
    opts = _check_options(
        size=size,
        cells_per_field=cells_per_field,
        classes=classes,
        batch_sd=batch_sd,
        difficulty=difficulty,
        expression_sd=expression_sd,
        dim_fraction=dim_fraction,
        channel_gain_sd=channel_gain_sd,
        background=background,
        defocus=defocus,
        out_of_focus_fraction=out_of_focus_fraction,
        plates=plates,
        n_fields=n_fields,
        controls_per_plate=controls_per_plate,
        plate_effect_sd=plate_effect_sd,
        well_effect=well_effect,
    )
    return _simulate_field(seed, index, opts)


def _simulate_field(seed: int, index: int, opts: dict) -> tuple[np.ndarray, np.ndarray, dict, pd.DataFrame]:
    """Return :func:`generate_field` of validated options (see there)."""
    size, classes = opts["size"], opts["classes"]
    layout = _field_layout(seed, index, opts)
    name = classes[index % len(classes)] if layout is None else layout["Metadata_class"]
    rng = _field_streams(seed, index)
    effects = _field_effects(rng["field"], opts)
    if layout is not None:
        plate = index // (opts["n_fields"] // opts["plates"])
        effects = _with_plate_effects(effects, _plate_effects(seed, plate, layout["Metadata_edge"], opts))
    cells = _place_cells(rng["geom"], size, opts["cells_per_field"])
    signal, nuc_id = _field_signal(name, rng, cells, opts)
    image, gain = _image_formation(signal, rng["optics"], effects, opts["batch_sd"])
    truth_labels, present, areas = _truth_labels(nuc_id, len(cells["cy"]))
    metadata = _field_metadata(index, name, gain, effects)
    if layout is not None:
        metadata.update({column: layout[column] for column in LAYOUT_COLUMNS})
    objects = _objects_frame(
        metadata["Metadata_image"],
        name,
        cells["t"][present],
        cells["cy"][present],
        cells["cx"][present],
        areas[present + 1],
    )
    return image, truth_labels, metadata, objects


def generate_shard(seed: int, indices: Sequence[int], **field_kwargs) -> dict:
    """Simulate several fields (see :func:`generate_field`) and stack them.

    Parameters
    ----------
    seed : int
        Dataset seed, >= 0.
    indices : sequence of int
        Field indices, each >= 0 and unique. May be empty.
    **field_kwargs
        ``size``, ``cells_per_field``, ``classes``, ``batch_sd``, ``difficulty``,
        ``expression_sd``, ``dim_fraction``, ``channel_gain_sd``, ``background``,
        ``defocus``, ``out_of_focus_fraction`` and the plate layout's ``plates``,
        ``n_fields``, ``controls_per_plate``, ``plate_effect_sd`` and ``well_effect`` as for
        :func:`generate_field`.

    Returns
    -------
    dict
        ``images``: (F, 3, size, size) uint16; ``truth_labels``: (F, size, size) int32;
        ``fields``: DataFrame with one row per field (columns as the metadata dict of
        :func:`generate_field`, :data:`LAYOUT_COLUMNS` last with ``plates``), in ``indices``
        order; ``objects``: DataFrame with one row
        per ground-truth cell of all fields.

    Raises
    ------
    ValueError
        If an argument is out of range or ``indices`` repeats a field; the message names it.
    TypeError
        For an unknown keyword.
    """
    seed = check_int("seed", seed, 0)
    valid = isinstance(indices, (Sequence, np.ndarray)) and not isinstance(indices, (str, bytes))
    if not valid:
        raise ValueError(f"indices={indices!r}: expected a sequence of integers >= 0")
    indices = [check_int(f"indices[{k}]", i, 0) for k, i in enumerate(indices)]
    if len(set(indices)) != len(indices):
        raise ValueError(f"indices={indices!r}: expected unique field indices")
    opts = _check_options(**field_kwargs)

    size = opts["size"]
    images = np.empty((len(indices), len(CHANNELS), size, size), np.uint16)
    labels = np.empty((len(indices), size, size), np.int32)
    rows, objects = [], []
    for k, index in enumerate(indices):
        images[k], labels[k], meta, obj = generate_field(seed, index, **opts)
        rows.append(meta)
        objects.append(obj)
    layout_columns = LAYOUT_COLUMNS if opts["plates"] else ()
    fields = pd.DataFrame(rows, columns=[*FIELD_COLUMNS, *layout_columns])
    floats = [c for c in FIELD_COLUMNS if c.startswith("Metadata_field_gain")]
    floats += ["Metadata_field_background", "Metadata_field_defocus"]
    fields = fields.astype(
        {
            **dict.fromkeys(floats, float),
            "Metadata_field_index": np.int64,
            "Metadata_field_out_of_focus": bool,
        }
    )
    if objects:
        objects = pd.concat(objects, ignore_index=True)
    else:
        empty = np.empty(0)
        objects = _objects_frame("", "", empty, empty, empty, empty)
    return {"images": images, "truth_labels": labels, "fields": fields, "objects": objects}
