"""Variational lower bounds on mutual information and the separable critic that feeds them.

Shared by the InfoMax VAE (which maximises I(x; z) during training) and the metrics stage
(which estimates the MI between feature vectors); nothing here knows about images.

Notation (Poole et al. 2019, "On variational bounds of mutual information"): a batch of N
pairs (x_i, y_i) ~ p(x, y) and a critic f; ``scores[i, j] = f(x_i, y_j)``, so the diagonal
holds the N positive (joint) pairs and the off-diagonal entries pair x_i with an independent
y_j, i.e. samples of p(x) p(y). Each y_j is contrasted against the batch of x's (the paper's
m(y; x_1:K) = 1/K sum_k e^{f(x_k, y)} is a mean over a column). All bounds are in nats.

- InfoNCE:      I >= log N + 1/N sum_j [ f(x_j, y_j) - log sum_i e^{f(x_i, y_j)} ]      (<= log N)
- NWJ:          I >= E_p(x,y)[f] - E_p(x)p(y)[e^{f - 1}]                                 (f-GAN KL / MINE-f)
- Interpolated: I_alpha, eq. (11) of the paper, with the baseline
                alpha m(y; x_1:K) + (1 - alpha) a(y): alpha = 1 gives an InfoNCE bound with
                K = N - 1 samples, alpha = 0 gives the TUBA bound with baseline a(y)
                (= NWJ for log a = 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from workflow_scripts.validation import check_fraction, check_int, real_matrix

BOUNDS: tuple[str, ...] = ("infonce", "nwj", "interpolated")


class SeparableCritic(nn.Module):
    """f(x, y) = g(x) . h(y): the N x N score matrix of a batch costs two encoder passes.

    ``x_encoder`` (g) and ``z_encoder`` (h) map their inputs to embeddings of the same size.
    """

    def __init__(self, x_encoder: nn.Module, z_encoder: nn.Module):
        super().__init__()
        self.x_encoder = x_encoder
        self.z_encoder = z_encoder

    def scores(self, x: Tensor, z: Tensor) -> Tensor:
        """Return the (N, N) score matrix with entry [i, j] = g(x_i) . h(z_j).

        Computed in float32 even under autocast (the bounds exponentiate the scores).

        Parameters
        ----------
        x, z : torch.Tensor
            The N paired inputs of the two encoders.

        Returns
        -------
        torch.Tensor
            (N, N) float32 scores.

        Raises
        ------
        ValueError
            If the two embeddings are not both (N, D).
        """
        gx = self.x_encoder(x)
        hz = self.z_encoder(z)
        if gx.shape != hz.shape or gx.ndim != 2:
            raise ValueError(
                f"critic embeddings must both be (N, D); got g(x) {tuple(gx.shape)}, h(z) {tuple(hz.shape)}"
            )
        with torch.autocast(gx.device.type, enabled=False):
            return gx.float() @ hz.float().T

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        """Return :meth:`scores` of ``x`` and ``z``."""
        return self.scores(x, z)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Module:
    """Build ``layers`` hidden Linear + ReLU layers of width ``hidden``, then a Linear to ``out_dim``.

    Parameters
    ----------
    in_dim, hidden, out_dim : int
        Input size, hidden width and output size, each >= 1.
    layers : int, default=2
        Number of hidden layers, >= 1.

    Returns
    -------
    torch.nn.Module
        The ``nn.Sequential`` network, drawn from torch's global generator.

    Raises
    ------
    ValueError
        If a size is below 1.

    Examples
    --------
    >>> mlp(3, 8, 2)
    Sequential(
      (0): Linear(in_features=3, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=8, bias=True)
      (3): ReLU()
      (4): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    for name, value in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim), ("layers", layers)):
        if int(value) < 1:
            raise ValueError(f"mlp: {name} must be >= 1, got {value}")
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


