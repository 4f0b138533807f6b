"""Build a model by family name from the plain numbers of a (resolved) config entry."""

from __future__ import annotations

import importlib
import json

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from workflow_scripts.io import atomic_path, write_json
from workflow_scripts.models.spec import FAMILIES, FAMILY_DEFAULTS, layer_names

#: family -> (module, class) under workflow_scripts.models; imported on first use.
_CLASSES = {
    "ae": ("ae", "AE"),
    "vae": ("vae", "VAE"),
    "scvae": ("vae", "VAE"),
    "infomax_vae": ("infomax_vae", "InfoMaxVAE"),
    "paired_inpainting": ("paired_inpainting", "PairedInpaintingNet"),
    "adversarial": ("adversarial", "AdversarialNet"),
    "contrastive": ("contrastive", "ContrastiveNet"),
}

#: Entry keys that configure data handling rather than the network.
_DATA_KEYS = {"pair_within", "feedback"}


def architecture(family: str, params: dict) -> dict:
    """Return the constructor keyword arguments of ``family`` taken from a config entry.

    Parameters
    ----------
    family : str
        The model family.
    params : dict
        The resolved entry.

    Returns
    -------
    dict
        The family's architecture keys present in ``params`` (data-handling keys left out).

    Examples
    --------
    >>> architecture("paired_inpainting", {"width_mult": 0.5, "pair_within": "Metadata_group", "lr": 1e-3})
    {'width_mult': 0.5}
    """
    return {k: params[k] for k in FAMILY_DEFAULTS[family] if k in params and k not in _DATA_KEYS}


def build_model(
    family: str,
    in_channels: int,
    input_size: int,
    params: dict,
    channels: list[dict] | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Instantiate ``family`` for C = ``in_channels`` inputs of ``input_size`` px.

    Parameters
    ----------
    family : str
        The model family.
    in_channels : int
        Channels of the input crops.
    input_size : int
        Height = width of the input crops.
    params : dict
        The resolved entry.
    channels : list of dict, optional
        Name and role per channel, needed by families that treat channels differently
        (paired inpainting: the protein channel is the target, structure channels the marker
        input).
    seed : int, optional
        With a seed the initial weights are a function of the seed alone (the global torch
        RNG is seeded first), so the same config trains to the same weights in any process.

    Returns
    -------
    torch.nn.Module
        The network, its ``layer_names`` as :func:`~workflow_scripts.models.spec.layer_names`
        declares them.

    Raises
    ------
    ValueError
        For an unknown family or channels a family cannot use.
    """
    if family not in _CLASSES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    module, cls = _CLASSES[family]
    kwargs = architecture(family, params)
    if family == "scvae":
        kwargs["skip"] = True
    if family == "paired_inpainting":
        kwargs.update(_inpainting_channels(channels, in_channels))
    builder = getattr(importlib.import_module(f"workflow_scripts.models.{module}"), cls)
    if seed is not None:
        torch.manual_seed(seed)
    model = builder(in_channels, input_size, **kwargs)
    # The Snakefile declares outputs from spec.layer_names without importing torch; the two
    # must agree.
    expected = layer_names(family, {**params, **kwargs})
    if list(model.layer_names) != expected:
        raise RuntimeError(f"{family}: layers {model.layer_names} differ from spec {expected}")
    return model


def _inpainting_channels(channels: list[dict] | None, in_channels: int) -> dict:
    if not channels or len(channels) != in_channels:
        raise ValueError(f"paired_inpainting needs the role of each of the {in_channels} channels, got {channels}")
    roles = [c["role"] for c in channels]
    if roles.count("protein") != 1:
        raise ValueError(f"paired_inpainting needs exactly one channel with role 'protein', got roles {roles}")
    structure = [i for i, r in enumerate(roles) if r in ("structure", "nucleus")]
    if not structure:
        raise ValueError(f"paired_inpainting needs structure or nucleus channels as markers, got roles {roles}")
    return {"protein_channel": roles.index("protein"), "structure_channels": structure}


def save_trained(model: nn.Module, state: dict, weights_path, config_path, record: dict) -> None:
    """Write weights as safetensors (no pickle) and the model's config as JSON, atomically.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network (its ``layer_names`` are recorded).
    state : dict
        The state dict to save.
    weights_path, config_path : path-like
        Where the weights and the ``model.json`` go.
    record : dict
        Must hold ``family``, ``in_channels``, ``input_size`` and ``params`` (the config
        entry); anything else (normalisation, channels, best epoch) is kept for the user.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"family": record["family"]})
    write_json(config_path, {**record, "layers": list(model.layer_names)})


def load_trained(weights_path, config_path) -> tuple[nn.Module, dict]:
    """Rebuild a model from its JSON config and load its safetensors weights (eval mode).

    Parameters
    ----------
    weights_path, config_path : path-like
        The ``weights.safetensors`` and ``model.json`` written by :func:`save_trained`.

    Returns
    -------
    tuple
        The network in eval mode and the record of ``model.json``.

    Raises
    ------
    ValueError
        If ``model.json`` lacks a required key.
    """
    with open(config_path) as fh:
        record = json.load(fh)
    for key in ("family", "in_channels", "input_size", "params"):
        if key not in record:
            raise ValueError(f"{config_path}: missing key {key!r} (not a cellembed model.json?)")
    model = build_model(
        record["family"], record["in_channels"], record["input_size"], record["params"], record.get("channels")
    )
    model.load_state_dict(load_file(str(weights_path)))
    model.eval()
    return model, record
