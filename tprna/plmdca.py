"""Pseudo-likelihood DCA couplings of an alignment (plmDCA; Ekeberg et al. 2013, the
symmetric variant), the coupling estimate RNA contact methods found sharper than the
mean-field inverse covariance.

For one-hot rows x_n (q states per column, the gap one of them) and normalised weights w̃:

    P(x_ni = a | rest) ∝ exp(h_i(a) + Σ_{j≠i} J_ij(a, x_nj))
    f(h, J) = −Σ_n w̃_n Σ_i log P(x_ni | rest) + λ_h ‖h‖² + λ_J Σ_{i<j} ‖J_ij‖²

minimised by L-BFGS (scipy), with λ_h = 0.01 and λ_J = 0.01 for B_eff = Σ w > 500, rising
linearly to 0.1 as B_eff falls to 0 (the paper's rule for shallow alignments).  The
returned couplings are in the zero-sum gauge, ready for :func:`tprna.features.coupling_map`.

numpy + scipy only, so the inference path keeps needing no PyTorch; the cost is two
(N × Lq) · (Lq × Lq) GEMMs per L-BFGS step on the distinct rows.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

__all__ = ["plm_couplings", "pseudo_likelihood", "coupling_regularisation", "PLM_MAX_ITERATIONS"]

# L-BFGS steps: the scores settle well before the objective does (raw plm maps on the release's
# 14 held-out coconet train families, long top-L: 0.309 / 0.317 / 0.314 at 25 / 50 / 100 steps)
PLM_MAX_ITERATIONS = 50
LAMBDA_H = 0.01


def coupling_regularisation(effective_sequences: float) -> float:
    """λ_J: 0.01 above 500 effective sequences, up to 0.1 for none (Ekeberg et al. 2013)."""
    return 0.01 if effective_sequences > 500 else 0.1 - 0.09 * effective_sequences / 500


def _one_hot(rows: np.ndarray, q: int) -> np.ndarray:
    n, length = rows.shape
    x = np.zeros((n, length * q), dtype=np.float32)
    x[np.arange(n)[:, None], np.arange(length) * q + rows] = 1.0
    return x


def pseudo_likelihood(j: np.ndarray, h: np.ndarray, x: np.ndarray, w: np.ndarray, q: int,
                      lambda_j: float, lambda_h: float = LAMBDA_H) -> tuple[float, np.ndarray, np.ndarray]:
    """f(h, J) above and its gradients, for ``j`` the symmetric (Lq, Lq) coupling matrix with
    zero diagonal blocks, ``h`` (Lq,), one-hot ``x`` (N, Lq) and normalised weights ``w``."""
    n, lq = x.shape
    logits = (x @ j + h).reshape(n, lq // q, q)
    logits -= logits.max(axis=2, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=2, keepdims=True))
    log_p = (logits - log_z).reshape(n, lq)
    nll = -float(np.dot(w.astype(np.float64), (log_p * x).sum(axis=1, dtype=np.float64)))
    residual = (np.exp(log_p) - x) * w[:, None]  # d nll / d logits
    grad_j = x.T @ residual
    grad_j = (grad_j + grad_j.T) / 2  # J_ij(a, b) and J_ji(b, a) are one parameter
    _zero_diagonal_blocks(grad_j, q)
    value = nll + lambda_h * float(np.sum(h.astype(np.float64) ** 2)) \
        + lambda_j * float(np.sum(j.astype(np.float64) ** 2)) / 2  # ‖J‖² counts each pair twice
    return value, grad_j + lambda_j * j, residual.sum(axis=0) + 2 * lambda_h * h


def _zero_diagonal_blocks(matrix: np.ndarray, q: int) -> None:
    view = matrix.reshape(matrix.shape[0] // q, q, matrix.shape[1] // q, q)
    idx = np.arange(view.shape[0])
    view[idx, :, idx, :] = 0.0


def plm_couplings(rows: np.ndarray, weights: np.ndarray, q: int,
                  max_iterations: int = PLM_MAX_ITERATIONS) -> np.ndarray:
    """Zero-sum-gauge couplings J (L, L, q, q) float64 of distinct ``rows`` (N, L) with their
    ``weights`` (summed over copies; B_eff = their sum).  One row: all zero (no coevolution)."""
    n, length = rows.shape
    if n < 2 or length < 2:
        return np.zeros((length, length, q, q))
    lambda_j = coupling_regularisation(float(np.sum(weights)))
    w = (weights / weights.sum()).astype(np.float32)
    x = _one_hot(rows, q)
    lq = length * q
    split = lq * lq

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        j = theta[:split].astype(np.float32).reshape(lq, lq)
        h = theta[split:].astype(np.float32)
        value, grad_j, grad_h = pseudo_likelihood(j, h, x, w, q, lambda_j)
        return value, np.concatenate([grad_j.ravel(), grad_h]).astype(np.float64)

    result = minimize(objective, np.zeros(split + lq), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iterations, "gtol": 1e-6})
    j = result.x[:split].reshape(length, q, length, q).transpose(0, 2, 1, 3)
    return j - j.mean(axis=2, keepdims=True) - j.mean(axis=3, keepdims=True) + j.mean(axis=(2, 3), keepdims=True)
