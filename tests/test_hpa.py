import io

import numpy as np
import pandas as pd
import pytest
from defusedxml import EntitiesForbidden
from PIL import Image

from tests.http_server import serve
from tests.source_fixtures import composite_jpeg, hpa_gene_xml, hpa_image_url, synthetic_field_channels
from workflow_scripts.download import DownloadError
from workflow_scripts.sources.hpa import _claim_path, acquire_hpa, parse_gene_xml, read_gene_list, sanitize_name

CCNB1 = "ENSG00000134057"
TP53 = "ENSG00000141510"
EMPTY = "ENSG00000000003"

# ---------------------------------------------------------------------------------------
# XML parsing
# ---------------------------------------------------------------------------------------


def test_parse_takes_only_human_blue_composites():
    images = [
        {"plate": 1032, "well": "B5", "field": 1, "antibody": "HPA061448"},
        {"plate": 1032, "well": "B5", "field": 2, "antibody": "HPA061448", "cell_line": "A-431"},
        {"plate": 77, "well": "H12", "field": 3, "antibody": "CAB000123"},
    ]
    records = parse_gene_xml(hpa_gene_xml(CCNB1, "CCNB1", images), CCNB1)
    assert [r.url for r in records] == [hpa_image_url(i) for i in images]
    # The decoys (tissue section, mouse subAssay) are also "_blue_red_green.jpg".
    assert not any("tissue" in r.url or "999_H12" in r.url for r in records)
    first, second, third = records
    assert first.basename == "1032_B5_1_blue_red_green.jpg"
    assert (first.symbol, first.ensembl_id, first.antibody) == ("CCNB1", CCNB1, "HPA061448")
    assert (first.plate, first.well, first.field, first.stem) == ("1032", "B5", "1", "1032_B5_1")
    assert (first.cell_line, second.cell_line) == ("U-2 OS", "A-431")
    assert third.antibody == "CAB000123" and third.plate == "77"
    assert all(r.yellow_url is None for r in records)


def test_parse_yellow_missing_elements_and_odd_names():
    images = [
        {"plate": 5, "well": "A1", "field": 1, "yellow": True},
        {"plate": 5, "well": "A1", "field": 2, "cell_line": None},
        {"stem": "some-other_form", "antibody": "HPA000009"},
    ]
    records = parse_gene_xml(hpa_gene_xml(CCNB1, None, images), CCNB1)
    assert len(records) == 3
    assert records[0].yellow_url == hpa_image_url(images[0], "yellow")
    assert records[1].yellow_url is None
    assert records[1].cell_line is None  # no cellLine element in its <data>
    assert all(r.symbol == CCNB1 for r in records)  # no <name>: the id stands in
    odd = records[2]
    assert (odd.plate, odd.well, odd.field) == (None, None, None)
    assert odd.basename == "some-other_form_blue_red_green.jpg"


def test_parse_minimal_document_and_blue_only_duplicates():
    xml = b"""<proteinAtlas><entry><name>X</name><antibody id="HPA1"><cellExpression>
      <subAssay type="human"><data><image>
        <imageUrl>https://h/1/9_C3_1_blue.jpg</imageUrl>
        <imageUrl>https://h/1/9_C3_1_blue_red_green.jpg</imageUrl>
        <imageUrl>https://h/1/9_C3_1_green.jpg</imageUrl>
        <imageUrl>  </imageUrl>
      </image></data></subAssay>
      <subAssay type="human"><data><image><imageUrl>https://h/1/9_C3_2_blue.jpg</imageUrl></image></data></subAssay>
    </cellExpression></antibody></entry></proteinAtlas>"""
    records = parse_gene_xml(xml, CCNB1)
    # One record per field of view; the URL naming most colours wins.
    assert [r.url for r in records] == ["https://h/1/9_C3_1_blue_red_green.jpg", "https://h/1/9_C3_2_blue.jpg"]
    assert records[0].cell_line is None and records[0].antibody == "HPA1"
    assert parse_gene_xml(b"<proteinAtlas/>", CCNB1) == []
    assert parse_gene_xml(hpa_gene_xml(CCNB1, "CCNB1", []), CCNB1) == []


@pytest.mark.parametrize(
    "data, words",
    [
        (b"<html><body>Service unavailable</body></html>", "root element is <html>"),
        (b"<proteinAtlas><entry>", "not well-formed"),
        (b"", "not well-formed"),
        (b"\x89PNG\r\n\x1a\n", "not well-formed"),
    ],
)
def test_parse_rejects_non_hpa_documents(data, words):
    with pytest.raises(ValueError, match=CCNB1) as info:
        parse_gene_xml(data, CCNB1)
    assert words in str(info.value)


