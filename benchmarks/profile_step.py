"""Where one LSTM training step spends its time, phase by phase (no PyTorch needed).

    python benchmarks/profile_step.py [--float64] [--infer] [small medium large xlarge deepbench]

Times real training steps (zero_grad, forward, backward, as compare.py's; --infer: the
forward alone, as its inference rows) and, inside them, each call the step makes, where it
makes it (a timer around the name that fastlstm.recurrent calls): the forward kernel
(tiles and cell), the input half X W_xᵀ of a wide layer (BLAS, before it), packing W and U
into panels, the backward kernel (cell backward and δh = Uᵀδz), δW = δZᵀ I and δX = δZ W_x
(BLAS, planned together, their blocks shared by the threads), δb = Σ δz, the copies of
steps, and the rest: Python, argument checks, the outputs. Phases timed apart from a step
read otherwise: alone, a product starts on sleeping threads, where the step starts it on
spinning ones. Each figure is the median over 7 rounds of about 0.3 s; GFLOP/s counts 2
flops a multiply-add.

The floor is what the step would take with every product (the kernels' and BLAS's) at the
peak: the rate of fastlstm's tile on a weight panel held in L1 (8 rows, no cache misses,
no cells between its sums), measured in the same run on one thread, times the threads;
with the step's LSTM cells (timed alone on one step's buffers, hot in cache, for a
thread's share of the rows), and packing, copies and the rest as measured. It bounds the
step from below with these buffers and this Python (to within the peak's reading, which
moves by about 2% between runs), so that a speed target reads as reachable or not
(docs/performance.md). The matmul line gives NumPy's rate beside it.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy (see fastlstm/_config.py)

import argparse  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _blas  # noqa: E402
from fastlstm import recurrent as R  # noqa: E402

from compare import SHAPES, matmul_rate  # noqa: E402
from fastlstm._config import JIT  # noqa: E402
from fastlstm.kernels import _panel_product, cell_backward, cell_forward  # noqa: E402

PHASES = {  # phase: the names whose calls it sums, in fastlstm.recurrent or fastlstm._blas
    "forward kernel": ((R, "recurrent_forward"),),
    "input half": ((_blas, "matmul"),),
    "pack W, U": ((R, "pack_unit"),),
    "backward kernel": ((R, "recurrent_backward"),),
    "δW and δX": ((_blas, "plan"), (_blas, "run")),
    "δb": ((R, "add_row_sums"),),
    "copies": ((R, "copy_steps"), (R, "copy_hidden")),
}


def timed(seconds):
    """Wrap every name of PHASES so that its calls add their time to seconds[phase]."""
    for phase, names in PHASES.items():
        for module, name in names:
            f = getattr(module, name)

            def clocked(*a, _f=f, _phase=phase, **k):
                t = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    seconds[_phase] += time.perf_counter() - t
            setattr(module, name, clocked)


@numba.njit(**dict(JIT, cache=False))
def _cells(Z, Zb, C, TC, h, dc, dh, dy, T, backward):
    """The LSTM cells of T steps of one thread's rows, forward (and backward), on one step's
    buffers, as hot in cache as the kernels', whose tiles have just written Z: Z (rows, 4H)
    pre-activations, which become gates; Zb their copy, which becomes δz."""
    rows, H = TC.shape
    for _ in range(T):
        for r in range(rows):
            cell_forward(Z[r], C[1, r], TC[r], h[r], C[0, r], H)
    for _ in range(T if backward else 0):
        for r in range(rows):
            for j in range(4 * H):             # the gates afresh: δc stays what a step carries
                Zb[r, j] = Z[r, j]
            cell_backward(Zb[r], dc[r], dh[r], dy[r], TC[r], C[0, r], H)


@numba.njit(**dict(JIT, cache=False))
def _tiles(C, A, P, bias, n):
    """n products C = A · P by the recurrent kernels' tiles, on the same buffers each time."""
    for _ in range(n):
        _panel_product(C, 0, C.shape[1], 0, C.shape[0], A, 0, P, A.shape[1], bias, 0)


def tile_peak(dtype, K=128, rounds=7):
    """GFLOP/s of the tile on one thread, 8 rows against a panel of K rows that stays in L1."""
    TW = R._tile_width(dtype)
    rng = np.random.default_rng(0)
    A, P = rng.standard_normal((8, K)).astype(dtype), rng.standard_normal((1, K, TW)).astype(dtype)
    C, bias = np.zeros((8, TW), dtype), np.zeros(TW, dtype)
    _tiles(C, A, P, bias, 10)                     # compiles
    n, ts = 20000, []
    for _ in range(rounds):
        t = time.perf_counter()
        _tiles(C, A, P, bias, n)
        ts.append(time.perf_counter() - t)
    return 2 * 8 * K * TW * n / min(ts) / 1e9


