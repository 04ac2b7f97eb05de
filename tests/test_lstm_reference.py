"""The Numba kernels against the line-by-line reference, over shapes including edge sizes."""
import numpy as np
import pytest

import reference as ref
from conftest import random_problem

SHAPES = [  # T, B, D, H, L
    (1, 1, 1, 1, 1), (1, 3, 2, 5, 1), (6, 1, 3, 4, 1), (5, 4, 3, 7, 1),
    (7, 5, 6, 3, 2), (4, 9, 2, 2, 3), (3, 13, 5, 8, 2),
    (4, 7, 5, 37, 2),   # full weight panels and partial ones, both directions, both dtypes
]


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T%dB%dD%dH%dL%d" % s)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_forward_and_backward_match_reference(shape, dtype, tol, with_lengths):
    T, B, D, H, L = shape
    m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, D, H, L, dtype, with_lengths=with_lengths)
    lens = np.full(B, T) if lengths is None else lengths
    Ws = [layer.W.astype(np.float64) for layer in m.layers]
    bs = [layer.b.astype(np.float64) for layer in m.layers]
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    y_r, hn_r, cn_r, tape = ref.forward(Ws, bs, f64(x), f64(h0), f64(c0), lens)
    dx_r, dh0_r, dc0_r, dW_r, db_r = ref.backward(Ws, tape, f64(dy), f64(dhn), f64(dcn), lens)

    y, (hn, cn) = m.forward(x, h0, c0, lengths)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    for name, got, want in [("y", y, y_r), ("hn", hn, hn_r), ("cn", cn, cn_r), ("dx", dx, dx_r),
                            ("dh0", dh0, dh0_r), ("dc0", dc0, dc0_r)]:
        assert got.dtype == dtype
        assert _max_diff(got, want) <= tol, f"{name}: max |diff| {_max_diff(got, want):.3g} > {tol}"
    for l, layer in enumerate(m.layers):
        assert _max_diff(layer.dW, dW_r[l]) <= tol * 10, f"dW[{l}] max |diff| {_max_diff(layer.dW, dW_r[l]):.3g}"
        assert _max_diff(layer.db, db_r[l]) <= tol * 10, f"db[{l}] max |diff| {_max_diff(layer.db, db_r[l]):.3g}"


def test_outputs_past_length_are_zero_and_state_is_frozen():
    m, x, h0, c0, _, *_ = random_problem(6, 3, 2, 4, 2)
    lengths = np.array([6, 2, 4])
    y, (hn, cn) = m.forward(x, h0, c0, lengths)
    assert np.all(y[2:, 1] == 0) and np.all(y[4:, 2] == 0)
    assert np.array_equal(hn[-1, 1], y[1, 1]) and np.array_equal(hn[-1, 2], y[3, 2])
    y_short, (hn_short, cn_short) = m.forward(x[:2, 1:2].copy(), h0[:, 1:2].copy(), c0[:, 1:2].copy())
    assert np.allclose(hn_short[:, 0], hn[:, 1], rtol=0, atol=1e-14)
    assert np.allclose(cn_short[:, 0], cn[:, 1], rtol=0, atol=1e-14)


def test_gradients_accumulate_until_zero_grad():
    m, x, h0, c0, _, dy, dhn, dcn = random_problem(4, 3, 2, 3, 2)
    m.forward(x, h0, c0)
    m.backward(dy, dhn, dcn)
    once = m.grads.copy()
    m.forward(x, h0, c0)
    m.backward(dy, dhn, dcn)
    assert np.allclose(m.grads, 2 * once, rtol=1e-13, atol=0)
    m.zero_grad()
    assert not m.grads.any()


def test_gradients_add_to_values_already_there():
    """δW goes straight into all-zero gradients, else in 256-row blocks through a scratch
    (G = 4H = 280 here: two blocks); both give the same sums."""
    m, x, h0, c0, _, dy, dhn, dcn = random_problem(3, 2, 4, 70, 2)
    m.forward(x, h0, c0)
    m.backward(dy, dhn, dcn)
    once = m.grads.copy()
    m.grads[:] = 0.25
    m.forward(x, h0, c0)
    m.backward(dy, dhn, dcn)
    assert np.allclose(m.grads, once + 0.25, rtol=1e-13, atol=1e-15)


def test_parameters_are_views_into_the_flat_arrays():
    import fastlstm
    m = fastlstm.LSTM(3, 5, 2, seed=1)
    assert m.params.size == 4 * 5 * (3 + 5 + 1) + 4 * 5 * (5 + 5 + 1)
    m.layers[1].W[0, 0] = 42
    assert 42 in m.params
    assert m.layers[0].W.shape == (20, 8) and m.layers[1].W.shape == (20, 10)
    assert np.all(m.layers[0].b[10:15] == 1.0) and np.all(m.layers[0].b[:10] == 0)
    assert np.array_equal(fastlstm.LSTM(3, 5, 2, seed=1).params, fastlstm.LSTM(3, 5, 2, seed=1).params)
    assert not np.array_equal(fastlstm.LSTM(3, 5, 2, seed=1).params, fastlstm.LSTM(3, 5, 2, seed=2).params)
    assert np.all(fastlstm.LSTM(3, 5, forget_bias=0.0).layers[0].b == 0)
