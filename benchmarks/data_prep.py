"""What your own data costs: the share of a training step spent preparing its batch, and
the time and memory to load a large text file and a large CSV series (no PyTorch needed).

    python benchmarks/data_prep.py [--text-mb 100] [--csv-rows 1000000] [--quick]

Step share: medians of warm calls (compare.py's alternate) of one step of `fastlstm
train`'s loop (schedule, batch draw by training.Batches, train_step, progress bar) and of
`Model.train_step` alone on a batch drawn before; the share is their difference over the
loop's step, at the built-in adding shape (T = 100, B = 64, H = 64), a CSV series with window 100
(B = 32, H = 64) and a text file (T = 100, B = 32, H = 256, one-hot input).
Text load: `fastlstm.data.Text` on a file of --text-mb MB (CPython's pydoc_data.topics
repeated), in a fresh process: seconds, and the process's peak resident memory, beside its memory before the
load (after importing fastlstm and NumPy). CSV load: `fastlstm.data.Series` on a file of
--csv-rows rows (an ISO time column and five numeric columns, as a logger writes them), the
same way.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import fastlstm
from fastlstm import data, training
from fastlstm.tasks import Adding

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import alternate, count, local  # noqa: E402


def share(name, source, model, B, quick):
    """The step of `fastlstm train`'s loop (learning rate, batch draw, train_step, progress bar)
    beside train_step alone on one batch drawn before."""
    import io

    from tqdm import tqdm
    run = training.Run(model, source, B, np.random.default_rng(0), steps=10**9, schedule="cosine")
    bar = tqdm(total=10**9, file=io.StringIO(), unit="step")
    fixed = run.batches.next(model.dtype)
    fixed = tuple(a.copy() if a is not None else None for a in fixed)

    def loop():                                    # the body of cli.train's loop, as it runs there
        loss = run.step(model.train_step)
        bar.set_postfix(loss=f"{loss:.4f}", seq_s="0", refresh=False)
        bar.update(1)
    draws = training.Batches(source, B, np.random.default_rng(1))
    t_loop, t_step, t_draw = alternate([local(loop), local(lambda: model.train_step(*fixed)),
                                        local(lambda: draws.next(model.dtype))], 3 if quick else 7,
                                       budget=0.1 if quick else 0.3)
    print(f"| {name} | {t_loop * 1e3:.3f} | {t_step * 1e3:.3f} | {100 * (t_loop - t_step) / t_loop:.1f}% | "
          f"{t_draw * 1e3:.3f} | {100 * t_draw / t_loop:.1f}% |", flush=True)


def write_series(path, n):
    t = np.arange(n)
    rng = np.random.default_rng(0)
    cols = np.column_stack([np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n), rng.normal(size=(n, 2))])
    np.savetxt(path, cols, delimiter=",", header="load,a,b", comments="", fmt="%.5f")


LOAD = """
import sys, time
import numpy as np
from fastlstm import data
def hwm():                 # the peak resident memory (kB); ru_maxrss would carry the parent's over exec
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM")).split()[1])
base = hwm()
t0 = time.perf_counter()
if sys.argv[2] == "text":
    t = data.Text(sys.argv[1], T=100)
    more = f"{len(t.ids)} {len(t.vocab)} {t.ids.nbytes / 2**20:.0f}"
else:
    s = data.Series(sys.argv[1], target="load", window=100)
    more = f"{len(s.values)}"
wall = time.perf_counter() - t0
peak = hwm()
print(f"{wall:.2f} {base / 1024:.0f} {peak / 1024:.0f} {more}")
"""


def load(path, kind):
    """(seconds, MB before, peak MB, *details) of loading path in a fresh process."""
    return subprocess.run([sys.executable, "-c", LOAD, path, kind], capture_output=True, text=True,
                          check=True).stdout.split()


def text_load(mb):
    from pydoc_data.topics import topics
    block = "\n\n".join(topics[k] for k in sorted(topics)).encode()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.txt")
        with open(path, "wb") as f:
            for _ in range(max(1, int(mb * 2**20 / len(block)))):
                f.write(block)
        size = os.path.getsize(path) / 2**20
        wall, base, peak, n, vocab, ids = load(path, "text")
    print(f"\nText load: {size:.0f} MB file ({int(n):,} characters, vocabulary {vocab}): {wall} s; the process's "
          f"peak resident memory {peak} MB, {base} MB before the load (the ids: {ids} MB; the file is "
          f"read in 4 MB pieces: the rest is the pieces being decoded)")


def csv_load(rows):
    rng = np.random.default_rng(0)
    t = np.datetime64("2020-01-01T00:00") + np.arange(rows).astype("timedelta64[m]")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.csv")
        with open(path, "w") as f:
            f.write("time,load,temp,a,b,c\n")
            for i in range(0, rows, 100000):
                v = rng.standard_normal((min(100000, rows - i), 5))
                f.writelines(f"{s},{a:.4f},{b:.3f},{c:.3f},{e:.3f},{g:.3f}\n"
                             for s, (a, b, c, e, g) in zip(np.datetime_as_string(t[i:i + len(v)]), v))
        size = os.path.getsize(path) / 2**20
        wall, base, peak, n = load(path, "series")
    print(f"\nCSV load: {size:.0f} MB file ({int(n):,} rows, a time column and five numbers): {wall} s; the "
          f"process's peak resident memory {peak} MB, {base} MB before the load")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data, few steps (the test suite's)")
    p.add_argument("--text-mb", type=float, help="the size of the text file loaded (default 100, or 2 with --quick)")
    p.add_argument("--csv-rows", type=count, help="the rows of the CSV loaded (default 1000000, or 20000 with --quick)")
    args = p.parse_args()
    if args.csv_rows is not None and args.csv_rows < 126:
        p.error(f"--csv-rows takes at least 126 rows (a window of 100, the next row, and 20% held out), "
                f"got {args.csv_rows}")
    if args.text_mb is not None and not 0 <= args.text_mb < float("inf"):
        p.error(f"--text-mb takes a size in MB >= 0 (the corpus is repeated to it), got {args.text_mb}")
    quick = args.quick
    mb = args.text_mb if args.text_mb is not None else (2 if quick else 100)
    print("| data | loop step ms | train_step ms | difference | batch draw ms | draw share |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    share("adding (T=100, B=64, H=64)", Adding(T=100), fastlstm.Model(2, 64, 1, seed=0), 64, quick)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "series.csv")
        write_series(path, 5000 if quick else 50000)
        s = data.Series(path, target="load", window=100)
        share("series (window 100, B=32, H=64)", s, fastlstm.Model(s.input_size, 64, s.output_size, seed=0), 32, quick)
        from pydoc_data.topics import topics
        path = os.path.join(d, "topics.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(topics[k] for k in sorted(topics)))
        t = data.Text(path, T=100)
        share("text (T=100, B=32, H=256)", t, fastlstm.Model(t.input_size, 256, t.output_size, loss="xent",
                                                             output="every", seed=0), 32, quick)
    text_load(mb)
    csv_load(args.csv_rows if args.csv_rows is not None else (20000 if quick else 1000000))


if __name__ == "__main__":
    main()
