"""The files a configuration produces: feature tables, metrics, profiles, pages, figures.

One home for the workflow's output paths, so the rules (through ``rules/common.smk``) and the
tests agree on them. Every method takes a dataset name, or the literal ``"{dataset}"`` where a
rule's output pattern is wanted. Pure: no Snakemake, no file access.
"""

from __future__ import annotations

from pathlib import Path

from workflow_scripts.configuration import explorer_layer_names
from workflow_scripts.models.spec import feature_layers
from workflow_scripts.sources.registry import source_spec

__all__ = ["RANDOM_CNN_LAYERS", "Targets"]

#: Layers of the random-weights CNN baseline.
RANDOM_CNN_LAYERS = ["conv1", "conv2", "conv3", "conv4"]


class Targets:
    """Output paths of a resolved configuration.

    Parameters
    ----------
    config : dict
        The resolved configuration (:func:`workflow_scripts.configuration.resolve_config`).
    models : dict
        The resolved models, name -> parameters, in the order configured.
    datasets : dict
        The datasets of this run, name -> entry.

    Examples
    --------
    >>> from workflow_scripts.configuration import resolve_config
    >>> r = resolve_config({"datasets": {"demo": {"source": "synthetic"}},
    ...                     "models": {"vae": {"family": "vae"}}})
    >>> targets = Targets(r.config, r.models, r.datasets)
    >>> targets.model_layers("vae")
    ['conv1', 'conv2', 'conv3', 'conv4', 'mu']
    >>> targets.explorer_pages("demo")
    ['results/demo/explorer/vae/mu.html']
    """

    def __init__(self, config: dict, models: dict, datasets: dict):
        self.config = config
        self.models = models
        self.datasets = datasets

    def model_layers(self, model: str) -> list[str]:
        """Return the feature tables of a model: one per layer and pooling."""
        params = self.models[model]
        return feature_layers(params["family"], params, self.config["features"]["pooling"])

    def trained_models(self) -> list[str]:
        """Return the models this workflow trains (not those reusing weights)."""
        return [name for name, params in self.models.items() if not params["weights"]]

    def model_weights(self, model: str) -> dict[str, str]:
        """Return the weights and ``model.json`` a model's features come from.

        Parameters
        ----------
        model : str
            A model name.

        Returns
        -------
        dict
            ``weights`` and ``config`` paths: trained here (patterns with ``{dataset}``), or
            the reused ones.
        """
        weights = self.models[model]["weights"]
        if weights:
            return {"weights": weights, "config": str(Path(weights).with_name("model.json"))}
        return {
            "weights": f"results/{{dataset}}/models/{model}/weights.safetensors",
            "config": f"results/{{dataset}}/models/{model}/model.json",
        }

    def baseline_layers(self) -> list[tuple[str, str]]:
        """Return (name, layer) of every baseline evaluated beside the models, pixel PCA first."""
        baselines = self.config["baselines"]
        layers = [("pca", "pixels")]
        if baselines["handcrafted"]:
            layers.append(("handcrafted", "all"))
        if baselines["random_cnn"]:
            layers += [("random_cnn", layer) for layer in RANDOM_CNN_LAYERS]
        if baselines["cell_count"]:
            layers.append(("cellcount", "count"))
        return layers

    def all_layers(self) -> list[tuple[str, str]]:
        """Return (name, layer) of every feature table: the baselines, then each model's."""
        return self.baseline_layers() + [(m, layer) for m in self.models for layer in self.model_layers(m)]

    def feature_tables(self, dataset: str) -> list[str]:
        """Return every feature table of a dataset, the baselines first."""
        return [f"results/{dataset}/features/{name}/{layer}.parquet" for name, layer in self.all_layers()]

    def metric_files(self, dataset: str) -> list[str]:
        """Return the metrics file of every feature table of a dataset."""
        return [f"results/{dataset}/metrics/{name}/{layer}.json" for name, layer in self.all_layers()]

    def profile_tables(self, dataset: str) -> list[str]:
        """Return the per-group profiles of every feature table of a dataset."""
        return [f"results/{dataset}/profiles/{name}/{layer}.parquet" for name, layer in self.all_layers()]

    def screen_files(self, dataset: str, suffix: str) -> list[str]:
        """Return a screen output of every feature table; none for a dataset without a layout.

        Parameters
        ----------
        dataset : str
            A dataset name (not the wildcard: whether it is a screen depends on it).
        suffix : str
            ``.json`` (the metrics after each step), ``.wells.parquet`` or
            ``.consensus.parquet``.

        Returns
        -------
        list of str
            One path per feature table, the baselines first.
        """
        if not self.datasets[dataset].get("layout"):
            return []
        return [f"results/{dataset}/screen/{name}/{layer}{suffix}" for name, layer in self.all_layers()]

    def h5ad_tables(self, dataset: str) -> list[str]:
        """Return the AnnData exports (per cell and per group); none when ``profiles.h5ad`` is off."""
        if not self.config["profiles"]["h5ad"]:
            return []
        return [
            path.replace(".parquet", suffix)
            for path in self.profile_tables(dataset)
            for suffix in (".cells.h5ad", ".h5ad")
        ]

    def evaluated_layers(self) -> dict[str, list[tuple[str, str]]]:
        """Return evaluation job -> the (name, layer) tables it evaluates.

        One job (``baselines``) for all baselines, then one per model.
        """
        out = {}
        if self.baseline_layers():
            out["baselines"] = self.baseline_layers()
        for model in self.models:
            out[model] = [(model, layer) for layer in self.model_layers(model)]
        return out

    def explorer_layers(self, dataset: str) -> list[tuple[str, str, str]]:
        """Return (model, layer, page) of every explorer page of a dataset."""
        return [
            (model, layer, f"results/{dataset}/explorer/{model}/{layer}.html")
            for model in self.models
            for layer in explorer_layer_names(self.config, self.models, model)
        ]

    def explorer_pages(self, dataset: str) -> list[str]:
        """Return the explorer pages of a dataset."""
        return [page for _, _, page in self.explorer_layers(dataset)]

    def explorer_coord_files(self, dataset: str) -> list[str]:
        """Return the 2-D coordinates written beside every explorer page."""
        return [page[: -len(".html")] + ".coords.parquet" for page in self.explorer_pages(dataset)]

    def explorer_features(self, dataset: str) -> list[str]:
        """Return the feature table of every explorer page, in page order."""
        return [
            f"results/{dataset}/features/{model}/{layer}.parquet" for model, layer, _ in self.explorer_layers(dataset)
        ]

    def guided_pairs(self) -> dict[str, str]:
        """Return guided model -> the unguided model of its family it is compared with."""
        pairs = {}
        for name, params in self.models.items():
            if params.get("guided"):
                base = [o for o, p in self.models.items() if p["family"] == params["family"] and not p.get("guided")]
                if base:
                    pairs[name] = base[0]
        return pairs

    def final_outputs(self) -> list[str]:
        """Return what ``snakemake all`` builds.

        Per dataset: the metric summary and comparison, the best layer's and the hand-crafted
        maps, profiles, explorer pages, QC, and every trained model's figures.
        """
        outputs = []
        for dataset in self.datasets:
            outputs += self._dataset_outputs(dataset)
            for model in self.trained_models():
                outputs += [
                    f"results/{dataset}/models/{model}/{name}" for name in ("learning_curve.png", "reconstructions.png")
                ]
                if self.models[model]["input"] == "tiles":
                    outputs.append(f"results/{dataset}/models/{model}/stitched.png")
        return outputs

    def _dataset_outputs(self, dataset: str) -> list[str]:
        handcrafted = self.config["baselines"]["handcrafted"]
        outputs = [
            f"results/{dataset}/metrics/summary.csv",
            f"results/{dataset}/metrics/summary.png",
            f"results/{dataset}/embeddings/best_umap.png",
            *([f"results/{dataset}/embeddings/handcrafted_umap.png"] if handcrafted else []),
            f"results/{dataset}/metrics/comparison.html",
            *self.profile_tables(dataset),
            *self.h5ad_tables(dataset),
            *self.explorer_pages(dataset),
            f"results/{dataset}/qc/drops.csv",
            *self.screen_files(dataset, ".consensus.parquet"),
            *(self.screen_files(dataset, ".consensus.h5ad") if self.config["profiles"]["h5ad"] else []),
        ]
        if self.datasets[dataset].get("layout"):
            outputs += [f"results/{dataset}/metrics/screen.csv", f"results/{dataset}/metrics/screen.png"]
        if source_spec(self.datasets[dataset]["source"]).whole_fields:
            outputs += [f"results/{dataset}/qc/segmentation_overlay.png", f"results/{dataset}/qc/segmentation_qc.png"]
        return outputs