def cells_time(H, B, T, dtype, backward, rounds=7):
    """Seconds the LSTM cells of one step (its forward's alone unless `backward`) take on
    each of the threads, which share the B rows (the median of `rounds`)."""
    rows = -(-B // numba.get_num_threads())
    rng = np.random.default_rng(0)
    Z, Zb = rng.standard_normal((rows, 4 * H)).astype(dtype), np.zeros((rows, 4 * H), dtype)
    C, TC, h = np.zeros((2, rows, H), dtype), np.zeros((rows, H), dtype), np.zeros((rows, H), dtype)
    dc, dh, dy = np.zeros((rows, H), dtype), np.zeros((rows, H), dtype), rng.standard_normal((rows, H)).astype(dtype)
    ts = []
    for _ in range(rounds + 1):                  # the first compiles
        t = time.perf_counter()
        _cells(Z, Zb, C, TC, h, dc, dh, dy, T, backward)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts[1:]))


def profile(D, H, B, T, dtype, seconds, peak, infer, rounds=7, budget=0.3):
    """Print each phase's median ms per step and rate at shape (D, H, B, T); infer: a step
    is the forward alone."""
    m = fastlstm.LSTM(D, H, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((T, B, H)).astype(dtype)

    def step():
        if infer:
            m.forward(x)
            return
        m.zero_grad()
        m.forward(x)
        m.backward(dy)
    for _ in range(3):
        step()
    t = time.perf_counter()
    step()
    n = max(2, int(budget / (time.perf_counter() - t)))
    per = {name: [] for name in ("step", *PHASES, "the rest")}
    for _ in range(rounds):
        for phase in PHASES:
            seconds[phase] = 0.0
        t = time.perf_counter()
        for _ in range(n):
            step()
        per["step"].append((time.perf_counter() - t) / n)
        for phase in PHASES:
            per[phase].append(seconds[phase] / n)
        per["the rest"].append(per["step"][-1] - sum(seconds.values()) / n)
    a0 = R._tiles_from(D, H)
    mac = 4 * H * B * T                            # per column of W summed
    flops = {"step": (1 if infer else 3) * (D + H), "forward kernel": H if a0 else D + H, "input half": D if a0 else 0,
             "backward kernel": H, "δW and δX": D + H + D}
    ms = {name: float(np.median(ts)) * 1e3 for name, ts in per.items()}
    for name, t in ms.items():
        speed = f"{2 * mac * flops[name] / t / 1e6:6.1f} GFLOP/s" if flops.get(name) and t > 0 else ""
        print(f"  {name:16s} {t:9.3f} ms  {speed}", flush=True)
    products = ("forward kernel", "input half", "backward kernel", "δW and δX")
    cells = cells_time(H, B, T, dtype, not infer) * 1e3
    at_peak = 2 * mac * flops["step"] / peak / 1e6
    floor = ms["step"] - sum(ms[p] for p in products) + at_peak + cells
    print(f"  floor            {floor:9.3f} ms  (products {at_peak:.3f} ms at the peak; cells {cells:.3f} ms; "
          f"the rest as measured)", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape", help=f"default: all of {', '.join(SHAPES)}")
    p.add_argument("--float64", action="store_true", help="float64 steps (default float32)")
    p.add_argument("--infer", action="store_true", help="inference steps: the forward alone")
    args = p.parse_args()
    dtype = np.float64 if args.float64 else np.float32
    names = args.shapes or list(SHAPES)
    bad = [n for n in names if n not in SHAPES]
    if bad:
        p.error(f"unknown shape {' '.join(bad)}; the shapes: {' '.join(SHAPES)}")
    threads = numba.get_num_threads()
    peak = tile_peak(dtype) * threads
    print(f"peak {peak:.0f} GFLOP/s (the tile on a panel in L1, {threads} threads); NumPy's {np.dtype(dtype).name} "
          f"matmul {matmul_rate(dtype=dtype):.0f} GFLOP/s")
    seconds = dict.fromkeys(PHASES, 0.0)
    timed(seconds)
    for name in names:
        print(f"{name} (D, H, B, T) = {SHAPES[name]}, {np.dtype(dtype).name}, {threads} threads"
              + (", inference" if args.infer else ""))
        profile(*SHAPES[name], dtype, seconds, peak, args.infer)
