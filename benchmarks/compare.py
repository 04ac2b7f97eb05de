"""fastlstm against PyTorch's CPU LSTM, side by side in one run: one table of ratios.

    python benchmarks/compare.py                 # every group and shape (a few minutes)
    python benchmarks/compare.py --quick         # tiny shapes, to check that it runs
    python benchmarks/compare.py --groups bi --shapes large,xlarge   # a part of it
    python benchmarks/compare.py --groups train,infer --shapes 32x200x32x100   # a shape of your own

Per shape the two are timed alternately in blocks (JIT warm-up outside the timed region),
each library in a worker process of its own; the "order" group also runs both in one
process, imported fastlstm first or numpy and torch first (as most scripts do), the two
processes' runners in one alternation (a table after the main one sets fastlstm's speed in
the two orders side by side), medians reported. The streaming step is timed beside
torch.nn.LSTM on a one-step sequence and beside torch.nn.LSTMCell, PyTorch's one-step
module (the GRU's beside nn.GRU and nn.GRUCell), back to back and paced (a step every PACE
seconds, asleep in between, as a stream fed in real time takes them; only the steps
timed). GFLOP/s counts 3 x 2 x 4H(D+H) x B x T
per training step (forward, δI, δW) and a third of that for inference; "of matmul" divides by the rate of a large float32
NumPy matmul measured in the same run ("torch of matmul": the same for PyTorch, so a speed
ratio r needs r times that fraction). Both libraries use the same number of threads, each
in a worker process of its own (class Worker: in one process they would share one OpenMP
runtime and its wait policy); this process alternates between them and runs the C ABI,
ONNX Runtime (the exported medium model beside fastlstm's predict and PyTorch) and
memory groups itself. The bidirectional and GRU training rows (and the GRU's inference and
streaming rows, and the adam group's step followed by an Adam update, beside
torch.optim.Adam) are timed in one alternation with the plain LSTM's row of the same shape,
both libraries, so that the table after the main one compares their speed ratios within
one set of blocks: the targets ask for "at least the unidirectional LSTM's ratio", and on
a shared machine the same row drifts by 10-20% between minutes of one run. Those tables
also give the lowest and highest of the ratio taken within each repeat: the spread behind
the median.
"""
import os

# Before NumPy loads OpenBLAS: its idle threads must sleep, not spin (see fastlstm/_config.py).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

_PEER_ENV = dict(os.environ)  # the environment PyTorch's worker gets: without fastlstm's defaults
if sys.argv[1:3] in (["--worker", "torch"], ["--worker", "torch+fastlstm"]):
    # before fastlstm sets its OpenMP defaults: PyTorch keeps its own (and, in the shared
    # worker "torch+fastlstm", numpy and torch come first, as users' scripts import them)
    import numpy  # noqa: E402,F401
    import torch  # noqa: E402,F401

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
BUDGET = [1.0]      # what scales every block's seconds of calls: --quick's check that it runs needs a tenth
GROUPS = ("train", "infer", "train64", "stream", "order", "bi", "dropout", "gru", "adam", "proj", "text", "onnx", "capi",
          "memory")
STREAM = (64, 256)  # D, H at B = 1
CAPI_TRAIN = "medium"  # the shape of the C ABI's training step (a Model: LSTM + 1 output, MSE)


def flops_train(D, H, B, T):
    return 3 * 2 * 4 * H * (D + H) * B * T


def elapsed(f, calls):
    """Seconds for `calls` calls of f."""
    t = time.perf_counter()
    for _ in range(calls):
        f()
    return time.perf_counter() - t


def paced(f, calls, pace):
    """Seconds inside `calls` calls of f, each made after `pace` seconds asleep: a stream fed
    in real time (a sensor's samples, audio frames), where every call finds the machine
    idle, not another call just finished."""
    total = 0.0
    for _ in range(calls):
        time.sleep(pace)
        t = time.perf_counter()
        f()
        total += time.perf_counter() - t
    return total


def local(f, pace=0.0):
    """A runner (n -> seconds for n calls) for a function of this process, warmed up; with
    `pace`, the calls are paced (paced) and only their own time counts."""
    f()
    f()                                                         # compile, grow buffers, warm caches
    return (lambda n: paced(f, n, pace)) if pace else (lambda n: elapsed(f, n))


