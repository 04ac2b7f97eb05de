"""Loss heads: the dense output layer's loss and its gradient δP, in place.

P (S, B, O) holds the head's products h Vᵀ (S = T for a loss at every step, 1 for a loss at
the last step) and receives δP = ∂E/∂P. Steps past a row's length (every-step losses only)
count for nothing. E is the mean over the predictions that count.
"""
import numpy as np

from ._config import JIT, njit
from .kernels import _like


@njit(**JIT)
def _counts(t, r, lengths, every):
    return (not every) or t < lengths[r]


@njit(**JIT)
def _count(S, B, lengths, every):
    """The number of (t, r) predictions that count."""
    n = 0
    for t in range(S):
        for r in range(B):
            if _counts(t, r, lengths, every):
                n += 1
    return n


@njit(**JIT)
def mse(dP, P, bias, target, lengths, every):
    """E = mean over counted (t, r, k) of (P + bias - target)²; dP = ∂E/∂P. Returns E."""
    S, B, O = P.shape
    n = _count(S, B, lengths, every) * O
    loss = 0.0
    for t in range(S):
        for r in range(B):
            live = _counts(t, r, lengths, every)
            for k in range(O):
                e = P[t, r, k] + bias[k] - target[t, r, k]
                if live:
                    loss += np.float64(e) * np.float64(e)
                    dP[t, r, k] = 2 * e / n
                else:
                    dP[t, r, k] = 0
    return loss / n


@njit(**JIT)
def softmax_xent(dP, P, bias, labels, lengths, every):
    """E = mean over counted (t, r) of -log softmax(P + bias)[label]; dP = (softmax - onehot)/n.
    Returns (E, number of counted predictions whose argmax is the label)."""
    S, B, O = P.shape
    n = _count(S, B, lengths, every)
    loss = 0.0
    correct = 0
    for t in range(S):
        for r in range(B):
            if not _counts(t, r, lengths, every):
                dP[t, r, :] = 0
                continue
            zmax = P[t, r, 0] + bias[0]
            best = 0
            for k in range(1, O):
                if P[t, r, k] + bias[k] > zmax:
                    zmax = P[t, r, k] + bias[k]
                    best = k
            total = 0.0
            for k in range(O):
                e = np.exp(np.float64(P[t, r, k] + bias[k] - zmax))
                dP[t, r, k] = e
                total += e
            y = labels[t, r]
            loss += np.log(total) - np.float64(P[t, r, y] + bias[y] - zmax)
            correct += best == y
            for k in range(O):
                dP[t, r, k] = (dP[t, r, k] / total - (k == y)) / n
    return loss / n, correct


@njit(**JIT)
def softmax(P, bias):
    """P (S,B,O) ← softmax(P + bias) over the last axis, in place."""
    S, B, O = P.shape
    for t in range(S):
        for r in range(B):
            zmax = P[t, r, 0] + bias[0]
            for k in range(1, O):
                zmax = max(zmax, P[t, r, k] + bias[k])
            total = 0.0
            for k in range(O):
                P[t, r, k] = np.exp(P[t, r, k] + bias[k] - zmax)
                total += P[t, r, k]
            for k in range(O):
                P[t, r, k] /= total


@njit(**JIT)
def step_predictions(P, h, V, bias, xent):
    """P (B,O) = h (B,H) Vᵀ + bias, then softmax over O if xent: the head of one streaming
    step in one call (at B = 1 cheaper than a BLAS product and NumPy's additions)."""
    B, O = P.shape
    for r in range(B):
        for k in range(O):
            s = _like(bias[k], 0.0)
            for j in range(h.shape[1]):
                s += h[r, j] * V[k, j]
            P[r, k] = s if xent else s + bias[k]
    if xent:
        softmax(P.reshape((1, B, O)), bias)
