"""Human Protein Atlas source: subcellular (ICC-IF) images of human cell lines, by gene.

For each gene (an Ensembl id) the atlas serves one XML document,
``https://www.proteinatlas.org/{ENSG}.xml``. Its ``<subAssay type="human">`` sections list
the immunofluorescence images of each antibody in each cell line; every field of view is a
composite RGB JPEG named ``<plate>_<well>_<field>_blue_red_green.jpg`` whose red plane is
microtubules, green the antibody (the protein of interest) and blue the nucleus. Some
releases also list the endoplasmic-reticulum channel of the same field as
``<plate>_<well>_<field>_yellow.jpg``.

:func:`acquire_hpa` downloads the XML of each gene, parses it (with ``defusedxml``: the
documents come from the network), downloads the composites (and the yellow images when
every field has one) to ``<raw_dir>/<symbol>/<basename>`` and writes the field table
``<raw_dir>/fields.csv``:

``image``
    ``<symbol>_<plate>_<well>_<field>`` (the basename stem; characters outside
    ``[A-Za-z0-9._-]`` become ``_``), unique.
``file_red``, ``file_green``, ``file_blue``
    The composite JPEG, relative to ``raw_dir``; the image reader takes the named colour
    plane of an RGB file.
``file_yellow``
    The yellow (ER) JPEG, only when every kept field has one (otherwise the yellow images
    are not fetched at all).
``Metadata_class``
    The gene symbol (the protein is the class).
``Metadata_group``
    ``<cell line>_<plate>_<well>``: one antibody stained one well of one cell line, so
    all fields of a well share their protein, antibody and staining batch. This is the
    unit that paired cell inpainting pairs cells within, and the unit a grouped split must
    keep together (fields of one well are near-duplicates). The symbol is deliberately not
    part of it: an antibody with two target genes puts the same images under both, and
    they must land on the same side of a split. When the basename does not have the
    ``<plate>_<well>_<field>`` form, the image's stem stands in for ``<plate>_<well>``;
    an unknown cell line is written ``unknown``.
``Metadata_gene``, ``Metadata_cell_line``, ``Metadata_plate``, ``Metadata_well``,
``Metadata_field``, ``Metadata_antibody``, ``Metadata_url``
    As parsed from the XML (empty when the XML does not say).

The reference downloader ran sequentially with no retry, resume or verification and
swallowed errors; here the downloads are concurrent, retried, resumed and skipped when
complete, and every failure is reported (:class:`~workflow_scripts.download.DownloadError`)
before anything is written under ``fields.csv``, so that a re-run picks up where the last
one stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
import pandas as pd
from defusedxml import DefusedXmlException

from workflow_scripts.download import DownloadEntry, DownloadError, DownloadReport, download_all
from workflow_scripts.io import write_csv

__all__ = [
    "ENSEMBL_PATTERN",
    "ImageRecord",
    "acquire_hpa",
    "parse_gene_xml",
    "read_gene_list",
    "sanitize_name",
]

log = logging.getLogger(__name__)

ENSEMBL_PATTERN = re.compile(r"^ENSG\d{11}$", re.ASCII)
_ID_COLUMNS = ("ensembl_id", "ensembl", "gene_id")
_SYMBOL_COLUMNS = ("symbol", "gene")
_COLOURS = ("blue", "red", "green", "yellow")
_STEM = re.compile(r"(?P<plate>\d+)_(?P<well>[A-Za-z]+\d+)_(?P<field>\d+)", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
FIELDS_NAME = "fields.csv"


def sanitize_name(text: str) -> str:
    """Replace every character of ``text`` outside ``[A-Za-z0-9._-]`` by ``_``.

    A result made only of dots (``.``, ``..``) would name a directory, not a file, so its
    dots become ``_`` too; an empty text gives ``_``.

    Parameters
    ----------
    text : str
        A gene symbol, file name, ...

    Returns
    -------
    str
        The safe name, as long as ``text`` (at least one character).

    Examples
    --------
    >>> sanitize_name("HLA-A*02"), sanitize_name(".."), sanitize_name("")
    ('HLA-A_02', '__', '_')
    """
    out = _UNSAFE.sub("_", str(text))
    if set(out) <= {"."}:
        out = "_" * max(len(out), 1)
    return out


# ---------------------------------------------------------------------------------------
# Gene list
# ---------------------------------------------------------------------------------------


def _check_ensembl(value: str, path: Path, line: int) -> str:
    if not ENSEMBL_PATTERN.fullmatch(value):
        raise ValueError(
            f"{path}, line {line}: {value!r} is not an Ensembl gene id; expected 'ENSG' followed by 11 digits "
            f"(e.g. ENSG00000134057), without a version suffix"
        )
    return value


def read_gene_list(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """Read a list of genes: Ensembl ids with optional symbols.

    Parameters
    ----------
    path : path-like
        Either a delimited table (comma, tab or semicolon) or plain text. A first row
        whose first cell does not start with ``ENSG`` is a header: the id column is the first of
        ``ensembl_id``, ``ensembl``, ``gene_id`` present (case-insensitive), else the
        first column; the symbol column is ``symbol`` or ``gene`` when present. Plain text
        has one gene per line, the id optionally followed by whitespace and a symbol.
        Blank lines and lines starting with ``#`` are skipped.

    Returns
    -------
    list of (str, str or None)
        ``(ensembl_id, symbol)`` in file order, de-duplicated by id (the first occurrence
        wins).

    Raises
    ------
    ValueError
        If an id does not match ``ENSG`` + 11 digits (the message names the file, the line
        and the value), or the file lists no gene.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    lines = [(i, line) for i, line in enumerate(text.splitlines(), start=1)]
    content = [(i, line) for i, line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise ValueError(f"{path}: no gene ids found; expected Ensembl ids such as ENSG00000134057")

    first = content[0][1]
    delimiter = next((d for d in (",", "\t", ";") if d in first), None)
    if delimiter is None:  # plain text: whitespace-separated
        parsed = [(i, line.split()) for i, line in content]
    else:
        parsed = [(i, [cell.strip() for cell in next(csv.reader(io.StringIO(line), delimiter=delimiter))])
                  for i, line in content]  # fmt: skip
    # A first row whose first cell does not even start like an id is a header (a mistyped
    # id such as "ENSG0001" is data, and is reported below).
    id_col, symbol_col = 0, 1
    header = parsed[0][1]
    if not (header and header[0].upper().startswith("ENSG")):
        names = [h.lower() for h in header]
        id_col = next((names.index(c) for c in _ID_COLUMNS if c in names), 0)
        symbol_col = next((names.index(c) for c in _SYMBOL_COLUMNS if c in names and names.index(c) != id_col), None)
        parsed = parsed[1:]
    rows: list[tuple[int, str, str | None]] = []
    for i, cells in parsed:
        gene = cells[id_col] if id_col < len(cells) else ""
        symbol = cells[symbol_col] if symbol_col is not None and symbol_col < len(cells) else None
        rows.append((i, gene, symbol or None))

    genes: dict[str, str | None] = {}
    for i, gene, symbol in rows:
        _check_ensembl(gene, path, i)
        genes.setdefault(gene, symbol)
    if not genes:
        raise ValueError(f"{path}: no gene ids found below the header; expected Ensembl ids such as ENSG00000134057")
    return list(genes.items())


# ---------------------------------------------------------------------------------------
# XML
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """One immunofluorescence field of view listed in a gene's XML.

    ``url`` is the composite (``..._blue_red_green.jpg``) as listed; ``basename`` its
    file name; ``plate``, ``well`` and ``field`` come from a basename of the form
    ``<plate>_<well>_<field>_blue_red_green.jpg`` (``None`` for other forms);
    ``yellow_url`` is the ER image of the same field when the XML lists one.
    """

    url: str
    basename: str
    symbol: str
    ensembl_id: str
    cell_line: str | None
    antibody: str | None
    plate: str | None
    well: str | None
    field: str | None
    yellow_url: str | None = None

    @property
    def stem(self) -> str:
        """The basename without extension and colour suffixes (``1032_B5_1``)."""
        return _split_colours(self.basename)[0]


def _local(tag) -> str:
    """Tag name without a ``{namespace}`` prefix (comments and PIs have no str tag)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _split_colours(basename: str) -> tuple[str, tuple[str, ...]]:
    """``("1032_B5_1", ("blue", "red", "green"))`` for ``1032_B5_1_blue_red_green.jpg``."""
    stem = PurePosixPath(basename).stem
    parts = stem.split("_")
    colours: list[str] = []
    while len(parts) > 1 and parts[-1].lower() in _COLOURS:
        colours.insert(0, parts.pop().lower())
    return "_".join(parts), tuple(colours)


def _url_basename(url: str) -> str:
    return unquote(PurePosixPath(urlsplit(url).path).name)


def _field_key(url: str) -> tuple[str, str]:
    """(URL directory, stem): two URLs of the same field of view share it."""
    parts = urlsplit(url)
    directory = parts.path.rsplit("/", 1)[0]
    return f"{parts.scheme}://{parts.netloc}{directory}", _split_colours(_url_basename(url))[0]


def _text(element: Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _child(element: Element, name: str) -> Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _human_image_urls(entry: Element) -> tuple[list[tuple[str, str | None, str | None]], dict[tuple[str, str], str]]:
    """Collect the image URLs below ``subAssay type="human"`` elements of one entry.

    In document order: ``[(blue url, cell line, antibody id)]`` and ``{field key: yellow
    url}``. Depth-first with an explicit stack (a hostile document may nest deeply), carrying the
    context of the nearest enclosing ``antibody``, ``subAssay`` and ``data`` elements.
    """
    candidates: list[tuple[str, str | None, str | None]] = []
    yellow: dict[tuple[str, str], str] = {}
    # (element, antibody id, inside a human subAssay, cell line)
    stack: list[tuple[Element, str | None, bool, str | None]] = [(entry, None, False, None)]
    while stack:
        element, antibody, human, cell_line = stack.pop()
        name = _local(element.tag)
        if name == "antibody":
            antibody = element.get("id") or None
        elif name == "subAssay":
            human = element.get("type") == "human"
        elif name == "data":
            cell_line = _text(_child(element, "cellLine"))
        elif name == "imageUrl":
            url = _text(element)
            if human and url:
                _, colours = _split_colours(_url_basename(url))
                if "blue" in colours:
                    candidates.append((url, cell_line, antibody))
                elif colours == ("yellow",):
                    yellow.setdefault(_field_key(url), url)
            continue
        stack.extend((child, antibody, human, cell_line) for child in reversed(element))
    return candidates, yellow


def parse_gene_xml(data: bytes, ensembl_id: str) -> list[ImageRecord]:
    """Parse the human immunofluorescence composites listed in one HPA gene XML.

    Parameters
    ----------
    data : bytes
        The document served at ``https://www.proteinatlas.org/{ensembl_id}.xml``.
    ensembl_id : str
        The gene the document was requested for (used in messages and as the symbol
        fallback; when the document holds several ``entry`` elements, the one whose
        ``identifier`` carries this id is used, else all).

    Returns
    -------
    list of ImageRecord
        In document order, one per field of view: every ``imageUrl`` below a
        ``subAssay`` with ``type="human"`` whose basename names the blue channel
        (``_blue``). Images of other subAssays (mouse, ...) and of other sections
        (tissue, ...) are ignored. The symbol is the entry's ``<name>`` (else the id);
        the cell line is the text of the ``cellLine`` of the enclosing ``data`` element;
        the antibody is the ``id`` of the enclosing ``antibody`` element. When a field
        is listed twice (the composite and a single blue image, say), the URL naming the
        most colours wins.

    Raises
    ------
    ValueError
        If ``data`` is not well-formed XML, uses entity declarations (``defusedxml``
        refuses them: entity expansion is a denial-of-service vector), or its root is not
        ``proteinAtlas``. The message names the gene.
    """
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise ValueError(f"HPA XML of {ensembl_id}: refused unsafe XML ({exc})") from exc
    except ParseError as exc:
        raise ValueError(f"HPA XML of {ensembl_id}: not well-formed XML ({exc})") from exc
    if _local(root.tag) != "proteinAtlas":
        raise ValueError(f"HPA XML of {ensembl_id}: root element is <{_local(root.tag)}>, expected <proteinAtlas>")

    entries = [e for e in root if _local(e.tag) == "entry"]
    matching = [
        e
        for e in entries
        if any(_local(c.tag) == "identifier" and c.get("id") == ensembl_id for c in e.iter() if c is not e)
    ]
    entries = matching or entries

    records: list[ImageRecord] = []
    for entry in entries:
        symbol = _text(_child(entry, "name")) or ensembl_id
        candidates, yellow = _human_image_urls(entry)

        chosen: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}
        for cand in candidates:
            key = _field_key(cand[0])
            best = chosen.get(key)
            if best is None or len(_split_colours(_url_basename(cand[0]))[1]) > len(
                _split_colours(_url_basename(best[0]))[1]
            ):
                chosen[key] = cand
        for key, (url, cell_line, antibody) in chosen.items():
            basename = _url_basename(url)
            match = _STEM.fullmatch(key[1])
            records.append(
                ImageRecord(
                    url=url,
                    basename=basename,
                    symbol=symbol,
                    ensembl_id=ensembl_id,
                    cell_line=cell_line,
                    antibody=antibody,
                    plate=match["plate"] if match else None,
                    well=match["well"] if match else None,
                    field=match["field"] if match else None,
                    yellow_url=yellow.get(key),
                )
            )
    return records


# ---------------------------------------------------------------------------------------
# Acquisition
# ---------------------------------------------------------------------------------------


def _rebase(url: str, base_url: str | None) -> str:
    """Replace the scheme and host of ``url`` by ``base_url`` (which may carry a path prefix).

    ``url`` is returned unchanged when ``base_url`` is None.
    """
    if base_url is None:
        return url
    base = urlsplit(base_url.rstrip("/"))
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path + parts.path, parts.query, ""))


def _normalise_genes(genes) -> list[tuple[str, str | None]]:
    if isinstance(genes, (str, os.PathLike)):
        return read_gene_list(genes)
    out: dict[str, str | None] = {}
    for k, gene in enumerate(genes):
        if isinstance(gene, str):
            gene_id, symbol = gene, None
        else:
            gene_id, symbol = gene[0], (gene[1] if len(gene) > 1 else None)
        if not isinstance(gene_id, str) or not ENSEMBL_PATTERN.fullmatch(gene_id):
            raise ValueError(
                f"genes[{k}]: {gene_id!r} is not an Ensembl gene id; expected 'ENSG' followed by 11 digits"
            )
        out.setdefault(gene_id, symbol or None)
    return list(out.items())


def _gene_list(genes, max_genes: int | None) -> list[tuple[str, str | None]]:
    """Return the first ``max_genes`` genes as ``(ensembl_id, symbol)``; raise if there are none."""
    gene_list = _normalise_genes(genes)
    if max_genes is not None:
        gene_list = gene_list[:max_genes]
    if not gene_list:
        raise ValueError("genes: empty gene list; expected at least one Ensembl id")
    return gene_list


def _merge_reports(reports: Iterable[DownloadReport]) -> DownloadReport:
    reports = list(reports)
    return DownloadReport(
        done=[e for r in reports for e in r.done],
        skipped=[e for r in reports for e in r.skipped],
        failed=[f for r in reports for f in r.failed],
    )


def _check_limit(name: str, value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: expected None or an integer >= 1")
    return value


def acquire_hpa(
    genes,
    raw_dir: str | os.PathLike,
    *,
    base_url: str = "https://www.proteinatlas.org",
    image_base_url: str | None = None,
    max_genes: int | None = None,
    max_images_per_gene: int | None = None,
    workers: int = 4,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: bool = True,
    session=None,
    fields_path: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Download HPA immunofluorescence fields of a list of genes and write ``fields.csv``.

    Parameters
    ----------
    genes : path-like or iterable
        A gene list file (see :func:`read_gene_list`), or Ensembl ids, or
        ``(ensembl_id, symbol)`` pairs. A symbol given here is used only when the XML has
        no ``<name>``.
    raw_dir : path-like
        Destination. XML goes to ``raw_dir/xml/<ENSG>.xml``, images to
        ``raw_dir/<symbol>/<basename>`` (symbol and basename sanitised to
        ``[A-Za-z0-9._-]``), the field table to ``raw_dir/fields.csv``.
    base_url : str
        Where ``{base_url}/{ENSG}.xml`` is fetched from.
    image_base_url : str, optional
        When given, replaces the scheme and host of the image URLs listed in the XML
        (which are absolute, ``https://images.proteinatlas.org/...``): for a local mirror.
        A relative URL in the XML is resolved against ``base_url``; one that is not
        http(s) (``file:``, ...) is reported as a failure, never fetched.
    max_genes, max_images_per_gene : int, optional
        Take only the first genes of the list, and the first composites of each gene in
        document order.
    workers, retries, backoff, timeout, progress, session
        Passed to :func:`~workflow_scripts.download.download_all`; ``workers`` bounds the
        concurrent requests to the atlas (keep it polite).
    fields_path : path-like, optional
        Where the field table goes instead of ``raw_dir/fields.csv`` (the workflow keeps it
        under ``results/<dataset>/raw`` when the files land in a folder of the user's); its
        paths stay relative to ``raw_dir``.

    Returns
    -------
    pandas.DataFrame
        The field table as written (columns in the module docstring). ``attrs`` holds
        ``genes_without_images`` (Ensembl ids whose XML lists no human composite; logged,
        not an error) and ``n_genes``.

    Raises
    ------
    DownloadError
        If any XML or image failed to download or an XML could not be parsed (the bad XML
        is removed so that a re-run fetches it again). Everything that did arrive stays;
        ``fields.csv`` is not written, so a re-run resumes and skips the complete files.
    ValueError
        If a gene id is invalid, or no gene has any image.
    """
    max_genes = _check_limit("max_genes", max_genes)
    max_images_per_gene = _check_limit("max_images_per_gene", max_images_per_gene)
    gene_list = _gene_list(genes, max_genes)
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    fields_path = Path(fields_path) if fields_path is not None else raw_dir / FIELDS_NAME
    fields_path.parent.mkdir(parents=True, exist_ok=True)
    # fields.csv marks a complete acquisition: a stale one from an earlier run must not
    # survive a run that fails.
    fields_path.unlink(missing_ok=True)
    opts = dict(workers=workers, retries=retries, backoff=backoff, timeout=timeout, progress=progress, session=session)
    base = base_url.rstrip("/")
    per_gene, reports = _fetch_records(gene_list, raw_dir, base, max_images_per_gene, opts)
    without_images = [gene for gene, records in per_gene if not records]
    kept = [rec for _, records in per_gene for rec in records]
    plan = _plan_images(kept, base, image_base_url)
    _warn_without_images(without_images, len(gene_list))
    if plan.bad_urls:
        reports.append(DownloadReport(done=[], skipped=[], failed=plan.bad_urls))
    reports.append(download_all(list(plan.entries.values()), raw_dir, **opts))
    report = _merge_reports(reports)
    if report.failed:
        raise DownloadError(report.summary())
    if not plan.rows:
        raise ValueError(
            f"HPA: none of the {len(gene_list)} genes lists a human immunofluorescence composite; "
            f"nothing to write to {fields_path}"
        )
    table = _write_fields(fields_path, plan)
    table.attrs["genes_without_images"] = without_images
    table.attrs["n_genes"] = len(gene_list)
    log.info(
        "HPA: %d fields of %d genes (%d without images) in %s",
        len(table),
        len(gene_list),
        len(without_images),
        raw_dir,
    )
    return table


def _warn_without_images(without_images: list[str], n_genes: int) -> None:
    """Log the genes whose XML lists no composite (not an error), the first 20 by name."""
    if without_images:
        log.warning(
            "HPA: %d of %d genes list no human immunofluorescence composite: %s",
            len(without_images),
            n_genes,
            ", ".join(without_images[:20]) + (" ..." if len(without_images) > 20 else ""),
        )


def _write_fields(fields_path: Path, plan: _ImagePlan) -> pd.DataFrame:
    """Write the field table of ``plan`` (without ``file_yellow`` when it is not used)."""
    table = pd.DataFrame(plan.rows)
    if not plan.use_yellow:
        table = table.drop(columns="file_yellow")
    write_csv(fields_path, table)
    return table


def _fetch_records(
    gene_list: list[tuple[str, str | None]],
    raw_dir: Path,
    base: str,
    max_images_per_gene: int | None,
    opts: dict,
) -> tuple[list[tuple[str, list[ImageRecord]]], list[DownloadReport]]:
    """Download and parse the XML of every gene: ``(gene, records)`` and the reports so far.

    A gene whose XML failed to download is left out (its failure is in the report); one
    whose XML cannot be parsed too, and the bad document is removed so that a re-run
    fetches it again.
    """
    xml_entries = {gene: DownloadEntry(url=f"{base}/{gene}.xml", path=f"xml/{gene}.xml") for gene, _ in gene_list}
    xml_report = download_all(list(xml_entries.values()), raw_dir, **opts)
    reports = [xml_report]
    failed_xml = {entry.url for entry, _ in xml_report.failed}
    parse_failures: list[tuple[DownloadEntry, str]] = []
    per_gene: list[tuple[str, list[ImageRecord]]] = []
    for gene, list_symbol in gene_list:
        entry = xml_entries[gene]
        if entry.url in failed_xml:
            continue
        xml_path = raw_dir / entry.path
        try:
            records = parse_gene_xml(xml_path.read_bytes(), gene)
        except ValueError as exc:
            # A complete but unusable document (an error page served with status 200,
            # say): remove it so the next run fetches it again, and report it.
            xml_path.unlink(missing_ok=True)
            parse_failures.append((entry, str(exc)))
            continue
        if list_symbol and records and records[0].symbol == gene:
            records = [_with_symbol(r, list_symbol) for r in records]
        if max_images_per_gene is not None:
            records = records[:max_images_per_gene]
        per_gene.append((gene, records))
    if parse_failures:
        reports.append(DownloadReport(done=[], skipped=[], failed=parse_failures))
    return per_gene, reports


@dataclass
class _ImagePlan:
    """The field table rows, the image downloads they need and the URLs refused."""

    rows: list[dict] = field(default_factory=list)
    entries: dict[str, DownloadEntry] = field(default_factory=dict)  # relative path -> entry
    bad_urls: list[tuple[DownloadEntry, str]] = field(default_factory=list)
    use_yellow: bool = False


def _plan_images(kept: list[ImageRecord], base: str, image_base_url: str | None) -> _ImagePlan:
    """Give every kept record its local paths, download entries and field table row.

    The ER channel is a column only when every field has it; otherwise it is not fetched.
    """
    plan = _ImagePlan(use_yellow=bool(kept) and all(rec.yellow_url is not None for rec in kept))
    image_ids: set[str] = set()
    for rec in kept:
        folder = sanitize_name(rec.symbol)
        listed = [rec.url] + ([rec.yellow_url] if plan.use_yellow else [])
        absolute = [urljoin(f"{base}/", url) for url in listed]
        unusable = [url for url in absolute if urlsplit(url).scheme not in ("http", "https")]
        if unusable:
            # An untrusted document may list anything; report it rather than fetch it.
            for url in unusable:
                entry = DownloadEntry(url=url, path=f"{folder}/{sanitize_name(_url_basename(url))}")
                plan.bad_urls.append((entry, f"{rec.ensembl_id}: image URL {url!r} is not an http(s) URL"))
            continue
        fetch = [_rebase(url, image_base_url) for url in absolute]
        blue_path = _claim_path(plan.entries, folder, rec.url, fetch[0])
        yellow_path = _claim_path(plan.entries, folder, rec.yellow_url, fetch[1]) if plan.use_yellow else None
        image_id = _unique(sanitize_name(f"{rec.symbol}_{rec.stem}"), image_ids)
        plan.rows.append(_field_row(rec, image_id, blue_path, yellow_path))
    return plan


def _field_row(rec: ImageRecord, image_id: str, blue_path: str, yellow_path: str | None) -> dict:
    """Return the field table row of one record (columns in the module docstring)."""
    group_stem = f"{rec.plate}_{rec.well}" if rec.plate and rec.well else rec.stem
    return {
        "image": image_id,
        "file_red": blue_path,
        "file_green": blue_path,
        "file_blue": blue_path,
        "file_yellow": yellow_path,
        "Metadata_class": rec.symbol,
        "Metadata_group": sanitize_name(f"{rec.cell_line or 'unknown'}_{group_stem}"),
        "Metadata_gene": rec.ensembl_id,
        "Metadata_cell_line": rec.cell_line,
        "Metadata_plate": rec.plate,
        "Metadata_well": rec.well,
        "Metadata_field": rec.field,
        "Metadata_antibody": rec.antibody,
        "Metadata_url": rec.url,
    }


def _with_symbol(record: ImageRecord, symbol: str) -> ImageRecord:
    return replace(record, symbol=symbol)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when taken; the result is added to ``taken``."""
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}-{k}"
    taken.add(out)
    return out


def _claim_path(entries: dict[str, DownloadEntry], folder: str, listed_url: str, fetch_url: str) -> str:
    """Return the path (relative to raw_dir, posix) of ``listed_url`` under ``folder``.

    Its download entry is added to ``entries``. The path is ``<folder>/<basename>`` unless
    another URL already took that name; then the URL's directory is prefixed
    (``<folder>/<dir>_<basename>``).
    """
    basename = sanitize_name(_url_basename(listed_url))
    candidates = [f"{folder}/{basename}"]
    parent = PurePosixPath(urlsplit(listed_url).path).parent.name
    if parent:
        candidates.append(f"{folder}/{sanitize_name(parent)}_{basename}")
    for path in candidates:
        existing = entries.get(path)
        if existing is None or existing.url == fetch_url:
            entries[path] = DownloadEntry(url=fetch_url, path=path)
            return path
    stem, suffix = os.path.splitext(candidates[-1])
    k = 2
    while f"{stem}-{k}{suffix}" in entries and entries[f"{stem}-{k}{suffix}"].url != fetch_url:
        k += 1
    path = f"{stem}-{k}{suffix}"
    entries[path] = DownloadEntry(url=fetch_url, path=path)
    return path
