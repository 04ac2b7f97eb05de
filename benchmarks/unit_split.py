"""The LSTM forward's recurrence split among the threads by units instead of batch rows: a
measurement of a design not adopted (no PyTorch needed).

    python benchmarks/unit_split.py [small medium large xlarge deepbench]   # default: large xlarge

fastlstm's recurrent kernels give each thread blocks of 4 batch rows through all T steps,
with no synchronisation. At 16 threads and B = 64 each thread then holds one block and
reads all of U (4 MB at H = 512) from L3 at every step: the kernels reach 5.2 times one
thread's speed (docs/performance.md, twenty-seventh run). Split by units, each thread
would compute its share of U's panels (in each gate) for all rows, so its share of U could
stay in its L2 across steps, at the price of a parallel region a step: every thread needs
all of h_{t-1}. This script runs that variant (forward, LSTM, no lengths, the input half by
BLAS first) on the buffers of a real forward and times it against recurrent_forward,
alternated in one process, at each chunk count up to twice the threads. Each z is the same
tile's chain of FMAs either way, so it checks that both give the same bits.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy (see fastlstm/_config.py)

import argparse  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import recurrent as R  # noqa: E402
from fastlstm._config import PARALLEL_JIT  # noqa: E402
from fastlstm.kernels import FROM_BIAS, FROM_C, _panel_product, sigmoid, tanh  # noqa: E402

from compare import SHAPES  # noqa: E402


@njit(**dict(PARALLEL_JIT, cache=False))
def forward_units(Z, C, TC, I, P, b, D, H, nchunks):
    """recurrent_forward's work for a0 = D (Z holds the input half), split by units: at
    each step, chunk c takes U's panels p0..p1 of every gate for all rows, then the cell
    for those units. P (4H/TW, H, TW): U's panels as pack_unit packs them."""
    T, B, _ = Z.shape
    TW = P.shape[2]
    ppg = H // TW                                       # panels a gate
    for t in range(T):
        Zt, It = Z[t], I[t]
        for c in prange(nchunks):                       # one parallel region a step
            p0, p1 = c * ppg // nchunks, (c + 1) * ppg // nchunks
            for g in range(4):
                _panel_product(Zt, g * H + p0 * TW, (p1 - p0) * TW, np.int64(0), B, It, D,
                               P[g * ppg + p0:g * ppg + p1], H, b, FROM_C | FROM_BIAS)
            u0, u1 = p0 * TW, p1 * TW
            for r in range(B):                          # views: a loop from a run-time start stays scalar
                z = Zt[r]
                za, zi, zf, zo = z[u0:u1], z[H + u0:H + u1], z[2 * H + u0:2 * H + u1], z[3 * H + u0:3 * H + u1]
                cn, cp, tc, h = C[t + 1, r, u0:u1], C[t, r, u0:u1], TC[t, r, u0:u1], I[t + 1, r, D + u0:D + u1]
                for k in range(u1 - u0):                # kernels.cell_forward's arithmetic, in its order
                    a, i, f, o = tanh(za[k]), sigmoid(zi[k]), sigmoid(zf[k]), sigmoid(zo[k])
                    za[k], zi[k], zf[k], zo[k] = a, i, f, o
                    cn[k] = i * a + f * cp[k]
                for k in range(u1 - u0):
                    tck = tanh(cn[k])
                    tc[k] = tck
                    h[k] = zo[k] * tck


def measure(D, H, B, T, rounds=7):
    """Print whether the two splits give the same bits, and each one's median ms."""
    R.SPLIT_D = 1                                       # the input half by BLAS first at every D
    m = fastlstm.LSTM(D, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)
    seen, real = {}, R.recurrent_forward

    def spy(*a):                                        # the real call's arguments and its Z on entry
        seen["args"], seen["Z0"] = a, a[0].copy()
        return real(*a)
    R.recurrent_forward = spy
    try:
        m.forward(x)
    finally:
        R.recurrent_forward = real
    a, Z0 = seen["args"], seen["Z0"]
    Z, C, TC, I, _, P, b = a[:7]
    TW = R._tile_width(np.float32)
    if H % TW:
        raise SystemExit(f"H = {H} is not a multiple of the panels' {TW} columns")
    U, I0, threads = P[:4 * H * H].reshape(4 * H // TW, H, TW), I.copy(), numba.get_num_threads()
    runs = {"rows (fastlstm)": lambda: real(*a)}
    for n in sorted({n for n in (threads // 2, threads, 2 * threads) if 1 <= n <= H // TW} or {H // TW}):
        runs[f"units, {n} chunks"] = lambda n=n: forward_units(Z, C, TC, I, U, b, D, H, n)
    out = {}
    for name, run in runs.items():
        Z[:], I[:] = Z0, I0
        run()
        out[name] = Z.copy(), I.copy()
    same = all(np.array_equal(z, out["rows (fastlstm)"][0]) and np.array_equal(i, out["rows (fastlstm)"][1])
               for z, i in out.values())
    print(f"  same bits: {same}")
    times = {name: [] for name in runs}
    for k in range(rounds):                             # alternated, each round's order reversed
        for name, run in list(runs.items())[::1 if k % 2 == 0 else -1]:
            best = np.inf
            for _ in range(3):
                Z[:], I[:] = Z0, I0
                t0 = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t0)
            times[name].append(best)
    for name, ts in times.items():
        print(f"  {name:22s} {np.median(ts) * 1e3:9.3f} ms", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape", help=f"default: large xlarge; any of {', '.join(SHAPES)}")
    args = p.parse_args()
    names = args.shapes or ["large", "xlarge"]
    bad = [n for n in names if n not in SHAPES]
    if bad:
        p.error(f"unknown shape {' '.join(bad)}; the shapes: {' '.join(SHAPES)}")
    for name in names:
        print(f"{name} (D, H, B, T) = {SHAPES[name]}, float32, {numba.get_num_threads()} threads, "
              f"the forward's recurrence")
        measure(*SHAPES[name])
