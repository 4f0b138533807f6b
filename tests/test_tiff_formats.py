"""TIFFs as microscopes and screens write them: compressed (LZW, Deflate, Zstd, JPEG), OME-TIFF
with every plane, a real LZW-compressed Cell Painting site, and what a user sees when the codec
package (imagecodecs) is missing rather than the file damaged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from workflow_scripts.sources import local

REPO = Path(__file__).resolve().parents[1]
JUMP = REPO / "tests" / "data" / "cellpainting_jump_pilot"
JUMP_SITE = JUMP / "BR00116991" / "A01-1"
# The Phenix (Opera) names the JUMP screen ships: plate/well-site/r..c..f..p..-ch<N>sk1fk1fl1.tiff
CP_PATTERN = (
    r"(?P<plate>[^/]+)/(?P<well>[A-P]\d\d)-(?P<site>\d+)/(?P<image>r\d+c\d+f\d+p\d+)-ch(?P<channel>\d)sk.*\.tiff"
)
# DNA first, as the workflow's Cell Painting configs order them (ch5 Hoechst, ch4 ER, ch3 RNA, ch1 AGP, ch2 Mito).
CP_CHANNELS = [
    {"key": "5", "name": "DNA", "role": "nucleus"},
    {"key": "4", "name": "ER", "role": "structure"},
    {"key": "3", "name": "RNA", "role": "other"},
    {"key": "1", "name": "AGP", "role": "protein"},
    {"key": "2", "name": "Mito", "role": "other"},
]
# tifffile's names: 'zlib' writes ADOBE_DEFLATE (8, what most writers use), 'deflate' the old DEFLATE (32946).
COMPRESSIONS = {
    "lzw": "LZW",
    "zlib": "ADOBE_DEFLATE",
    "deflate": "DEFLATE",
    "zstd": "ZSTD",
    "jpeg": "JPEG",
}


def _chans(*keys):
    return [{"key": str(k), "name": f"c{k}", "role": "other"} for k in keys]


def _field(seed: int, shape=(96, 128), dtype=np.uint16) -> np.ndarray:
    """A smooth field with blobs (JPEG keeps it close) plus, for lossless codecs, fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    image = 0.2 + 0.3 * xx / shape[1]
    for _ in range(6):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(5, 12)
        image += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    image = np.clip(image / image.max(), 0, 1)
    if dtype == np.uint8:
        return (image * 250).astype(np.uint8)
    return (image * 50000 + rng.integers(0, 64, shape)).astype(np.uint16)


def _write(path: Path, data: np.ndarray, compression: str, **kw) -> None:
    tifffile.imwrite(path, data, compression=compression, photometric="minisblack", **kw)
    with tifffile.TiffFile(path) as tif:  # the file really is stored that way
        assert tif.pages[0].compression.name == COMPRESSIONS[compression]


def _close(got: np.ndarray, want: np.ndarray, compression: str) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if compression == "jpeg":  # lossy: close, not equal
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 12
    else:
        np.testing.assert_array_equal(got, want)


# --- compressed TIFFs ------------------------------------------------------------------------


@pytest.mark.parametrize("compression", list(COMPRESSIONS))
def test_compressed_channel_files_read_through_the_local_source(tmp_path, compression):
    """One file per channel, Cell Painting names, each compression: index -> read_field."""
    dtype = np.uint8 if compression == "jpeg" else np.uint16  # baseline JPEG is 8-bit
    site = tmp_path / "PLATE1" / "B03-2"
    site.mkdir(parents=True)
    truth = {}
    for seed, key in enumerate(("5", "4", "3", "1", "2")):
        truth[key] = _field(seed, dtype=dtype)
        _write(site / f"r02c03f02p01-ch{key}sk1fk1fl1.tiff", truth[key], compression)
    entry = {"channels": CP_CHANNELS, "pattern": CP_PATTERN, "shard_size": 4}
    index = local.index_fields("cp", entry, tmp_path)
    assert index[["Metadata_plate", "Metadata_well", "Metadata_image"]].values.tolist() == [
        ["PLATE1", "B03", "r02c03f02p01"]
    ]
    image = local.read_field(index.iloc[0], CP_CHANNELS, tmp_path)
    _close(image, np.stack([truth[c["key"]] for c in CP_CHANNELS]), compression)
    planes, colour = local.read_planes(site / "r02c03f02p01-ch4sk1fk1fl1.tiff")
    assert not colour
    _close(planes, truth["4"][None], compression)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd"])
