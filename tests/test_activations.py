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