def _check_scores(scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a square (N, N) tensor, got {shape}")
    if scores.shape[0] < 2:
        raise ValueError(f"scores must hold at least 2 pairs (N >= 2), got N = {scores.shape[0]}")
    return scores.float()


def _logmeanexp_offdiag(scores: Tensor) -> Tensor:
    """Return the log of the mean of e^{scores} over the N (N - 1) off-diagonal entries."""
    n = scores.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    off = scores.masked_fill(eye, float("-inf"))
    return torch.logsumexp(off.flatten(), dim=0) - math.log(n * (n - 1))


def infonce_lower_bound(scores: Tensor) -> Tensor:
    """Compute the InfoNCE (CPC) bound, a scalar in nats, never above log N.

    I >= log N + 1/N sum_j [ s_jj - log sum_i e^{s_ij} ]   with s_ij = f(x_i, y_j).

    Parameters
    ----------
    scores : torch.Tensor
        (N, N) critic scores, N >= 2, positives on the diagonal.

    Returns
    -------
    torch.Tensor
        The bound (float32 scalar).

    Raises
    ------
    ValueError
        If ``scores`` is not a square matrix with N >= 2.

    Examples
    --------
    >>> round(float(infonce_lower_bound(torch.zeros(4, 4))), 6)  # an uninformative critic
    0.0
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    return math.log(n) + (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean()


def nwj_lower_bound(scores: Tensor) -> Tensor:
    """Compute the NWJ (f-GAN KL, MINE-f) bound, a scalar in nats, with the tight shift e^{f - 1}.

    I >= 1/N sum_i s_ii - 1/(N (N - 1)) sum_{i != j} e^{s_ij - 1}.

    Unbounded above but its variance grows like e^I / N.

    Parameters
    ----------
    scores : torch.Tensor
        (N, N) critic scores, N >= 2, positives on the diagonal.

    Returns
    -------
    torch.Tensor
        The bound (float32 scalar).

    Raises
    ------
    ValueError
        If ``scores`` is not a square matrix with N >= 2.
    """
    scores = _check_scores(scores)
    return scores.diagonal().mean() - torch.exp(_logmeanexp_offdiag(scores) - 1.0)


def interpolated_lower_bound(scores: Tensor, baseline: Tensor, alpha: float) -> Tensor:
    """Compute the interpolated bound I_alpha of Poole et al. (2019, eq. 11), a scalar in nats.

    With b(y; x_1:K) = alpha m(y; x_1:K) + (1 - alpha) a(y), m(y; x_1:K) = 1/K sum_k e^{f(x_k, y)}:

    I >= 1 + E_{p(x_1:K) p(y | x_1)}[ log e^{f(x_1, y)} / b(y; x_1:K) ]
           - E_{p(x_1:K) p(y)}[ e^{f(x_1, y)} / b(y; x_1:K) ]

    estimated on the batch with K = N - 1 as in the paper's code: for y_j, the joint term
    averages over the N - 1 leave-one-out sets {x_k: k != l}, l != j, that contain x_j; the
    marginal term uses the set {x_k: k != j} (all independent of y_j) for every x_i, i != j,
    so it reduces to 1/N sum_j m(y_j; x_-j) / b(y_j; x_-j).

    Parameters
    ----------
    scores : torch.Tensor
        (N, N) critic scores, N >= 2, positives on the diagonal.
    baseline : torch.Tensor or float
        log a(y_j), shape (N,), or a scalar (broadcast).
    alpha : float
        In [0, 1]: 1 is InfoNCE with N - 1 samples (<= log(N - 1)), 0 is TUBA (NWJ when
        log a = 1).

    Returns
    -------
    torch.Tensor
        The bound (float32 scalar).

    Raises
    ------
    ValueError
        On wrongly shaped scores or baseline, or ``alpha`` outside [0, 1].
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(baseline, Tensor):
        baseline = torch.as_tensor(baseline, dtype=torch.float32)
    baseline = baseline.to(scores.device, torch.float32)
    if baseline.ndim == 0:
        baseline = baseline.expand(n)
    if baseline.shape != (n,):
        raise ValueError(
            f"baseline must have shape ({n},) (one log a(y) per pair) or be a scalar, got {tuple(baseline.shape)}"
        )
    s = scores.T  # [j, i] = f(x_i, y_j): rows y, columns x (the paper's layout)
    rows = torch.arange(n, device=s.device)
    lse = torch.logsumexp(s, dim=1, keepdim=True)  # log sum_k e^{s_jk}
    # rest[j, l] = log sum_{k != l} e^{s_jk} - lse_j = log(1 - e^{s_jl - lse_j}): precise except
    # where s_jl is its row's maximum (1 - e^{..} cancels); those N entries are redone exactly.
    rest = torch.log(-torch.expm1((s - lse).clamp_max(-1e-6)))
    top = s.argmax(dim=1)
    rest_top = torch.logsumexp(s.index_put((rows, top), s.new_tensor(float("-inf"))), dim=1) - lse[:, 0]
    log_m_shift = lse - math.log(n - 1)  # log m(y_j; x_-l) = rest[j, l] + log_m_shift[j]
    log_a = baseline[:, None]

    def log_b(r: Tensor, shift: Tensor, a: Tensor) -> Tensor:
        """log(alpha m + (1 - alpha) a) for log m = r + shift."""
        if alpha == 1.0:
            return r + shift
        if alpha == 0.0:
            return a.expand_as(r)
        return torch.logaddexp(r + (math.log(alpha) + shift), a + math.log1p(-alpha))

    lb = log_b(rest, log_m_shift, log_a)  # (N, N): log b(y_j; {x_k: k != l})
    lb_top = log_b(rest_top[:, None], log_m_shift, log_a)[:, 0]  # exact at (j, top_j)
    is_diag_top = top == rows
    # Joint term: mean over j and l != j of f(x_j, y_j) - log b(y_j; x_-l).
    total = lb.sum() - lb.diagonal().sum() + (lb_top - lb[rows, top]).masked_fill(is_diag_top, 0.0).sum()
    joint = s.diagonal().mean() - total / (n * (n - 1))
    # Marginal term: 1/N sum_j m(y_j; x_-j) / b(y_j; x_-j).
    rest_diag = torch.where(is_diag_top, rest_top, rest.diagonal())
    lb_diag = torch.where(is_diag_top, lb_top, lb.diagonal())
    marg = torch.exp(rest_diag + log_m_shift[:, 0] - lb_diag).mean()
    return 1.0 + joint - marg


def mi_lower_bound(
    scores: Tensor, bound: str = "infonce", alpha: float = 0.5, baseline: Tensor | None = None
) -> Tensor:
    """Compute the lower bound named ``bound`` on ``scores``.

    Parameters
    ----------
    scores : torch.Tensor
        (N, N) critic scores, N >= 2, positives on the diagonal.
    bound : {"infonce", "nwj", "interpolated"}
        Which bound.
    alpha : float
        Interpolation of the interpolated bound (ignored by the others).
    baseline : torch.Tensor, optional
        log a(y) of the interpolated bound (default zeros; ignored by the others).

    Returns
    -------
    torch.Tensor
        The bound (float32 scalar, nats).

    Raises
    ------
    ValueError
        On an unknown ``bound`` or invalid scores.
    """
    if bound == "infonce":
        return infonce_lower_bound(scores)
    if bound == "nwj":
        return nwj_lower_bound(scores)
    if bound == "interpolated":
        if baseline is None:
            baseline = torch.zeros((), device=scores.device)
        return interpolated_lower_bound(scores, baseline, alpha)
    raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")


def _standardise(a: np.ndarray, name: str) -> np.ndarray:
    """Return the columns of a finite (N, D) or (N,) array standardised, as float32 (N, D)."""
    a = real_matrix(np.asarray(a, dtype=np.float64), name, vector_ok=True)
    std = a.std(axis=0)
    return ((a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def estimate_mi(
    x: np.ndarray,
    z: np.ndarray,
    *,
    bound: str = "infonce",
    alpha: float = 0.5,
    epochs: int = 50,
    batch_size: int = 512,
    lr: float = 5e-3,
    seed: int = 0,
    hidden: int = 64,
    critic_dim: int = 32,
    layers: int = 2,
    tail: float = 0.2,
    val_fraction: float = 0.0,
) -> dict:
    """Estimate I(x; z) in nats by training a separable MLP critic (MINE-style, as in VAEM).

    Each column of x and z is standardised (MI is invariant to that). Every epoch shuffles the
    rows into batches of ``batch_size`` (the last incomplete batch is dropped, so InfoNCE's cap
    log(batch_size) stays fixed; with fewer rows than ``batch_size`` each batch is all rows)
    and takes one Adam step per batch maximising ``bound``, with a cosine learning-rate decay
    to ``lr / 10``. With ``val_fraction`` > 0 that fraction of rows is held out and the
    per-epoch score is the bound on the held-out batches (after the epoch's steps); otherwise
    it is the mean bound of the epoch's training batches (before each step).

    Parameters
    ----------
    x, z : ndarray of shape (N, Dx) and (N, Dz)
        Paired rows, finite; a 1-D array is one feature.
    bound : {"infonce", "nwj", "interpolated"}
        The lower bound maximised and reported.
    alpha : float
        Interpolation of the ``interpolated`` bound, in [0, 1].
    epochs : int
        Passes over the training rows, >= 1.
    batch_size : int
        Rows per step (at most the training rows), >= 2.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the row order, the held-out rows and the critic's initial weights.
    hidden, critic_dim, layers : int
        Width, output size and hidden layers of the two MLPs of the critic (:func:`mlp`).
    tail : float
        Fraction of the last epochs averaged into ``mi``, in (0, 1].
    val_fraction : float
        Fraction of rows held out for scoring, in [0, 1).

    Returns
    -------
    dict
        ``mi`` (mean per-epoch score over the last ``tail`` fraction of epochs), ``history``
        (per-epoch scores), ``bound``, ``batch_size`` (used) and ``n_train``.

    Raises
    ------
    ValueError
        On an unknown bound, parameters out of range, or mismatched, non-finite or too few rows.

    Notes
    -----
    Deterministic for a ``seed`` on a given machine and thread count; the global torch RNG is
    left untouched.
    """
    _check_estimate_options(bound, alpha, epochs, tail, val_fraction)
    xs, zs = _standardise(x, "x"), _standardise(z, "z")
    if len(xs) != len(zs):
        raise ValueError(f"x and z must have the same number of rows, got {len(xs)} and {len(zs)}")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = _split_rows(rng, len(xs), val_fraction)
    batch = min(int(batch_size), len(train_idx))
    if batch < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = _Training(xs, zs, bound, alpha, (hidden, critic_dim, layers), lr, int(epochs), len(train_idx), batch)
        history = [critic.epoch(train_idx[rng.permutation(len(train_idx))], val_idx) for _ in range(int(epochs))]
    last = max(1, int(round(tail * len(history))))
    return {
        "mi": float(np.mean(history[-last:])),
        "history": history,
        "bound": bound,
        "batch_size": batch,
        "n_train": int(len(train_idx)),
    }


def _check_estimate_options(bound: str, alpha, epochs, tail, val_fraction) -> None:
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    check_fraction("alpha", alpha)
    check_int("epochs", epochs, 1)
    if not 0.0 < tail <= 1.0:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _split_rows(rng: np.random.Generator, n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle the rows and hold out ``val_fraction`` of them: (training rows, held-out rows)."""
    order = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if len(train_idx) < 2 or 0 < n_val < 2:
        raise ValueError(f"x: too few rows ({n}) for val_fraction={val_fraction}; the bounds need pairs >= 2")
    return train_idx, val_idx


class _Training:
    """A fresh critic (drawn from torch's global generator), its optimizer and schedule."""

    def __init__(self, xs, zs, bound, alpha, mlp_shape, lr, epochs, n_train, batch):
        hidden, critic_dim, layers = mlp_shape
        self.critic = SeparableCritic(
            mlp(xs.shape[1], hidden, critic_dim, layers), mlp(zs.shape[1], hidden, critic_dim, layers)
        )
        self.log_baseline = nn.Parameter(torch.zeros(()))
        params = list(self.critic.parameters()) + ([self.log_baseline] if bound == "interpolated" else [])
        self.opt = torch.optim.Adam(params, lr=lr)
        steps_per_epoch = max(1, (n_train - batch) // batch + 1)
        # Cosine decay to lr / 10: the score averages the last epochs, so damp their noise.
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, T_max=epochs * steps_per_epoch, eta_min=lr / 10
        )
        self.xt, self.zt = torch.from_numpy(xs), torch.from_numpy(zs)
        self.bound, self.alpha, self.batch = bound, alpha, batch

    def value(self, index: np.ndarray) -> Tensor:
        """Return the bound on the rows ``index``."""
        idx = torch.from_numpy(index)
        return mi_lower_bound(self.critic(self.xt[idx], self.zt[idx]), self.bound, self.alpha, self.log_baseline)

    def epoch(self, perm: np.ndarray, val_idx: np.ndarray) -> float:
        """Take one step per full batch of ``perm`` and return the epoch's score."""
        batch, values = self.batch, []
        for start in range(0, len(perm) - batch + 1, batch):
            mi = self.value(perm[start : start + batch])
            self.opt.zero_grad(set_to_none=True)
            (-mi).backward()
            self.opt.step()
            self.schedule.step()
            values.append(float(mi.detach()))
        if len(val_idx):
            with torch.no_grad():
                vb = min(batch, len(val_idx))
                values = [self.value(val_idx[s : s + vb]).item() for s in range(0, len(val_idx) - vb + 1, vb)]
        return float(np.mean(values))
