"""Paired cell inpainting (PCI; Lu et al. 2019) on (N, C, H, W) single-cell crops.

Task: given every channel of a source cell A and the structural (non-protein) channels of a
target cell B drawn from the same group as A (same protein / well / image), predict B's protein
channel. To do so the network has to summarise, from A alone, what the protein looks like in
this group; the source encoder's activations are the learned features.

Network (widths given at ``width_mult`` = 1, the reference):

* source-cell encoder on A (all C channels): ``conv1`` .. ``conv5`` with (96, 256, 384, 384,
  256) channels, 3x3 convolutions + batch norm + ReLU, a 2x max-pool after ``conv1`` and after
  ``conv2``. Feature maps (after ReLU, before pooling): ``conv1`` at H, ``conv2`` at H/2,
  ``conv3`` .. ``conv5`` at H/4.
* target-marker encoder on B's structure channels: (16, 32, 32) channels, same blocks, 2x
  max-pools after the first two, so it also ends at H/4. Absent when there are no structure
  channels (the prediction then depends on A only).
* decoder: concatenation of both at H/4, then 3x3 conv blocks of (256, 128, 64) channels with a
  nearest-neighbour 2x upsampling before the second and third, and a linear 3x3 conv to one
  channel at H.

Loss: mean squared error between the prediction and B's protein channel. Optimiser: Adam with
beta1 = 0.5 as in the reference (the learning rate comes from the config; 1e-4 in the paper).
The reference scales each cell's channels to [0, 1] (``workflow_scripts.data.per_cell_minmax``).
``width_mult`` scales every width (rounded, at least 4 channels) so that a quick preset trains on
a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workflow_scripts.models.base import CellModel

MIN_WIDTH = 4


def scale_widths(widths: Sequence[int], width_mult: float) -> list[int]:
    """Scale each width: ``round(w * width_mult)``, at least ``MIN_WIDTH``.

    Parameters
    ----------
    widths : sequence of int
        The reference widths.
    width_mult : float
        The factor.

    Returns
    -------
    list of int
        The scaled widths.

    Examples
    --------
    >>> scale_widths((96, 256, 16), 0.25)
    [24, 64, 4]
    """
    return [max(MIN_WIDTH, int(round(w * width_mult))) for w in widths]


def _channel_roles(in_channels: int, protein_channel, structure_channels) -> tuple[int, list[int]]:
    """Check the protein channel and the structure channels (default: all others) and return them."""
    if not 0 <= int(protein_channel) < in_channels:
        raise ValueError(f"protein_channel {protein_channel} is not in [0, {in_channels})")
    protein_channel = int(protein_channel)
    if structure_channels is None:
        structure_channels = [c for c in range(in_channels) if c != protein_channel]
    structure_channels = [int(c) for c in structure_channels]
    if len(set(structure_channels)) != len(structure_channels):
        raise ValueError(f"structure_channels has repeats: {structure_channels}")
    bad = [c for c in structure_channels if not 0 <= c < in_channels]
    if bad:
        raise ValueError(f"structure_channels {bad} are not in [0, {in_channels})")
    if protein_channel in structure_channels:
        raise ValueError(f"structure_channels {structure_channels} include the protein channel {protein_channel}")
    return protein_channel, structure_channels


class ConvBlock(nn.Module):
    """3x3 convolution (same padding) + batch norm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        """Map (N, C_in, H, W) to (N, C_out, H, W)."""
        return self.act(self.norm(self.conv(x)))


