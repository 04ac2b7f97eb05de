"""pytest-benchmark suite: fastlstm and torch.nn.LSTM side by side, one group per shape.

    pytest benchmarks --benchmark-columns=median,iqr,rounds --benchmark-sort=name
    FASTLSTM_BENCH_QUICK=1 pytest benchmarks        # tiny shapes only

For the one table of ratios, GFLOP/s and fraction of matmul rate, run compare.py.
The capi groups time the C ABI from C (benchmarks/capi_driver.c: n calls per round, plus
one pipe round trip) beside the same n calls from Python; they need gcc.
"""
import os

import numba
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the suite times fastlstm beside torch.nn.LSTM: pip install -e '.[torch]'")

from compare import QUICK, SHAPES, STREAM, capi_fns, side  # noqa: E402

shapes = QUICK if os.environ.get("FASTLSTM_BENCH_QUICK") else SHAPES
IMPLS = ["fastlstm", "torch"]


@pytest.fixture(autouse=True, scope="session")
def same_threads():
    torch.set_num_threads(numba.get_num_threads())


def _run(benchmark, group, fn):
    fn()
    fn()                                     # JIT compilation and buffer growth, untimed
    benchmark.group = group
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(shapes))
def test_train(benchmark, shape, impl):
    _run(benchmark, f"train {shape} {shapes[shape]}", side(impl, "train", *shapes[shape], np.float32))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(shapes))
def test_infer(benchmark, shape, impl):
    _run(benchmark, f"infer {shape} {shapes[shape]}", side(impl, "infer", *shapes[shape], np.float32))


@pytest.mark.parametrize("impl,group", [("fastlstm", "stream"), ("torch", "stream"), ("torch", "streamcell")],
                         ids=["fastlstm", "torch-LSTM", "torch-LSTMCell"])
def test_stream(benchmark, impl, group):
    """One step at B = 1; PyTorch's as torch.nn.LSTM on a one-step sequence and as
    torch.nn.LSTMCell, its faster one-step module."""
    D, H = (8, 16) if shapes is QUICK else STREAM
    _run(benchmark, f"stream B=1 D={D} H={H}", side(impl, group, D, H, 1, 1, np.float32))


@pytest.fixture(scope="module")
def capi_rows():
    rows, drivers = capi_fns(quick=shapes is QUICK)
    yield rows
    for d in drivers:
        d.close()


# (row of capi_fns, impl): the call-overhead row has no Python counterpart.
CAPI_CASES = [(0, "c"), (1, "c"), (1, "python"), (2, "c"), (2, "python")]


@pytest.mark.parametrize("row,impl", CAPI_CASES, ids=[f"{r}-{i}" for r, i in CAPI_CASES])
def test_capi(benchmark, capi_rows, row, impl):
    name, n, c, py = capi_rows[row]
    _run(benchmark, f"capi {name}, {n} call(s) per round", c if impl == "c" else py)
