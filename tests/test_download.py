"""Downloads against a real local HTTP server (tests.http_server) with scripted faults:
resume, retries, verification, atomic publication; manifest parsing; safe zip extraction."""

import hashlib
import logging
import os
import random
import stat
import zipfile

import pytest

from tests.http_server import serve
from workflow_scripts.download import (
    DownloadEntry,
    DownloadError,
    DownloadReport,
    download_all,
    read_manifest,
    safe_extract_zip,
    safe_join,
)

FAST = {"backoff": 0.01, "timeout": 5.0, "progress": False}


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entry(server, path: str, data: bytes | None = None, *, size=True, checksum=True, **overrides) -> DownloadEntry:
    """An entry for ``path`` on ``server``, declaring size and sha256 of ``data`` unless told not to."""
    fields = {"url": server.url_for(path), "path": path}
    if data is not None and size:
        fields["size"] = len(data)
    if data is not None and checksum:
        fields["sha256"] = sha256(data)
    fields.update(overrides)
    return DownloadEntry(**fields)


def stray_files(folder) -> list[str]:
    """Temporary files left anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".part", ".tmp")) or p.name[0] == "."
    )


def file_mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- happy path


def test_concurrent_downloads_then_second_run_skips_without_requests(tmp_path):
    files = {f"set/file{i}.bin": payload(50_000 + i, seed=i) for i in range(6)}
    # each answer is delayed a little so that concurrent requests overlap on the server
    faults = {path: ["slow:0.2"] for path in files}
    dest = tmp_path / "dest"
    with serve(files, faults=faults) as server:
        entries = [entry(server, path, data) for path, data in files.items()]
        report = download_all(entries, dest, workers=3, **FAST)

        assert report.done == entries
        assert report.skipped == [] and report.failed == []
        assert 2 <= server.max_in_flight <= 3  # concurrent, and never more than `workers`
        for path, data in files.items():
            assert (dest / path).read_bytes() == data
            assert file_mode(dest / path) == 0o666 & ~umask()
        assert stray_files(dest) == []
        assert len(server.requests) == 6

        again = download_all(entries, dest, workers=3, **FAST)
        assert again.skipped == entries and again.done == [] and again.failed == []
        assert len(server.requests) == 6  # no request at all for complete files
    assert "6 downloaded, 0 already complete, 0 failed" in report.summary()
    report.raise_for_failures()  # nothing failed: no exception


def test_existing_file_without_checksum_counts_as_complete(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"whatever is there")
    with serve({"a.txt": b"new"}) as server:
        report = download_all([entry(server, "a.txt")], tmp_path, **FAST)
        assert server.requests == []
    assert len(report.skipped) == 1
    assert (tmp_path / "a.txt").read_bytes() == b"whatever is there"


def test_size_only_entries_and_nested_folders(tmp_path):
    data = payload(10_000)
    with serve({"x/y/z.bin": data}) as server:
        report = download_all([entry(server, "x/y/z.bin", data, checksum=False)], tmp_path / "new", **FAST)
    assert len(report.done) == 1
    assert (tmp_path / "new/x/y/z.bin").read_bytes() == data


# --------------------------------------------------------------------------- resume and retries


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path):
    data = payload(3 * 1024 * 1024 + 17)
    with serve({"big.bin": data}, faults={"big.bin": ["drop"]}) as server:
        report = download_all([entry(server, "big.bin", data)], tmp_path, **FAST)
        ranges = server.requests_for("big.bin")
    assert len(report.done) == 1, report.summary()
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    assert ranges[1] == f"bytes={resumed_at}-" and 0 < resumed_at < len(data)
    final = (tmp_path / "big.bin").read_bytes()
    assert final == data and sha256(final) == sha256(data)
    assert stray_files(tmp_path) == []


def test_failed_run_keeps_the_part_file_and_a_rerun_resumes_it(tmp_path):
    data = payload(1_000_000)
    # the drop added bytes to the part file, so it does not use up a retry; the 503 after it does
    with serve({"f.bin": data}, faults={"f.bin": ["drop", "503"]}) as server:
        first = download_all([entry(server, "f.bin", data)], tmp_path, retries=0, **FAST)
        assert len(first.failed) == 1 and server.url_for("f.bin") in first.failed[0][1]
        assert "503" in first.failed[0][1]
        assert not (tmp_path / "f.bin").exists()  # never a partial file under the final name
        kept = (tmp_path / "f.bin.part").stat().st_size
        assert 0 < kept < len(data)

        second = download_all([entry(server, "f.bin", data)], tmp_path, retries=0, **FAST)
        assert server.requests_for("f.bin") == [None, f"bytes={kept}-", f"bytes={kept}-"]
    assert len(second.done) == 1
    assert (tmp_path / "f.bin").read_bytes() == data
    assert stray_files(tmp_path) == []


@pytest.mark.parametrize("declare_size", [True, False], ids=["size", "no-size"])
@pytest.mark.parametrize("kept", ["0", "1", "half", "all-but-one", "all"])
def test_interrupted_run_resumes_from_part_file(tmp_path, kept, declare_size):
    data = payload(200_001, seed=3)
    k = {"0": 0, "1": 1, "half": len(data) // 2, "all-but-one": len(data) - 1, "all": len(data)}[kept]
    (tmp_path / "f.bin.part").write_bytes(data[:k])
    with serve({"f.bin": data}) as server:
        report = download_all([entry(server, "f.bin", data, size=declare_size)], tmp_path, **FAST)
        ranges = server.requests_for("f.bin")
    assert len(report.done) == 1, report.summary()
    assert ranges == [f"bytes={k}-" if k else None]  # one request, resuming where the part ends
    final = (tmp_path / "f.bin").read_bytes()
    assert final == data and sha256(final) == sha256(data)
    assert not (tmp_path / "f.bin.part").exists()


def test_server_that_ignores_range_still_gives_identical_file(tmp_path):
    data = payload(300_000)
    (tmp_path / "f.bin.part").write_bytes(data[:1000])
    with serve({"f.bin": data}, faults={"f.bin": ["norange"]}) as server:
        report = download_all([entry(server, "f.bin", data)], tmp_path, **FAST)
        assert server.requests_for("f.bin") == ["bytes=1000-"]  # answered 200 with the whole file
    assert len(report.done) == 1
    assert (tmp_path / "f.bin").read_bytes() == data


def test_stale_part_from_other_content_is_discarded_and_fetched_from_scratch(tmp_path):
    data = payload(100_000)
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)  # e.g. left by an older version of the file
    with serve({"f.bin": data}) as server:
        report = download_all([entry(server, "f.bin", data)], tmp_path, **FAST)
        assert server.requests_for("f.bin") == ["bytes=5000-", None]
    assert len(report.done) == 1
    assert (tmp_path / "f.bin").read_bytes() == data


def test_server_errors_are_retried(tmp_path):
    data = b"eventually"
    with serve({"f.txt": data}, faults={"f.txt": ["500", "500"]}) as server:
        report = download_all([entry(server, "f.txt", data)], tmp_path, **FAST)
        assert len(server.requests) == 3
    assert len(report.done) == 1
    assert (tmp_path / "f.txt").read_bytes() == data


@pytest.mark.parametrize("status", ["503", "429", "408"])
def test_retries_are_limited(tmp_path, status):
    with serve({"f.txt": b"never"}, faults={"f.txt": [status] * 10}) as server:
        report = download_all([entry(server, "f.txt", b"never")], tmp_path, retries=2, **FAST)
        assert len(server.requests) == 3  # first try + 2 retries
    [(_, reason)] = report.failed
    assert status in reason and server.url_for("f.txt") in reason
    assert not (tmp_path / "f.txt").exists()


def test_read_timeout_is_retried(tmp_path):
    data = b"late"
    with serve({"f.txt": data}, faults={"f.txt": ["slow:2"]}) as server:
        report = download_all([entry(server, "f.txt", data)], tmp_path, backoff=0.01, timeout=0.3, progress=False)
        assert len(server.requests) == 2
    assert len(report.done) == 1
    assert (tmp_path / "f.txt").read_bytes() == data


def test_connection_refused_fails_with_url(tmp_path):
    with serve({}) as server:
        url = server.url_for("gone.bin")
    report = download_all([DownloadEntry(url, "gone.bin")], tmp_path, retries=1, **FAST)
    [(_, reason)] = report.failed
    assert url in reason and "gave up after 2 failed attempts" in reason


# --------------------------------------------------------------------------- failures


def test_404_fails_that_file_only(tmp_path):
    good = {f"ok{i}.bin": payload(1000, seed=i) for i in range(3)}
    with serve(good) as server:
        entries = [entry(server, path, data) for path, data in good.items()]
        missing = entry(server, "missing.bin", b"anything")
        report = download_all([*entries[:2], missing, entries[2]], tmp_path, **FAST)
        assert server.requests_for("missing.bin") == [None]  # a 404 is not retried
    assert report.done == entries
    [(failed, reason)] = report.failed
    assert failed == missing
    assert "404" in reason and missing.url in reason
    assert not (tmp_path / "missing.bin").exists()
    assert stray_files(tmp_path) == []
    for path, data in good.items():
        assert (tmp_path / path).read_bytes() == data

    summary = report.summary()
    assert summary.splitlines()[0] == "3 downloaded, 0 already complete, 1 failed"
    assert f"{missing.url} -> missing.bin: " in summary
    with pytest.raises(DownloadError) as excinfo:
        report.raise_for_failures()
    assert missing.url in str(excinfo.value) and "404" in str(excinfo.value)


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_wrong_checksum_fails_after_one_fresh_retry(tmp_path, algorithm):
    data = payload(20_000)
    wrong = "0" * (64 if algorithm == "sha256" else 32)
    actual = sha256(data) if algorithm == "sha256" else md5(data)
    with serve({"f.bin": data}) as server:
        bad = DownloadEntry(server.url_for("f.bin"), "f.bin", **{algorithm: wrong})
        report = download_all([bad], tmp_path, **FAST)
        assert server.requests_for("f.bin") == [None, None]  # retried once, from scratch
    [(_, reason)] = report.failed
    assert bad.url in reason and wrong in reason and actual in reason and algorithm in reason
    assert not (tmp_path / "f.bin").exists()
    assert stray_files(tmp_path) == []


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_declared_size_fails(tmp_path, delta):
    data = payload(20_000)
    with serve({"f.bin": data}) as server:
        bad = entry(server, "f.bin", data, checksum=False, size=False)
        bad = DownloadEntry(bad.url, bad.path, size=len(data) + delta)
        report = download_all([bad], tmp_path, **FAST)
    [(_, reason)] = report.failed
    assert "size" in reason and str(len(data) + delta) in reason and bad.url in reason
    assert not (tmp_path / "f.bin").exists()
    assert stray_files(tmp_path) == []


def test_existing_file_with_wrong_content_is_replaced(tmp_path):
    data = payload(30_000)
    (tmp_path / "f.bin").write_bytes(b"corrupt" * 100)
    with serve({"f.bin": data}) as server:
        report = download_all([entry(server, "f.bin", data, size=False)], tmp_path, **FAST)
    assert len(report.done) == 1
    assert (tmp_path / "f.bin").read_bytes() == data


@pytest.mark.parametrize("url", ["ftp://example.org/a", "file:///etc/passwd", "example.org/a", "http:///nohost"])
def test_non_http_urls_are_rejected_before_any_request(tmp_path, url):
    with serve({"a": b"a"}) as server:
        with pytest.raises(ValueError, match="http"):
            download_all([entry(server, "a"), DownloadEntry(url, "b")], tmp_path, **FAST)
        assert server.requests == []


@pytest.mark.parametrize(
    "paths",
    [["../evil"], ["/abs/path"], ["a\\..\\..\\evil"], [""], ["dir/"], ["a", "./a"], ["a", "a.part"], ["a", "a/b"]],
)
def test_unsafe_or_colliding_paths_are_rejected_before_any_request(tmp_path, paths):
    with serve({"a": b"a"}) as server:
        entries = [DownloadEntry(server.url_for("a"), path) for path in paths]
        with pytest.raises(ValueError):
            download_all(entries, tmp_path / "dest", **FAST)
        assert server.requests == []


def test_progress_bar_and_one_log_line_per_file(tmp_path, caplog, capsys):
    data = payload(5000)
    (tmp_path / "skip.bin").write_bytes(data)
    with serve({"get.bin": data, "skip.bin": data}) as server:
        entries = [entry(server, name, data) for name in ("get.bin", "skip.bin", "none.bin")]
        with caplog.at_level(logging.INFO, logger="cellembed.download"):
            download_all(entries, tmp_path, backoff=0.01, timeout=5, progress=True)
    per_file = [r.getMessage() for r in caplog.records if r.name == "cellembed.download"]
    assert any(m.startswith("downloaded") and "get.bin" in m for m in per_file)
    assert any(m.startswith("already complete") and "skip.bin" in m for m in per_file)
    assert any(m.startswith("failed") and "none.bin" in m for m in per_file)
    assert "download" in capsys.readouterr().err  # the tqdm bar


def test_shared_session_is_used(tmp_path):
    import requests

    class CountingSession(requests.Session):
        calls = 0

        def get(self, *args, **kwargs):
            CountingSession.calls += 1
            return super().get(*args, **kwargs)

    data = b"shared"
    with serve({"f": data}) as server, CountingSession() as session:
        report = download_all([entry(server, "f", data)], tmp_path, session=session, **FAST)
    assert len(report.done) == 1 and CountingSession.calls == 1


def test_report_summary_and_error():
    ok = DownloadEntry("https://example.org/a", "a")
    bad = DownloadEntry("https://example.org/b", "b")
    report = DownloadReport(done=[ok], skipped=[], failed=[(bad, "HTTP 404 Not Found for https://example.org/b")])
    assert report.summary() == (
        "1 downloaded, 0 already complete, 1 failed\n"
        "  https://example.org/b -> b: HTTP 404 Not Found for https://example.org/b"
    )
    with pytest.raises(DownloadError, match="https://example.org/b"):
        report.raise_for_failures()


# --------------------------------------------------------------------------- manifest


def test_read_manifest(tmp_path):
    digest = "AB" * 32
    text = (
        "\ufeffpath, URL ,size,sha256,md5\n"
        "images/a.tif,https://example.org/a.tif,12," + digest + ",\n"
        "\n"
        "./b\\c.csv,http://example.org/b.csv?x=1,,," + "0" * 32 + "\n"
    )
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(text, encoding="utf-8")
    assert read_manifest(manifest) == [
        DownloadEntry("https://example.org/a.tif", "images/a.tif", sha256=digest.lower(), size=12),
        DownloadEntry("http://example.org/b.csv?x=1", "b/c.csv", md5="0" * 32),
    ]


GOOD_ROW = "https://example.org/ok,ok.bin,,,\n"


@pytest.mark.parametrize(
    ("body", "row", "value"),
    [
        ("ftp://example.org/x,x.bin,,,\n", 3, "ftp://example.org/x"),
        ("file:///etc/passwd,x.bin,,,\n", 3, "file:///etc/passwd"),
        ("example.org/x,x.bin,,,\n", 3, "example.org/x"),
        ("https://example.org/x,/etc/x.bin,,,\n", 3, "/etc/x.bin"),
        ("https://example.org/x,../x.bin,,,\n", 3, "../x.bin"),
        ("https://example.org/x,a\\..\\..\\x.bin,,,\n", 3, "a\\..\\..\\x.bin"),
        ("https://example.org/x,,,,\n", 3, 'value ""'),
        ("https://example.org/x,x.bin,abc123,,\n", 3, "abc123"),
        ("https://example.org/x,x.bin," + "g" * 64 + ",,\n", 3, "g" * 64),
        ("https://example.org/x,x.bin,," + "a" * 31 + ",\n", 3, "a" * 31),
        ("https://example.org/x,x.bin,,,-5\n", 3, "-5"),
        ("https://example.org/x,x.bin,,,1.5\n", 3, "1.5"),
        ("https://example.org/x,ok.bin,,,\n", 3, "ok.bin"),
        ("https://example.org/x,./ok.bin,,,\n", 3, "./ok.bin"),
        ("https://example.org/x,x.bin,,,,surplus\n", 3, "surplus"),
    ],
)
def test_read_manifest_rejects_bad_rows(tmp_path, body, row, value):
    manifest = tmp_path / "sources.csv"
    manifest.write_text("url,path,sha256,md5,size\n" + GOOD_ROW + body)
    with pytest.raises(ValueError) as excinfo:
        read_manifest(manifest)
    message = str(excinfo.value)
    assert str(manifest) in message and f"row {row}" in message and value in message


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("path,sha256", '"url"'),
        ("url,sha256", '"path"'),
        ("url,path,checksum", '"checksum"'),
        ("url,path,url", '"url"'),
    ],
)
def test_read_manifest_rejects_bad_headers(tmp_path, header, column):
    manifest = tmp_path / "sources.csv"
    manifest.write_text(header + "\nhttps://example.org/x,x,y\n")
    with pytest.raises(ValueError) as excinfo:
        read_manifest(manifest)
    message = str(excinfo.value)
    assert str(manifest) in message and "row 1" in message and column in message


def test_read_manifest_rejects_empty_file(tmp_path):
    manifest = tmp_path / "empty.csv"
    manifest.write_text("")
    with pytest.raises(ValueError, match="empty.csv, row 1"):
        read_manifest(manifest)


# --------------------------------------------------------------------------- safe_join


def test_safe_join(tmp_path):
    assert safe_join(tmp_path, "a/b.txt") == (tmp_path / "a/b.txt").resolve()
    assert safe_join(tmp_path, "a\\b.txt") == (tmp_path / "a/b.txt").resolve()
    outside = tmp_path.parent / "outside"
    outside.mkdir(exist_ok=True)
    (tmp_path / "link").symlink_to(outside)
    for bad in ["../x", "a/../../x", "..\\x", "/etc/passwd", "\\x", "C:/x", "link/x", "link"]:
        with pytest.raises(ValueError, match="x|link"):
            safe_join(tmp_path, bad)


def test_download_refuses_to_write_through_a_symlink_leading_outside(tmp_path):
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sub").symlink_to(outside)
    with serve({"f": b"data"}) as server:
        report = download_all([entry(server, "sub/f", url=server.url_for("f"))], dest, **FAST)
        assert server.requests == []
    [(_, reason)] = report.failed
    assert "escapes" in reason
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- zip


def make_zip(path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_safe_extract_zip_extracts_and_reruns_cheaply(tmp_path):
    members = {"a.txt": b"alpha", "sub/dir/b.bin": payload(70_000), "sub/empty.txt": b""}
    archive = make_zip(tmp_path / "x.zip", {"sub/": b"", **members})
    dest = tmp_path / "out"
    paths = safe_extract_zip(archive, dest)
    assert paths == [(dest / name).resolve() for name in members]
    for name, data in members.items():
        assert (dest / name).read_bytes() == data
        assert file_mode(dest / name) == 0o666 & ~umask()
    assert stray_files(dest) == []

    inodes = {name: (dest / name).stat().st_ino for name in members}
    assert safe_extract_zip(archive, dest) == paths
    assert {name: (dest / name).stat().st_ino for name in members} == inodes  # not rewritten

    (dest / "a.txt").write_bytes(b"truncated")  # a different size: extracted again
    safe_extract_zip(archive, dest)
    assert (dest / "a.txt").read_bytes() == b"alpha"


@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "..\\evil.txt", "/tmp/evil", "ABSOLUTE"])
def test_safe_extract_zip_rejects_zip_slip(tmp_path, evil):
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "evil.txt")
    archive = make_zip(tmp_path / "slip.zip", {"first.txt": b"fine", evil: b"pwned"})
    dest = tmp_path / "out"
    with pytest.raises(ValueError) as excinfo:
        safe_extract_zip(archive, dest)
    assert "slip.zip" in str(excinfo.value) and evil in str(excinfo.value)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []  # nothing written, not even the harmless member


def test_safe_extract_zip_rejects_symlink_members(tmp_path):
    archive = make_zip(tmp_path / "link.zip", {"a.txt": b"a"}, symlinks={"passwd": "/etc/passwd"})
    with pytest.raises(ValueError, match=r"link\.zip.*passwd.*symbolic link"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "passwd").exists()


def test_safe_extract_zip_does_not_follow_existing_symlinks_outside(tmp_path):
    dest, outside = tmp_path / "out", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "sub").symlink_to(outside)
    archive = make_zip(tmp_path / "x.zip", {"sub/evil.txt": b"pwned"})
    with pytest.raises(ValueError, match="sub/evil.txt"):
        safe_extract_zip(archive, dest)
    assert list(outside.iterdir()) == []


def test_safe_extract_zip_leaves_nothing_for_a_corrupt_member(tmp_path):
    data = b"0123456789" * 1000
    archive = make_zip(tmp_path / "bad.zip", {"f.bin": data})
    raw = bytearray(archive.read_bytes())
    at = raw.index(data)
    raw[at + 500] ^= 0xFF  # stored member: flip a byte of its data, so the CRC check fails
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "out"
    with pytest.raises(zipfile.BadZipFile):
        safe_extract_zip(archive, dest)
    assert list(dest.rglob("*")) == []
