"""A training step's time by what the process imported first: fastlstm, numpy, or numpy and
torch (the order most scripts and notebooks have), each in a fresh process, alternated;
and, with --load, the same while a second process keeps one core busy (a shared machine).

    python benchmarks/import_order.py [--quick] [--load] [shape ...]     (shapes of compare.py)

Prints one row per shape: the median step in each set-up, and each against fastlstm first
(with --load: against fastlstm first on an idle machine, measured in the same round).
"""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import sys, time
first = sys.argv[1]
if first != "fastlstm":
    import numpy
if first == "torch":
    import torch
import fastlstm, numpy as np
D, H, B, T, n = map(int, sys.argv[2:7])
m = fastlstm.LSTM(D, H, seed=0)
x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)
dy = np.ones((T, B, H), np.float32)
def step():
    m.zero_grad(); m.forward(x); m.backward(dy)
step(); step()
ts = []
for _ in range(n):
    t = time.perf_counter(); step(); ts.append(time.perf_counter() - t)
print(sorted(ts)[len(ts) // 2])
"""
ORDERS = ("fastlstm", "numpy", "torch")


def main():
    sys.path.insert(0, HERE)
    from compare import QUICK, SHAPES, needs
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shapes", nargs="*", metavar="shape",
                   help=f"shapes of compare.py (default: all of {', '.join(SHAPES)})")
    p.add_argument("--quick", action="store_true", help="the tiny shape, one round (the test suite's)")
    p.add_argument("--load", action="store_true", help="also while a second process keeps one core busy")
    args = p.parse_args()
    needs("torch", "torch", "import_order.py times a step with numpy and torch imported first")
    if set(args.shapes) - set(SHAPES | QUICK):
        p.error(f"unknown shape {' '.join(sorted(set(args.shapes) - set(SHAPES | QUICK)))}; the shapes: "
                f"{' '.join(SHAPES | QUICK)}")
    quick, load = args.quick, args.load
    names = args.shapes or (["tiny"] if quick else list(SHAPES))
    rounds = 1 if quick else 3
    under, vs = (" under load", "idle fastlstm first") if load else ("", "fastlstm first")
    cols = [f"fastlstm first ms{under}", f"numpy first ms{under}", f"numpy, torch first ms{under}",
            f"numpy first / {vs}", f"torch first / {vs}"] + (["idle fastlstm first ms"] if load else [])
    print("| shape (D, H, B, T) | " + " | ".join(cols) + " |\n| --- |" + " ---: |" * len(cols))
    for name in names:
        D, H, B, T = (QUICK | SHAPES)[name]
        n = max(3, int(2.0 / max(1e-3, 3e-11 * 24 * H * (D + H) * B * T))) if not quick else 3
        times = {o: [] for o in ORDERS + ("idle",)}
        run = lambda o: float(subprocess.run(                               # noqa: E731
            [sys.executable, "-c", CHILD, o, str(D), str(H), str(B), str(T), str(n)],
            capture_output=True, text=True, check=True).stdout)
        for i in range(rounds):                  # alternated, each set-up in each place of a round in
            if load:                             # turn, so that drift hits every set-up alike
                times["idle"].append(run("fastlstm"))
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for o in ORDERS[i % 3:] + ORDERS[:i % 3]:
                    times[o].append(run(o))
            finally:
                if load:
                    busy.kill()
                    busy.wait()
        med = {o: sorted(t)[len(t) // 2] for o, t in times.items() if t}
        base = med["idle"] if load else med["fastlstm"]
        print(f"| {name} {(D, H, B, T)} | {med['fastlstm'] * 1e3:.2f} | {med['numpy'] * 1e3:.2f} | "
              f"{med['torch'] * 1e3:.2f} | {med['numpy'] / base:.2f} | {med['torch'] / base:.2f} |"
              + (f" {base * 1e3:.2f} |" if load else ""), flush=True)


if __name__ == "__main__":
    main()
