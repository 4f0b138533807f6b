import io
import logging
import zipfile

import numpy as np
import pandas as pd
import pytest
import tifffile

from tests.http_server import serve
from tests.source_fixtures import BBBC_DESIGN, bbbc_fixture, bbbc_plate_names, evil_zip
from workflow_scripts.download import DownloadError
from workflow_scripts.sources.bbbc import acquire_bbbc, build_field_table

CHANNELS = {"DAPI": "DAPI", "Tubulin": "Tubulin", "Actin": "Actin"}
PLATES = bbbc_plate_names(2)
MOA = {
    ("DMSO", 0.0): np.nan,
    ("taxol", 0.3): "Microtubule stabilizers",
    ("docetaxel", 1.0): "Microtubule stabilizers",
    ("nocodazole", 1.0): "Microtubule destabilizers",
    ("nocodazole", 0.3): np.nan,  # listed in the MoA table only at other concentrations
}


@pytest.fixture(scope="module")
def served_files():
    return bbbc_fixture(n_plates=2, seed=0, size=64)


def _acquire(server, raw, files=None, **kwargs):
    """acquire_bbbc of the archives in ``files`` (default: those served) from ``server``."""
    names = files if files is not None else server.files
    options = {
        "archives": [server.url_for(name) for name in names if name.endswith(".zip")],
        "image_csv": server.url_for("BBBC021_v1_image.csv"),
        "moa_csv": server.url_for("BBBC021_v1_moa.csv"),
        "channels": CHANNELS,
        "progress": False,
        "retries": 1,
        "backoff": 0.01,
    }
    return acquire_bbbc(raw, **{**options, **kwargs})


def test_acquire_end_to_end(tmp_path, served_files, caplog):
    caplog.set_level(logging.INFO, logger="workflow_scripts.sources.bbbc")
    raw = tmp_path / "raw"
    with serve(dict(served_files)) as server:
        table = _acquire(server, raw)
        assert len(server.requests) == len(served_files)
        server.requests.clear()
        again = _acquire(server, raw)
        assert server.requests == []  # re-run: nothing fetched
    pd.testing.assert_frame_equal(again, table)

    image_csv = pd.read_csv(io.BytesIO(served_files["BBBC021_v1_image.csv"]))
    fields = pd.read_csv(raw / "fields.csv")
    assert len(fields) == len(image_csv) == 2 * len(BBBC_DESIGN) * 2
    assert fields["image"].is_unique and fields["image"].str.fullmatch(r"[A-Za-z0-9._-]+").all()
    assert fields["image"][0] == f"{PLATES[0]}_B02_s1"
    assert list(fields.columns[:4]) == ["image", "file_DAPI", "file_Tubulin", "file_Actin"]
    for column in ["Metadata_class", "Metadata_group", "Metadata_plate", "Metadata_well", "Metadata_compound",
                   "Metadata_concentration", "Metadata_moa", "Metadata_replicate"]:  # fmt: skip
        assert column in fields.columns

    # Every file exists where the table says, and is the channel the image table names.
    for (_, row), (_, source) in zip(fields.iterrows(), image_csv.iterrows()):
        for key in CHANNELS:
            path = raw / row[f"file_{key}"]
            assert path.is_file()
            assert path.name == source[f"Image_FileName_{key}"]
            assert path.parent.name == source["Image_Metadata_Plate_DAPI"]
        assert row["Metadata_plate"] == source["Image_Metadata_Plate_DAPI"]
        assert row["Metadata_well"] == source["Image_Metadata_Well_DAPI"]
        assert row["Metadata_replicate"] == source["Replicate"]
        assert row["Metadata_table_number"] == source["TableNumber"]
        assert row["Metadata_image_number"] == source["ImageNumber"]
        assert f"_s{row['Metadata_site']}_w1" in source["Image_FileName_DAPI"]
    dapi = tifffile.imread(raw / fields["file_DAPI"][0])
    assert dapi.dtype == np.uint16 and dapi.shape == (64, 64)

    # MoA joined on compound and concentration; unmatched pairs keep NaN.
    for _, row in fields.iterrows():
        expected = MOA[(row["Metadata_compound"], row["Metadata_concentration"])]
        if isinstance(expected, str):
            assert row["Metadata_moa"] == expected
        else:
            assert pd.isna(row["Metadata_moa"])
    dmso = fields[fields["Metadata_compound"] == "DMSO"]
    assert len(dmso) == 4 and dmso["Metadata_moa"].isna().all()
    assert table.attrs["n_without_moa"] == 8
    assert "8 of 20 fields have no MoA" in caplog.text and "DMSO" in caplog.text
    # Default class: the MoA; default group: the compound (not-same-compound evaluation).
    assert fields["Metadata_class"].equals(fields["Metadata_moa"])
    assert fields["Metadata_group"].equals(fields["Metadata_compound"])


