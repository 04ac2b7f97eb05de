"""The LSTM forward's recurrence split among the threads by units instead of batch rows: a
measurement of a design not adopted (no PyTorch needed).

    python benchmarks/unit_split.py [small medium large xlarge deepbench DxHxBxT]   # default: large xlarge

fastlstm's recurrent kernels give each thread a near-equal range of batch rows through all
T steps, with no synchronisation. At 16 threads and B = 64 each thread then holds 4 rows
and reads all of U (4 MB at H = 512) from L3 at every step: the kernels reach 5.2 times one
thread's speed (docs/performance.md, twenty-seventh run). Split by units, each thread
would compute its share of U's panels (in each gate) for all rows, so its share of U could
stay in its L2 across steps, at the price of a parallel region a step: every thread needs
all of h_{t-1}. This script runs that variant (forward, LSTM, no lengths, the input half by
BLAS first) on the buffers of a real forward and times it against recurrent_forward,
alternated in one process, at each chunk count up to twice the threads. Each chunk's panels
of all four gates are packed together (on cache lines, as the workspace's are), so that one
_panel_product call covers them and a 1-row batch gets the 1-row tile over 8 panels; the
gates and the bias follow in that order in a scratch Z. Each z is the same tile's chain of
FMAs either way, so it checks that both give the same bits. On a machine whose other
processes keep a core busy, the region a step waits for a thread set aside at every step
(docs/performance.md, 2026-12-06's last section).
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
from fastlstm.kernels import FROM_BIAS, FROM_C, _panel_product, cell_forward, zeros  # noqa: E402

from compare import SHAPES  # noqa: E402


@njit(**dict(PARALLEL_JIT, cache=False))
def forward_units(Zc, Z, C, TC, I, Pc, bc, D, H, nchunks):
    """recurrent_forward's work for a0 = D (Z holds the input half), split by units: at
    each step, chunk c copies its units' input half of every gate into its part of Zc,
    sums its panels Pc[c] (its units of every gate, gate after gate) onto it for all rows,
    then runs the cell for those units. Zc (T, B, 4H): chunk c's [a ; i ; f ; o] of its
    Hc = H / nchunks units at columns c·4Hc.., bc the bias in that order."""
    T, B, _ = Z.shape
    Hc = H // nchunks
    K = Pc.shape[2]
    for t in range(T):
        Zt, Zct, It = Z[t], Zc[t], I[t]
        for c in prange(nchunks):                       # one parallel region a step
            z0, u0 = c * 4 * Hc, c * Hc
            for r in range(B):
                for g in range(4):
                    Zct[r, z0 + g * Hc:z0 + (g + 1) * Hc] = Zt[r, g * H + u0:g * H + u0 + Hc]
            _panel_product(Zct, z0, 4 * Hc, np.int64(0), B, It, D, Pc[c], K, bc, FROM_C | FROM_BIAS)
            for r in range(B):
                cell_forward(Zct[r, z0:z0 + 4 * Hc], C[t + 1, r, u0:u0 + Hc], TC[t, r, u0:u0 + Hc],
                             I[t + 1, r, D + u0:D + u0 + Hc], C[t, r, u0:u0 + Hc], Hc)


def by_chunks(U, b, H, TW, n):
    """U's panels (4H/TW, K, TW), gate after gate, and b (4H) regrouped for n chunks: chunk
    c's panels of each gate together, (n, 4H/(n·TW), K, TW) on cache lines, and the bias in
    the same order."""
    q = H // TW // n                                    # a chunk's panels a gate
    Pc = zeros(U.size, U.dtype).reshape(n, 4 * q, *U.shape[1:])
    bc = zeros(4 * H, b.dtype)
    Hc = H // n
    for c in range(n):
        for g in range(4):
            Pc[c, g * q:(g + 1) * q] = U[g * H // TW + c * q:g * H // TW + (c + 1) * q]
            bc[c * 4 * Hc + g * Hc:c * 4 * Hc + (g + 1) * Hc] = b[g * H + c * Hc:g * H + (c + 1) * Hc]
    return Pc, bc


def measure(D, H, B, T, rounds=7):
    """Print whether the two splits give the same bits, and each one's median ms."""
    R.SPLIT_D = 1                                       # the input half by BLAS first at every D
    m = fastlstm.LSTM(D, H, seed=0)
    rng = np.random.default_rng(0)
    m.params = (0.1 * rng.standard_normal(m.params.size)).astype(np.float32)   # every bias its own, too
    x = rng.standard_normal((T, B, D)).astype(np.float32)
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
    Zc = zeros(Z.size, Z.dtype).reshape(Z.shape)
    runs = {"rows (fastlstm)": lambda: real(*a)}
    for n in sorted({n for n in (threads // 2, threads, 2 * threads) if 1 <= n and H % (n * TW) == 0} or {1}):
        Pc, bc = by_chunks(U, b, H, TW, n)
        runs[f"units, {n} chunks"] = lambda n=n, Pc=Pc, bc=bc: forward_units(Zc, Z, C, TC, I, Pc, bc, D, H, n)
    out = {}
    for name, run in runs.items():
        Z[:], I[:] = Z0, I0
        run()
        out[name] = C.copy(), I.copy()
    same = all(np.array_equal(c, out["rows (fastlstm)"][0]) and np.array_equal(i, out["rows (fastlstm)"][1])
               for c, i in out.values())
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


def shape(name):
    """A shape's (D, H, B, T): a name of compare.SHAPES, or DxHxBxT (16x256x1x200)."""
    if name in SHAPES:
        return SHAPES[name]
    parts = name.split("x")
    return tuple(map(int, parts)) if len(parts) == 4 and all(p.isdigit() and int(p) for p in parts) else None


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape",
                   help=f"default: large xlarge; any of {', '.join(SHAPES)}, or DxHxBxT")
    args = p.parse_args()
    names = args.shapes or ["large", "xlarge"]
    bad = [n for n in names if shape(n) is None]
    if bad:
        p.error(f"unknown shape {' '.join(bad)}; the shapes: {' '.join(SHAPES)}, or DxHxBxT")
    for name in names:
        print(f"{name} (D, H, B, T) = {shape(name)}, float32, {numba.get_num_threads()} threads, "
              f"the forward's recurrence")
        measure(*shape(name))
