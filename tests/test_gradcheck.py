"""Centred finite differences in float64 for x, h0, c0 and every parameter."""
import numpy as np
import pytest

from conftest import random_problem

EPS = 1e-6


def _loss(m, x, h0, c0, lengths, dy, dhn, dcn):
    """E = Σ y⊙dy + Σ hn⊙dhn + Σ cn⊙dcn, so δy = dy, δhn = dhn, δcn = dcn."""
    y, (hn, cn) = m.forward(x, h0, c0, lengths)
    return float(np.sum(y * dy) + np.sum(hn * dhn) + np.sum(cn * dcn))


def _numeric(f, a):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + EPS
        up = f()
        a[idx] = old - EPS
        down = f()
        a[idx] = old
        g[idx] = (up - down) / (2 * EPS)
    return g


def _assert_close(name, analytic, numeric):
    rel = np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-300)
    worst = np.max(np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric)))
    assert rel <= 1e-6 and worst <= 1e-6, f"{name}: relative error {rel:.2e}, worst entry {worst:.2e}"


@pytest.mark.parametrize("T,B,D,H,L,with_lengths", [(5, 3, 3, 4, 1, False), (4, 5, 2, 3, 2, True)])
def test_finite_differences(T, B, D, H, L, with_lengths, forward_mode):
    m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, D, H, L, with_lengths=with_lengths, seed=3)
    m.forward(x, h0, c0, lengths)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    f = lambda: _loss(m, x, h0, c0, lengths, dy, dhn, dcn)  # noqa: E731
    _assert_close("dx", dx, _numeric(f, x))
    _assert_close("dh0", dh0, _numeric(f, h0))
    _assert_close("dc0", dc0, _numeric(f, c0))
    grads = m.grads.copy()
    for l, layer in enumerate(m.layers):
        _assert_close(f"dW[{l}]", layer.dW, _numeric(f, layer.W))
        _assert_close(f"db[{l}]", layer.db, _numeric(f, layer.b))
    assert np.array_equal(m.grads, grads), "finite differences must not touch the gradients"
