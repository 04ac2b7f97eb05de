"""The recurrent kernels' CPU-dependent choices, each forced, against what this CPU picks (no
PyTorch needed).

    python benchmarks/variants.py [--infer] [--float64] [--quick] [small medium large xlarge deepbench]

fastlstm picks two things from the CPU it runs on (fastlstm/recurrent.py): the tile's width,
two 512-bit vectors a row (128 bytes) where the CPU has AVX-512 or two 256-bit ones (64)
elsewhere (`tile_bytes`); and, per layer, whether the forward's tiles sum all of W [x ; h]
in one pass ("fused") or only U h after the input half X W_xᵀ as one BLAS product first
("split"), from the fused panel's size against the CPU's bound (`fused_limits`). This
script forces each of the four combinations on the same weights and inputs and times a
training step (--infer: the forward) of each, alternated in one process, each repeat
starting with the next in turn. It prints each one's median ms and its time over the
picked one's (the median of the repeats' ratios, with their lowest and highest); the
picked one is marked *. The widths must give the same bits, each form on its own: the
last column checks that.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy (see fastlstm/_config.py)

import argparse  # noqa: E402
import math  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import recurrent as R  # noqa: E402

from compare import BUDGET, QUICK, SHAPES, alternate, count, local  # noqa: E402

FORMS = {"fused": dict(FUSED_PANEL=math.inf, SPLIT_D=math.inf), "split": dict(SPLIT_D=1)}
PICKED = {name: getattr(R, name) for name in ("TILE", "FUSED_PANEL", "SPLIT_D")}


def use(settings):
    """Set fastlstm.recurrent's choices to `settings` (names as PICKED's)."""
    for name, value in settings.items():
        setattr(R, name, value)


def variants(D, H):
    """[(label, settings)] for the four combinations, and the label of the one this CPU picks
    at input width D and H units."""
    use(PICKED)
    out = [(f"{width} B {form}", dict(PICKED, TILE=width, **settings))
           for width in R.TILE_BYTES for form, settings in FORMS.items()]
    picked = f"{PICKED['TILE']} B {'split' if R._tiles_from(D, H) else 'fused'}"
    return out, picked


def runner(settings, D, H, B, T, dtype, infer):
    """(n -> seconds for n steps, the step's output bits) of a model built and run with the
    module's choices set to `settings` (set again before every block, as the others change
    them)."""
    use(settings)
    m = fastlstm.LSTM(D, H, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((T, B, H)).astype(dtype)

    def step():
        m.zero_grad()
        y, _ = m.forward(x)
        if not infer:
            m.backward(dy)
        return y
    bits = step().tobytes() + m.grads.tobytes()
    run = local(step)

    def timed(n):
        use(settings)
        return run(n)
    return timed, bits


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape", help=f"of {', '.join(SHAPES)} (default: all)")
    p.add_argument("--infer", action="store_true", help="time the forward alone")
    p.add_argument("--float64", action="store_true")
    p.add_argument("--quick", action="store_true", help="the tiny shape, one repeat (the test suite's)")
    p.add_argument("--repeats", type=count, default=7)
    args = p.parse_args(argv)
    unknown = sorted(set(args.shapes) - set(SHAPES))
    if unknown:
        p.error(f"unknown shapes {unknown}: choose from {', '.join(SHAPES)}")
    shapes = QUICK if args.quick else {s: SHAPES[s] for s in args.shapes or SHAPES}
    repeats = 1 if args.quick else args.repeats
    BUDGET[0] = 0.1 if args.quick else 1.0
    dtype = np.float64 if args.float64 else np.float32
    from llvmlite import binding
    print(f"CPU {binding.get_host_cpu_name()}, L1d {R.L1D // 1024} KiB: tile {PICKED['TILE']} bytes, fused up to "
          f"{PICKED['FUSED_PANEL'] / 1024:g} KiB panels and D < {PICKED['SPLIT_D']}; {numba.get_num_threads()} threads, "
          f"{np.dtype(dtype).name}, {'inference' if args.infer else 'a training step'}, {repeats} alternating repeats\n")
    print("| shape (D, H, B, T) | variant | ms | time / picked's | in each repeat, lowest - highest | same bits as |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    try:
        for name, (D, H, B, T) in shapes.items():
            forms, picked = variants(D, H)
            runs = [runner(settings, D, H, B, T, dtype, args.infer) for _, settings in forms]
            labels = [label for label, _ in forms]
            medians, per = alternate([run for run, _ in runs], repeats, settle=0.0 if args.quick else 0.3,
                                     samples=True)
            base = labels.index(picked)
            for j, label in enumerate(labels):
                r = per[:, j] / per[:, base]
                same = [labels[i] for i in range(len(labels)) if i != j and runs[i][1] == runs[j][1]]
                print(f"| {name} ({D}, {H}, {B}, {T}) | {label}{' *' if j == base else ''} | {medians[j] * 1e3:.3f} "
                      f"| {np.median(r):.3f} | {r.min():.3f} - {r.max():.3f} | {', '.join(same) or '—'} |", flush=True)
    finally:
        use(PICKED)


if __name__ == "__main__":
    main()
