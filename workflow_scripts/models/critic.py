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
        """(N, N) matrix with entry [i, j] = g(x_i) . h(z_j), in float32 even under autocast
        (the bounds exponentiate the scores)."""
        gx = self.x_encoder(x)
        hz = self.z_encoder(z)
        if gx.shape != hz.shape or gx.ndim != 2:
            raise ValueError(
                f"critic embeddings must both be (N, D); got g(x) {tuple(gx.shape)}, h(z) {tuple(hz.shape)}"
            )
        with torch.autocast(gx.device.type, enabled=False):
            return gx.float() @ hz.float().T

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.scores(x, z)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Module:
    """``layers`` hidden Linear + ReLU layers of width ``hidden``, then a Linear to ``out_dim``."""
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
    """log of the mean of e^{scores} over the N (N - 1) off-diagonal entries."""
    n = scores.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=scores.device)
    off = scores.masked_fill(eye, float("-inf"))
    return torch.logsumexp(off.flatten(), dim=0) - math.log(n * (n - 1))


def infonce_lower_bound(scores: Tensor) -> Tensor:
    """InfoNCE (CPC) bound, a scalar in nats, never above log N:

    I >= log N + 1/N sum_j [ s_jj - log sum_i e^{s_ij} ]   with s_ij = f(x_i, y_j).
    """
    scores = _check_scores(scores)
    n = scores.shape[0]
    return math.log(n) + (scores.diagonal() - torch.logsumexp(scores, dim=0)).mean()


def nwj_lower_bound(scores: Tensor) -> Tensor:
    """NWJ (f-GAN KL, MINE-f) bound, a scalar in nats, with the tight shift e^{f - 1}:

    I >= 1/N sum_i s_ii - 1/(N (N - 1)) sum_{i != j} e^{s_ij - 1}.

    Unbounded above but its variance grows like e^I / N.
    """
    scores = _check_scores(scores)
    return scores.diagonal().mean() - torch.exp(_logmeanexp_offdiag(scores) - 1.0)


def interpolated_lower_bound(scores: Tensor, baseline: Tensor, alpha: float) -> Tensor:
    """Interpolated bound I_alpha of Poole et al. (2019, eq. 11), a scalar in nats.

    With b(y; x_1:K) = alpha m(y; x_1:K) + (1 - alpha) a(y), m(y; x_1:K) = 1/K sum_k e^{f(x_k, y)}:

    I >= 1 + E_{p(x_1:K) p(y | x_1)}[ log e^{f(x_1, y)} / b(y; x_1:K) ]
           - E_{p(x_1:K) p(y)}[ e^{f(x_1, y)} / b(y; x_1:K) ]

    estimated on the batch with K = N - 1 as in the paper's code: for y_j, the joint term
    averages over the N - 1 leave-one-out sets {x_k: k != l}, l != j, that contain x_j; the
    marginal term uses the set {x_k: k != j} (all independent of y_j) for every x_i, i != j,
    so it reduces to 1/N sum_j m(y_j; x_-j) / b(y_j; x_-j).

    ``baseline`` is log a(y_j), shape (N,) (or a scalar, broadcast); ``alpha`` in [0, 1]:
    1 is InfoNCE with N - 1 samples (<= log(N - 1)), 0 is TUBA (NWJ when log a = 1).
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
    """The lower bound named ``bound`` ("infonce", "nwj" or "interpolated") on ``scores``.

    ``alpha`` and ``baseline`` (log a(y), default zeros) apply to the interpolated bound only.
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
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
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

    x (N, Dx) and z (N, Dz) are paired rows (1-D arrays are one feature); each column is
    standardised (MI is invariant to that). Every epoch shuffles the rows into batches of
    ``batch_size`` (the last incomplete batch is dropped, so InfoNCE's cap log(batch_size)
    stays fixed; with fewer rows than ``batch_size`` each batch is all rows) and takes one Adam
    step per batch maximising ``bound``. With ``val_fraction`` > 0 that fraction of rows is held
    out and the per-epoch score is the bound on the held-out batches (after the epoch's steps);
    otherwise it is the mean bound of the epoch's training batches (before each step).

    Returns {"mi": mean per-epoch score over the last ``tail`` fraction of epochs, "history":
    per-epoch scores, "bound", "batch_size", "n_train"}. Deterministic for a ``seed`` on a
    given machine and thread count; the global torch RNG is left untouched.
    """
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < tail <= 1.0:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    xs, zs = _standardise(x, "x"), _standardise(z, "z")
    if len(xs) != len(zs):
        raise ValueError(f"x and z must have the same number of rows, got {len(xs)} and {len(zs)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xs))
    n_val = int(round(val_fraction * len(xs)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if len(train_idx) < 2 or 0 < n_val < 2:
        raise ValueError(f"x: too few rows ({len(xs)}) for val_fraction={val_fraction}; the bounds need pairs >= 2")
    batch = min(int(batch_size), len(train_idx))
    if batch < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = SeparableCritic(
            mlp(xs.shape[1], hidden, critic_dim, layers), mlp(zs.shape[1], hidden, critic_dim, layers)
        )
        log_baseline = nn.Parameter(torch.zeros(()))
        params = list(critic.parameters()) + ([log_baseline] if bound == "interpolated" else [])
        opt = torch.optim.Adam(params, lr=lr)
        steps_per_epoch = max(1, (len(train_idx) - batch) // batch + 1)
        # Cosine decay to lr / 10: the score averages the last epochs, so damp their noise.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs) * steps_per_epoch, eta_min=lr / 10)
        xt, zt = torch.from_numpy(xs), torch.from_numpy(zs)

        def value(index: np.ndarray) -> Tensor:
            idx = torch.from_numpy(index)
            return mi_lower_bound(critic(xt[idx], zt[idx]), bound, alpha, log_baseline)

        history: list[float] = []
        for _ in range(int(epochs)):
            perm = train_idx[rng.permutation(len(train_idx))]
            values = []
            for start in range(0, len(perm) - batch + 1, batch):
                mi = value(perm[start : start + batch])
                opt.zero_grad(set_to_none=True)
                (-mi).backward()
                opt.step()
                schedule.step()
                values.append(float(mi.detach()))
            if n_val:
                with torch.no_grad():
                    vb = min(batch, n_val)
                    values = [value(val_idx[s : s + vb]).item() for s in range(0, n_val - vb + 1, vb)]
            history.append(float(np.mean(values)))
    last = max(1, int(round(tail * len(history))))
    return {
        "mi": float(np.mean(history[-last:])),
        "history": history,
        "bound": bound,
        "batch_size": batch,
        "n_train": int(len(train_idx)),
    }
