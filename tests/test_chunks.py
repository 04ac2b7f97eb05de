"""Truncated BPTT: T chunks of one step, carrying (h, c) forward and (δh, δc) backward,
equal one call over all T steps."""
import numpy as np
import pytest

import fastlstm
from conftest import random_problem


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_step_by_step_equals_one_call(dtype, tol):
    T, B, D, H, L = 6, 5, 3, 4, 2
    m, x, h0, c0, _, dy, dhn, dcn = random_problem(T, B, D, H, L, dtype=dtype)
    y, (hn, cn) = m.forward(x, h0, c0)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    full_grads = m.grads.copy()

    m.zero_grad()
    states, h, c, ys = [], h0, c0, []
    for t in range(T):
        states.append((h, c))
        yt, (h, c) = m.forward(x[t:t + 1], h, c)
        ys.append(yt)
    assert np.max(np.abs(np.concatenate(ys) - y)) <= tol
    assert np.max(np.abs(h - hn)) <= tol and np.max(np.abs(c - cn)) <= tol
    dh, dc, dxs = dhn, dcn, []
    for t in range(T - 1, -1, -1):
        m.forward(x[t:t + 1], *states[t])
        dxt, (dh, dc) = m.backward(dy[t:t + 1], dh, dc)
        dxs.append(dxt)
    assert np.max(np.abs(np.concatenate(dxs[::-1]) - dx)) <= tol
    assert np.max(np.abs(dh - dh0)) <= tol and np.max(np.abs(dc - dc0)) <= tol
    assert np.max(np.abs(m.grads - full_grads)) <= tol * 10


def test_rows_do_not_depend_on_the_rest_of_the_batch():
    """Each batch row's result is bitwise the same alone or in any batch (fixed row blocks)."""
    m = fastlstm.LSTM(5, 7, 2, seed=0)
    x = np.random.default_rng(0).standard_normal((9, 11, 5)).astype(np.float32)
    y, _ = m.forward(x)
    for r in (0, 5, 10):
        yr, _ = m.forward(np.ascontiguousarray(x[:, r:r + 1]))
        assert np.array_equal(yr[:, 0], y[:, r]), f"row {r} differs alone"


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_streaming_step_matches_forward(dtype, tol):
    T, B, D, H, L = 7, 3, 4, 6, 2
    m, x, h0, c0, *_ = random_problem(T, B, D, H, L, dtype=dtype)
    y, (hn, cn) = m.forward(x, h0, c0)
    h, c = h0.copy(), c0.copy()
    for t in range(T):
        top = m.step(np.ascontiguousarray(x[t]), h, c)
        assert np.max(np.abs(top - y[t])) <= tol, f"step {t}"
    assert np.max(np.abs(h - hn)) <= tol and np.max(np.abs(c - cn)) <= tol
    m.backward(np.zeros_like(y))             # step() left the forward's saved state alone


def test_streaming_step_refuses_bad_state():
    m = fastlstm.LSTM(2, 3, 2)
    x = np.zeros((1, 2), np.float32)
    h = np.zeros((2, 1, 3), np.float32)
    ro = h.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.step(x, ro, h.copy())
    with pytest.raises(ValueError, match=r"c must have shape \(2, 1, 3\)"):
        m.step(x, h, np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="x must be finite"):
        m.step(np.full((1, 2), np.inf, np.float32), h, h.copy())
    assert not h.any()
