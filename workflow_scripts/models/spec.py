"""What each model family takes and exposes, without importing torch.

The Snakefile resolves every model entry (preset + explicit keys) and declares one feature
table per layer at parse time, and a dry run of a large screen must stay fast. The family
defaults live here (the schema lists the keys a model entry may carry; README's configuration
reference renders both).
"""

from __future__ import annotations

#: Keys every model entry may carry (training, I/O), with their defaults.
COMMON_DEFAULTS: dict = {
    "input": "cells",
    # Each crop's channels scaled by their own robust range: measured on the hard synthetic
    # default and on real yeast cells, it beats dataset z-scores for every family
    # (README: "Intensity normalisation"; BENCHMARKS.md: "Feature quality").
    "normalize": "cell",
    "preset": "quick",
    "epochs": 15,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 0,
    "augment": True,
    # bf16 autocast on CUDA and on CPUs with native bf16, else fp32 (training.loop.resolve_precision).
    "precision": "auto",
    "schedule": "cosine",
    "compile": False,
    "tensorboard": False,
    "weights": None,
}

_AE = {"latent_dim": 32, "width": 32, "depth": 4, "likelihood": "gaussian"}
_VAE = {**_AE, "beta": 1.0}
#: Expert feedback (vae, scvae): ``guided`` adds the label and anchor terms of
#: workflow_scripts.training.guided for the cells of the ``feedback`` CSV; ``guided_labels`` (the
#: number of feedback labels) is set at training time and recorded with the weights.
_GUIDED = {"guided": False, "guide_weight": 1.0, "feedback": None, "guided_labels": 0}

#: Architecture/loss hyperparameters of each family with their defaults (quick preset).
FAMILY_DEFAULTS: dict[str, dict] = {
    "ae": _AE,
    "vae": {**_VAE, **_GUIDED},
    "scvae": {**_VAE, **_GUIDED},
    "infomax_vae": {
        **_VAE,
        "mi_weight": 1.0,
        "bound": "infonce",
        "alpha": 0.5,
        "critic_dim": 64,
        "critic_lr_factor": 5.0,
    },
    "paired_inpainting": {"width_mult": 0.125, "pair_within": "Metadata_group"},
    "adversarial": {
        "latent_dim": 64,
        "width": 16,
        "depth": 4,
        "gan_loss": "bce",
        "gp_weight": 10.0,
        "mi_weight": 1.0,
        "label_smoothing": 0.1,
        "n_critic": 1,
    },
    # SimCLR (workflow_scripts/models/contrastive.py): encoder + embed layer + projection head;
    # view_* are the strengths of the two random views per cell (module docstring).
    "contrastive": {
        "width": 32,
        "depth": 4,
        "embed_dim": 128,
        "proj_dim": 64,
        "temperature": 0.2,
        "view_scale": 0.15,
        "view_shift": 0.08,
        "view_padding": "reflection",
        "view_intensity": 0.2,
        "view_offset": 0.1,
        "view_gamma": 0.3,
        "view_blur_p": 0.5,
        "view_blur_sigma": 1.5,
        "view_noise": 0.1,
        # The second view of a cell is drawn from another cell of its group (field, well):
        # what the two share is then the group's phenotype rather than the cell's own shape
        # (the assumption paired cell inpainting makes). null: two views of the same cell.
        "pair_within": "Metadata_group",
    },
}

FAMILIES: tuple[str, ...] = tuple(FAMILY_DEFAULTS)

#: ``full`` = the reference networks' sizes (for GPUs); ``quick`` = slim networks that train on
#: a CPU in minutes (the defaults above).
PRESETS: dict[str, dict[str, dict]] = {
    "quick": {family: {} for family in FAMILIES},
    "full": {
        "ae": {"latent_dim": 256, "width": 32, "depth": 5, "epochs": 100},
        "vae": {"latent_dim": 64, "width": 32, "depth": 5, "epochs": 100, "patience": 10},
        "scvae": {"latent_dim": 64, "width": 32, "depth": 5, "epochs": 100, "patience": 10},
        "infomax_vae": {"latent_dim": 64, "width": 32, "depth": 5, "epochs": 100, "patience": 10},
        "paired_inpainting": {"width_mult": 1.0, "lr": 1e-4, "epochs": 30},
        "adversarial": {"latent_dim": 128, "width": 64, "depth": 4, "lr": 2e-4, "epochs": 50},
        "contrastive": {
            "width": 64,
            "depth": 5,
            "embed_dim": 512,
            "proj_dim": 128,
            "batch_size": 256,
            "epochs": 100,
            "patience": 10,
        },
    },
}

#: Family-specific training defaults that differ from COMMON_DEFAULTS.
TRAINING_DEFAULTS: dict[str, dict] = {
    "adversarial": {"lr": 2e-4},
    # NT-Xent contrasts each view with the rest of its batch: more negatives than 64. Per-cell
    # scaling and 20 epochs: measured on the hard synthetic default (field-held-out logistic
    # regression of embed, pairs within fields) 0.79 against 0.74 at 12 epochs; dataset
    # z-scores gave 0.52 (BENCHMARKS.md, "Feature quality").
    "contrastive": {"batch_size": 128, "lr": 1e-3, "epochs": 20},
}


