"""What each model family exposes, without importing torch: the Snakefile needs the layer
names at parse time to declare one feature table per layer."""

from __future__ import annotations

#: Families the registry can build.
FAMILIES: tuple[str, ...] = ("vae",)


def layer_names(family: str, params: dict) -> list[str]:
    """Named feature layers of a model entry, in network order.

    ``vae``: one per encoder conv stage (``conv1`` .. ``conv<depth>``) and the latent mean
    (``mu``).
    """
    if family == "vae":
        return [f"conv{i}" for i in range(1, int(params["depth"]) + 1)] + ["mu"]
    raise ValueError(f"models.*.family: unknown family {family!r}; expected one of {FAMILIES}")
