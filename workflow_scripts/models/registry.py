"""Build a model by family name from the plain numbers of a config entry."""

from __future__ import annotations

from torch import nn

from workflow_scripts.models.spec import FAMILIES, layer_names
from workflow_scripts.models.vae import VAE

#: Constructor keyword arguments each family takes from its config entry.
ARCHITECTURE_KEYS: dict[str, tuple[str, ...]] = {
    "vae": ("latent_dim", "width", "depth", "likelihood", "beta"),
}

_BUILDERS = {"vae": VAE}


def build_model(family: str, in_channels: int, input_size: int, params: dict) -> nn.Module:
    """Instantiate ``family`` for C = ``in_channels`` inputs of ``input_size`` px.

    ``params`` is the model's config entry; only the family's architecture keys are used.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    kwargs = {k: params[k] for k in ARCHITECTURE_KEYS[family] if k in params}
    model = _BUILDERS[family](in_channels, input_size, **kwargs)
    # The Snakefile declares outputs from spec.layer_names without importing torch; the two
    # must agree.
    expected = layer_names(family, {**params, **kwargs})
    if list(model.layer_names) != expected:
        raise RuntimeError(f"{family}: layers {model.layer_names} differ from spec {expected}")
    return model


def architecture(family: str, params: dict) -> dict:
    """The architecture keys of a config entry (what model.json records)."""
    return {k: params[k] for k in ARCHITECTURE_KEYS[family] if k in params}


def save_trained(model: nn.Module, state: dict, weights_path, config_path, record: dict) -> None:
    """Write weights as safetensors (no pickle) and the model's config as JSON, atomically.

    ``record`` must hold ``family``, ``in_channels``, ``input_size`` and ``params`` (the config
    entry); anything else (normalisation, channels, best epoch) is kept for the user.
    """
    from safetensors.torch import save_file

    from workflow_scripts.io import atomic_path, write_json

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"family": record["family"]})
    write_json(config_path, {**record, "layers": list(model.layer_names)})


def load_trained(weights_path, config_path) -> tuple[nn.Module, dict]:
    """Rebuild a model from its JSON config and load its safetensors weights (eval mode)."""
    import json

    from safetensors.torch import load_file

    with open(config_path) as fh:
        record = json.load(fh)
    for key in ("family", "in_channels", "input_size", "params"):
        if key not in record:
            raise ValueError(f"{config_path}: missing key {key!r} (not a cellembed model.json?)")
    model = build_model(record["family"], record["in_channels"], record["input_size"], record["params"])
    model.load_state_dict(load_file(str(weights_path)))
    model.eval()
    return model, record
