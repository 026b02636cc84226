"""Scale-free observation features of a growth state (pure functions of tensors).

Per-site and global features are documented in the README and in ``GrowthEnv``'s docstring;
gains are divided by the current loss so that features mean the same thing on every task.
"""

from __future__ import annotations

import numpy as np

SITE_FEATURES = (
    "present",
    "log_width",
    "update_gain",
    "lambda1_sq",
    "lambda2_sq",
    "lambda3_sq",
    "sum_lambda_sq",
    "bottleneck",
    "candidate_gain",
    "gain_per_relative_param",
    "relative_param_cost",
    "relative_flop_cost",
    "significant_fraction",
)
GLOBAL_FEATURES = (
    "log_train_loss",
    "log_val_loss",
    "val_accuracy",
    "log_params",
    "log_flops",
    "compute_used",
    "param_budget_left",
    "step_fraction",
    "generalisation_gap",
    "last_val_improvement",
)
TOP_K = 3


def observation_size(max_sites: int) -> int:
    """Length of the observation vector: ``max_sites`` rows of site features, then the
    global features."""
    return max_sites * len(SITE_FEATURES) + len(GLOBAL_FEATURES)


def symlog(x: np.ndarray | float) -> np.ndarray:
    """``sign(x) log(1 + |x|)``: keeps ratios spanning decades in a small range."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.log1p(np.abs(x))


def site_features(
    widths: np.ndarray,
    update_gain: np.ndarray,
    eigenvalues: np.ndarray,
    num_significant: np.ndarray,
    bottleneck: np.ndarray,
    candidate_gain: np.ndarray,
    added_params: np.ndarray,
    added_flops: np.ndarray,
    loss: float,
    params: int,
    flops: int,
    neurons: int,
    max_sites: int,
) -> np.ndarray:
    """Feature matrix ``(max_sites, len(SITE_FEATURES))``; rows past the net's sites are 0.

    ``eigenvalues`` is ``(num_sites, >= TOP_K)`` (zero padded), the rest ``(num_sites,)``.
    """
    n = len(widths)
    out = np.zeros((max_sites, len(SITE_FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    scale = max(float(loss), 1e-12)
    lam_sq = eigenvalues[:, :TOP_K] ** 2
    sig = np.arange(eigenvalues.shape[1])[None, :] < num_significant[:, None]
    rel_params = added_params / max(params, 1)
    gain = candidate_gain / scale
    out[:n, 0] = 1.0
    out[:n, 1] = np.log1p(widths)
    out[:n, 2] = symlog(update_gain / scale)
    out[:n, 3 : 3 + TOP_K] = symlog(lam_sq / scale)
    out[:n, 6] = symlog((eigenvalues**2 * sig).sum(1) / scale)
    out[:n, 7] = symlog(bottleneck / scale)
    out[:n, 8] = symlog(gain)
    out[:n, 9] = symlog(gain / np.maximum(rel_params, 1e-12))
    out[:n, 10] = symlog(rel_params)
    out[:n, 11] = symlog(added_flops / max(flops, 1))
    out[:n, 12] = np.minimum(num_significant / max(neurons, 1), 4.0)
    return out


def global_features(
    train_loss: float,
    val_loss: float,
    val_accuracy: float | None,
    params: int,
    flops: int,
    compute_used: float,
    param_budget_left: float,
    step_fraction: float,
    last_val_improvement: float,
) -> np.ndarray:
    """Feature vector ``(len(GLOBAL_FEATURES),)``."""
    eps = 1e-12
    return np.array(
        [
            np.log(max(train_loss, eps)),
            np.log(max(val_loss, eps)),
            0.0 if val_accuracy is None else val_accuracy,
            np.log(max(params, 1)),
            np.log(max(flops, 1)),
            compute_used,
            param_budget_left,
            step_fraction,
            np.log(max(val_loss, eps) / max(train_loss, eps)),
            float(symlog(last_val_improvement)),
        ],
        dtype=np.float64,
    )
