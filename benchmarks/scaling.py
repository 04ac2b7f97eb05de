"""A training step's time by thread count, fastlstm beside PyTorch (strong scaling: the same
shape, more threads).

    python benchmarks/scaling.py                      # large shape, 1, 2, 4, 8, 16 threads
    python benchmarks/scaling.py --threads 1,2 --shape medium --repeats 3

For each thread count n, fastlstm (Numba's pool and its OpenBLAS: n threads) and PyTorch
(torch.set_num_threads(n)) each run in a worker process of their own, timed alternately in
blocks as in compare.py, medians reported. Efficiency at n threads is t_1 / (n · t_n): 100%
means n threads run n times as fast as one. Counts above the cores this process may use
are left out (said below the table): threads beyond the cores measure the machine's
oversubscription, not the library. Without PyTorch installed, fastlstm's columns alone.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # before NumPy (see fastlstm/_config.py)

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import BUDGET, QUICK, SHAPES, Worker, alternate, count, counts  # noqa: E402


def cores():
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=counts, default="1,2,4,8,16", help="thread counts, comma-separated")
    p.add_argument("--shape", choices=sorted(SHAPES | QUICK), default="large")
    p.add_argument("--repeats", type=count, default=5)
    args = p.parse_args(argv)
    n_cores = cores()
    run, skipped = [n for n in args.threads if n <= n_cores], [n for n in args.threads if n > n_cores]
    shape = (SHAPES | QUICK)[args.shape]
    quick = args.shape in QUICK
    BUDGET[0] = 0.1 if quick else 1.0
    print(f"{datetime.date.today()}: {cpu_name()}, {n_cores} cores; training step (forward and backward, "
          f"float32) at {args.shape} (D, H, B, T) = {shape}, medians of {args.repeats} alternating blocks\n")
    print("| threads | fastlstm ms | torch ms | speed ratio | fastlstm efficiency | torch efficiency |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        import torch  # noqa: F401  (here only to know whether the peer's worker can run)
        libs = ("fastlstm", "torch")
    except ImportError:
        libs = ("fastlstm",)
    t1, versions = None, None
    for n in run:
        workers = [Worker(lib, n) for lib in libs]
        versions = versions or ", ".join(f"{w.lib} {w.version}" for w in workers)
        try:
            times = alternate([w.runner("train", *shape, np.float32) for w in workers], args.repeats,
                              settle=0.0 if quick else 0.3)
        finally:
            for w in workers:
                w.close()
        t1 = t1 or [t * n for t in times]      # the first count's time, as one thread's work
        ours, eff = times[0], [f"{a / (n * t):.0%}" for a, t in zip(t1, times)]
        if len(times) == 2:
            peer = f"{times[1] * 1e3:.3f} | {times[1] / ours:.2f}x | {eff[0]} | {eff[1]}"
        else:
            peer = f"(torch not installed) | – | {eff[0]} | –"
        print(f"| {n} | {ours * 1e3:.3f} | {peer} |", flush=True)
    if versions:
        print(f"\n{versions}, NumPy {np.__version__}, Numba {numba.__version__}, Python {platform.python_version()}.")
    if skipped:
        print(f"\nLeft out: {', '.join(map(str, skipped))} threads (this process may use {n_cores} cores).")
    if run and run[0] != 1:
        print("\nEfficiency is relative to the smallest count measured, taken as perfectly efficient.")


if __name__ == "__main__":
    main()