def test_class_and_group_options(tmp_path, served_files):
    with serve(dict(served_files)) as server:
        by_compound = _acquire(server, tmp_path / "a", moa_csv=None)
        custom = _acquire(server, tmp_path / "b", class_column="compound", group_columns=["plate"])
        with pytest.raises(ValueError, match="group_columns"):
            _acquire(server, tmp_path / "c", group_columns=["nonsense"])
        with pytest.raises(ValueError, match="class_column"):
            _acquire(server, tmp_path / "c", class_column="nonsense")
    # Without a MoA table the compound is the class and wells are the groups.
    assert by_compound["Metadata_class"].equals(by_compound["Metadata_compound"])
    assert by_compound["Metadata_moa"].isna().all()
    assert by_compound["Metadata_group"][0] == f"{PLATES[0]}_B02"
    assert custom["Metadata_class"].equals(custom["Metadata_compound"])
    assert custom["Metadata_group"].equals(custom["Metadata_plate"])
    assert not (tmp_path / "c" / "fields.csv").exists()


def test_plates_not_downloaded_are_left_out(tmp_path, served_files, caplog):
    """The image table lists every plate; a configuration may fetch only some archives."""
    caplog.set_level(logging.INFO, logger="workflow_scripts.sources.bbbc")
    first_plate_only = [n for n in served_files if not n.endswith(f"{PLATES[1]}.zip")]
    with serve(dict(served_files)) as server:
        table = _acquire(server, tmp_path / "raw", files=first_plate_only)
    assert set(table["Metadata_plate"]) == {PLATES[0]} and len(table) == len(BBBC_DESIGN) * 2
    assert f"10 of 20 image-table rows left out: their 1 plate folder(s) ({PLATES[1]})" in caplog.text


def test_missing_files_are_listed(tmp_path, served_files):
    files = dict(served_files)
    # The second plate's archive lacks two fields (six files).
    name = f"BBBC021_v1_images_{PLATES[1]}.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(files[name])) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            if "_B02_" not in info.filename:
                dst.writestr(info, src.read(info))
    files[name] = buffer.getvalue()
    with serve(files) as server:
        with pytest.raises(ValueError) as info:
            _acquire(server, tmp_path / "raw")
    message = str(info.value)
    assert "6 channel file(s) missing" in message
    assert "row 11 (TableNumber=2, ImageNumber=1), channel DAPI: Week1_150608_B02_s1_w1" in message
    assert message.count("\n  row ") == 6
    assert not (tmp_path / "raw" / "fields.csv").exists()


