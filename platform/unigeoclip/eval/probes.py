"""Linear probes of location encoders: ridge regression on frozen features, R^2 on held-out spatial blocks.

The paper's protocol: a location encoder is good when simple linear maps from its
embedding predict real quantities of the place (climate, altitude, population). The
split is by spatial block (S2 parent cells), never by point: neighbouring points share
their targets, so a random split would reward memorising the training points. The
ridge strength is chosen per target by cross-validation over the training blocks
(grouped by block for the same reason); features and targets are standardised. The fits
are closed-form (one SVD per fold serves every alpha and every target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..geo.s2 import cell_token, parent_token, stable_fraction

ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 8))


@dataclass(frozen=True)
class BlockSplit:
    """Which probe points are held out: whole S2 parent cells at ``level``."""

    level: int
    blocks: np.ndarray  # (N,) str: each point's block token
    test: np.ndarray  # (N,) bool

    @property
    def n_blocks(self) -> int:
        """How many distinct blocks the points fall in (training and test together)."""
        return len(set(self.blocks.tolist()))


@dataclass(frozen=True)
class ProbeResult:
    """One feature set's probes: R^2 on the test blocks and the chosen ridge alpha, per target."""

    features: str
    dim: int
    r2: dict[str, float]
    alpha: dict[str, float]

    @property
    def mean_r2(self) -> float:
        """The mean R^2 over the targets; NaN when there are none."""
        return float(np.mean(list(self.r2.values()))) if self.r2 else float("nan")


def spatial_blocks(
    latlon: np.ndarray,
    *,
    test_fraction: float = 0.2,
    min_blocks: int = 100,
    min_points_per_block: float = 5.0,
    level: int | None = None,
    salt: str = "probe",
) -> BlockSplit:
    """Block each point by its S2 parent cell and hold out a fixed share of the blocks (ranked by a stable hash).

    Without ``level``, the coarsest level (from 2) with at least ``min(min_blocks,
    N / min_points_per_block)`` blocks. For places spread over the world this is level 3
    (cells ~1,000 km across, about the reach of climate's spatial autocorrelation);
    level 2 (~2,000 km) leaves whole climate zones unseen and makes every probe extrapolate.
    """
    leaves = [cell_token(float(a), float(b), 30) for a, b in latlon]
    wanted = max(3, min(min_blocks, int(len(leaves) / min_points_per_block)))
    levels = [level] if level is not None else list(range(2, 31))
    for lv in levels:
        blocks = np.array([parent_token(t, lv) for t in leaves], dtype=object)
        if level is not None or len(set(blocks.tolist())) >= wanted:
            break
    unique = sorted(set(blocks.tolist()), key=lambda b: stable_fraction(b, salt))
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    held = set(unique[:n_test])
    return BlockSplit(lv, blocks, np.array([b in held for b in blocks.tolist()], dtype=bool))


def _standardise(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    mean, std = x[rows].mean(axis=0), x[rows].std(axis=0)
    return np.asarray((x - mean) / np.where(std > 0, std, 1.0))


def ridge_predictions(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas: Sequence[float]
) -> np.ndarray:
    """Ridge fits for every alpha at once (one decomposition): ``(A, N_test, T)`` predictions of centred targets.

    ``x_*`` are standardised ``(N, F)`` features, ``y_train`` ``(N, T)`` centred targets; an
    intercept is implicit in the centring. With X = U S V^T the coefficients are
    V diag(s / (s^2 + alpha)) U^T y = V diag(1 / (s^2 + alpha)) V^T X^T y: where there are more rows
    than features, V and s^2 come from the eigen-decomposition of the F x F matrix X^T X, much cheaper
    than the SVD of the N x F matrix (its error, ~1e-16 of the largest s^2, is small beside the smallest
    alpha); otherwise from the SVD.
    """
    x_mean = x_train.mean(axis=0)
    xc = x_train - x_mean
    if xc.shape[0] >= xc.shape[1]:
        s2, v = np.linalg.eigh(xc.T @ xc)  # (F,), (F, F)
        vty = v.T @ (xc.T @ y_train)  # (F, T)
        s2 = np.maximum(s2, 0.0)[None, :]  # rounding can leave a zero eigenvalue slightly negative
        shrink = 1.0 / (s2 + np.asarray(alphas, np.float64)[:, None])  # (A, F)
    else:
        u, s, vt = np.linalg.svd(xc, full_matrices=False)  # (N, r), (r,), (r, F)
        v, vty = vt.T, u.T @ y_train
        shrink = s[None, :] / (s[None, :] ** 2 + np.asarray(alphas, np.float64)[:, None])  # (A, r)
    coef = np.einsum("fr,ar,rt->aft", v, shrink, vty)  # (A, F, T)
    return np.einsum("nf,aft->ant", x_test - x_mean, coef)


def r2_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 per column of ``(N, T)`` truths against ``(..., N, T)`` predictions (1 - SSE / SST, as sklearn)."""
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    sse = ((pred - y) ** 2).sum(axis=-2)
    return np.asarray(1.0 - sse / np.where(sst > 0, sst, 1.0))


def ridge_r2(
    features: np.ndarray, targets: np.ndarray, split: BlockSplit, alphas: Sequence[float] = ALPHAS, folds: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """R^2 on the test blocks ``(T,)`` and the chosen alphas ``(T,)`` of standardised ridge fits on the training blocks.

    Each target's alpha maximises the mean R^2 of a grouped ``folds``-fold cross-validation
    over the training blocks (whole blocks per fold, assigned round-robin by block hash order).
    """
    train = np.flatnonzero(~split.test)
    test = np.flatnonzero(split.test)
    x = _standardise(features, train)
    y = targets - targets[train].mean(axis=0)
    y = y / np.where(y[train].std(axis=0) > 0, y[train].std(axis=0), 1.0)
    blocks = sorted(set(split.blocks[train].tolist()), key=lambda b: stable_fraction(b, "folds"))
    fold_of_block = {b: i % min(folds, len(blocks)) for i, b in enumerate(blocks)}
    fold = np.array([fold_of_block[b] for b in split.blocks[train].tolist()])
    scores = np.zeros((len(alphas), y.shape[1]))
    for f in np.unique(fold):
        fit, held = train[fold != f], train[fold == f]
        y_fit = y[fit] - y[fit].mean(axis=0)
        pred = ridge_predictions(x[fit], y_fit, x[held], alphas) + y[fit].mean(axis=0)
        scores += r2_scores(y[held], pred)
    best = np.argmax(scores, axis=0)  # (T,)
    y_train = y[train] - y[train].mean(axis=0)
    pred = ridge_predictions(x[train], y_train, x[test], alphas) + y[train].mean(axis=0)  # (A, N_test, T)
    r2 = r2_scores(y[test], pred)  # (A, T)
    cols = np.arange(y.shape[1])
    return r2[best, cols], np.asarray(alphas, np.float64)[best]


def probe(name: str, features: np.ndarray, targets: Mapping[str, np.ndarray], split: BlockSplit) -> ProbeResult:
    """Ridge probes of one feature set ``(N, F)`` for every target ``(N,)``, on one block split."""
    features = np.asarray(features, np.float64)
    keys = list(targets)
    y = np.stack([np.asarray(targets[k], np.float64) for k in keys], axis=1)  # (N, T)
    r2, alpha = ridge_r2(features, y, split)
    return ProbeResult(
        name,
        int(features.shape[1]),
        dict(zip(keys, r2.tolist(), strict=True)),
        dict(zip(keys, alpha.tolist(), strict=True)),
    )
