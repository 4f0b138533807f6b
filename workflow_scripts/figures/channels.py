"""The one channel-colour rule, by role, and the colour composites drawn with it.

Both the report figures (segmentation overlays, reconstructions) and the explorer page
(thumbnails and their legend) colour a channel by its *role* in the dataset
(``datasets.<name>.channels.<key>.role``: nucleus, structure, protein or other), so one
dataset looks the same everywhere. The rule, :func:`channel_colour_names`:

- a lone channel is white, whatever its role;
- two channels are magenta and green (a pair red-green colour-blind readers tell apart),
  green for the protein channel, else for the second;
- with three or more, the first nucleus channel is blue, the first structure channel red and
  the first protein channel green (the Human Protein Atlas convention); every other channel
  (role other, or a role already taken) gets the next of cyan, yellow, magenta, orange,
  violet, lime, white, cycled.

Callers that do not know the roles get :func:`default_roles`: the order of the synthetic
source (nucleus, structure, protein, then other), so the fallback follows the same rule.
This module needs only numpy: the explorer uses it without drawing a matplotlib figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workflow_scripts.datasets import SYNTHETIC_CHANNELS
from workflow_scripts.validation import check_int

__all__ = [
    "COLOURS",
    "EXTRA_COLOURS",
    "ROLE_COLOURS",
    "as_image_batch",
    "channel_colour_names",
    "channel_colours",
    "resolve_names",
    "resolve_roles",
    "composite_rgb",
    "contrast_limits",
    "default_roles",
    "hex_colour",
    "stretch",
]

#: Display colours of channels by name, RGB in [0, 1]; colours add up in a composite.
COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.0, 0.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
    "violet": (0.5, 0.0, 1.0),
    "lime": (0.6, 1.0, 0.3),
    "white": (1.0, 1.0, 1.0),
}
#: Colour of the first channel of each named role (with three or more channels).
ROLE_COLOURS = {"nucleus": "blue", "structure": "red", "protein": "green"}
#: Colours of the remaining channels, in channel order, cycled.
EXTRA_COLOURS = ("cyan", "yellow", "magenta", "orange", "violet", "lime", "white")
#: Two channels: the first colour for the non-protein channel, the second for the protein one.
_PAIR_COLOURS = ("magenta", "green")
_LONE_COLOUR = "white"


def default_roles(n_channels: int) -> list[str]:
    """Roles assumed for channels whose roles are not given: the synthetic source's order.

    Parameters
    ----------
    n_channels : int
        Number of channels, ``>= 1``.

    Returns
    -------
    list of str
        ``nucleus``, ``structure``, ``protein`` (as many as there are channels), then
        ``other``.

    Examples
    --------
    >>> default_roles(2)
    ['nucleus', 'structure']
    >>> default_roles(4)
    ['nucleus', 'structure', 'protein', 'other']
    """
    n = check_int("n_channels", n_channels, 1)
    known = [c["role"] for c in SYNTHETIC_CHANNELS][:n]
    return known + ["other"] * (n - len(known))


def resolve_roles(roles: Sequence[str] | None, n_channels: int) -> list[str]:
    """Check one role per channel, or fall back to :func:`default_roles`.

    Parameters
    ----------
    roles : sequence of str, optional
        Role of each channel, in array order (e.g. ``[c["role"] for c in channels]`` with
        ``channels`` from :func:`workflow_scripts.datasets.channels`).
    n_channels : int
        Number of channels, ``>= 1``.

    Returns
    -------
    list of str
        One role per channel.

    Raises
    ------
    ValueError
        If the number of roles is not ``n_channels``.
    """
    if roles is None:
        return default_roles(n_channels)
    if isinstance(roles, str):
        raise ValueError(f"roles: got the string {roles!r}, expected one role per channel")
    out = [str(r) for r in roles]
    if len(out) != n_channels:
        raise ValueError(f"roles: got {len(out)} roles {out}, expected {n_channels} (one per channel)")
    return out


def channel_colour_names(n_channels: int, roles: Sequence[str] | None = None) -> list[str]:
    """Name the display colour of every channel, by role (the rule of this module).

    Parameters
    ----------
    n_channels : int
        Number of channels, ``>= 1``.
    roles : sequence of str, optional
        Role of each channel (nucleus, structure, protein, other); unknown roles count as
        other. Default: :func:`default_roles`.

    Returns
    -------
    list of str
        Keys of :data:`COLOURS`, one per channel.

    Raises
    ------
    ValueError
        If ``n_channels`` is not an integer ``>= 1`` or ``roles`` has another length.

    Examples
    --------
    >>> channel_colour_names(4, ["nucleus", "structure", "protein", "other"])
    ['blue', 'red', 'green', 'cyan']
    >>> channel_colour_names(3, ["other", "nucleus", "nucleus"])
    ['cyan', 'blue', 'yellow']
    >>> channel_colour_names(2, ["protein", "nucleus"])
    ['green', 'magenta']
    >>> channel_colour_names(2)
    ['magenta', 'green']
    >>> channel_colour_names(1, ["protein"])
    ['white']
    """
    n = check_int("n_channels", n_channels, 1)
    roles = resolve_roles(roles, n)
    if n == 1:
        return [_LONE_COLOUR]
    if n == 2:
        protein = roles.index("protein") if roles.count("protein") == 1 else 1
        return [_PAIR_COLOURS[int(c == protein)] for c in range(2)]
    return _colours_by_role(roles)


def _colours_by_role(roles: list[str]) -> list[str]:
    """Colour three or more channels: a role's colour for its first channel, extras for the rest."""
    names, taken, n_extra = [], set(), 0
    for role in roles:
        if role in ROLE_COLOURS and role not in taken:
            taken.add(role)
            names.append(ROLE_COLOURS[role])
        else:
            names.append(EXTRA_COLOURS[n_extra % len(EXTRA_COLOURS)])
            n_extra += 1
    return names