def test_basename_fallback_and_site_column(tmp_path):
    # Files extracted somewhere else than PathName says are found by their unique name;
    # a site column (when present) gives the field id.
    raw = tmp_path / "raw"
    for name in ("a1.tif", "a2.tif"):
        (raw / "images" / "elsewhere").mkdir(parents=True, exist_ok=True)
        (raw / "images" / "elsewhere" / name).write_bytes(b"x")
    images = pd.DataFrame(
        {
            "Image_FileName_DNA": ["a1.tif", "a2.tif"],
            "Image_PathName_DNA": ["C:\\data\\plate1", "/data/plate1/"],
            "Metadata_Plate": ["plate 1", "plate 1"],
            "Metadata_Well": ["A01", "A01"],
            "Metadata_Site": [1, 1],
            "Metadata_Compound": ["x", "y"],
        }
    )
    table = build_field_table(images, raw, channels={"dna": "DNA"})
    assert table["file_dna"].tolist() == ["images/elsewhere/a1.tif", "images/elsewhere/a2.tif"]
    # Same plate, well and site twice: the second id gets a suffix.
    assert table["image"].tolist() == ["plate_1_A01_1", "plate_1_A01_1-2"]
    assert table["Metadata_class"].tolist() == ["x", "y"]
    assert table["Metadata_concentration"].isna().all()
    assert table["Metadata_site"].tolist() == [1, 1]

    (raw / "images" / "other").mkdir()
    (raw / "images" / "other" / "a1.tif").write_bytes(b"x")
    with pytest.raises(ValueError, match="ambiguous: 2 files"):
        build_field_table(images, raw, channels={"dna": "DNA"})
    # A file name from the table never reaches outside the folder it names.
    (raw / "images" / "secret.tif").write_bytes(b"x")
    sneaky = images.assign(Image_FileName_DNA=["../secret.tif", "a2.tif"], Image_PathName_DNA=["elsewhere"] * 2)
    with pytest.raises(ValueError, match=r"row 1, channel dna: \.\./secret\.tif \(not found\)"):
        build_field_table(sneaky, raw, channels={"dna": "DNA"})
    with pytest.raises(ValueError, match="no column 'Image_FileName_RNA'"):
        build_field_table(images, raw, channels={"rna": "RNA"})
    with pytest.raises(ValueError, match="no plate column"):
        build_field_table(images.drop(columns="Metadata_Plate"), raw, channels={"dna": "DNA"})


def test_zip_slip_is_refused(tmp_path, served_files):
    files = {**served_files, "evil.zip": evil_zip("../evil.txt")}
    raw = tmp_path / "raw"
    with serve(files) as server:
        with pytest.raises(ValueError, match=r"evil\.zip: member \"\.\./evil\.txt\""):
            _acquire(server, raw)
    assert not (raw / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    assert not (raw / "fields.csv").exists()


def test_download_failure_writes_no_table(tmp_path, served_files):
    served = {k: v for k, v in served_files.items() if k != "BBBC021_v1_moa.csv"}
    raw = tmp_path / "raw"
    archive = next(name for name in served if name.endswith(".zip"))
    with serve(served, faults={archive: ["drop", "500"]}) as server:
        with pytest.raises(DownloadError, match=server.url_for("BBBC021_v1_moa.csv")):
            _acquire(server, raw)
        assert not (raw / "fields.csv").exists()
        assert not (raw / "images").exists()  # nothing extracted before every download is complete
        # What arrived stays; the dropped archive was resumed and retried to completion.
        assert (raw / "downloads" / archive).read_bytes() == served_files[archive]
        assert server.requests_for(archive)[-1] is not None  # a Range request
        served["BBBC021_v1_moa.csv"] = served_files["BBBC021_v1_moa.csv"]
        server.requests.clear()
        table = _acquire(server, raw)
    assert server.requests == [("BBBC021_v1_moa.csv", None)]
    assert len(table) == 20


def test_inconsistent_moa_table(tmp_path, served_files):
    files = dict(served_files)
    files["BBBC021_v1_moa.csv"] += b"taxol,0.3,Actin disruptors\n"
    with serve(files) as server:
        with pytest.raises(ValueError, match="'taxol' at concentration 0.3 has several MoAs"):
            _acquire(server, tmp_path / "raw")


def test_field_table_can_live_apart_from_the_downloads(tmp_path, served_files):
    """With a dataset ``path``, the files land there and the workflow keeps the table under
    results/<dataset>/raw: paths in it stay relative to the download folder."""
    raw, table_path = tmp_path / "downloads", tmp_path / "results" / "bbbc" / "raw" / "fields.csv"
    with serve(dict(served_files)) as server:
        table = _acquire(server, raw, fields_path=table_path)
    assert not (raw / "fields.csv").exists()
    fields = pd.read_csv(table_path)
    pd.testing.assert_frame_equal(fields, pd.read_csv(io.StringIO(table.to_csv(index=False))))
    files = [c for c in fields.columns if c.startswith("file_")]
    assert files and all((raw / p).is_file() for c in files for p in fields[c])