def test_parse_refuses_entity_expansion():
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE proteinAtlas [
  <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<proteinAtlas><entry><name>&c;</name></entry></proteinAtlas>"""
    with pytest.raises(ValueError, match=CCNB1) as info:
        parse_gene_xml(bomb, CCNB1)
    assert isinstance(info.value.__cause__, EntitiesForbidden)

    external = b"""<?xml version="1.0"?>
<!DOCTYPE proteinAtlas [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<proteinAtlas><entry><name>&secret;</name></entry></proteinAtlas>"""
    with pytest.raises(ValueError, match="unsafe XML"):
        parse_gene_xml(external, CCNB1)


# ---------------------------------------------------------------------------------------
# Gene lists
# ---------------------------------------------------------------------------------------


def test_read_gene_list_formats(tmp_path):
    table = tmp_path / "genes.csv"
    table.write_text(f"symbol,ensembl_id,other\nCCNB1,{CCNB1},x\nTP53,{TP53},y\nCCNB1b,{CCNB1},z\n")
    assert read_gene_list(table) == [(CCNB1, "CCNB1"), (TP53, "TP53")]

    tsv = tmp_path / "genes.tsv"
    tsv.write_text(f"Gene_ID\tGene\n{TP53}\tTP53\n{CCNB1}\t\n")
    assert read_gene_list(tsv) == [(TP53, "TP53"), (CCNB1, None)]

    headerless = tmp_path / "pairs.csv"
    headerless.write_text(f"{CCNB1},CCNB1\n{TP53},TP53\n")
    assert read_gene_list(headerless) == [(CCNB1, "CCNB1"), (TP53, "TP53")]

    text = tmp_path / "genes.txt"
    text.write_text(f"# PCI gene list\n\n{TP53}  TP53\n{CCNB1}\n{TP53}\n")
    assert read_gene_list(text) == [(TP53, "TP53"), (CCNB1, None)]

    first_column = tmp_path / "first.csv"
    first_column.write_text(f"id,name\n{CCNB1},CCNB1\n")
    assert read_gene_list(first_column) == [(CCNB1, None)]


@pytest.mark.parametrize(
    "content, line, value",
    [
        (f"ensembl_id,symbol\n{CCNB1},CCNB1\nENSG0000014151,TP53\n", 3, "ENSG0000014151"),
        (f"{CCNB1}\n\n{CCNB1}.14\n", 3, f"{CCNB1}.14"),
        ("ensembl_id\nTP53\n", 2, "TP53"),
        (f"ensembl_id,symbol\n,CCNB1\n{CCNB1},CCNB1\n", 2, ""),
    ],
)
def test_read_gene_list_names_bad_ids(tmp_path, content, line, value):
    path = tmp_path / "genes.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        read_gene_list(path)
    message = str(info.value)
    assert str(path) in message and f"line {line}" in message and repr(value) in message
    assert "ENSG" in message and "11 digits" in message


def test_read_gene_list_empty(tmp_path):
    for content in ("", "# nothing\n\n", "ensembl_id,symbol\n"):
        path = tmp_path / "empty.csv"
        path.write_text(content)
        with pytest.raises(ValueError, match="no gene ids"):
            read_gene_list(path)


def test_claim_path_keeps_distinct_images_apart():
    entries = {}
    a = _claim_path(entries, "G", "https://h/1/5_A1_1_blue_red_green.jpg", "http://m/1/5_A1_1_blue_red_green.jpg")
    same = _claim_path(entries, "G", "https://h/1/5_A1_1_blue_red_green.jpg", "http://m/1/5_A1_1_blue_red_green.jpg")
    b = _claim_path(entries, "G", "https://h/2/5_A1_1_blue_red_green.jpg", "http://m/2/5_A1_1_blue_red_green.jpg")
    c = _claim_path(entries, "G", "https://x/2/5_A1_1_blue_red_green.jpg", "http://n/2/5_A1_1_blue_red_green.jpg")
    odd = _claim_path(entries, "G", "https://h/a%20b/../x y.jpg", "http://m/a%20b/../x y.jpg")
    assert a == same == "G/5_A1_1_blue_red_green.jpg"
    assert b == "G/2_5_A1_1_blue_red_green.jpg"
    assert c == "G/2_5_A1_1_blue_red_green-2.jpg"
    assert odd == "G/x_y.jpg"
    assert [e.url for e in entries.values()] == [
        "http://m/1/5_A1_1_blue_red_green.jpg",
        "http://m/2/5_A1_1_blue_red_green.jpg",
        "http://n/2/5_A1_1_blue_red_green.jpg",
        "http://m/a%20b/../x y.jpg",
    ]


def test_sanitize_name():
    assert sanitize_name("HLA-A") == "HLA-A"
    assert sanitize_name("a/b c:d") == "a_b_c_d"
    assert sanitize_name("..") == "__" and sanitize_name("") == "_"


# ---------------------------------------------------------------------------------------
# Acquisition against a local server
# ---------------------------------------------------------------------------------------

GENES = {
    CCNB1: (
        "CCNB1",
        [
            {"plate": 1032, "well": "B5", "field": 1, "antibody": "HPA061448", "yellow": True},
            {"plate": 1032, "well": "B5", "field": 2, "antibody": "HPA061448", "yellow": True},
            {"plate": 1033, "well": "C7", "field": 1, "antibody": "HPA061448", "cell_line": None, "yellow": True},
        ],
    ),
    TP53: (
        "TP53",
        [
            {"plate": 880, "well": "D2", "field": 1, "antibody": "CAB000001", "cell_line": "A-431"},
            {"plate": 880, "well": "D2", "field": 2, "antibody": "CAB000001", "cell_line": "A-431", "yellow": True},
        ],
    ),
    EMPTY: ("TSPAN6", []),
}


def _path(url):
    """The served path (no leading /) of an atlas URL."""
    return url.split("/", 3)[3]


@pytest.fixture(scope="module")
def mirror():
    """(files to serve, {listed image URL: channel planes}): the GENES documents at
    ``<ENSG>.xml`` and their images at the atlas paths."""
    files, planes = {}, {}
    seed = 0
    for gene, (symbol, images) in GENES.items():
        files[f"{gene}.xml"] = hpa_gene_xml(gene, symbol, images)
        for image in images:
            channels = synthetic_field_channels(seed, size=64, index=seed)
            seed += 1
            url = hpa_image_url(image)
            planes[url] = channels
            files[_path(url)] = composite_jpeg(**channels)
            if image.get("yellow"):
                er = channels["structure"]
                files[_path(hpa_image_url(image, "yellow"))] = composite_jpeg(er, er, er)
    return files, planes


def _acquire(server, raw, genes=(CCNB1, TP53, EMPTY), **kwargs):
    options = {"base_url": server.url, "image_base_url": server.url, "progress": False, "backoff": 0.01}
    return acquire_hpa(list(genes), raw, **{**options, **kwargs})


def test_acquire_end_to_end(tmp_path, mirror, caplog):
    files, planes = mirror
    raw = tmp_path / "raw"
    with serve(dict(files)) as server:
        table = _acquire(server, raw, workers=3)
        first_requests = list(server.requests)
        server.requests.clear()
        again = _acquire(server, raw)
        assert server.requests == []  # everything was complete: no request at all
    pd.testing.assert_frame_equal(again, table)
    assert (f"{CCNB1}.xml", None) in first_requests and len(first_requests) == 3 + 5
    assert table.attrs["genes_without_images"] == [EMPTY]
    assert EMPTY in caplog.text

    fields = pd.read_csv(raw / "fields.csv", dtype=str, keep_default_na=False)
    assert len(fields) == 5 and fields["image"].is_unique
    assert fields["image"].str.fullmatch(r"[A-Za-z0-9._-]+").all()
    # TP53's first field has no yellow image: no file_yellow column at all.
    assert [c for c in fields.columns if c.startswith("file_")] == ["file_red", "file_green", "file_blue"]
    first = fields.iloc[0]
    assert first["image"] == "CCNB1_1032_B5_1"
    assert first["file_blue"] == "CCNB1/1032_B5_1_blue_red_green.jpg"
    assert first["Metadata_class"] == "CCNB1" and first["Metadata_gene"] == CCNB1
    assert (first["Metadata_plate"], first["Metadata_well"], first["Metadata_field"]) == ("1032", "B5", "1")
    assert first["Metadata_antibody"] == "HPA061448" and first["Metadata_cell_line"] == "U-2 OS"
    assert fields["Metadata_group"].tolist() == [
        "U-2_OS_1032_B5",
        "U-2_OS_1032_B5",
        "unknown_1033_C7",
        "A-431_880_D2",
        "A-431_880_D2",
    ]
    assert fields["Metadata_cell_line"].tolist()[2] == ""  # unknown cell line stays empty
    assert fields["Metadata_class"].tolist() == ["CCNB1"] * 3 + ["TP53"] * 2

    # Files are where the table says, and each colour plane is its channel.
    for _, row in fields.iterrows():
        assert row["file_red"] == row["file_green"] == row["file_blue"]
        rgb = np.asarray(Image.open(raw / row["file_blue"]).convert("RGB")).astype(float)
        truth = planes[row["Metadata_url"]]
        for k, name in enumerate(("structure", "protein", "nucleus")):
            plane = truth[name].astype(float)
            assert np.corrcoef(rgb[..., k].ravel(), plane.ravel())[0, 1] > 0.99, (row["image"], name)
            assert np.abs(rgb[..., k] - plane).mean() < 8.0, (row["image"], name)
    assert (raw / "xml" / f"{CCNB1}.xml").is_file()
    assert not list(raw.rglob("*tissue*")) and not list(raw.rglob("999_H12*"))
    assert not list(raw.rglob("*yellow*"))  # no yellow channel: not fetched


def test_acquire_limits_and_yellow(tmp_path, mirror):
    files, _ = mirror
    raw = tmp_path / "raw"
    with serve(dict(files)) as server:
        table = _acquire(server, raw, max_genes=1, max_images_per_gene=2)
    assert [p for p, _ in server.requests if p.endswith(".xml")] == [f"{CCNB1}.xml"]
    assert table["image"].tolist() == ["CCNB1_1032_B5_1", "CCNB1_1032_B5_2"]
    # Every kept field has its yellow image: the ER channel is a column.
    assert table["file_yellow"].tolist() == ["CCNB1/1032_B5_1_yellow.jpg", "CCNB1/1032_B5_2_yellow.jpg"]
    assert all((raw / p).is_file() for p in table["file_yellow"])
    on_disk = sorted(p.name for p in (raw / "CCNB1").iterdir())
    assert on_disk == [
        "1032_B5_1_blue_red_green.jpg",
        "1032_B5_1_yellow.jpg",
        "1032_B5_2_blue_red_green.jpg",
        "1032_B5_2_yellow.jpg",
    ]
    assert not (raw / "TP53").exists()
    fields = pd.read_csv(raw / "fields.csv")
    assert fields["image"].tolist() == table["image"].tolist()
    assert fields["file_yellow"].tolist() == table["file_yellow"].tolist()

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_genes"):
            acquire_hpa([CCNB1], raw, max_genes=bad)


def test_acquire_missing_image_raises_and_resumes(tmp_path, mirror):
    files, _ = mirror
    raw = tmp_path / "raw"
    missing = _path(hpa_image_url(GENES[TP53][1][1]))
    served = {k: v for k, v in files.items() if k != missing}
    # Transient trouble on another image is retried away.
    other = _path(hpa_image_url(GENES[CCNB1][1][0]))
    with serve(served, faults={other: ["503", "drop"]}) as server:
        with pytest.raises(DownloadError) as info:
            _acquire(server, raw)
        assert server.url_for(missing) in str(info.value) and "404" in str(info.value)
        assert "1 failed" in str(info.value)
        assert not (raw / "fields.csv").exists()
        assert (raw / "CCNB1" / "1032_B5_1_blue_red_green.jpg").read_bytes() == files[other]  # the rest arrived

        served[missing] = files[missing]
        server.requests.clear()
        table = _acquire(server, raw)
    assert server.requests == [(missing, None)]
    assert len(table) == 5 and (raw / "fields.csv").is_file()


def test_acquire_bad_xml_is_reported_and_refetched(tmp_path, mirror):
    files, _ = mirror
    served = {**files, f"{TP53}.xml": b"<html>maintenance</html>"}
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "fields.csv").write_text("stale\n")
    with serve(served) as server:
        with pytest.raises(DownloadError, match=f"{TP53}.*root element is <html>"):
            _acquire(server, raw)
        assert not (raw / "fields.csv").exists()  # a stale table does not survive a failed run
        assert not (raw / "xml" / f"{TP53}.xml").exists()
        served[f"{TP53}.xml"] = files[f"{TP53}.xml"]
        server.requests.clear()
        table = _acquire(server, raw)
    # Only what the bad document hid is fetched: the XML again and TP53's composites (not
    # its one yellow image: not every field has one, so there is no yellow channel).
    assert sorted(p for p, _ in server.requests) == [f"1/880_D2_{k}_blue_red_green.jpg" for k in (1, 2)] + [
        f"{TP53}.xml"
    ]
    assert sorted(set(table["Metadata_class"])) == ["CCNB1", "TP53"]


def test_acquire_without_any_image(tmp_path, mirror):
    files, _ = mirror
    with serve(dict(files)) as server:
        with pytest.raises(ValueError, match="none of the 1 genes"):
            _acquire(server, tmp_path / "raw", genes=[(EMPTY, "TSPAN6")])
    assert not (tmp_path / "raw" / "fields.csv").exists()


def test_acquire_reads_a_gene_list_file(tmp_path, mirror):
    files, _ = mirror
    genes = tmp_path / "genes.csv"
    genes.write_text(f"ensembl_id,symbol\n{TP53},TP53\n")
    with serve(dict(files)) as server:
        table = acquire_hpa(genes, tmp_path / "raw", base_url=server.url + "/", image_base_url=server.url + "/",
                            progress=False)  # fmt: skip
    assert table["file_blue"].tolist() == ["TP53/880_D2_1_blue_red_green.jpg", "TP53/880_D2_2_blue_red_green.jpg"]
    rgb = np.asarray(Image.open(io.BytesIO((tmp_path / "raw" / table["file_blue"][0]).read_bytes())))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8


def test_acquire_symbol_fallback_from_gene_list(tmp_path):
    images = [{"plate": 3, "well": "A1", "field": 1}]
    files = {f"{CCNB1}.xml": hpa_gene_xml(CCNB1, None, images)}
    files[_path(hpa_image_url(images[0]))] = composite_jpeg(**synthetic_field_channels(0, size=64))
    with serve(files) as server:
        named = _acquire(server, tmp_path / "a", genes=[(CCNB1, "CCNB1")])
        unnamed = _acquire(server, tmp_path / "b", genes=[CCNB1])
    # No <name> in the XML: the gene list's symbol, else the Ensembl id.
    assert named["Metadata_class"].tolist() == ["CCNB1"] and named["image"].tolist() == ["CCNB1_3_A1_1"]
    assert unnamed["Metadata_class"].tolist() == [CCNB1] and unnamed["file_blue"][0].startswith(f"{CCNB1}/")


def test_acquire_relative_and_unsafe_image_urls(tmp_path):
    xml = b"""<proteinAtlas><entry><name>G</name><antibody id="HPA9"><cellExpression><subAssay type="human">
      <data><cellLine>U-2 OS</cellLine><image><imageUrl>/img/7_B2_1_blue_red_green.jpg</imageUrl></image></data>
    </subAssay></cellExpression></antibody></entry></proteinAtlas>"""
    jpeg = composite_jpeg(**synthetic_field_channels(0, size=64))
    files = {f"{CCNB1}.xml": xml, "img/7_B2_1_blue_red_green.jpg": jpeg}
    with serve(files) as server:
        # A relative URL is resolved against base_url.
        table = acquire_hpa([CCNB1], tmp_path / "a", base_url=server.url, progress=False)
        assert table["file_blue"].tolist() == ["G/7_B2_1_blue_red_green.jpg"]
        assert (tmp_path / "a" / "G" / "7_B2_1_blue_red_green.jpg").read_bytes() == jpeg
        # A file: URL is reported, not read.
        files[f"{TP53}.xml"] = xml.replace(b"/img/7_B2_1", b"file:///etc/7_B2_1")
        with pytest.raises(DownloadError, match=f"{TP53}: image URL 'file:///etc/7_B2_1_blue_red_green.jpg'"):
            acquire_hpa([TP53], tmp_path / "b", base_url=server.url, progress=False)
    assert not (tmp_path / "b" / "fields.csv").exists() and not (tmp_path / "b" / "G").exists()


def test_acquire_writes_the_field_table_where_asked(tmp_path, mirror):
    """With a dataset ``path`` the images land there while the workflow keeps the table under
    results/<dataset>/raw; the table's paths stay relative to the download folder."""
    files, _ = mirror
    raw, table_path = tmp_path / "downloads", tmp_path / "results" / "atlas" / "raw" / "fields.csv"
    with serve(dict(files)) as server:
        _acquire(server, raw, genes=(CCNB1,), fields_path=table_path)
    assert not (raw / "fields.csv").exists()
    fields = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    assert len(fields) == 3
    assert all((raw / path).is_file() for path in fields["file_blue"])