def channel_colours(n_channels: int, roles: Sequence[str] | None = None) -> np.ndarray:
    """Return the display colour of every channel in :func:`composite_rgb`.

    Parameters
    ----------
    n_channels : int
        Number of channels, ``>= 1``.
    roles : sequence of str, optional
        Role of each channel; default :func:`default_roles`. See
        :func:`channel_colour_names` for the rule.

    Returns
    -------
    numpy.ndarray, shape (n_channels, 3), float64
        RGB in ``[0, 1]``. Without roles: one channel white; two magenta, green; three or
        more blue (channel 0), red (1), green (2), then cyan, yellow, magenta, orange,
        violet, lime, white, cycled.

    Raises
    ------
    ValueError
        If ``n_channels`` is not an integer ``>= 1`` or ``roles`` has another length.

    Examples
    --------
    >>> channel_colours(2, ["nucleus", "protein"]).tolist()
    [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    return np.array([COLOURS[name] for name in channel_colour_names(n_channels, roles)])


def hex_colour(name: str) -> str:
    """Return a colour of :data:`COLOURS` as an HTML hex string.

    Parameters
    ----------
    name : str
        A key of :data:`COLOURS`.

    Returns
    -------
    str
        ``#rrggbb``.

    Examples
    --------
    >>> hex_colour("orange")
    '#ff8000'
    """
    return "#" + "".join(f"{round(v * 255):02x}" for v in COLOURS[name])


def resolve_names(channel_names: Sequence[str] | None, n_channels: int) -> list[str]:
    """Check one display name per channel, or make ``channel 0``, ``channel 1``, ...

    Parameters
    ----------
    channel_names : sequence of str, optional
        Name of each channel, in array order.
    n_channels : int
        Number of channels.

    Returns
    -------
    list of str
        One name per channel.

    Raises
    ------
    ValueError
        If the number of names is not ``n_channels``.

    Examples
    --------
    >>> resolve_names(None, 2)
    ['channel 0', 'channel 1']
    """
    if channel_names is None:
        return [f"channel {c}" for c in range(n_channels)]
    names = [str(n) for n in channel_names]
    if len(names) != n_channels:
        raise ValueError(f"channel_names: got {len(names)} names {names}, expected {n_channels} (one per channel)")
    return names


def contrast_limits(images: np.ndarray, *, percentiles: tuple[float, float] = (1.0, 99.5)) -> np.ndarray:
    """Return each channel's display range from percentiles over a whole batch.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, C, H, W) or (C, H, W), real dtype
        Images; NaN values are ignored.
    percentiles : (float, float)
        Lower and upper percentile, ``0 <= low < high <= 100``.

    Returns
    -------
    numpy.ndarray, shape (C, 2), float64
        ``[low, high]`` per channel. Where the percentiles coincide (sparse signal: fewer
        bright pixels than ``100 - high`` percent) the channel's minimum and maximum are used
        instead; a channel that is constant everywhere keeps ``low == high`` and is displayed
        black by :func:`composite_rgb`.

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D real or ``percentiles`` is out of range.

    Examples
    --------
    >>> contrast_limits(np.arange(8.0).reshape(2, 1, 2, 2), percentiles=(0, 100)).tolist()
    [[0.0, 7.0]]
    """
    batch = as_image_batch(images, "images")
    low, high = _check_percentiles(percentiles)
    limits = np.zeros((batch.shape[1], 2))
    for c in range(batch.shape[1]):
        # One channel at a time: a copy of the whole batch would double the memory of
        # the explorer's tens of thousands of crops.
        values = batch[:, c].reshape(-1)
        ok = np.isfinite(values)
        values = values if ok.all() else values[ok]
        if values.size == 0:
            continue
        lo, hi = np.percentile(values, [low, high])
        if hi <= lo:
            lo, hi = float(values.min()), float(values.max())
        limits[c] = lo, hi
    return limits


def composite_rgb(
    images: np.ndarray,
    *,
    percentiles: tuple[float, float] = (1.0, 99.5),
    limits: np.ndarray | None = None,
    roles: Sequence[str] | None = None,
) -> np.ndarray:
    """Blend the channels of fluorescence images into RGB for display.

    Each channel is contrast-stretched to ``[0, 1]`` between its low and high percentile,
    computed over the whole batch so that crops stay comparable, then drawn in its colour
    (:func:`channel_colours`, by role); colours add up and the sum is clipped to ``[0, 1]``.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, C, H, W) or (C, H, W), real dtype
        Images. NaN values are shown black.
    percentiles : (float, float)
        Lower and upper percentile for the stretch, ``0 <= low < high <= 100``.
    limits : numpy.ndarray, shape (C, 2), optional
        Display range ``[low, high]`` per channel, e.g. from :func:`contrast_limits` on
        other images (to show reconstructions with the originals' contrast). Overrides
        ``percentiles``.
    roles : sequence of str, optional
        Role of each channel (nucleus, structure, protein, other), which sets its colour.
        Default: :func:`default_roles`.

    Returns
    -------
    numpy.ndarray, shape (N, H, W, 3) or (H, W, 3), float32
        RGB values in ``[0, 1]``, batched like ``images``.

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D real, ``percentiles`` is out of range, or
        ``limits`` or ``roles`` has the wrong shape.

    Examples
    --------
    >>> crop = np.zeros((2, 1, 1)); crop[1] = 5.0
    >>> composite_rgb(crop, limits=[[0, 1], [0, 5]], roles=["nucleus", "protein"]).tolist()
    [[[0.0, 1.0, 0.0]]]
    """
    arr = np.asarray(images)
    batch = as_image_batch(arr, "images")
    n_channels = batch.shape[1]
    limits = _display_limits(batch, limits, percentiles)
    colours = channel_colours(n_channels, roles).astype(np.float32)
    rgb = np.zeros(batch.shape[:1] + batch.shape[2:] + (3,), dtype=np.float32)
    for c in range(n_channels):
        stretched = stretch(batch[:, c], *limits[c])
        rgb += stretched[..., None] * colours[c]
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb[0] if arr.ndim == 3 else rgb


def _display_limits(batch: np.ndarray, limits, percentiles) -> np.ndarray:
    """Check the given ``limits``, or compute the batch's :func:`contrast_limits`."""
    if limits is None:
        return contrast_limits(batch, percentiles=percentiles)
    n_channels = batch.shape[1]
    limits = np.asarray(limits, dtype=np.float64)
    if limits.shape != (n_channels, 2) or not np.isfinite(limits).all():
        raise ValueError(
            f"limits: got shape {limits.shape}, expected finite values of shape "
            f"({n_channels}, 2) (one [low, high] per channel)"
        )
    return limits


def stretch(channel: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map intensities ``[low, high]`` to ``[0, 1]``, clipped, NaN shown as 0.

    Parameters
    ----------
    channel : numpy.ndarray
        Intensities of one channel, any shape.
    low, high : float
        Display range; ``high <= low`` (a constant channel) gives all zeros.

    Returns
    -------
    numpy.ndarray, float32
        Same shape as ``channel``.

    Examples
    --------
    >>> stretch(np.array([0.0, 5.0, 20.0, np.nan]), 0.0, 10.0).tolist()
    [0.0, 0.5, 1.0, 0.0]
    """
    if high <= low:
        # Constant channel: no contrast to show.
        return np.zeros(channel.shape, dtype=np.float32)
    out = (channel.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


def as_image_batch(images: np.ndarray, name: str) -> np.ndarray:
    """Check real images and return them as a batch.

    Parameters
    ----------
    images : numpy.ndarray, shape (N, C, H, W) or (C, H, W)
        Images of a real (or boolean) dtype, no dimension empty.
    name : str
        Argument name used in the error message.

    Returns
    -------
    numpy.ndarray, shape (N, C, H, W)
        ``images``, with a batch axis of length 1 added to a single image.

    Raises
    ------
    ValueError
        If ``images`` is not 3-D or 4-D, not real, or has an empty dimension.

    Examples
    --------
    >>> as_image_batch(np.zeros((3, 4, 5)), "crop").shape
    (1, 3, 4, 5)
    """
    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{name}: got an array of shape {arr.shape}, expected (C, H, W) or (N, C, H, W)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{name}: got dtype {arr.dtype}, expected a real numeric dtype")
    if 0 in arr.shape:
        raise ValueError(f"{name}: got shape {arr.shape}, expected no empty dimension")
    return arr[None] if arr.ndim == 3 else arr


def _check_percentiles(percentiles) -> tuple[float, float]:
    """Check two numbers ``0 <= low < high <= 100``."""
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise ValueError(f"percentiles: got {percentiles!r}, expected two numbers (low, high)") from None
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles: got {percentiles!r}, expected 0 <= low < high <= 100")
    return low, high