def test_compressed_multichannel_file_with_predictor_and_tiles(tmp_path, compression):
    """One file per field, as microscopes write them: horizontal predictor, tiled, 4 channels."""
    data = np.stack([_field(10 + i) for i in range(4)])
    _write(tmp_path / "f1.tif", data, compression, predictor=True, tile=(32, 32))
    planes, colour = local.read_planes(tmp_path / "f1.tif")
    assert not colour
    np.testing.assert_array_equal(planes, data)
    field = local.read_channels({k: "f1.tif" for k in "3021"}, _chans(3, 0, 2, 1), tmp_path)
    np.testing.assert_array_equal(field, data[[3, 0, 2, 1]])


# --- OME-TIFF: every plane, in order ---------------------------------------------------------


@pytest.mark.parametrize(
    "axes, shape, compression",
    [
        ("CYX", (4, 40, 48), None),
        ("CYX", (4, 40, 48), "zlib"),
        ("ZCYX", (3, 2, 40, 48), "lzw"),
        ("TCYX", (2, 3, 40, 48), "zstd"),
    ],
)
def test_ome_tiff_every_plane_in_stored_order(tmp_path, axes, shape, compression):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 60000, shape, dtype=np.uint16)
    path = tmp_path / "field.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": axes}, compression=compression)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and len(tif.pages) == int(np.prod(shape[:-2]))
    planes, colour = local.read_planes(path)
    assert not colour
    flat = data.reshape(-1, *shape[-2:])  # outer axes flattened in stored order (Z/T major, C minor)
    np.testing.assert_array_equal(planes, flat)
    # Through the local source: one file per field, every plane picked by index, last first.
    keys = [str(i) for i in reversed(range(len(flat)))]
    entry = {"channels": _chans(*keys), "shard_size": 2}
    index = local.index_fields("ome", entry, tmp_path)
    assert index["Metadata_image"].tolist() == ["field.ome"]
    field = local.read_field(index.iloc[0], entry["channels"], tmp_path)
    np.testing.assert_array_equal(field, flat[::-1])


# --- a real screen's site --------------------------------------------------------------------


def test_real_jump_cell_painting_site_loads_all_five_lzw_channels():
    files = sorted(JUMP_SITE.glob("*.tiff"))
    assert len(files) == 5
    for path in files:
        with tifffile.TiffFile(path) as tif:
            assert tif.pages[0].compression.name == "LZW"
    entry = {"channels": CP_CHANNELS, "pattern": CP_PATTERN, "shard_size": 10}
    index = local.index_fields("jump", entry, JUMP)
    assert index[["Metadata_plate", "Metadata_well", "Metadata_site", "Metadata_image"]].values.tolist() == [
        ["BR00116991", "A01", 1, "r01c01f01p01"]
    ]
    image = local.read_field(index.iloc[0], CP_CHANNELS, JUMP)
    assert image.shape == (5, 1080, 1080) and image.dtype == np.uint16
    files = {c["key"]: f"r01c01f01p01-ch{c['key']}sk1fk1fl1.tiff" for c in CP_CHANNELS}
    np.testing.assert_array_equal(image, local.read_channels(files, CP_CHANNELS, JUMP_SITE))
    # Decoded right, and DNA really is the first channel: every nucleus CellProfiler found on
    # this site is bright in it (more than twice the field's median).
    nuclei = pd.read_csv(JUMP_SITE / "Nuclei.csv")
    assert len(nuclei) == 109
    y = nuclei["Location_Center_Y"].round().astype(int).clip(0, 1079)
    x = nuclei["Location_Center_X"].round().astype(int).clip(0, 1079)
    assert (image[0][y, x] > 2 * np.median(image[0])).all()
    assert all(len(np.unique(plane)) > 1000 for plane in image)  # real 16-bit content, not a fill


# --- missing codec vs damaged file -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package"),
        ModuleNotFoundError("No module named 'imagecodecs'", name="imagecodecs"),
    ],
)
def test_missing_codec_is_an_installation_error_not_a_bad_image(tmp_path, monkeypatch, error):
    _write(tmp_path / "a_lzw.tif", _field(1), "lzw")
    tifffile.imwrite(tmp_path / "b.tif", _field(2))

    def no_codec(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_codec)
    with pytest.raises(local.MissingCodecError) as info:
        local.read_channels({"a": "a_lzw.tif", "b": "b.tif"}, _chans("a", "b"), tmp_path)
    message = str(info.value)
    assert str(tmp_path / "a_lzw.tif") in message
    assert "LZW compression" in message and "not damaged" in message and "pip install imagecodecs" in message
    assert "requirements.txt" in message
    # load_fields skips only BadImageError (on_bad_image: skip); the runner reports ValueErrors
    # as user errors (message, no traceback). A missing codec must stop the run, clearly.
    assert not isinstance(info.value, local.BadImageError)
    assert isinstance(info.value, ValueError)