def resolve_model(name: str, entry: dict) -> dict:
    """Complete a ``models.<name>`` entry.

    Precedence, lowest first: common defaults, the family's training defaults, the family's
    architecture defaults, the preset, the entry's own keys.

    Parameters
    ----------
    name : str
        The model's name (for messages).
    entry : dict
        The entry as configured; ``family`` is required.

    Returns
    -------
    dict
        Every parameter of the model, keys sorted.

    Raises
    ------
    ValueError
        Naming the key, for an unknown family or preset, or keys the family does not take.

    Examples
    --------
    >>> params = resolve_model("simclr", {"family": "contrastive"})
    >>> params["batch_size"], params["epochs"], params["embed_dim"]
    (128, 20, 128)
    >>> resolve_model("ae", {"family": "ae", "beta": 2.0})
    Traceback (most recent call last):
    ...
    ValueError: models.ae: 'beta' not used by family 'ae'; it takes ['augment', 'batch_size', 'compile', 'depth', 'epochs', 'input', 'latent_dim', 'likelihood', 'lr', 'normalize', 'patience', 'precision', 'preset', 'schedule', 'tensorboard', 'weight_decay', 'weights', 'width']
    """
    family = entry.get("family")
    if family not in FAMILY_DEFAULTS:
        raise ValueError(f"models.{name}.family: {family!r} is not one of {FAMILIES}")
    preset = entry.get("preset", COMMON_DEFAULTS["preset"])
    if preset not in PRESETS:
        raise ValueError(f"models.{name}.preset: {preset!r} is not one of {tuple(PRESETS)}")
    allowed = {"family"} | set(COMMON_DEFAULTS) | set(FAMILY_DEFAULTS[family])
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(
            f"models.{name}: {', '.join(map(repr, unknown))} not used by family {family!r}; "
            f"it takes {sorted(allowed - {'family'})}"
        )
    resolved = {
        **COMMON_DEFAULTS,
        **TRAINING_DEFAULTS.get(family, {}),
        **FAMILY_DEFAULTS[family],
        **PRESETS[preset][family],
        **entry,
    }
    if family == "paired_inpainting" and not resolved["pair_within"]:
        raise ValueError(f"models.{name}.pair_within: paired_inpainting needs the column partner cells share")
    if family == "adversarial" and resolved["gan_loss"] == "wgan-gp" and "mi_weight" not in entry:
        # The WGAN critic's scores grow with image size and drown a latent-recovery term of
        # weight 1 in the shared trunk; 10 recovers z as well as BCE does with 1 (measured on
        # synthetic 64 px cells: mi_loss 0.13 vs 0.7 stuck at weight 1).
        resolved["mi_weight"] = 10.0
    return {k: resolved[k] for k in sorted(resolved)}


def layer_names(family: str, params: dict) -> list[str]:
    """Return the named feature layers of a resolved model entry, in network order.

    Parameters
    ----------
    family : str
        The model family.
    params : dict
        The resolved entry (``depth`` where the family has one).

    Returns
    -------
    list of str
        Layer names.

    Examples
    --------
    >>> layer_names("vae", {"depth": 3})
    ['conv1', 'conv2', 'conv3', 'mu']
    """
    if family in ("vae", "scvae", "infomax_vae"):
        return [f"conv{i}" for i in range(1, int(params["depth"]) + 1)] + ["mu"]
    if family == "ae":
        return [f"conv{i}" for i in range(1, int(params["depth"]) + 1)] + ["code"]
    if family == "paired_inpainting":
        return [f"conv{i}" for i in range(1, 6)]
    if family == "adversarial":
        return [f"conv{i}" for i in range(1, int(params["depth"]) + 1)] + ["z"]
    if family == "contrastive":
        return [f"conv{i}" for i in range(1, int(params["depth"]) + 1)] + ["embed"]
    raise ValueError(f"models.*.family: unknown family {family!r}; expected one of {FAMILIES}")


def feature_layers(family: str, params: dict, pooling: list[str]) -> list[str]:
    """Return the feature tables of a model: one per layer and pooling.

    The first pooling keeps the layer's name (``conv3``); further ones add a suffix
    (``conv3_max``). Vector layers (``mu``, ``code``, ``z``, ``embed``) have no spatial extent
    and appear once.

    Parameters
    ----------
    family : str
        The model family.
    params : dict
        The resolved entry.
    pooling : list of str
        ``features.pooling``.

    Returns
    -------
    list of str
        Table names, in network order.

    Examples
    --------
    >>> feature_layers("vae", {"depth": 2}, ["mean", "max"])
    ['conv1', 'conv1_max', 'conv2', 'conv2_max', 'mu']
    """
    vector = {"mu", "code", "z", "embed"}
    names = []
    for layer in layer_names(family, params):
        names.append(layer)
        if layer not in vector:
            names += [f"{layer}_{how}" for how in pooling[1:]]
    return names


def split_feature_layer(name: str, pooling: list[str]) -> tuple[str, str]:
    """Split a feature table name into layer and pooling (inverse of :func:`feature_layers`).

    Parameters
    ----------
    name : str
        A table name from :func:`feature_layers`.
    pooling : list of str
        ``features.pooling``.

    Returns
    -------
    tuple of str
        (layer, pooling).

    Examples
    --------
    >>> split_feature_layer("conv3_max", ["mean", "max"])
    ('conv3', 'max')
    """
    for how in pooling[1:]:
        if name.endswith(f"_{how}"):
            return name[: -len(how) - 1], how
    return name, pooling[0]