class PairedInpaintingNet(CellModel):
    """Paired cell inpainting network.

    Parameters
    ----------
    in_channels : int
        Image channels C of both cells.
    input_size : int
        Height = width of the crops; must be divisible by 4.
    protein_channel : int
        Index of the protein (target) channel, in [0, C).
    structure_channels : sequence of int or None
        Indices of B's structural channels given to the marker encoder; distinct, in [0, C),
        not the protein channel. None: every channel but the protein one. May be empty.
    widths : 5 ints
        Source-encoder widths of ``conv1`` .. ``conv5``.
    marker_widths : 3 ints
        Target-marker encoder widths.
    decoder_widths : 3 ints
        Decoder widths (at H/4, H/2, H).
    width_mult : float
        Multiplies every width (rounded, at least 4).

    A batch is a dict ``{"source": A, "target": B}`` of (N, C, H, W) tensors (all channels of
    both cells); the model selects B's structure channels as input and B's protein channel as
    the target itself.
    """

    family = "paired_inpainting"

    def __init__(
        self,
        in_channels: int,
        input_size: int = 64,
        *,
        protein_channel: int,
        structure_channels: Sequence[int] | None,
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        marker_widths: Sequence[int] = (16, 32, 32),
        decoder_widths: Sequence[int] = (256, 128, 64),
        width_mult: float = 1.0,
    ):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if input_size % 4:
            raise ValueError(f"input_size ({input_size}) must be divisible by 4 (two 2x poolings)")
        protein_channel, structure_channels = _channel_roles(in_channels, protein_channel, structure_channels)
        if len(widths) != 5 or len(marker_widths) != 3 or len(decoder_widths) != 3:
            raise ValueError("widths needs 5 entries, marker_widths 3 and decoder_widths 3")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")

        self.in_channels = in_channels
        self.input_size = input_size
        self.protein_channel = protein_channel
        self.structure_channels = structure_channels
        self.widths = scale_widths(widths, width_mult)
        self.marker_widths = scale_widths(marker_widths, width_mult)
        self.decoder_widths = scale_widths(decoder_widths, width_mult)
        self.layer_names = [f"conv{i + 1}" for i in range(5)]

        w = self.widths
        self.encoder = nn.ModuleList(ConvBlock(c_in, c_out) for c_in, c_out in zip([in_channels] + w[:-1], w))
        self.register_buffer("_structure_index", torch.tensor(structure_channels, dtype=torch.long), persistent=False)
        if structure_channels:
            m = self.marker_widths
            self.marker = nn.ModuleList(
                ConvBlock(c_in, c_out) for c_in, c_out in zip([len(structure_channels)] + m[:-1], m)
            )
            joint = w[-1] + m[-1]
        else:
            self.marker = None
            joint = w[-1]
        d = self.decoder_widths
        self.decoder = nn.ModuleList(ConvBlock(c_in, c_out) for c_in, c_out in zip([joint] + d[:-1], d))
        self.head = nn.Conv2d(d[-1], 1, 3, padding=1)

    # ------------------------------------------------------------------ pieces
    def _encode(self, x: torch.Tensor, keep: bool = False):
        """Run the source encoder; return the H/4 map and, with ``keep``, every named activation."""
        maps = {}
        h = x
        for i, block in enumerate(self.encoder):
            h = block(h)
            if keep:
                maps[f"conv{i + 1}"] = h
            if i < 2:
                h = F.max_pool2d(h, 2)
        return h, maps

    def _encode_marker(self, structure: torch.Tensor) -> torch.Tensor:
        h = structure
        for i, block in enumerate(self.marker):
            h = block(h)
            if i < 2:
                h = F.max_pool2d(h, 2)
        return h

    def target_structure(self, batch: dict) -> torch.Tensor:
        """Return B's structure channels (N, S, H, W): the marker encoder's input."""
        return batch["target"].index_select(1, self._structure_index)

    def reconstruction_target(self, batch: dict) -> torch.Tensor:
        """Return B's true protein channel (N, 1, H, W): what ``reconstruct`` predicts."""
        p = self.protein_channel
        return batch["target"][:, p : p + 1]

    # ------------------------------------------------------------------ interface
    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Predict B's protein channel from all of A and B's structure channels.

        Parameters
        ----------
        batch : dict of str to torch.Tensor
            ``source`` (cell A) and ``target`` (cell B), (N, C, H, W) each.

        Returns
        -------
        dict of str to torch.Tensor
            ``prediction`` (N, 1, H, W).
        """
        source = batch["source"]
        h, _ = self._encode(source)
        if self.marker is not None:
            h = torch.cat([h, self._encode_marker(self.target_structure(batch))], dim=1)
        for i, block in enumerate(self.decoder):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(h)
        return {"prediction": self.head(h)}

    def loss_terms(self, batch: dict, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Compute ``loss`` = ``mse``, the mean squared error of the prediction against B's protein.

        Parameters
        ----------
        batch : dict of str to torch.Tensor
            The pair batch (``source``, ``target``).
        out : dict of str to torch.Tensor
            :meth:`forward` of ``batch``.

        Returns
        -------
        dict of str to torch.Tensor
            ``loss`` and ``mse`` (detached).
        """
        mse = F.mse_loss(out["prediction"].float(), self.reconstruction_target(batch).float())
        return {"loss": mse, "mse": mse.detach()}

    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Create Adam with beta1 = 0.5, as in the reference.

        Parameters
        ----------
        lr : float
            Learning rate.
        weight_decay : float
            Adam weight decay.

        Returns
        -------
        dict of str to torch.optim.Optimizer
            ``{"model": Adam(all parameters)}``.
        """
        return {"model": torch.optim.Adam(self.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)}

    @torch.no_grad()
    def reconstruct(self, batch: dict) -> torch.Tensor:
        """Return the predicted protein channel of B (N, 1, H, W); compare with ``reconstruction_target``."""
        return self(batch)["prediction"]

    @torch.no_grad()
    def feature_maps(self, x) -> dict[str, torch.Tensor]:
        """Return the source-encoder activations of single cells x (N, C, H, W) (or a pair batch's ``source``).

        ``conv1`` (N, w1, H, W), ``conv2`` (N, w2, H/2, W/2), ``conv3`` .. ``conv5`` at H/4;
        after ReLU, before pooling.
        """
        if isinstance(x, dict):
            x = x["source"]
        return self._encode(x, keep=True)[1]