def test_damaged_compressed_tiffs_stay_bad_images(tmp_path):
    data = _field(3)
    _write(tmp_path / "full.tif", data, "lzw", rowsperstrip=data.shape[0])
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "half.tif").write_bytes(raw[: len(raw) // 2])  # truncated mid-strip
    with tifffile.TiffFile(tmp_path / "full.tif") as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    corrupt = bytearray(raw)
    corrupt[offset + 8 : offset + count - 8] = np.random.default_rng(0).integers(0, 256, count - 16, np.uint8).tobytes()
    (tmp_path / "corrupt.tif").write_bytes(bytes(corrupt))  # header fine, LZW data garbage
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00garbage")
    for name in ("half.tif", "corrupt.tif", "garbage.tif"):
        with pytest.raises(local.BadImageError, match=rf"{name}: cannot read image") as info:
            local.read_channels({"a": name}, _chans("a"), tmp_path)
        assert info.value.reason == "unreadable"
        assert not isinstance(info.value, local.MissingCodecError)


# The real thing, in a fresh interpreter where `import imagecodecs` fails: tifffile's own errors
# (ValueError for LZW and JPEG, ModuleNotFoundError for Zstd on Python < 3.14), through
# read_channels and through the load_fields rule script with on_bad_image: skip.
_NO_IMAGECODECS = textwrap.dedent(
    """
    import json, runpy, sys
    from pathlib import Path
    from types import SimpleNamespace
    sys.modules["imagecodecs"] = None  # as if not installed
    import numpy as np, pandas as pd, tifffile
    from workflow_scripts.sources import local

    root = Path(sys.argv[1])
    result = {}
    for comp in ("lzw", "zstd", "jpeg", "zlib"):
        try:
            local.read_channels({"a": f"f_{comp}.tif"}, [{"key": "a"}], root)
            result[comp] = ["read", ""]
        except Exception as exc:
            result[comp] = [type(exc).__name__, str(exc)]

    index = pd.DataFrame({
        "Metadata_dataset": ["d", "d"], "Metadata_image": ["broken", "lzw"],
        "file_a": ["broken.tif", "f_lzw.tif"], "shard": ["s0000", "s0000"],
    })
    index.to_parquet(root / "index.parquet")
    smk = SimpleNamespace(
        input=SimpleNamespace(index=str(root / "index.parquet")),
        params=SimpleNamespace(entry={"channels": [{"key": "a"}], "on_bad_image": "skip"}, root=str(root)),
        wildcards=SimpleNamespace(dataset="d", shard="s0000"),
        output=SimpleNamespace(fields=str(root / "out.npz"), table=str(root / "t.parquet"),
                               objects=str(root / "o.parquet")),
        log=[str(root / "load.log")], rule="load_fields", threads=1,
    )
    script = Path("workflow_scripts/scripts/load_fields.py").resolve()
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), init_globals={"snakemake": smk}, run_name="__main__")
        result["load_fields"] = ["finished", ""]
    except SystemExit as exc:
        result["load_fields"] = [f"exit {exc.code}", (root / "load.log").read_text()]
    result["outputs"] = sorted(p.name for p in root.iterdir() if p.name.startswith(("out", "t.", "o.")))
    print(json.dumps(result))
    """
)


def test_without_imagecodecs_the_run_stops_naming_file_codec_and_fix(tmp_path):
    _write(tmp_path / "f_lzw.tif", _field(4), "lzw")
    _write(tmp_path / "f_zstd.tif", _field(5), "zstd")
    _write(tmp_path / "f_jpeg.tif", _field(6, dtype=np.uint8), "jpeg")
    _write(tmp_path / "f_zlib.tif", _field(7), "zlib")  # zlib is in the standard library
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    proc = subprocess.run(
        [sys.executable, "-c", _NO_IMAGECODECS, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["zlib"] == ["read", ""]
    for comp, name in (("lzw", "LZW"), ("jpeg", "JPEG"), ("zstd", "ZSTD")):
        kind, message = result[comp]
        if comp == "zstd" and kind == "read":  # Python >= 3.14 decodes Zstd with compression.zstd
            continue
        assert kind == "MissingCodecError", (comp, kind, message)
        assert f"f_{comp}.tif" in message and f"{name} compression" in message
        assert "not damaged" in message and "pip install imagecodecs" in message
    # on_bad_image: skip skips the damaged file but stops at the missing codec, saying why.
    status, log = result["load_fields"]
    assert status == "exit 1"
    assert "field broken skipped (unreadable)" in log
    assert "MissingCodecError" in log and "f_lzw.tif" in log and "pip install imagecodecs" in log
    assert "Fix or remove the file" not in log
    assert result["outputs"] == []  # nothing written for the shard