def _calls(run, budget):
    """Calls that fill a block of `budget` seconds, from runs of 1, 4, 16, ... calls until one
    takes a tenth of it: a single cold call (after setup, or an idle machine) can take 10x a
    warm one, and a block sized by it ran a fifth as many calls as it should, all still
    warming up (the streaming rows read 200 µs a step instead of 30)."""
    n = 1
    while True:
        t = run(n)
        if t >= budget / 10 or n >= 1 << 22:
            return max(1, int(n * budget / max(t, 1e-9)))
        n *= 4


def alternate(runners, repeats, budget=0.25, settle=0.3, samples=False):
    """Median seconds per call of each runner, timed in alternating blocks. Before each
    block the machine idles `settle` seconds, so that thread pools still spinning after the
    other library's block (PyTorch's OpenMP spins for a while) have gone to sleep; then
    the runner runs untimed for a fifth of the budget, so that the block starts on a machine
    back at work (after the idle, the first calls here ran up to 1.6x slower). Each repeat
    starts with the next runner in turn, so that no runner always goes first. samples=True:
    also each runner's seconds per call in each repeat (an array, repeats x runners), for
    ratios taken within one repeat."""
    calls = [_calls(run, budget * BUDGET[0]) for run in runners]
    per = np.zeros((repeats, len(runners)))
    for i in range(repeats):
        for j in [(i + k) % len(runners) for k in range(len(runners))]:
            run, n = runners[j], calls[j]
            if settle:
                time.sleep(settle)
                run(max(1, n // 5))
            per[i, j] = run(n) / n
    medians = [float(m) for m in np.median(per, axis=0)]
    return (medians, per) if samples else medians


def count(text):
    """argparse type: an integer >= 1 (repeats, steps, rows; 0 left a traceback or an empty table)."""
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or n < 1:
        raise argparse.ArgumentTypeError(f"takes an integer >= 1, got {text!r}")
    return n


def counts(text):
    """argparse type: integers >= 1, comma-separated (thread or rank counts), in order, once each."""
    return sorted({count(t) for t in text.split(",")})


def needs(module, extra, what):
    """Stop with one line saying how to install `module` (a peer: torch, mpi4py) when this
    Python lacks it, instead of a worker's traceback."""
    import importlib.util
    if importlib.util.find_spec(module) is None:
        sys.exit(f"{what}, and this Python lacks {module}: pip install -e '.[{extra}]'")


def matmul_rate(n=2048, dtype=np.float32):
    """GFLOP/s of a NumPy (n, n) matmul in `dtype`, the median of 5 timings."""
    a = np.random.default_rng(0).random((n, n), dtype)
    t = alternate([local(lambda: a @ a)], 5)[0]
    return 2 * n ** 3 / t / 1e9


class Worker:
    """One library's side of the table, in a process of its own. In one process PyTorch and
    Numba share one GNU OpenMP runtime and so one wait policy: PyTorch's threads spin for
    milliseconds after a kernel, fastlstm's sleep (fastlstm/_config.py). Apart, each keeps
    its own; the parent still alternates the two, block by block, in one run."""

    def __init__(self, lib, threads):
        """lib: "fastlstm", "torch", or a process holding both, imported in that order:
        "fastlstm+torch" or "torch+fastlstm" (each side then asked for by `runner(..., side=)`)."""
        # Numba's pool and fastlstm's OpenBLAS both take `threads` (PyTorch: set_num_threads)
        env = dict(_PEER_ENV if lib.startswith("torch") else os.environ, NUMBA_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads))
        self.lib = lib
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", lib,
                                      "--threads", str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.version = self.ask("version")

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        answer = self.proc.stdout.readline().strip()
        if not answer or answer.startswith("error"):
            raise RuntimeError(f"{self.lib} worker: {answer or 'exited'}")
        return answer

    def runner(self, group, D, H, B, T, dtype, side=None):
        """Set up `group` at this shape in the worker (warmed up there) for its library, or
        for `side` in a worker holding both; n -> seconds."""
        side = side or self.lib
        self.ask(f"setup {side} {group} {D} {H} {B} {T} {np.dtype(dtype).name}")
        return lambda n: float(self.ask(f"run {side} {group} {n}"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(lib, threads):
    """The worker's loop: lines "version", "setup LIB GROUP D H B T DTYPE", "run LIB GROUP N"
    on stdin (LIB: a library this worker holds; the latest setup of each LIB and GROUP is
    kept, so that a group's runs can alternate with its base group's)."""
    if "torch" in lib:
        import torch
        torch.set_num_threads(threads)
    runs = {}
    for line in sys.stdin:
        cmd, *a = line.split()
        try:
            if cmd == "version":
                answer = torch.__version__ if lib == "torch" else fastlstm.__version__
            elif cmd == "setup":
                group, dims, dtype = a[1], map(int, a[2:6]), np.dtype(a[6])
                runs[a[0], group] = None                    # the old setup of this group freed first
                runs[a[0], group] = local(side(a[0], group, *dims, dtype),
                                          VARIANTS.get(group, (None, {}))[1].get("pace", 0.0))
                answer = "ok"
            else:
                answer = repr(runs[a[0], a[1]](int(a[2])))
        except Exception as e:  # noqa: BLE001  (reported to the parent, which raises)
            answer = f"error {type(e).__name__}: {e}"
        print(answer, flush=True)


# group -> (base group, stack settings): bidirectional, two layers with and without dropout,
# the GRU (cell: torch.nn.GRU beside fastlstm.GRU), projections to H/2 (proj_size), and the
# streaming step beside PyTorch's one-step modules (peer="cell": torch.nn.LSTMCell or GRUCell,
# under torch.inference_mode; the "stream" rows call torch.nn.LSTM on a sequence of one step),
# each also paced, one step every PACE seconds, as a stream fed in real time takes them
PACE = 1e-3
VARIANTS = {"streamcell": ("stream", dict(peer="cell")), "grustreamcell": ("stream", dict(cell="gru", peer="cell")),
            "bitrain": ("train", dict(bidirectional=True)), "biinfer": ("infer", dict(bidirectional=True)),
            "train2": ("train", dict(num_layers=2)), "train2drop": ("train", dict(num_layers=2, dropout=0.2)),
            "grutrain": ("train", dict(cell="gru")), "gruinfer": ("infer", dict(cell="gru")),
            "grustream": ("stream", dict(cell="gru")), "projtrain": ("train", dict(proj_size="H/2")),
            "projinfer": ("infer", dict(proj_size="H/2")), "adamtrain": ("train", dict(adam=True)),
            "pacedstream": ("stream", dict(pace=PACE)), "pacedstreamcell": ("stream", dict(peer="cell", pace=PACE)),
            "grupacedstream": ("stream", dict(cell="gru", pace=PACE))}


def side(lib, group, D, H, B, T, dtype):
    """The call that `group` (train, infer, stream, or a VARIANTS entry) times for lib
    (fastlstm or torch): the same weights (fastlstm's, seed 0) and inputs for both, in
    training mode. Imports torch only for torch."""
    group, settings = VARIANTS.get(group, (group, {}))
    settings = dict(settings)
    cell, adam = settings.pop("cell", "lstm"), settings.pop("adam", False)     # adam: an update after each step
    peer = settings.pop("peer", "stack")
    settings.pop("pace", None)                                  # serve() paces the calls
    if settings.get("proj_size") == "H/2":
        settings["proj_size"] = H // 2
    ours = {"lstm": fastlstm.LSTM, "gru": fastlstm.GRU}[cell](D, H, dtype=dtype, seed=0, **settings)
    S, Hout = ours.num_states, ours.output_size
    widths = (ours.Hr, H) if cell == "lstm" else (H,)          # the state: (h, c), or h alone
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    dy = rng.standard_normal((T, B, Hout)).astype(dtype)
    if lib == "fastlstm":
        x0, hc = x[0], [np.zeros((1, B, w), dtype) for w in widths]

        opt = fastlstm.Adam(lr=1e-6).bind(ours.params.size, dtype) if adam else None

        def train():
            ours.zero_grad()                                    # as the peer's zero_grad()
            ours.forward(x)
            ours.backward(dy)
            if opt:
                opt.step(ours.params, ours.grads)
        return {"train": train, "infer": lambda: ours.forward(x), "stream": lambda: ours.step(x0, *hc)}[group]
    import torch
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    if peer == "cell":                  # PyTorch's one-step module, the faster of its two ways to take a step
        one = getattr(torch.nn, cell.upper() + "Cell")(D, H, dtype=tdtype)
        one.load_state_dict({k: torch.from_numpy(v) for k, v in ours.torch_state_dict(cell=True).items()})
        x1, hc1 = torch.tensor(x[0]), [torch.zeros(B, w, dtype=tdtype) for w in widths]
        state1 = [tuple(hc1) if cell == "lstm" else hc1[0]]         # (h, c), or h: what the cell returns

        def cell_step():
            with torch.inference_mode():
                state1[0] = one(x1, state1[0])
        return cell_step
    theirs = getattr(torch.nn, cell.upper())(D, H, dtype=tdtype, **settings)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.torch_state_dict().items()})
    xt, dyt = torch.tensor(x, requires_grad=group == "train"), torch.tensor(dy)
    hc = [torch.zeros(S, B, w, dtype=xt.dtype, requires_grad=group == "train") for w in widths]
    state = [tuple(hc) if cell == "lstm" else hc[0]]

    opt = torch.optim.Adam(theirs.parameters(), lr=1e-6) if adam else None   # its default implementation

    def train():
        theirs.zero_grad()
        y, _ = theirs(xt, state[0])
        y.backward(dyt)
        if opt:
            opt.step()

    def infer():
        with torch.no_grad():
            theirs(xt)

    def stream():
        with torch.no_grad():
            _, state[0] = theirs(xt, state[0])
    return {"train": train, "infer": infer, "stream": stream}[group]


class CDriver:
    """benchmarks/capi_driver.c, compiled against a freshly built libfastlstm.so, running
    beside us: `calls(op, n)` has it make n C ABI calls of op and waits for its answer."""

    def __init__(self, D, H, O, B, T):
        from fastlstm import capi
        if shutil.which("gcc") is None:
            raise RuntimeError("the capi group needs gcc")
        self.dir = tempfile.mkdtemp(prefix="fastlstm-capi-bench-")
        capi.build(self.dir)
        exe = os.path.join(self.dir, "capi_driver")
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "capi_driver.c")
        subprocess.run(["gcc", "-O2", "-o", exe, src, *capi.flags(self.dir, True, True).split()], check=True)
        self.proc = subprocess.Popen([exe, *map(str, (D, H, O, B, T))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def calls(self, op, n):
        self.proc.stdin.write(f"{op} {n}\n")
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"capi_driver: {answer or 'exited'}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def capi_fns(quick=False):
    """[(row name, calls per timing, fn from C, fn from Python or None)] for the C ABI, and
    the drivers to close. The Python peer makes the same calls on the same Model."""
    (D, H), (Dt, Ht, Bt, Tt) = ((8, 16), QUICK["tiny"]) if quick else (STREAM, SHAPES[CAPI_TRAIN])
    rng = np.random.default_rng(0)
    stream, train = CDriver(D, H, 1, 1, 1), CDriver(Dt, Ht, 1, Bt, Tt)
    ms, mt = fastlstm.Model(D, H, 1, seed=0), fastlstm.Model(Dt, Ht, 1, seed=0)
    x1 = rng.random((1, D), np.float32) - 0.5
    x, y = rng.random((Tt, Bt, Dt), np.float32) - 0.5, rng.random((Bt, 1), np.float32) - 0.5
    n = 1000

    def py_steps():
        for _ in range(n):
            ms.step(x1)
    rows = [("call overhead (fastlstm_param_count)", n, lambda: stream.calls("count", n), None),
            (f"stream step B=1 {(D, H)}", n, lambda: stream.calls("step", n), py_steps),
            (f"train step {(Dt, Ht, Bt, Tt)}", 1, lambda: train.calls("train", 1), lambda: mt.train_step(x, y))]
    return rows, (stream, train)


def onnx_fns(D, H, B, T, threads):
    """(fastlstm predict, ONNX Runtime running the same Model exported) for a (D, H, B, T)
    LSTM with one output, ONNX Runtime on `threads` threads; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    m = fastlstm.Model(D, H, 1, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        fastlstm.export_onnx(m, os.path.join(d, "m.onnx"))
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        s = ort.InferenceSession(os.path.join(d, "m.onnx"), so, providers=["CPUExecutionProvider"])
    feed = {"x": x, "sequence_lens": np.full(B, T, np.int32)}
    return (lambda: m.predict(x)), (lambda: s.run(["predictions"], feed))


def text_rows(quick, repeats, settle):
    """The text task's training step (a Model: LSTM + softmax at every step) on one-hot
    inputs (V wide) beside token ids through the command line's embedding (cli.EMBED wide)."""
    from fastlstm.cli import EMBED
    from fastlstm.tasks import Text
    task = Text(T=16 if quick else 64)
    B, H = (4, 32) if quick else (32, 256)
    fns = []
    for tokens in (False, True):
        task.tokens = tokens
        m = fastlstm.Model(EMBED if tokens else task.vocab_size, H, task.vocab_size, loss="xent", output="every", seed=0,
                           vocab_size=task.vocab_size if tokens else None)
        batch = task.batch(np.random.default_rng(0), B)
        fns.append(local(lambda m=m, batch=batch: m.train_step(*batch)))
    a, b = alternate(fns, repeats, settle=settle)
    print(f"\n| text task step (T={task.T}, B={B}, H={H}, V={task.vocab_size}) | one-hot input ms | token ids ms "
          f"| one-hot / ids time |\n| --- | ---: | ---: | ---: |\n| train_step | {a * 1e3:.3f} | {b * 1e3:.3f} | "
          f"{a / b:.2f} |", flush=True)


def workspace_ratio(D, H, B, T):
    """Peak bytes a cold training step allocates (returned arrays excluded), over the bytes
    the algorithm must keep: gates (4H), c, tanh c and h per step and row (7H)."""
    ours = fastlstm.LSTM(D, H, seed=0)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D), np.float32), rng.standard_normal((T, B, H), np.float32)
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
    p.add_argument("--repeats", type=count, default=7)
    p.add_argument("--groups", default=",".join(GROUPS), help="a comma-separated subset of " + ", ".join(GROUPS))
    p.add_argument("--shapes", help="a comma-separated subset of the shapes (default: all of them), or shapes "
                                    "of your own as DxHxBxT (32x200x32x100)")
    p.add_argument("--worker", choices=["fastlstm", "torch", "fastlstm+torch", "torch+fastlstm"],
                   help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return serve(args.worker, args.threads)
    needs("torch", "torch", "compare.py times fastlstm beside torch.nn.LSTM")
    threads = numba.get_num_threads()
    shapes, repeats = (QUICK, 1) if args.quick else (SHAPES, args.repeats)
    if args.shapes:
        wanted = args.shapes.split(",")
        own = {w: tuple(map(int, w.split("x"))) for w in wanted if re.fullmatch(r"[1-9]\d*(x[1-9]\d*){3}", w)}
        unknown = sorted(set(wanted) - set(shapes) - set(own))
        if unknown:
            p.error(f"unknown shapes {unknown}: choose from {', '.join(shapes)}, or give one as DxHxBxT")
        shapes = {**{k: v for k, v in shapes.items() if k in wanted}, **own}
    settle = 0.0 if args.quick else 0.3
    BUDGET[0] = 0.1 if args.quick else 1.0
    groups = args.groups.split(",")
    if set(groups) - set(GROUPS):
        p.error(f"unknown groups {sorted(set(groups) - set(GROUPS))}: choose from {', '.join(GROUPS)}")
    rate = matmul_rate(256 if args.quick else 2048)
    fastlstm.LSTM(2, 4).forward(np.zeros((1, 1, 2), np.float32))   # starts Numba's thread pool
    workers = [Worker(lib, threads) for lib in ("fastlstm", "torch")]
    print(f"Run: fastlstm {workers[0].version} vs torch {workers[1].version}, {threads} threads, "
          f"float32 matmul {rate:.0f} GFLOP/s, Numba threading layer "
          f"{numba.threading_layer()}, {repeats} alternating repeats, each library in its own process\n")
    print("| group | shape (D, H, B, T) | fastlstm ms | torch ms | speed ratio | fastlstm GFLOP/s "
          "| of matmul | torch of matmul |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    beside = []                              # (label, shape name, base's speed ratio, this row's, per repeat)
    orders = []                              # (shape name, fastlstm's speed torch first / fastlstm first, per repeat)

    def print_row(label, name, shape, a, b, flops):
        """A table row from fastlstm's (a) and PyTorch's (b) seconds per call."""
        gf = flops / a / 1e9
        print(f"| {label} | {name} {shape} | {a * 1e3:.3f} | {b * 1e3:.3f} | {b / a:.2f}x | "
              f"{gf:.1f} | {gf / rate:.0%} | {flops / b / 1e9 / rate:.0%} |", flush=True)

    def row(group, label, name, shape, dtype, flops, base=None, budget=0.25):
        """One table row. A speed ratio r needs r x (torch of matmul) of the matmul rate.
        base: a group timed in the same alternation (the unidirectional LSTM beside the
        bidirectional one, the LSTM beside the GRU), whose ratio goes to `beside`, so that
        the two ratios compare within one set of blocks, not across minutes of drift.
        budget: seconds of calls a block times (a paced row's calls take a twentieth of
        its blocks' time)."""
        groups_here = [group] + ([base] if base else [])
        t, per = alternate([w.runner(g, *shape, dtype) for g in groups_here for w in workers], repeats,
                           budget=budget, settle=settle, samples=True)
        a, b = t[:2]
        if base:                             # and this / base within each repeat, for its spread
            beside.append((label, name, t[3] / t[2], b / a, (per[:, 1] / per[:, 0]) / (per[:, 3] / per[:, 2])))
        print_row(label, name, shape, a, b, flops)

    for name, shape in shapes.items():
        if "train" in groups:
            row("train", "train", name, shape, np.float32, flops_train(*shape))
        if "infer" in groups:
            row("infer", "infer", name, shape, np.float32, flops_train(*shape) / 3)
    for name in (["tiny"] if args.quick else ["medium", "large"]):
        if "train64" in groups:
            shape = (QUICK | SHAPES)[name]
            row("train", "train float64", name, shape, np.float64, flops_train(*shape))
    if "stream" in groups:
        D, H = (8, 16) if args.quick else STREAM
        row("stream", "stream", "B=1", (D, H, 1, 1), np.float32, flops_train(D, H, 1, 1) / 3)
        row("streamcell", "stream, torch.nn.LSTMCell", "B=1", (D, H, 1, 1), np.float32, flops_train(D, H, 1, 1) / 3)
        for group, peer in (("pacedstream", ""), ("pacedstreamcell", ", torch.nn.LSTMCell")):
            row(group, f"stream, a step every {PACE * 1e3:g} ms{peer}", "B=1", (D, H, 1, 1), np.float32,
                flops_train(D, H, 1, 1) / 3, budget=0.0125)
    if "order" in groups:                    # both libraries in one process, in either import order
        mixed = [Worker(m, threads) for m in ("fastlstm+torch", "torch+fastlstm")]
        labels = ("train, one process, fastlstm first", "train, one process, numpy and torch first")
        for name, shape in shapes.items():   # the two processes' four runners in one alternation
            t, per = alternate([w.runner("train", *shape, np.float32, side=lib) for w in mixed
                                for lib in ("fastlstm", "torch")], repeats, settle=settle, samples=True)
            for label, (a, b) in zip(labels, (t[:2], t[2:])):
                print_row(label, name, shape, a, b, flops_train(*shape))
            orders.append((name, t[0] / t[2], per[:, 0] / per[:, 2]))
        for w in mixed:
            w.close()
    if "bi" in groups:                       # both directions: twice a layer's work (torch.nn.LSTM(bidirectional=True))
        for name, shape in shapes.items():
            row("bitrain", "train bidirectional", name, shape, np.float32, 2 * flops_train(*shape), base="train")
            row("biinfer", "infer bidirectional", name, shape, np.float32, 2 * flops_train(*shape) / 3)
    if "dropout" in groups:                  # two layers, without and with dropout 0.2 (training mode)
        name = "tiny" if args.quick else "medium"
        D, H, B, T = (QUICK | SHAPES)[name]
        for group, label in (("train2", "train 2 layers"), ("train2drop", "train 2 layers, dropout 0.2")):
            row(group, label, name, (D, H, B, T), np.float32, flops_train(D, H, B, T) + flops_train(H, H, B, T))
    if "gru" in groups:                      # torch.nn.GRU beside fastlstm.GRU: 3 gates' work, not 4
        for name, shape in shapes.items():
            row("grutrain", "GRU train", name, shape, np.float32, 0.75 * flops_train(*shape), base="train")
            row("gruinfer", "GRU infer", name, shape, np.float32, 0.75 * flops_train(*shape) / 3, base="infer")
        D, H = (8, 16) if args.quick else STREAM
        row("grustream", "GRU stream", "B=1", (D, H, 1, 1), np.float32, 0.75 * flops_train(D, H, 1, 1) / 3,
            base="stream")
        row("grustreamcell", "GRU stream, torch.nn.GRUCell", "B=1", (D, H, 1, 1), np.float32,
            0.75 * flops_train(D, H, 1, 1) / 3, base="streamcell")
        row("grupacedstream", f"GRU stream, a step every {PACE * 1e3:g} ms", "B=1", (D, H, 1, 1), np.float32,
            0.75 * flops_train(D, H, 1, 1) / 3, base="pacedstream", budget=0.0125)
    if "adam" in groups:                     # a training step and an update, as a run takes it (torch.optim.Adam)
        for name, shape in shapes.items():
            row("adamtrain", "train + Adam update", name, shape, np.float32, flops_train(*shape), base="train")
    if "proj" in groups:                     # LSTMP: torch.nn.LSTM(proj_size=H/2) beside LSTM(proj_size=H/2)
        name = "tiny" if args.quick else "medium"
        D, H, B, T = (QUICK | SHAPES)[name]
        P = H // 2
        flops = 3 * 2 * (4 * H * (D + P) + P * H) * B * T
        row("projtrain", f"train proj_size={P}", name, (D, H, B, T), np.float32, flops)
        row("projinfer", f"infer proj_size={P}", name, (D, H, B, T), np.float32, flops / 3)
    if beside:
        print("\n| row, timed beside its base | shape | base's speed ratio (LSTM, unidirectional) | this row's "
              "| this / base | in each repeat, lowest - highest |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for label, name, r0, r1, each in beside:
            print(f"| {label} | {name} | {r0:.2f}x | {r1:.2f}x | {r1 / r0:.2f} | {each.min():.2f} - {each.max():.2f} |",
                  flush=True)
    if orders:
        print("\n| one process, timed in one alternation | shape | fastlstm's speed, numpy and torch first / fastlstm "
              "first | in each repeat, lowest - highest |\n| --- | --- | ---: | ---: |")
        for name, r, each in orders:
            print(f"| train | {name} | {r:.2f}x | {each.min():.2f} - {each.max():.2f} |", flush=True)
    if "text" in groups:
        text_rows(args.quick, repeats, settle)
    if "onnx" in groups:
        name = "tiny" if args.quick else "medium"
        shape = (QUICK | SHAPES)[name]
        fns = onnx_fns(*shape, threads)
        print("\n| forward with the head | shape (D, H, B, T) | fastlstm predict ms | ONNX Runtime ms | torch ms "
              "| ONNX Runtime / fastlstm time |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        if fns is None:
            print("| (onnxruntime is not installed: pip install -e '.[onnx]') | | | | | |")
        else:
            a, b, c = alternate([local(f) for f in fns] + [workers[1].runner("infer", *shape, np.float32)], repeats,
                                settle=settle)
            print(f"| {name} | {shape} | {a * 1e3:.3f} | {b * 1e3:.3f} | {c * 1e3:.3f} | {b / a:.2f} |", flush=True)
    for w in workers:
        w.close()
    if "capi" in groups:
        rows, drivers = capi_fns(args.quick)
        print("\n| C ABI | from C µs per call | from Python µs per call | C / Python time |")
        print("| --- | ---: | ---: | ---: |")
        for name, n, c, py in rows:
            t = alternate([local(f) for f in (c, py) if f], repeats, settle=settle)
            c_us = t[0] / n * 1e6
            py_us, ratio = (f"{t[1] / n * 1e6:.2f}", f"{t[0] / t[1]:.2f}") if py else ("–", "–")  # no Python twin
            print(f"| {name} | {c_us:.2f} | {py_us} | {ratio} |", flush=True)
        for d in drivers:
            d.close()
    if "memory" in groups:
        print()
        for name, (D, H, B, T) in shapes.items():
            print(f"memory {name}: a cold training step allocates {workspace_ratio(D, H, B, T):.2f}x "
                  f"the gates + c + tanh c + h it must keep")


if __name__ == "__main__":
    main()
