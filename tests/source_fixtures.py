"""Builders of source-shaped test data: HPA gene XML and composite JPEGs, BBBC021-style
archives and tables. Pure functions of their arguments (bytes and arrays out, no files),
shared by the source tests and the end-to-end workflow tests; serve the bytes with
:func:`tests.http_server.serve`."""

from __future__ import annotations

import hashlib
import io
import zipfile
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import tifffile
from PIL import Image

from workflow_scripts.sources.synthetic import generate_field

HPA_IMAGE_HOST = "https://images.proteinatlas.org"

# BBBC021-like plate design: well -> (compound, concentration). The MoA table lists taxol
# and docetaxel (Microtubule stabilizers) and nocodazole at 1.0 (Microtubule
# destabilizers); nocodazole at 0.3 has no MoA row (as BBBC021's concentrations without a
# clear phenotype) and neither has DMSO.
BBBC_DESIGN: dict[str, tuple[str, float]] = {
    "B02": ("DMSO", 0.0),
    "C03": ("taxol", 0.3),
    "D04": ("docetaxel", 1.0),
    "E05": ("nocodazole", 1.0),
    "F06": ("nocodazole", 0.3),
}
BBBC_MOA: list[tuple[str, float, str]] = [
    ("taxol", 0.3, "Microtubule stabilizers"),
    ("taxol", 3.0, "Microtubule stabilizers"),
    ("docetaxel", 1.0, "Microtubule stabilizers"),
    ("nocodazole", 1.0, "Microtubule destabilizers"),
    ("colchicine", 0.03, "Microtubule destabilizers"),
]
BBBC_CHANNELS = {"DAPI": 1, "Tubulin": 2, "Actin": 4}  # CSV channel -> _w<n> in the file name


# ---------------------------------------------------------------------------------------
# Human Protein Atlas
# ---------------------------------------------------------------------------------------


def hpa_image_url(image: dict, suffix: str = "blue_red_green") -> str:
    """The atlas URL of a fixture image (see :func:`hpa_gene_xml`)."""
    folder = "".join(ch for ch in image.get("antibody", "HPA000001") if ch.isdigit()).lstrip("0") or "0"
    stem = image.get("stem") or f"{image['plate']}_{image['well']}_{image['field']}"
    return f"{HPA_IMAGE_HOST}/{folder}/{stem}_{suffix}.jpg"


