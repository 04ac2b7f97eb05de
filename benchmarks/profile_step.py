"""Where one LSTM training step spends its time, phase by phase (no PyTorch needed).

    python benchmarks/profile_step.py [--float64] [small medium large xlarge deepbench]

Times real training steps (zero_grad, forward, backward, as compare.py's) and, inside
them, each call the step makes, where it makes it (a timer around the name that
fastlstm.recurrent calls): the forward kernel (tiles and cell), the input half X W_xᵀ of
a wide layer (BLAS, before it), packing W and U into panels, the backward kernel (cell
backward and δh = Uᵀδz), δW = δZᵀ I and δX = δZ W_x (BLAS, planned together, their
blocks shared by the threads), δb = Σ δz, the copies of steps, and the rest: Python,
argument checks, the outputs. Phases timed apart from a step read otherwise: alone, a
product starts on sleeping threads, where the step starts it on spinning ones. Each figure
is the median over 7 rounds of about 0.3 s; GFLOP/s counts 2 flops a multiply-add.
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

from compare import SHAPES  # noqa: E402

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


def profile(D, H, B, T, dtype, seconds, rounds=7, budget=0.3):
    """Print each phase's median ms per step and rate at shape (D, H, B, T)."""
    m = fastlstm.LSTM(D, H, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((T, B, H)).astype(dtype)

    def step():
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
    flops = {"step": 3 * (D + H), "forward kernel": H if a0 else D + H, "input half": D if a0 else 0,
             "backward kernel": H, "δW and δX": D + H + D}
    for name, ts in per.items():
        ms = float(np.median(ts)) * 1e3
        rate = f"{2 * mac * flops[name] / ms / 1e6:6.1f} GFLOP/s" if flops.get(name) else ""
        print(f"  {name:16s} {ms:9.3f} ms  {rate}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape", help=f"default: all of {', '.join(SHAPES)}")
    p.add_argument("--float64", action="store_true", help="float64 steps (default float32)")
    args = p.parse_args()
    dtype = np.float64 if args.float64 else np.float32
    names = args.shapes or list(SHAPES)
    bad = [n for n in names if n not in SHAPES]
    if bad:
        p.error(f"unknown shape {' '.join(bad)}; the shapes: {' '.join(SHAPES)}")
    seconds = dict.fromkeys(PHASES, 0.0)
    timed(seconds)
    for name in names:
        print(f"{name} (D, H, B, T) = {SHAPES[name]}, {np.dtype(dtype).name}, {numba.get_num_threads()} threads")
        profile(*SHAPES[name], dtype, seconds)
