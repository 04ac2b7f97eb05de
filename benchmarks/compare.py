"""fastlstm against PyTorch's CPU LSTM, side by side in one run: one table of ratios.

    python benchmarks/compare.py                 # every group and shape (a few minutes)
    python benchmarks/compare.py --quick         # tiny shapes, to check that it runs

Per shape the two are timed alternately in blocks (JIT warm-up outside the timed region),
medians reported. GFLOP/s counts 3 x 2 x 4H(D+H) x B x T per training step (forward, δI,
δW) and a third of that for inference; "of matmul" divides by the rate of a large float32
NumPy matmul measured in the same run. Both libraries use the same number of threads.
"""
import os

# Before NumPy loads OpenBLAS: its idle threads must sleep, not spin (see fastlstm/_config.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import torch  # noqa: E402  (first: its OpenMP keeps its own default spin policy)

import fastlstm  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402

SHAPES = {  # D, H, B, T
    "small": (32, 64, 16, 50),
    "medium": (128, 256, 32, 100),
    "large": (512, 512, 64, 50),
    "xlarge": (1024, 1024, 64, 25),
    "deepbench": (256, 256, 16, 150),
}
QUICK = {"tiny": (8, 16, 4, 10)}
STREAM = (64, 256)  # D, H at B = 1


def flops_train(D, H, B, T):
    return 3 * 2 * 4 * H * (D + H) * B * T


def median_time(f, calls):
    t = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - t) / calls


def alternate(fs, repeats, budget=0.25, settle=0.3):
    """Median seconds per call of each function in fs, timed in alternating blocks. Before
    each block the machine idles `settle` seconds, so that thread pools still spinning after
    the other library's block (PyTorch's OpenMP spins for a while) have gone to sleep."""
    for f in fs:
        f()
        f()                                                     # compile, grow buffers, warm caches
    calls = [max(1, int(budget / max(median_time(f, 1), 1e-6))) for f in fs]
    samples = [[] for _ in fs]
    for _ in range(repeats):
        for f, n, s in zip(fs, calls, samples):
            time.sleep(settle)
            s.append(median_time(f, n))
    return [float(np.median(s)) for s in samples]


def matmul_rate(n=2048):
    a = np.random.default_rng(0).random((n, n), np.float32)
    t = alternate([lambda: a @ a], 5)[0]
    return 2 * n ** 3 / t / 1e9


def pair(D, H, B, T, dtype):
    """A fastlstm and a torch LSTM with the same weights, and inputs for both."""
    ours = fastlstm.LSTM(D, H, dtype=dtype, seed=0)
    theirs = torch.nn.LSTM(D, H, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.torch_state_dict().items()})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    return ours, theirs, x, dy


def train_fns(D, H, B, T, dtype):
    ours, theirs, x, dy = pair(D, H, B, T, dtype)
    xt, dyt = torch.tensor(x, requires_grad=True), torch.tensor(dy)
    h0 = torch.zeros(1, B, H, dtype=xt.dtype, requires_grad=True)
    c0 = torch.zeros(1, B, H, dtype=xt.dtype, requires_grad=True)

    def f():
        ours.forward(x)
        ours.backward(dy)

    def g():
        theirs.zero_grad()
        y, _ = theirs(xt, (h0, c0))
        y.backward(dyt)
    return f, g


def infer_fns(D, H, B, T, dtype):
    ours, theirs, x, _ = pair(D, H, B, T, dtype)
    xt = torch.tensor(x)

    def g():
        with torch.no_grad():
            theirs(xt)
    return (lambda: ours.forward(x)), g


def stream_fns(D, H):
    ours, theirs, x, _ = pair(D, H, 1, 1, np.float32)
    h, c, x1 = np.zeros((1, 1, H), np.float32), np.zeros((1, 1, H), np.float32), x[0]
    xt, state = torch.tensor(x), [(torch.zeros(1, 1, H), torch.zeros(1, 1, H))]

    def g():
        with torch.no_grad():
            _, state[0] = theirs(xt, state[0])
    return (lambda: ours.step(x1, h, c)), g


def workspace_ratio(D, H, B, T):
    """Peak bytes a cold training step allocates (returned arrays excluded), over the bytes
    the algorithm must keep: gates (4H), c, tanh c and h per step and row (7H)."""
    ours, _, x, dy = pair(D, H, B, T, np.float32)
    tracemalloc.start()
    ours.forward(x)
    ours.backward(dy)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    returned = 4 * (T * B * H + T * B * D + 4 * B * H)       # y, dx, hn, cn, dh0, dc0
    return (peak - returned) / (4 * 7 * H * T * B)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat, no settling")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--groups", default="train,infer,train64,stream,memory")
    args = p.parse_args(argv)
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    shapes, repeats = (QUICK, 1) if args.quick else (SHAPES, args.repeats)
    settle = 0.0 if args.quick else 0.3
    groups = args.groups.split(",")
    rate = matmul_rate(256 if args.quick else 2048)
    fastlstm.LSTM(2, 4).forward(np.zeros((1, 1, 2), np.float32))   # starts Numba's thread pool
    print(f"Run: fastlstm {fastlstm.__version__} vs torch {torch.__version__}, {threads} threads, "
          f"float32 matmul {rate:.0f} GFLOP/s, Numba threading layer "
          f"{numba.threading_layer()}, {repeats} alternating repeats\n")
    print("| group | shape (D, H, B, T) | fastlstm ms | torch ms | speed ratio | fastlstm GFLOP/s | of matmul |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")

    def row(group, name, shape, fs, flops):
        a, b = alternate(fs, repeats, settle=settle)
        gf = flops / a / 1e9 if flops else float("nan")
        print(f"| {group} | {name} {shape} | {a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f}x | "
              f"{gf:.1f} | {gf / rate:.0%} |", flush=True)

    for name, (D, H, B, T) in shapes.items():
        if "train" in groups:
            row("train", name, (D, H, B, T), train_fns(D, H, B, T, np.float32), flops_train(D, H, B, T))
        if "infer" in groups:
            row("infer", name, (D, H, B, T), infer_fns(D, H, B, T, np.float32), flops_train(D, H, B, T) / 3)
    for name in (["tiny"] if args.quick else ["medium", "large"]):
        D, H, B, T = (QUICK | SHAPES)[name]
        if "train64" in groups:
            row("train float64", name, (D, H, B, T), train_fns(D, H, B, T, np.float64), flops_train(D, H, B, T))
    if "stream" in groups:
        D, H = (8, 16) if args.quick else STREAM
        row("stream", "B=1", (D, H, 1, 1), stream_fns(D, H), flops_train(D, H, 1, 1) / 3)
    if "memory" in groups:
        print()
        for name, (D, H, B, T) in shapes.items():
            print(f"memory {name}: a cold training step allocates {workspace_ratio(D, H, B, T):.2f}x "
                  f"the gates + c + tanh c + h it must keep")


if __name__ == "__main__":
    main()