def hpa_gene_xml(ensembl_id: str, symbol: str | None, images: list[dict]) -> bytes:
    """An HPA-shaped gene document.

    Parameters
    ----------
    ensembl_id, symbol : str
        The entry's identifier and ``<name>`` (``symbol=None`` leaves ``<name>`` out).
    images : list of dict
        One per field of view, in document order: ``plate``, ``well``, ``field`` (or
        ``stem`` for a basename of another form), optional ``antibody`` (default
        ``HPA000001``; its digits name the URL folder), ``cell_line`` (default ``U-2 OS``;
        ``None`` leaves the ``cellLine`` element out) and ``yellow`` (bool: also list the
        ``_yellow.jpg`` of the field). Images are grouped by antibody (one ``antibody``
        element each) and, within it, by cell line (one ``data`` element each).

    The document also holds decoys that a parser must ignore: a tissue section with its own
    ``imageUrl`` (named ``..._blue_red_green.jpg`` too, so only its place excludes it), and
    a ``subAssay type="mouse"`` with a composite of its own.
    """
    antibodies: dict[str, dict[str | None, list[dict]]] = {}
    for image in images:
        ab = image.get("antibody", "HPA000001")
        line = image.get("cell_line", "U-2 OS")
        antibodies.setdefault(ab, {}).setdefault(line, []).append(image)

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<proteinAtlas schemaVersion="2.6">',
        '<entry version="23" url="https://www.proteinatlas.org/' + escape(ensembl_id) + '">',
    ]
    if symbol is not None:
        out.append(f"<name>{escape(symbol)}</name>")
    out.append(f'<identifier id={quoteattr(ensembl_id)} db="Ensembl" version="109"/>')
    out.append(
        '<proteinClasses><proteinClass source="HPA" id="Pe" name="Predicted intracellular proteins"/></proteinClasses>'
    )
    for k, (ab, lines) in enumerate(antibodies.items()):
        out.append(f'<antibody id={quoteattr(ab)} releaseDate="2019-11-01">')
        # Tissue immunohistochemistry: images that are not immunofluorescence fields.
        out.append(
            '<tissueExpression source="HPA" technology="IHC" assayType="tissue"><data>'
            '<tissue organ="Liver" ontologyTerms="UBERON:0002107">liver</tissue>'
            f'<patient><sample><image imageType="selected"><imageUrl>{HPA_IMAGE_HOST}/9{k}/'
            f"tissue_{k}_A_1_blue_red_green.jpg</imageUrl></image></sample></patient>"
            "</data></tissueExpression>"
        )
        out.append('<cellExpression source="HPA" technology="ICC/IF" assayType="subcellular">')
        out.append('<subAssay type="human"><verification type="validation">supported</verification>')
        for line, fields in lines.items():
            out.append("<data>")
            if line is not None:
                out.append(f'<cellLine cellosaurusID="CVCL_0042" organ="Bone">{escape(line)}</cellLine>')
            out.append('<location GOId="GO:0005654">Nucleoplasm</location>')
            for image in fields:
                out.append(
                    '<image><channel color="blue">nucleus</channel><channel color="red">microtubules'
                    '</channel><channel color="green">antibody</channel>'
                    f"<imageUrl>{escape(hpa_image_url(image))}</imageUrl></image>"
                )
                if image.get("yellow"):
                    out.append(
                        '<image><channel color="yellow">endoplasmic reticulum</channel>'
                        f"<imageUrl>{escape(hpa_image_url(image, 'yellow'))}</imageUrl></image>"
                    )
            out.append("</data>")
        out.append("</subAssay>")
        out.append(
            '<subAssay type="mouse"><data><cellLine>NIH 3T3</cellLine><image>'
            f"<imageUrl>{HPA_IMAGE_HOST}/8{k}/999_H12_{k + 1}_blue_red_green.jpg</imageUrl>"
            "</image></data></subAssay>"
        )
        out.append("</cellExpression></antibody>")
    out.append("</entry></proteinAtlas>")
    return "\n".join(out).encode()


