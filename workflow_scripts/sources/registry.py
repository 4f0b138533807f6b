"""What the workflow knows about each image source (``datasets.<name>.source``), by name.

One :class:`SourceSpec` per source says how the Snakefile treats its datasets: whether they
give whole fields of view (segmented here) or pre-cropped cells, whether a download job
fetches them, which config entries name files that must exist before the run, what the
acquisition job and the indexing checkpoint take as input, and how big a shard is for the
cluster's memory and time requests (:meth:`SourceSpec.shard_size`). The code that acquires and reads the images lives in
the module each spec names (:attr:`SourceSpec.module`), imported by the jobs only.

The Snakefile imports this module when it parses the workflow, so it imports nothing but
the standard library and :mod:`workflow_scripts.datasets`, both light.

Examples
--------
>>> source_spec("hpa").downloads
True
>>> FIELD_SOURCES
('synthetic', 'local', 'manifest', 'hpa', 'bbbc')
>>> source_spec("hpa").index_inputs("screen", {"source": "hpa", "metadata": "m.csv"})
{'metadata': 'm.csv', 'fields_table': 'results/screen/raw/fields.csv'}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from workflow_scripts import datasets as ds_lib

__all__ = [
    "ASSUMED_FIELD_PIXELS",
    "DOWNLOAD_SOURCES",
    "FIELD_SOURCES",
    "INDEXED_SOURCES",
    "SOURCES",
    "SYNTHETIC_KNOBS",
    "SourceSpec",
    "dataset_root",
    "source_spec",
    "sources_where",
]

#: Pixels of one field where the configuration does not say (real microscopy: 2048 x 2048).
ASSUMED_FIELD_PIXELS = 2048 * 2048

#: Options of the synthetic source that default to its difficulty's value (None = preset);
#: the keys of :data:`workflow_scripts.sources.synthetic.DIFFICULTIES` presets, in order.
SYNTHETIC_KNOBS = (
    "classes",
    "expression_sd",
    "dim_fraction",
    "channel_gain_sd",
    "background",
    "defocus",
    "out_of_focus_fraction",
)

#: Entry keys naming files an indexing job reads, for every source that has them.
_INDEX_FILE_KEYS = ("metadata", "fields_table", "array", "labels")
#: Entry keys naming input files that must exist when the run starts, in the order checked.
_INPUT_FILE_KEYS = ("metadata", "fields_table", "array", "labels", "manifest", "genes")


def dataset_root(dataset: str, entry: dict) -> str:
    """Return the folder the image paths of a dataset are relative to.

    The entry's ``path`` (the user's folder for local and crops, the download folder when
    given for the downloading sources), else ``results/<dataset>/raw``.

    Parameters
    ----------
    dataset : str
        Dataset name.
    entry : dict
        Its config entry.

    Returns
    -------
    str
        The folder.

    Examples
    --------
    >>> dataset_root("screen", {"source": "manifest"})
    'results/screen/raw'
    >>> dataset_root("mine", {"source": "local", "path": "/data/plate1"})
    '/data/plate1'
    """
    return entry.get("path") or f"results/{dataset}/raw"


@dataclass(frozen=True)
class SourceSpec:
    """How the workflow treats the datasets of one source.

    Attributes
    ----------
    name : str
        The ``datasets.<name>.source`` value.
    module : str
        The module holding the source's code (acquisition, listing, reading).
    whole_fields : bool
        Whether the source gives whole fields of view to segment; pre-cropped cells
        (``crops``) go straight to the cell arrays.
    indexed : bool
        Whether the fields are listed by the ``index_dataset`` checkpoint rather than known
        from the config alone (every source but ``synthetic``).
    downloads : bool
        Whether a download job fetches the images (into :func:`dataset_root`, by default
        ``results/<dataset>/raw``); download jobs run on the submitting machine, as
        cluster compute nodes often have no internet. Otherwise the images are generated
        (``synthetic``) or are the user's files at ``path`` (``local``, ``crops``).
    shard_geometry : callable
        ``(entry, shard, resize_to, index_rows) -> (fields, pixels per field)`` of one
        shard (see :meth:`shard_size`); ``index_rows`` is a callable giving the number of
        indexed fields.
    lists_user_files : bool
        Whether the index lists the user's folder (``local``, ``crops``), so the listing's
        fingerprint must make Snakemake re-index it when files change.
    fixed_channels : tuple of dict or None
        The channels (name and role) when the source fixes them (``synthetic``); None when
        the config gives them, and they are checked.
    needs_nucleus : bool
        Whether a channel with role ``nucleus`` is required (to segment nuclei).
    files_needed_at_start : tuple of str
        Entry keys naming files that must exist before the run, in the order checked.
    acquired : dict
        Index input name -> path template (``{dataset}``) of the file the acquisition job
        writes and the indexing job reads.
    acquire_options : callable or None
        ``entry -> dict``: the options of the acquisition job (see :meth:`options`).
    """

    name: str
    module: str
    whole_fields: bool
    indexed: bool
    downloads: bool
    shard_geometry: Callable[[dict, str, int, Callable[[], int]], tuple[int, int]]
    lists_user_files: bool = False
    fixed_channels: tuple[dict, ...] | None = None
    needs_nucleus: bool = True
    files_needed_at_start: tuple[str, ...] = _INPUT_FILE_KEYS
    acquired: dict[str, str] = field(default_factory=dict, hash=False)
    acquire_options: Callable[[dict], dict] | None = None

    def options(self, entry: dict) -> dict:
        """Return the options the acquisition job of a dataset takes from its entry.

        Parameters
        ----------
        entry : dict
            The dataset's config entry (defaults filled in, channels normalised).

        Returns
        -------
        dict
            The options; empty for a source without an acquisition job of its own.

        Examples
        --------
        >>> source_spec("hpa").options({"source": "hpa", "genes": "g.csv", "max_genes": 3})
        {'max_genes': 3}
        >>> source_spec("local").options({"source": "local"})
        {}
        """
        return {} if self.acquire_options is None else self.acquire_options(entry)

    def index_inputs(self, dataset: str, entry: dict) -> dict[str, str]:
        """Return the files the indexing job of a dataset reads, by input name.

        The entry's ``metadata``, ``fields_table``, ``array`` and ``labels`` files, then
        what the acquisition job writes (:attr:`acquired`; a downloaded field table
        replaces a ``fields_table`` of the entry).

        Parameters
        ----------
        dataset : str
            Dataset name.
        entry : dict
            Its config entry.

        Returns
        -------
        dict
            Input name -> path.

        Examples
        --------
        >>> source_spec("manifest").index_inputs("d", {"source": "manifest"})
        {'download': 'results/d/acquire/download.json'}
        """
        inputs = {key: entry[key] for key in _INDEX_FILE_KEYS if entry.get(key)}
        inputs.update({key: template.format(dataset=dataset) for key, template in self.acquired.items()})
        return inputs

    def fingerprinted(self, entry: dict) -> bool:
        """Tell whether the indexing job needs a fingerprint of the files under ``path``.

        True for the user's folders (``local``, ``crops``) listed by pattern: adding or
        replacing an image must re-index the dataset (downloaded datasets are re-indexed
        when their download reruns; a field table is an input file itself).

        Parameters
        ----------
        entry : dict
            The dataset's config entry.

        Returns
        -------
        bool
            Whether to fingerprint ``entry["path"]``.

        Examples
        --------
        >>> source_spec("local").fingerprinted({"path": "imgs", "pattern": ".*tif"})
        True
        >>> source_spec("local").fingerprinted({"path": "imgs", "fields_table": "f.csv"})
        False
        """
        return self.lists_user_files and bool(entry.get("path")) and not entry.get("fields_table")

    def listing(self, entry: dict) -> str:
        """Return the fingerprint of the dataset's file listing, or ``""`` when not needed.

        A short hash of the matching files' names, sizes and times (see
        :func:`workflow_scripts.sources.local.listing_fingerprint`), given to the indexing
        rule as a parameter so that changed files re-index the dataset.

        Parameters
        ----------
        entry : dict
            The dataset's config entry.

        Returns
        -------
        str
            The fingerprint, or ``""`` where :meth:`fingerprinted` is False.
        """
        if not self.fingerprinted(entry):
            return ""
        # Imported on use: it needs numpy and pandas, which parsing the workflow does not.
        from workflow_scripts.sources.local import listing_fingerprint

        return listing_fingerprint(entry["path"], entry.get("pattern"))

    def shard_size(self, entry: dict, shard: str, *, resize_to: int, index_rows: Callable[[], int]) -> tuple[int, int]:
        """Return the fields of one shard and the pixels of one field, for the cluster's requests.

        Synthetic shards hold their fields at ``field_size``; a crops shard is
        ``cells_per_shard`` crops of twice ``resize_to``; other shards hold as many fields as the
        index puts in one (shards grow past ``max_shards``), each of
        :data:`ASSUMED_FIELD_PIXELS`.

        Parameters
        ----------
        entry : dict
            The dataset's config entry.
        shard : str
            Shard name (``s0000``, ...).
        resize_to : int
            ``crop.resize_to`` of the config (the side of a cell crop).
        index_rows : callable
            Returns the number of fields in the dataset's index; called only for sources
            whose shards are sized from it.

        Returns
        -------
        fields : int
            Fields (or crops) in the shard.
        pixels : int
            Pixels of one field (height x width).

        Examples
        --------
        >>> entry = {"source": "synthetic", "n_fields": 10, "shard_size": 4, "field_size": 100}
        >>> source_spec("synthetic").shard_size(entry, "s0002", resize_to=64, index_rows=len)
        (2, 10000)
        """
        return self.shard_geometry(entry, shard, resize_to, index_rows)


# --- per-source pieces ---------------------------------------------------------------------


def _synthetic_options(entry: dict) -> dict:
    options = {
        "size": entry["field_size"],
        "cells_per_field": entry["cells_per_field"],
        "batch_sd": entry["batch_sd"],
        "difficulty": entry["difficulty"],
        **{key: entry.get(key) for key in SYNTHETIC_KNOBS},
    }
    # The plate layout's options only where it is on: a dataset without plates keeps the
    # options (the rule's params) it had, so Snakemake does not re-run its jobs.
    if entry.get("plates"):
        options["plates"] = entry["plates"]
        options["n_fields"] = entry["n_fields"]
        layout_knobs = ("controls_per_plate", "plate_effect_sd", "well_effect")  # left out: the generator's
        options.update({key: entry[key] for key in layout_knobs if entry.get(key) is not None})
    return options


def _hpa_options(entry: dict) -> dict:
    keys = ("max_genes", "max_images_per_gene", "base_url", "image_base_url", "yellow")
    return {k: entry[k] for k in keys if k in entry}


def _bbbc_options(entry: dict) -> dict:
    return {
        "archives": entry["archives"],
        "image_csv": entry["image_csv"],
        "moa_csv": entry.get("moa_csv"),
        "channels": [c["key"] for c in entry["channels"]],
    }


def _synthetic_shard(entry: dict, shard: str, resize_to: int, index_rows) -> tuple[int, int]:
    """Fields of the shard (the last one may be short) at the configured field size."""
    return len(ds_lib.shard_fields(entry, shard)), entry["field_size"] ** 2


def _crops_shard(entry: dict, shard: str, resize_to: int, index_rows) -> tuple[int, int]:
    """``cells_per_shard`` crops (what the index puts in one shard) of twice the model input size."""
    return int(entry["cells_per_shard"]), (2 * resize_to) ** 2


def _indexed_shard(entry: dict, shard: str, resize_to: int, index_rows) -> tuple[int, int]:
    """Fields per shard from the index (shards grow past ``max_shards``), of an assumed size."""
    return ds_lib.effective_shard_size(entry, index_rows()), ASSUMED_FIELD_PIXELS


_RAW_FIELDS = {"fields_table": "results/{dataset}/raw/fields.csv"}

#: Every source, by name. The order is that of the config schema's ``source`` enum.
SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            name="synthetic",
            module="workflow_scripts.sources.synthetic",
            whole_fields=True,
            indexed=False,
            downloads=False,
            fixed_channels=ds_lib.SYNTHETIC_CHANNELS,
            files_needed_at_start=(),
            acquire_options=_synthetic_options,
            shard_geometry=_synthetic_shard,
        ),
        SourceSpec(
            name="local",
            module="workflow_scripts.sources.local",
            whole_fields=True,
            indexed=True,
            downloads=False,
            lists_user_files=True,
            files_needed_at_start=("path", *_INPUT_FILE_KEYS),
            shard_geometry=_indexed_shard,
        ),
        SourceSpec(
            name="crops",
            module="workflow_scripts.sources.crops",
            whole_fields=False,
            indexed=True,
            downloads=False,
            lists_user_files=True,
            needs_nucleus=False,
            files_needed_at_start=("path", *_INPUT_FILE_KEYS),
            shard_geometry=_crops_shard,
        ),
        SourceSpec(
            name="manifest",
            module="workflow_scripts.download",
            whole_fields=True,
            indexed=True,
            downloads=True,
            acquired={"download": "results/{dataset}/acquire/download.json"},
            shard_geometry=_indexed_shard,
        ),
        SourceSpec(
            name="hpa",
            module="workflow_scripts.sources.hpa",
            whole_fields=True,
            indexed=True,
            downloads=True,
            acquired=_RAW_FIELDS,
            acquire_options=_hpa_options,
            shard_geometry=_indexed_shard,
        ),
        SourceSpec(
            name="bbbc",
            module="workflow_scripts.sources.bbbc",
            whole_fields=True,
            indexed=True,
            downloads=True,
            acquired=_RAW_FIELDS,
            acquire_options=_bbbc_options,
            shard_geometry=_indexed_shard,
        ),
    )
}


def source_spec(name: str) -> SourceSpec:
    """Return the spec of source ``name``.

    Parameters
    ----------
    name : str
        A ``datasets.<name>.source`` value.

    Returns
    -------
    SourceSpec
        Its spec.

    Raises
    ------
    ValueError
        If no source has that name; the message lists the known ones.

    Examples
    --------
    >>> source_spec("crops").whole_fields
    False
    >>> source_spec("s3")
    Traceback (most recent call last):
    ...
    ValueError: unknown source 's3'; expected one of ['synthetic', 'local', 'crops', 'manifest', 'hpa', 'bbbc']
    """
    spec = SOURCES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown source {name!r}; expected one of {list(SOURCES)}")
    return spec


def sources_where(**flags: bool) -> tuple[str, ...]:
    """Return the names of the sources whose spec has every given flag value, in order.

    Parameters
    ----------
    **flags : bool
        :class:`SourceSpec` attribute -> required value (``whole_fields=True``, ...).

    Returns
    -------
    tuple of str
        Source names, in :data:`SOURCES` order.

    Raises
    ------
    ValueError
        If a flag is not a boolean attribute of :class:`SourceSpec`.

    Examples
    --------
    >>> sources_where(whole_fields=True, indexed=True)
    ('local', 'manifest', 'hpa', 'bbbc')
    """
    known = [f.name for f in fields(SourceSpec) if f.type == "bool"]
    unknown = [f for f in flags if f not in known]
    if unknown:
        raise ValueError(f"sources_where: unknown flag(s) {unknown}; expected some of {known}")
    return tuple(n for n, spec in SOURCES.items() if all(getattr(spec, f) == v for f, v in flags.items()))


#: Sources that give whole fields of view (segmented here); ``crops`` gives cells directly.
FIELD_SOURCES = sources_where(whole_fields=True)
#: Sources whose fields are listed by the indexing job (a Snakemake checkpoint), not known
#: from the config alone.
INDEXED_SOURCES = sources_where(indexed=True)
#: Sources that download (their download rules run on the submitting machine: cluster
#: compute nodes often have no internet).
DOWNLOAD_SOURCES = sources_where(downloads=True)
