"""A training step's time by what the process imported first: fastlstm, numpy, or numpy and
torch (the order most scripts and notebooks have), each in a fresh process, alternated.

    python benchmarks/import_order.py [--quick] [shape ...]     (shapes of compare.py)

Prints one row per shape: the median step in each set-up, and each against fastlstm first.
"""
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
    from compare import QUICK, SHAPES
    quick = "--quick" in sys.argv
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or (["tiny"] if quick else list(SHAPES))
    rounds = 1 if quick else 3
    print("| shape (D, H, B, T) | fastlstm first ms | numpy first ms | numpy, torch first ms | numpy first / "
          "fastlstm first | torch first / fastlstm first |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        D, H, B, T = (QUICK | SHAPES)[name]
        n = max(3, int(2.0 / max(1e-3, 3e-11 * 24 * H * (D + H) * B * T))) if not quick else 3
        times = {o: [] for o in ORDERS}
        for _ in range(rounds):                  # alternated, so that drift hits every set-up alike
            for o in ORDERS:
                out = subprocess.run([sys.executable, "-c", CHILD, o, str(D), str(H), str(B), str(T), str(n)],
                                     capture_output=True, text=True, check=True).stdout
                times[o].append(float(out))
        med = {o: sorted(t)[len(t) // 2] for o, t in times.items()}
        print(f"| {name} {(D, H, B, T)} | {med['fastlstm'] * 1e3:.2f} | {med['numpy'] * 1e3:.2f} | "
              f"{med['torch'] * 1e3:.2f} | {med['numpy'] / med['fastlstm']:.2f} | {med['torch'] / med['fastlstm']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