def composite_jpeg(nucleus: np.ndarray, protein: np.ndarray, structure: np.ndarray) -> bytes:
    """An HPA-style composite: RGB JPEG with red = structure (microtubules), green =
    protein, blue = nucleus; quality 95 without chroma subsampling (so each colour plane
    survives). ``uint8`` planes are used as they are; other dtypes are scaled so that each
    plane's maximum maps to 255."""

    def to_uint8(plane: np.ndarray) -> np.ndarray:
        plane = np.asarray(plane)
        if plane.dtype == np.uint8:
            return plane
        plane = plane.astype(np.float64)
        top = plane.max()
        return np.clip(np.rint(plane / top * 255.0) if top > 0 else plane, 0, 255).astype(np.uint8)

    rgb = np.stack([to_uint8(structure), to_uint8(protein), to_uint8(nucleus)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="JPEG", quality=95, subsampling=0)
    return buffer.getvalue()


def synthetic_field_channels(seed: int, size: int = 256, index: int = 0) -> dict[str, np.ndarray]:
    """``{"nucleus", "structure", "protein"}`` uint8 planes (size, size) of a synthetic
    field with ~15 round bright nuclei (so Otsu segmentation finds them), from
    :func:`workflow_scripts.sources.synthetic.generate_field`, each plane scaled from
    [camera offset, 99.9th percentile] to [0, 255]."""
    image, _, _, _ = generate_field(seed, index, size=size, cells_per_field=15.0 * (size / 256) ** 2)
    out = {}
    for name, plane in zip(("nucleus", "structure", "protein"), image):
        plane = plane.astype(np.float64)
        low, high = 100.0, max(float(np.percentile(plane, 99.9)), 101.0)
        out[name] = np.clip(np.rint((plane - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------
# Broad Bioimage Benchmark Collection (BBBC021 layout)
# ---------------------------------------------------------------------------------------


def bbbc_plate_names(n_plates: int) -> list[str]:
    """``Week1_22123``, ``Week1_22141``, ... (BBBC021-style plate folder names)."""
    return [f"Week{1 + p // 3}_{22123 + 18 * p}" for p in range(n_plates)]


def bbbc_fixture(
    n_plates: int = 2,
    wells: tuple[str, ...] = tuple(BBBC_DESIGN),
    sites: tuple[int, ...] = (1, 2),
    seed: int = 0,
    size: int = 96,
) -> dict[str, bytes]:
    """The files of a small BBBC021-shaped image set, name -> bytes.

    ``BBBC021_v1_images_<plate>.zip`` per plate (folder ``<plate>/`` of 16-bit TIFFs
    ``<week>_<date>_<well>_s<site>_w<n><hash>.tif``, ``w1`` = DAPI from the synthetic
    nucleus channel, ``w2`` = Tubulin from the structure channel, ``w4`` = Actin from the
    protein channel), ``BBBC021_v1_image.csv`` (one row per field, BBBC021 columns) and
    ``BBBC021_v1_moa.csv`` (:data:`BBBC_MOA`). ``wells`` are keys of :data:`BBBC_DESIGN`.
    """
    unknown = [w for w in wells if w not in BBBC_DESIGN]
    if unknown:
        raise ValueError(f"wells {unknown}: expected keys of BBBC_DESIGN {list(BBBC_DESIGN)}")
    files: dict[str, bytes] = {}
    header = [
        "TableNumber", "ImageNumber",
        "Image_FileName_DAPI", "Image_PathName_DAPI",
        "Image_FileName_Tubulin", "Image_PathName_Tubulin",
        "Image_FileName_Actin", "Image_PathName_Actin",
        "Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Replicate",
        "Image_Metadata_Compound", "Image_Metadata_Concentration",
    ]  # fmt: skip
    rows = [",".join(header)]
    index = 0
    for p, plate in enumerate(bbbc_plate_names(n_plates)):
        week = plate.split("_")[0]
        date = f"{150607 + p}"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            image_number = 0
            for well in wells:
                compound, concentration = BBBC_DESIGN[well]
                for site in sites:
                    image_number += 1
                    image, _, _, _ = generate_field(seed, index, size=size, cells_per_field=8.0)
                    index += 1
                    names = {}
                    for (channel, w), plane in zip(BBBC_CHANNELS.items(), image):
                        digest = hashlib.sha1(f"{seed}/{plate}/{well}/{site}/{w}".encode()).hexdigest()[:8]
                        names[channel] = f"{week}_{date}_{well}_s{site}_w{w}{digest.upper()}.tif"
                        tiff = io.BytesIO()
                        tifffile.imwrite(tiff, plane.astype(np.uint16))
                        archive.writestr(f"{plate}/{names[channel]}", tiff.getvalue())
                    path = f"{week}/{plate}"
                    rows.append(
                        ",".join(
                            [str(p + 1), str(image_number)]
                            + [v for channel in BBBC_CHANNELS for v in (names[channel], path)]
                            + [plate, well, str(p + 1), compound, f"{concentration:g}"]
                        )
                    )
        files[f"BBBC021_v1_images_{plate}.zip"] = buffer.getvalue()
    files["BBBC021_v1_image.csv"] = ("\n".join(rows) + "\n").encode()
    moa = ["compound,concentration,moa"] + [f"{c},{x:g},{m}" for c, x, m in BBBC_MOA]
    files["BBBC021_v1_moa.csv"] = ("\n".join(moa) + "\n").encode()
    return files


def evil_zip(member: str = "../evil.txt") -> bytes:
    """A zip archive with a member whose name escapes the extraction folder (zip-slip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Week1_22123/ok.tif", b"fine")
        archive.writestr(member, b"owned")
    return buffer.getvalue()
