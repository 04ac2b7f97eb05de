import contextlib
import os
import sys
import tracemalloc

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastlstm  # noqa: E402


def random_problem(T, B, D, H, L, dtype=np.float64, seed=0, with_lengths=False, scale=0.5, cls=None):
    """A stack (an LSTM, or `cls`) with random weights and random x, h0, c0, lengths, and
    random output grads."""
    rng = np.random.default_rng(seed)
    m = (cls or fastlstm.LSTM)(D, H, L, dtype=dtype, seed=seed)
    m.params[:] = rng.uniform(-scale, scale, m.params.size)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    Hr = m.Hr                                      # h's width: H, or P with a projection
    h0 = rng.standard_normal((L, B, Hr)).astype(dtype) * 0.5
    c0 = rng.standard_normal((L, B, H)).astype(dtype) * 0.5
    lengths = rng.integers(1, T + 1, B) if with_lengths else None
    if with_lengths and B > 1:
        lengths[0] = T
    dy = rng.standard_normal((T, B, Hr)).astype(dtype)
    dhn = rng.standard_normal((L, B, Hr)).astype(dtype)
    dcn = rng.standard_normal((L, B, H)).astype(dtype)
    return m, x, h0, c0, lengths, dy, dhn, dcn


@contextlib.contextmanager
def traced_peak():
    """The peak of Python's and NumPy's allocations inside the block (tracemalloc), read
    after it: `with traced_peak() as peak: ...`, then peak()."""
    tracemalloc.start()
    peak = []
    try:
        yield lambda: peak[0]
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


@pytest.fixture(params=["fused", "split"])
def forward_mode(request, monkeypatch):
    """Run a test with both forms of the forward: "fused" (the tiles sum W [x_t; h_{t-1}],
    what the test shapes get by default) and "split" (the input half X W_xᵀ as one BLAS
    product first, what layers with D ≥ recurrent.SPLIT_D get)."""
    if request.param == "split":
        monkeypatch.setattr(fastlstm.recurrent, "SPLIT_D", 1)
    return request.param


@pytest.fixture
def problem():
    return random_problem
