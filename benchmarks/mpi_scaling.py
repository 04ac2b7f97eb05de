"""Data-parallel training step time and parallel efficiency over MPI ranks (strong scaling:
the global batch is fixed, each of k ranks takes B/k rows). All runs share the same cores
(each rank gets cores // k threads), so the efficiency t_1 / t_k compares k ranks with one
rank that uses every core itself: 100% means MPI costs nothing over threads.

    python benchmarks/mpi_scaling.py [--ranks 1,2] [--shape medium] [--steps 20]

Each rank gets cores // ranks threads (fastlstm.distributed), so k ranks share the machine.
"""
import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

SHAPES = {"small": (32, 64, 16, 50), "medium": (128, 256, 32, 100), "large": (512, 512, 64, 50)}


def worker(shape, steps):
    import numpy as np

    import fastlstm
    from fastlstm.distributed import DataParallel
    D, H, B, T = SHAPES[shape]
    m = fastlstm.Model(D, H, 1, seed=0, clip=1.0)
    dp = DataParallel(m, check_every=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((T, B, D), np.float32), rng.standard_normal((B, 1), np.float32)
    for _ in range(3):
        dp.train_step(x, y)                      # compile and warm up, untimed
    dp.comm.Barrier()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        dp.train_step(x, y)
        dp.comm.Barrier()
        times.append(time.perf_counter() - t)
    if dp.rank == 0:
        print(f"median_step_s {sorted(times)[len(times) // 2]:.6f} threads {dp.threads}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--shape", choices=sorted(SHAPES), default="medium")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.shape, args.steps)
    from compare import counts, needs          # here: a worker, run by mpi4py from its path, has no compare
    try:
        ranks = counts(args.ranks)
    except argparse.ArgumentTypeError as e:
        p.error(f"--ranks {e}")
    if args.steps < 1:
        p.error(f"--steps takes an integer >= 1, got {args.steps}")
    needs("mpi4py", "mpi", "mpi_scaling.py runs ranks under MPI")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    print("| ranks | threads per rank | shape (D, H, B, T) | step ms | efficiency t_1 / t_k (same cores) |")
    print("| ---: | ---: | --- | ---: | ---: |")
    t1 = None
    for k in ranks:
        r = subprocess.run([mpiexec, "-n", str(k), sys.executable, "-m", "mpi4py", __file__, "--worker",
                            "--shape", args.shape, "--steps", str(args.steps)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            sys.exit(r.stderr)
        words = r.stdout.split()
        t, threads = float(words[1]), int(words[3])
        t1 = t1 or t
        print(f"| {k} | {threads} | {args.shape} {SHAPES[args.shape]} | {t * 1e3:.1f} | {t1 / t:.0%} |", flush=True)


if __name__ == "__main__":
    main()
