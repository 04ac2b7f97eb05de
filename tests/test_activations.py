"""The kernels' own e^x, σ and tanh (kernels.py: vectorisable, unlike libm's) against
extended-precision references, over the whole range the gates see and beyond."""
import numpy as np
import pytest
from numba import njit

from fastlstm import kernels as K


@njit
def _apply(x, sig, tnh):
    for k in range(x.size):
        sig[k] = K.sigmoid(x[k])
        tnh[k] = K.tanh(x[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_tanh_match_extended_precision(dtype):
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    x = np.concatenate([np.linspace(-120, 120, 400_001), np.linspace(-0.01, 0.01, 20_001),
                        [-np.inf, np.inf, 0.0]]).astype(dtype)
    sig, tnh = np.empty_like(x), np.empty_like(x)
    _apply(x, sig, tnh)
    xl = x.astype(np.longdouble)
    for got, ref in ((sig, 1 / (1 + np.exp(-xl))), (tnh, np.tanh(xl))):
        err = np.abs(got.astype(np.longdouble) - ref)
        assert err.max() <= 2 * eps                                # everywhere, saturated ends included
        big = np.abs(ref) >= 0.25                                 # away from 0 (tanh's 2σ(2x) - 1
        assert (err[big] / np.abs(ref[big])).max() <= 5 * eps     # cancels there): a few ulp
    assert 0 <= sig[-3] <= tiny and sig[-2] == 1 and tnh[-3] == -1 and tnh[-2] == 1


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1e30, -88.0, 88.0, 1e30], np.float32)
    sig, tnh = np.empty_like(x), np.empty_like(x)
    _apply(x, sig, tnh)
    assert np.all(np.isfinite(sig)) and np.all(np.isfinite(tnh))
    assert sig[0] < 1e-37 and sig[-1] == 1 and tnh[0] == -1 and tnh[-1] == 1


@pytest.mark.parametrize("cell", ["lstm", "lstmp", "gru", "rnn", "rnn_relu"])
def test_float32_results_sit_within_float32_rounding_of_float64_ones(cell):
    """The same weights in float32 and float64: outputs, final states, δx and every gradient
    of the float32 stack within 4e-6 of the float64 one's (relative to its largest entry,
    at least 1). Here fastlstm reads up to 9e-7 (the LSTM's gradients, sums of 280 terms),
    PyTorch's float32 LSTM 1.2e-6: the bound catches a lost digit, not a lost ulp."""
    import fastlstm
    cls = {"lstm": fastlstm.LSTM, "lstmp": fastlstm.LSTM, "gru": fastlstm.GRU, "rnn": fastlstm.RNN,
           "rnn_relu": fastlstm.RNN}[cell]
    kw = {"lstmp": dict(proj_size=50), "rnn_relu": dict(nonlinearity="relu")}.get(cell, {})
    rng = np.random.default_rng(0)
    T, B, D, H = 40, 7, 40, 130
    x, lengths = rng.standard_normal((T, B, D)), rng.integers(1, T + 1, B)
    got = []
    for dtype in (np.float64, np.float32):
        m = cls(D, H, 2, dtype=dtype, seed=1, **kw)
        if got:
            m.params[:] = got[0][-1]                               # the float64 stack's weights, rounded once
        y, states = m.forward(x.astype(dtype), lengths=lengths)
        hn = states[0] if isinstance(states, tuple) else states
        dx = m.backward(np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype))[0]
        got.append((y, hn, dx, m.grads.copy(), m.params.astype(np.float64)))
    for name, want, have in zip(("y", "hn", "dx", "grads"), got[0], got[1]):
        assert np.abs(have - want).max() <= 4e-6 * max(1.0, np.abs(want).max()), name
