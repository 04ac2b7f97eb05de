"""The command line: `fastlstm train` runs the main job on your own data (`--data`) or a
built-in task; `fastlstm predict` forecasts, classifies or scores a file with a checkpoint;
`fastlstm plot` draws a metrics log; `fastlstm sample` generates text from a checkpoint of
text; `fastlstm export` writes a checkpoint's model as ONNX; `fastlstm carousel` measures
how far back gradients reach in an RNN, two LSTMs and a GRU.

Only the standard library loads before main() has installed its Ctrl-C handler
(`_Interrupt`); NumPy, Numba and the kernels load after it."""
import argparse
import codecs
import contextlib
import errno
import math
import os
import re
import signal
import sys
import threading
import time

from . import __version__, choices

# Defaults per task: tuned so that each reaches its figure of merit on 2 cores within minutes.
DEFAULTS = {
    "adding": dict(hidden=64, layers=1, steps=3000, batch=64, lr=1e-2, clip=1.0, eval_every=100, T=100),
    "text": dict(hidden=256, layers=1, steps=2000, batch=32, lr=2e-3, clip=1.0, eval_every=250, T=64),
    "digits": dict(hidden=64, layers=1, steps=600, batch=64, lr=1e-2, clip=1.0, eval_every=100, T=None),
}


# The width of a text model's character embedding: at 32 a step of the text task is about 10%
# faster than on one-hot input, and it reaches the task's target in half the steps (README).
EMBED = 32

# Defaults per kind of your own data (--data): a run of --epochs over the file.
DATA_DEFAULTS = {
    "text": dict(hidden=256, layers=1, epochs=10, batch=32, lr=2e-3, clip=1.0, T=100, val_fraction=0.1),
    "series": dict(hidden=64, layers=1, epochs=50, batch=32, lr=2e-3, clip=1.0, val_fraction=0.2),
    "arrays": dict(hidden=64, layers=1, epochs=30, batch=32, lr=2e-3, clip=1.0, val_fraction=0.2),
}


# The options that make a run what it is: a new run records them as resolved (defaults
# filled in), and --resume refuses any typed with another value, which it would ignore.
RUN_OPTIONS = ("kind", "target", "features", "window", "horizon", "season", "fill", "sep", "decimal", "layout",
               "output", "val_fraction", "hidden", "layers", "cell", "bidirectional", "proj", "dropout", "embed",
               "epochs", "batch", "lr", "schedule", "warmup", "optimizer", "momentum", "weight_decay", "clip", "T",
               "dtype", "seed", "eval_every", "patience")
MAY_CHANGE = ("epochs",)        # with --steps (not among them): where the run ends, which --resume may move


def _reading_options(p, run=None):
    """How to read a file: train's options, or predict's (run: what predict says of its
    defaults, the checkpoint's reading of its own file)."""
    fill, sep, decimal, layout = ((run,) * 4 if run else ("refuse them", "a tab in a .tsv, else ','", "'.'", "batch"))
    p.add_argument("--fill", choices=("ffill", "zero"), help=f"series: fill missing values (default: {fill})")
    p.add_argument("--sep", type=lambda s: choices.SEPARATORS.get(s, s), help=f"series: the character between "
                   f"cells (default: {sep}; ';' or 'tab' as a spreadsheet may write them)")
    p.add_argument("--decimal", choices=choices.DECIMALS, default=None if run else ".",
                   metavar="|".join(choices.DECIMALS), help=f"series: the decimal mark (default: {decimal}; ',' "
                   f"with --sep ';')")
    p.add_argument("--layout", choices=("batch", "time"), default=None if run else "batch",
                   help=f"arrays: x is (N, T, D) (batch) or (T, N, D) (time) (default: {layout})")


def _parser(typed_only=False):
    """The command line's parser; typed_only: train's defaults left out, so that parsing
    gives only the options typed."""
    p = argparse.ArgumentParser(prog="fastlstm", description="A compact, fast LSTM training engine.")
    p.add_argument("--version", action="version", version=f"fastlstm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train on your data (--data) or a built-in task (default: the adding problem)",
                       description="Train an LSTM on a file of your own (--data) or a built-in task, with a "
                       "progress bar, periodic validation, checkpoints (the last and the best) and a metrics "
                       "log. Ctrl-C saves a checkpoint and exits.")
    t.add_argument("--task", choices=sorted(DEFAULTS), help="a built-in task (default adding, unless --data)")
    t.add_argument("--data", metavar="PATH", help="your own data: a UTF-8 text file, a CSV with a header row, "
                   "or a .npz with x, y (and lengths)")
    t.add_argument("--kind", choices=choices.DATA_KINDS, help="the kind of --data (default: from the "
                   "file's name: .csv or .tsv series, .npz arrays, anything else text)")
    t.add_argument("--target", help="series: the column(s) to forecast, by name or number from 1 (a,b)")
    t.add_argument("--features", help="series: the input columns (default: every numeric column)")
    t.add_argument("--window", type=int, default=50, help="series: steps in (default 50)")
    t.add_argument("--horizon", type=int, default=1, help="series: steps ahead to forecast (default 1)")
    t.add_argument("--season", type=int, help="series: the season's length in rows, for the seasonal naive forecast")
    _reading_options(t)
    t.add_argument("--output", choices=choices.OUTPUTS, default="last",
                   help="arrays: a target per sequence (last, the default: y (N,) or (N, O)) or per step "
                        "(every: y (N, T) or (N, T, O), laid out as x; past a row's length not counted)")
    t.add_argument("--val-fraction", type=float, help="held-out share (text 0.1: the end; series 0.2: the "
                   "end, in time order; arrays 0.2: seeded)")
    t.add_argument("--hidden", type=int, help="hidden units per layer")
    t.add_argument("--layers", type=int, help="recurrent layers")
    t.add_argument("--cell", choices=choices.CELLS, default="lstm",
                   help="LSTM, GRU, or a vanilla RNN to compare (rnn: tanh; rnn_relu: ReLU)")
    t.add_argument("--bidirectional", action="store_true", help="a reverse direction beside every layer")
    t.add_argument("--proj", type=int, default=0, metavar="P", help="LSTM: project h to P < hidden units "
                   "(LSTMP, PyTorch's proj_size; default 0, none)")
    t.add_argument("--dropout", type=float, default=0.0, help="dropout p on the outputs of every layer but the "
                   "last, in training (default 0)")
    t.add_argument("--embed", type=int, default=EMBED, help=f"text: the width of the characters' embedding "
                   f"(default {EMBED})")
    t.add_argument("--steps", type=int, help="training steps in all (a resumed run counts those done)")
    t.add_argument("--epochs", type=int, help="passes over --data in all (default per kind; with --steps, "
                   "whichever comes first; a resumed run counts those done)")
    t.add_argument("--batch", type=int, help="sequences per step")
    t.add_argument("--lr", type=float, help="learning rate")
    t.add_argument("--schedule", choices=choices.SCHEDULES, default="constant",
                   help="learning-rate schedule (plateau halves it after 2 evaluations without a new best)")
    t.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    t.add_argument("--optimizer", choices=choices.OPTIMIZERS, default="adam",
                   help="adam (the default), sgd, or adamw (Adam with decoupled weight decay)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    t.add_argument("--weight-decay", type=float, help="weight decay: L2 on the gradient for adam and sgd (PyTorch's "
                   "weight_decay; default 0), decoupled for adamw (default 0.01)")
    t.add_argument("--clip", type=float, help="max global gradient norm (0: no clipping)")
    t.add_argument("--T", type=int, help="sequence length (adding, text, --data text)")
    t.add_argument("--dtype", choices=choices.DTYPES, default="float32",
                   help="the model's floating-point type (default float32)")
    t.add_argument("--seed", type=int, default=0, help="seeds the weights, the data's order and split, and "
                   "dropout (default 0)")
    t.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints")
    t.add_argument("--patience", type=int, help="stop after this many evaluations without a new best")
    t.add_argument("--full", action="store_true", help="run all steps even once the task is solved")
    t.add_argument("--out", help="checkpoint path (default runs/NAME.ckpt; the best beside it as NAME.best.ckpt, "
                   "the metrics log as NAME.csv)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    t.add_argument("--overwrite", action="store_true", help="start afresh over an existing checkpoint at --out "
                   "(without it, or --resume, an existing run is never written over)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI: mpiexec -n N python -m mpi4py -m fastlstm train --distributed")
    pr = sub.add_parser("predict", help="forecast, classify or score a file with a checkpoint trained with --data",
                        description="Series: the next horizon values after the file's end (--backtest: rolling "
                        "forecasts over the file); arrays: class probabilities or values per row; text: bits "
                        "per character.")
    pr.add_argument("checkpoint", help="a checkpoint of `fastlstm train --data` (runs/NAME.ckpt or NAME.best.ckpt)")
    pr.add_argument("--data", required=True, metavar="PATH", help="the file to predict from, of the kind the run "
                    "was trained on")
    pr.add_argument("--out", metavar="CSV", help="write the predictions here (default, or -: print them)")
    pr.add_argument("--backtest", action="store_true", help="series: one forecast from every window of the file")
    _reading_options(pr, run="as the run read its own file")
    pl = sub.add_parser("plot", help="draw the curves of a metrics log (runs/NAME.csv)")
    pl.add_argument("log", help="a run's metrics log (runs/NAME.csv)")
    pl.add_argument("--out", required=True, metavar="PNG", help="the image to write (PNG; PDF, SVG or another "
                    "format matplotlib writes, by its extension)")
    c = sub.add_parser("carousel", help="gradient flow: RNN vs LSTM (forget bias 0 and 1) vs GRU",
                       description="Compare how far back the gradient of a loss at the last step "
                       "reaches in an RNN, an LSTM with forget bias 0, one with forget bias 1, and a GRU.")
    c.add_argument("--T", type=int, default=200, help="sequence length (default 200)")
    c.add_argument("--hidden", type=int, default=64, help="hidden units of each model (default 64)")
    c.add_argument("--batch", type=int, default=32, help="sequences the norms are taken over (default 32)")
    c.add_argument("--seed", type=int, default=0, help="seeds the weights and the sequences (default 0)")
    c.add_argument("--train", type=int, default=0, metavar="STEPS",
                   help="first train each model on the adding problem at T for up to STEPS steps")
    c.add_argument("--plot", metavar="PNG", help="also write a plot (needs matplotlib)")
    e = sub.add_parser("export", help="write a checkpoint's model as an ONNX graph",
                       description="Write the model of a checkpoint as ONNX's own LSTM/GRU/RNN operators "
                       "(opset 17), checked by onnx.checker. Needs the onnx extra.")
    e.add_argument("checkpoint", help="a checkpoint (of `fastlstm train`, or Model.save)")
    e.add_argument("out", help="the .onnx file to write")
    e.add_argument("--streaming", action="store_true", help="a one-step graph whose state goes in and comes out")
    e.add_argument("--float32", action="store_true", help="export a float32 copy of a float64 model (ONNX "
                   "Runtime's recurrent operators run float32 only)")
    s = sub.add_parser("sample", help="generate text from a checkpoint of text (--data or the text task)")
    s.add_argument("checkpoint", help="a checkpoint of text (--data on a text file, or --task text)")
    s.add_argument("--length", type=int, default=300, help="characters to generate (default 300)")
    s.add_argument("--prime", help="the text to start from (default: 'The ' when the vocabulary has its "
                                   "characters, else nothing)")
    s.add_argument("--temperature", type=float, default=0.8, help="below 1 the likelier characters, above 1 more "
                   "varied ones (default 0.8)")
    s.add_argument("--seed", type=int, default=0, help="seeds the sampling (default 0)")
    if typed_only:
        for action in t._actions:
            action.default = argparse.SUPPRESS
    return p


def _make_task(name, T, recorded_in=None):
    """The built-in task `name` at T steps (None: its default); recorded_in: the checkpoint
    whose record gave T, which an error then names. A task of fixed length (digits: 8 rows
    of 8) takes no T: a run records its T, which must be that length."""
    import inspect

    from .tasks import TASKS
    task = TASKS[name]
    try:
        if "T" in inspect.signature(task).parameters:
            return task() if T is None else task(T=T)
        if T is not None and (type(T) is not int or T != task.T):
            raise ValueError(f"T = {T!r}, and the {name} task has {task.T} steps")
        return task()
    except (TypeError, ValueError) as e:
        if recorded_in is None:
            raise
        raise UsageError(f"{recorded_in}: its record of the task is unusable ({e})") from None


class UsageError(Exception):
    """A bad option or file, reported as `fastlstm: error: ...` with exit status 2."""


def _at_least(args, **minimum):
    """UsageError unless each option given (not None) is at least its minimum: the counts and
    seeds that would otherwise run zero steps, or fail deep inside with NumPy's words."""
    for name, low in minimum.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


REAL = {  # option: (its range as said, the test), for the real-valued options of every command
    "lr": ("a finite number > 0", lambda v: v > 0), "temperature": ("a finite number > 0", lambda v: v > 0),
    "clip": ("a finite number >= 0 (0: no clipping)", lambda v: v >= 0),
    "weight_decay": ("a finite number >= 0", lambda v: v >= 0),
    "dropout": ("in [0, 1)", lambda v: 0 <= v < 1), "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "val_fraction": ("in (0, 1)", lambda v: 0 < v < 1)}


def _real(args, *names):
    """UsageError unless each real-valued option given (not None) is a finite number in its
    range (REAL): said with the counts (_at_least), before anything about --out or the data."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and REAL[name][1](value)):
            raise UsageError(f"--{name.replace('_', '-')} must be {REAL[name][0]}, got {value}")


def _not_onto(out, **reads):
    """UsageError if writing `out` would replace a file the command reads (`reads`: what it
    is called, its path), as `predict --out` onto its own data file did."""
    for what, src in reads.items():
        if out is not None and src is not None and (
                os.path.abspath(out) == os.path.abspath(src)
                or (os.path.exists(out) and os.path.exists(src) and os.path.samefile(out, src))):
            raise UsageError(f"{out} would write over the {what} this command reads; choose another output")


class _Interrupt:
    """The SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGXCPU handler of the command line
    (SIGTERM, which a scheduler or `kill` sends before it kills a job, SIGHUP, which a closed
    terminal or a dropped ssh session sends, and SIGUSR1, SIGUSR2 or SIGXCPU, which
    schedulers send as a warning before a limit (SLURM's `--signal`, Grid Engine's `-notify`
    and `s_cpu`, the kernel at `ulimit -t`'s soft limit) and whose default ends the process,
    are a Ctrl-C; the exit status is 128 + the signal's number: 130 for SIGINT, 143 for
    SIGTERM, 129 for SIGHUP, 138, 140 and 152 for SIGUSR1, SIGUSR2 and SIGXCPU). A signal
    other than SIGINT that the process inherited as ignored (SIGHUP under `nohup fastlstm
    train`) stays ignored (handled()).

    Until training starts it ends the process at once (exit status 130, a message on
    stderr): nothing is saved yet. A KeyboardInterrupt raised there would land inside
    whatever was loading (NumPy, SciPy, Numba's compiler) and could escape it: one that
    reached the interpreter ended the process by SIGINT (-2), not 130. Once the loop
    runs (`defer()`), the first Ctrl-C only sets
    `requested`, which the loop reads between steps, so that a batch draw, its step and the
    counters are one unit and the checkpoint written then is a state an uninterrupted run
    passes through (resume is bitwise). A second Ctrl-C stops at once; the last checkpoint
    written stays as it was. `saved` says what is on disk, for main()'s last message."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGXCPU)
    NAMES = {signal.SIGTERM: b" (SIGTERM)", signal.SIGHUP: b" (SIGHUP: the terminal went away)",
             signal.SIGUSR1: b" (SIGUSR1)", signal.SIGUSR2: b" (SIGUSR2)",
             signal.SIGXCPU: b" (SIGXCPU: the CPU time limit)"}

    @classmethod
    def handled(cls):
        """The signals to handle: SIGNALS, less those but SIGINT that are ignored (nohup's SIGHUP)."""
        return [s for s in cls.SIGNALS if s == signal.SIGINT or signal.getsignal(s) != signal.SIG_IGN]

    def __init__(self):
        self.deferred = self.requested = False
        self.saved = None                    # (path, step) of the last checkpoint written
        self.lock = None                     # the run's lock file, once held (_only_writer)
        self.status = 130                    # 128 + the first signal's number
        self.failed = None                   # why the run's output could not be written (cannot_write)
        self.trains = False                  # only `train` writes checkpoints: the others say nothing of them

    def defer(self):
        self.deferred = True

    def reader_gone(self):
        """The reader of stdout or stderr went away (`fastlstm train | head`): stop after the
        step under way, as on Ctrl-C, with status 141 (128 + SIGPIPE, as a shell reports a
        process that a closed pipe ended)."""
        if not self.requested:
            self.requested, self.status = True, 128 + signal.SIGPIPE

    def cannot_write(self, stream, e):
        """Writing stdout or stderr failed otherwise (`> train.log` on a disk that filled up):
        stop after the step under way, as on Ctrl-C, with status 2 and `failed` saying why."""
        if not self.requested:
            self.requested, self.status = True, 2
            self.failed = f"cannot write {stream} ({e.strerror or e})"

    def __call__(self, signum, frame):
        if signum == signal.SIGXCPU and self.deferred and self.requested:
            return          # the kernel repeats it each CPU second past the soft limit: not a second Ctrl-C
        if not self.requested:
            self.status = 128 + signum
        what = self.NAMES.get(signum, b"")
        if self.deferred and not self.requested:
            self.requested = True            # os.write: a print here could re-enter stderr's buffer
            os.write(2, b"\nfastlstm: stopping after this step%s (Ctrl-C again to stop at once)\n" % what)
            return
        if not self.deferred:
            os.write(2, b"\nfastlstm: interrupted%s%s\n" % (what, b"; no checkpoint was written" * self.trains))
            # the run's lock, and any file being written (predict's, export's): its temporary
            # (not an import here: the import lock may be held by the code this interrupts)
            writing = getattr(sys.modules.get(f"{__package__}.checkpoint"), "WRITING", ())
            for path in (self.lock, *tuple(writing)):
                if path:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            os._exit(self.status)
        raise KeyboardInterrupt


_ESCAPED = set()     # characters that standard output's encoding lacked (_escaping_stdout)


def _escape(error):
    _ESCAPED.update(error.object[error.start:error.end])
    return codecs.backslashreplace_errors(error)


codecs.register_error("fastlstm.escape", _escape)


@contextlib.contextmanager
def _escaping_stdout():
    """Standard output in an encoding that lacks characters written to it (PYTHONIOENCODING=
    ascii, a Latin-1 locale) stopped a command mid-output with "'ascii' codec can't encode
    character": a sample's text, a column's name in predictions, a data file's path in
    train's lines; so did a file name that is not UTF-8 (its bytes decode to surrogates)
    under a strict UTF-8 one. Such characters go out as \\x, \\u escapes, as on standard
    error, and the command says so once at its end."""
    out = sys.stdout
    if getattr(out, "errors", None) != "strict" or not hasattr(out, "reconfigure"):   # closed (None), or
        yield                                                   # not a text stream, or one that copes
        return
    out.reconfigure(errors="fastlstm.escape")
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.reconfigure(errors="strict")
        if _ESCAPED and sys.stderr is not None:
            chars = sorted(_ESCAPED)
            _ESCAPED.clear()
            print(f"fastlstm: note: standard output's encoding ({out.encoding}) lacks {len(chars)} of the characters "
                  f"written ({', '.join(map(ascii, chars[:5]))}{', ...' if len(chars) > 5 else ''}): they went out "
                  f"as escapes (PYTHONIOENCODING=utf-8:surrogateescape writes them as they are)", file=sys.stderr)


def _to_devnull(stream):
    """Point stream's descriptor at /dev/null: its reader went away, and what is still
    written (or left in its buffer for Python's flush at exit) must not fail."""
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)


class _Guarded:
    """Standard output or error (`name`) whose failed write or flush goes to `failed(e)`;
    the stream's descriptor then goes to /dev/null, so that nothing written later, nor
    Python's flush at exit, fails again."""

    def __init__(self, stream, name):
        if stream is None:                       # started with the descriptor closed (`>&-`): Python's None
            stream = open(os.devnull, "w")
        self.stream, self.name, self.gone = stream, name, False

    def _guard(self, call, *a):
        if not self.gone:
            try:
                return call(*a)
            except OSError as e:
                self.gone = True
                _to_devnull(self.stream)
                self.failed(e)

    def write(self, text):
        self._guard(self.stream.write, text)
        return len(text)

    def flush(self):
        self._guard(self.stream.flush)

    def __getattr__(self, name):                 # isatty, encoding, ... as the stream's
        return getattr(self.stream, name)


class _Pipe(_Guarded):
    """The training loop's stdout or stderr. A write that fails raises no BrokenPipeError
    or OSError, which would end the run between an evaluation and its checkpoint (a closed
    pipe with status 0 and nothing said; a log on a full disk with '[Errno 28] No space left
    on device', naming nothing): it asks the loop to stop, as a reader that went away
    (reader_gone: a closed pipe; a terminal gone, EIO) or as an error (cannot_write)."""

    def __init__(self, stream, interrupt, name):
        super().__init__(stream, name)
        self.interrupt = interrupt

    def failed(self, e):
        if isinstance(e, BrokenPipeError) or e.errno == errno.EIO:     # EIO: a terminal gone
            self.interrupt.reader_gone()
        else:
            self.interrupt.cannot_write(self.name, e)

    def write(self, text):
        super().write(text)
        if "\n" in text:       # a line goes out whole, now: `| tee log` shows each evaluation as it comes,
            self.flush()       # and a reader gone is found at the next line, not when 8 KB have piled up
        return len(text)


class _NamedStdout(_Guarded):
    """Standard output for the commands but train (which has _Pipe): a write that fails
    (`predict --out - > file` on a full disk) raises UsageError naming it, where the bare
    OSError said "[Errno 28] No space left on device" and named nothing. A reader that
    went away (BrokenPipeError) passes through: main() ends quietly then."""

    def __init__(self, stream):
        super().__init__(stream, "standard output")

    def failed(self, e):
        if isinstance(e, BrokenPipeError):
            raise e
        raise UsageError(f"cannot write {self.name} ({e.strerror or e})") from None


@contextlib.contextmanager
def _named_stdout(command):
    if command == "train" or sys.stdout is None:
        yield
        return
    sys.stdout = named = _NamedStdout(sys.stdout)
    try:
        yield
    finally:
        if sys.stdout is named:
            sys.stdout = named.stream


def _settings(args):
    """The dataset settings of `--data` for its kind, from the options given."""
    if args.kind == "text":
        return dict(T=args.T, val_fraction=args.val_fraction)
    if args.kind == "series":
        if not args.target:
            from .data import column_list
            names = column_list(args.data, args.sep or ",")
            raise UsageError("--data with a CSV series needs --target COLUMN, the column to forecast"
                             + (f"; the file's columns: {names}" if names else ""))
        return dict(target=args.target, features=args.features, window=args.window, horizon=args.horizon,
                    val_fraction=args.val_fraction, season=args.season, fill=args.fill, sep=args.sep,
                    decimal=args.decimal)
    return dict(layout=args.layout, val_fraction=args.val_fraction, seed=args.seed, output=args.output)


def _run_kind(args):
    """A new run's kind settled (--data's, from --kind or the file's name; or --task's) and
    the options typed for other kinds of runs refused (_applies): what the options alone
    decide, said before anything about --out or the data."""
    if args.data is not None:
        if args.task is not None:
            raise UsageError("give --task or --data, not both")
        from . import data
        args.kind = args.kind or data.kind_of(args.data)
    else:
        args.task = args.task or "adding"
    _applies(args)


def _source(args):
    """The dataset or built-in task of a new run, with args completed by their defaults."""
    _run_kind(args)
    if args.data is not None:
        from . import data
        for k, val in DATA_DEFAULTS[args.kind].items():
            if getattr(args, k) is None and not (k == "epochs" and args.steps is not None):
                setattr(args, k, val)
        d = data.open_data(args.data, args.kind, **_settings(args))
        if args.kind == "series":
            args.sep = d.sep                  # recorded as read: a .tsv's tab
        return d
    for k, val in DEFAULTS[args.task].items():
        if getattr(args, k) is None:
            setattr(args, k, val)
    return _make_task(args.task, args.T)


def _resumed_source(out, args):
    """(model, dataset or task) from the checkpoint at out, written by `fastlstm train`."""
    import fastlstm
    if not os.path.exists(out):
        raise UsageError(f"--resume: there is no run at --out {out} to continue (start one without --resume)")
    model = fastlstm.load(out)
    if model.batch_first:                    # not one of fastlstm train's, which are time-major as its batches
        raise UsageError(f"--resume: {out} holds a batch_first model (made in Python); the command line "
                         f"continues its own runs")
    run, spec = model.extra, _data_record(model, out)
    if spec is not None:
        from . import data
        if args.task is not None:
            raise UsageError(f"{out} was trained on --data {spec['path']}, not a built-in task")
        if args.data is None and not os.path.exists(spec["path"]):       # moved, or another machine's
            raise UsageError(f"{out} was trained on {spec['path']}, which is not there now: give that file "
                             f"as --data")
        return model, data.from_spec(spec, args.data)
    if not isinstance(run.get("task"), dict) or "name" not in run["task"] or "rng" not in run:
        raise UsageError(f"{out} was not written by `fastlstm train` (it records no task and data "
                         "stream), so --resume cannot continue it")
    task_name = args.task or ("adding" if args.data is None else None)
    if run["task"]["name"] != task_name:
        raise UsageError(f"{out} was trained on task {run['task']['name']!r}, not "
                         f"{task_name or '--data ' + args.data!r} (pass --task {run['task']['name']})")
    return model, _make_task(task_name, run["task"].get("T"), out)


def _data_record(model, path):
    """The record of the data that the checkpoint at `path` was trained on, checked against
    its model (data.check_spec), or None for a run on a built-in task; UsageError naming the
    file where it cannot be used (a hostile or damaged one)."""
    if "data" not in model.extra:
        return None
    from . import data
    try:
        return data.check_spec(model.extra["data"], model)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{path}: its record of the data it was trained on is unusable ({e})") from None


def _default_out(args):
    if args.data is not None:
        return os.path.join("runs", os.path.splitext(os.path.basename(args.data))[0] + ".ckpt")
    return os.path.join("runs", f"{args.task or 'adding'}.ckpt")


def _resumed_run(out, args, rng):
    """(model, source, training.Run, task name or None) continuing the checkpoint at out."""
    from . import _validate as v, training
    model, source = _resumed_source(out, args)
    extra = model.extra
    name = extra["task"]["name"] if "task" in extra else None
    old = DEFAULTS.get(name, {})                         # a checkpoint written before run states
    try:
        r = training.Run(model, source, v.positive_int("batch", extra.get("batch", args.batch or old.get("batch", 1))),
                         rng, steps=v.positive_int("total", extra.get("total", args.steps or old.get("steps", 1))),
                         eval_every=args.eval_every or old.get("eval_every"), history=False)
        if "run" in extra:
            r.load_state(extra["run"])
        else:
            r.batches.load_state(dict(rng=extra["rng"]))
        # its metrics log's rows: counted, or (in an older checkpoint) held whole
        if "history" in extra:
            extra["history"] = training.check_history(extra["history"])
        v.positive_int("evaluations", extra.get("evaluations", 0), minimum=0)
        v.finite_float("seconds", extra.get("seconds", 0.0), ge=0)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{out}: its run state is unusable ({type(e).__name__}: {e})") from None
    _same_options(out, model, args, f"--data {source.kind}" if hasattr(source, "spec") else f"--task {name}")
    if args.steps is not None or args.epochs is not None:   # a longer (or shorter) run than first asked
        r.end_at(args.steps, args.epochs)                    # (--epochs of a task: refused by _applies)
    return model, source, r, name


def _same_options(out, model, args, run_is):
    """UsageError if an option typed with --resume differs from the run's (the options its
    checkpoint records, and what its model says: all an older checkpoint has), or does not
    apply to it; run_is: '--task NAME' or '--data KIND'."""
    c, options = model.core, model.extra.get("options", {})
    if not isinstance(options, dict):
        raise UsageError(f"{out}: its record of the run's options is unusable (a JSON {type(options).__name__})")
    run = dict(dict(hidden=c.hidden_size, layers=c.num_layers, cell=model.cell, bidirectional=c.bidirectional,
                    proj=c.proj_size, dropout=c.dropout, dtype=str(model.dtype),
                    weight_decay=model.optimizer.weight_decay, optimizer=type(model.optimizer).__name__.lower()),
               **options)
    if model.vocab_size:
        run.setdefault("embed", c.input_size)
    _applies(args, run_is, {**run, **args.typed})
    named = choices.SEPARATOR_NAMES                                           # a tab, said as the option types it
    differ = [f"--{k.replace('_', '-')} {named.get(args.typed[k], args.typed[k])} (the run's: "
              f"{'not set' if run[k] is None else named.get(run[k], run[k])})"
              for k in RUN_OPTIONS
              if k in args.typed and k in run and args.typed[k] != run[k] and k not in MAY_CHANGE]
    if differ:
        raise UsageError(f"--resume continues the run in {out} as it was set up, and these options differ from "
                         f"it: {', '.join(differ)}. Leave them out (--steps and --epochs may change), or start a "
                         f"new run with --overwrite or another --out")


# The runs that an option belongs to (a built-in task, any --data, or --data of a kind). Typed
# for another run, it is refused rather than ignored.
_SERIES = ("--data series",)
APPLIES = dict(target=_SERIES, features=_SERIES, window=_SERIES, horizon=_SERIES, season=_SERIES, fill=_SERIES,
               sep=_SERIES, decimal=_SERIES,
               layout=("--data arrays",), output=("--data arrays",), val_fraction=("--data",),
               embed=("--task text", "--data text"), T=("--task adding", "--task text", "--data text"),
               kind=("--data",), epochs=("--data",),
               full=tuple(f"--task {t}" for t in sorted(DEFAULTS)))         # --full: a task's target


def _applies(args, run=None, values=None):
    """UsageError for an option typed where it does nothing (APPLIES; --momentum without SGD,
    --proj without an LSTM, --dropout with one layer). run, values: the run that --resume
    continues ('--task NAME' or '--data KIND') and its settings; by default the new run's,
    from the options. Each rule is about the option typed: `--layers 1` (or `--cell gru`)
    with --resume of a run with dropout (or a projection) differs from the run's, which
    _same_options says."""
    v = values or vars(args)
    run = run or (f"--data {args.kind}" if args.data is not None else f"--task {args.task}")
    mine = {run, "--data"} if run.startswith("--data") else {run}
    for k, places in APPLIES.items():
        if k in args.typed and not mine & set(places):
            on = ", ".join(places[:-1]) + " or " + places[-1] if len(places) > 1 else places[0]
            kind = next((p.split()[-1] for p in places if p.startswith("--data ")), None)
            guessed = (f" (its kind from the file's name; --kind {kind} reads {args.data} as {kind})"
                       if kind and values is None and args.data is not None and "kind" not in args.typed else "")
            raise UsageError(f"--{k.replace('_', '-')} applies to {on} only; this run is {run}{guessed}")
    if "dropout" in args.typed and v["dropout"] and (v["layers"] or 1) == 1:
        raise UsageError(f"--dropout applies between layers (to the outputs of every layer but the last): it needs "
                         f"--layers 2 or more, got --dropout {v['dropout']} with one layer")
    if "momentum" in args.typed and v["optimizer"] != "sgd":
        raise UsageError(f"--momentum applies to --optimizer sgd only; this run's optimizer is {v['optimizer']}")
    if "proj" in args.typed and v["proj"] and v["cell"] != "lstm":
        raise UsageError(f"--proj applies to --cell lstm only (PyTorch's proj_size); this run's cell is {v['cell']}")


def _new_run(args, rng):
    """(model, source, training.Run, task name or None) of a new run from the options."""
    import fastlstm
    from . import training
    source = _source(args)
    if args.bidirectional and hasattr(source, "vocab_size"):
        raise UsageError("--bidirectional on text: a next-character model that reads the text backwards too "
                         "sees the next character it must predict; train it unidirectional")
    if args.proj >= args.hidden:
        raise UsageError(f"--proj must be below --hidden {args.hidden} (or 0 for none), got {args.proj}")
    settings = dict(momentum=args.momentum) if args.optimizer == "sgd" else {}
    if args.weight_decay is not None:
        settings["weight_decay"] = args.weight_decay
    opt = fastlstm.optim.OPTIMIZERS[args.optimizer](lr=args.lr, **settings)
    args.weight_decay = opt.weight_decay          # untyped: the optimizer's own default, recorded as such
    vocab = getattr(source, "vocab_size", None)          # text: token ids through an embedding
    model = fastlstm.Model(args.embed if vocab else source.input_size, args.hidden, source.output_size,
                           args.layers, cell=args.cell, loss=source.loss, output=source.output, dtype=args.dtype,
                           seed=args.seed, optimizer=opt, clip=args.clip or None, vocab_size=vocab,
                           bidirectional=args.bidirectional, dropout=args.dropout, proj_size=args.proj)
    r = training.Run(model, source, args.batch, rng, steps=args.steps, epochs=args.epochs,
                     eval_every=args.eval_every, patience=args.patience, schedule=args.schedule, warmup=args.warmup,
                     history=False)
    return model, source, r, args.task


def _writable_folder(out, *files, option="--out", what="the run's files"):
    """Make out's folder. With `files` (the names a run writes there), also refuse a run
    that could not write them before a step is spent on it: a read-only or pseudo file
    system, say, or names too long for it. option: how the command line gave out (None: as
    itself)."""
    import tempfile
    folder = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(folder, exist_ok=True)
        if files:
            with tempfile.TemporaryFile(dir=folder):        # nameless where it can be: a Ctrl-C leaves nothing
                pass
            name_max = os.pathconf(folder, "PC_NAME_MAX")
            for name in (os.path.basename(f) for f in files):
                if len(os.fsencode(name)) > name_max:
                    raise OSError(errno.ENAMETOOLONG, f"{name!r} is longer than the {name_max} bytes a file "
                                  f"name may have there")
    except OSError as e:
        given = f"{option} {out}" if option else out
        why = "a file of that name is there" if isinstance(e, FileExistsError) else e.strerror   # makedirs' words
        raise UsageError(f"cannot write {what} in {folder} ({given}): {why}") from None


@contextlib.contextmanager
def _only_writer(out, lock):
    """Hold `lock` (a file beside the checkpoint) while a run writes to out: a second `fastlstm
    train` onto the same --out, started before the first had written a checkpoint or given
    --resume or --overwrite, would write its checkpoints and log over the other's in turn.
    An advisory flock, so a run killed outright frees it; the file goes when the run ends.
    A file of that name that is not such a lock is left alone, and the run refused."""
    import fcntl
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise UsageError(f"cannot create {lock}, the lock of --out {out}: {e.strerror}") from None
    try:
        held = _LOCK.fullmatch(os.pread(fd, 64, 0))
        if os.fstat(fd).st_size and not held:
            raise UsageError(f"{lock} exists and is not a fastlstm lock; a run onto --out {out} keeps its lock "
                             f"there: move that file, or give another --out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = f" (pid {held[1].decode()})" if held else ""
            raise UsageError(f"another fastlstm train{pid} is writing {out}: wait for it to end, "
                             f"or give another --out") from None
        except OSError as e:            # a file system without locks (some network and FUSE ones): run unlocked
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            print(f"fastlstm: note: the file system of --out {out} takes no locks ({e.strerror}), so a second run "
                  f"onto it would not be refused", file=sys.stderr)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"fastlstm train {os.getpid()}\n".encode(), 0)
        except OSError as e:            # a full disk: the lock goes, and the run with it
            with contextlib.suppress(OSError):
                os.unlink(lock)
            raise UsageError(f"cannot write {lock}, the lock of --out {out}: {e.strerror}") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):       # unlinked while held: no one locks a name we drop
                os.unlink(lock)
    finally:
        os.close(fd)


_LOCK = re.compile(rb"fastlstm train (\d+)\n|")        # a run's lock file: its pid, or empty while it starts


def _number(v):
    """A metric as the command line prints it: 4 decimals, or, below 1e-3, 4 significant
    digits (Keras's rule), where 4 decimals would print an lr of 1e-5 or an RMSE in small
    units as 0.0000; so too from 1e9, where they would print an RMSE in large units as
    three hundred digits."""
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e9 or not math.isfinite(v) else f"{v:.4e}"


def _metrics(m):
    """A metrics row (training.Run's history) as `name value, ...`."""
    return ", ".join(f"{k} {_number(v)}" for k, v in m.items() if k not in ("step", "epoch", "seconds"))


def train(args, interrupt):
    with contextlib.ExitStack() as held:
        return _train(args, interrupt, held)


def _train(args, interrupt, held):
    """train's body; `held` keeps the run's lock until it returns."""
    import numpy as np
    from tqdm import tqdm

    from . import training
    from ._validate import MAX_LAYERS, counted

    _at_least(args, steps=1, epochs=1, batch=1, eval_every=1, patience=1, warmup=0, seed=0, hidden=1, layers=1,
              embed=1, window=1, horizon=1, season=1, proj=0)
    if args.layers is not None and args.layers > MAX_LAYERS:
        raise UsageError(f"--layers must be <= {MAX_LAYERS}, got {args.layers}")
    _real(args, "lr", "clip", "weight_decay", "dropout", "momentum", "val_fraction")
    if args.out == "":
        raise UsageError("--out is empty; give a checkpoint's file name, or leave --out out for runs/NAME.ckpt")
    out = args.out or _default_out(args)
    stem = out[:-5] if out.endswith(".ckpt") else out
    best_out, log, lock = stem + ".best.ckpt", stem + ".csv", stem + ".lock"
    for written in (out, best_out, log, lock):
        try:
            _not_onto(written, data=args.data)
        except UsageError as e:             # the log, say: --out load.ckpt writes load.csv
            raise UsageError(f"--out {out}: {e}" if written != out else str(e)) from None
        if os.path.isdir(written):
            raise UsageError(f"--out {out}: {written} is a folder; give a checkpoint's file name, such as "
                             f"{os.path.join(written, 'run.ckpt')}" if written == out else
                             f"--out {out}: {written}, where the run would write, is a folder")
        if os.path.exists(written) and not os.path.isfile(written):     # /dev/null: the others would land in /dev
            raise UsageError(f"--out {out}: {written} is not a regular file (a device, a FIFO); a run writes its "
                             f"checkpoint, NAME.best.ckpt and NAME.csv as files in one folder")
    if args.resume and args.overwrite:
        raise UsageError("give --resume (continue the run at --out) or --overwrite (start afresh over it), not both")
    if not args.resume:
        _run_kind(args)                      # an option typed where it does nothing: said before --out's state
    kept = [p for p in (out, best_out) if os.path.exists(p)]
    if kept and not (args.resume or args.overwrite):
        raise UsageError(f"{kept[0]} exists: continue that run with --resume, start afresh over it with "
                         f"--overwrite, or choose another --out")
    _writable_folder(out, out, best_out, log, lock)
    rng = np.random.default_rng(args.seed)
    if args.resume:
        model, source, r, name = _resumed_run(out, args, rng)
        interrupt.saved = (out, model.steps)
    else:
        model, source, r, name = _new_run(args, rng)
    if hasattr(source, "tokens"):
        source.tokens = model.vocab_size is not None        # a text checkpoint from before embeddings: one-hot
    record = dict(data=source.spec()) if hasattr(source, "spec") else \
        dict(task=dict(name=name, T=getattr(source, "T", None)))
    record["options"] = (dict(model.extra.get("options", {}), **{k: getattr(args, k) for k in MAY_CHANGE
                                                                   if k in args.typed}) if args.resume else
                         {k: getattr(args, k) for k in RUN_OPTIONS})
    args.batch = r.batches.B        # after the record: a batch cut to the data's size is recorded as asked,
                                    # so that the same command with --resume continues the run

    step, lead, stop = model.train_step, True, lambda: interrupt.requested
    if args.distributed:
        from .distributed import DataParallel
        dp = DataParallel(model)
        # every rank must draw the same batches: a stale copy of the data on one host trained on
        # a mix of two data sets, and its own evaluations could stop one rank alone (a hang)
        dp.agree("every rank must read the same data (the same file contents and settings) with the same seed",
                 dict({k: x for k, x in (record.get("data") or record["task"]).items() if k != "path"},
                      seed=args.seed))
        step, lead = dp.train_step, dp.rank == 0
        stop = lambda: dp.any(interrupt.requested)          # noqa: E731  (every rank stops at one step)
        args.quiet = args.quiet or not lead
    out_stream, err_stream = _Pipe(sys.stdout, interrupt, "standard output"), _Pipe(sys.stderr, interrupt,
                                                                                      "standard error")

    def say(text, file=out_stream):
        if lead:
            print(text, file=file, flush=True)

    if args.distributed:
        say(f"fastlstm: {dp.size} ranks, {dp.threads} threads each, batch {args.batch} split "
            f"into shards of about {args.batch // dp.size}")
    refused, metrics = None, training.MetricsLog(log)
    if lead:                                                 # rank 0 writes the run's files
        try:
            held.enter_context(_only_writer(out, lock))
            interrupt.lock = lock                        # os._exit before the loop leaves no lock file
            if args.resume:
                old = model.extra.get("history")
                n = len(old) if old is not None else model.extra.get("evaluations", 0)
                if metrics.resume(n, old) < n:
                    say(f"fastlstm: note: {log} holds {metrics.rows} of the run's {n} evaluations (changed since "
                        f"its checkpoint); it goes on from there")
        except (UsageError, OSError) as e:
            refused = e
    if dp.any(refused is not None) if args.distributed else refused:      # every rank stops, not rank 0 alone
        raise refused or UsageError(f"rank 0 cannot take the lock of --out {out} or write its log")

    def save(path=out):
        if lead:
            if path == out:
                metrics.start()                     # a new run's first checkpoint: an earlier run's log goes
            model.save(path, extra=dict(record, rng=r.batches.state()["rng"], run=r.state(), batch=r.batches.B,
                                        total=r.total, evaluations=metrics.rows,
                                        seconds=round(time.perf_counter() - t_run, 2)))
            if path == out:
                interrupt.saved = (out, model.steps)

    # every buffer a step uses, made now: a batch too big for memory is refused before the run starts
    rows = dp.rows(r.batches.B) if args.distributed else slice(0, r.batches.B)    # this rank's share
    model.reserve(source.T, rows.stop - rows.start)
    what = f"task {name}" if "task" in record else f"{source.kind} {record['data']['path']}"
    per_epoch = f", {counted(r.batches.per_epoch, 'step')} an epoch" if r.batches.finite else ""
    say(f"fastlstm: {what}, {model.core.num_layers}x{model.core.hidden_size} "
        f"{'bidirectional ' if model.core.bidirectional else ''}{choices.CELL_NAMES[model.cell]}"
        f"{f' projected to {model.core.proj_size}' if model.core.proj_size else ''}"
        f"{f' (dropout {model.core.dropout})' if model.core.dropout else ''}"
        f"{f', embedding {model.vocab_size}x{model.core.input_size}' if model.vocab_size else ''}, "
        f"{model.params.size} parameters, batch {r.batches.B}{per_epoch}, {counted(r.total, 'step')}, "
        f"{model.optimizer.name} lr {r.schedule.base_lr} ({r.schedule.kind})"
        + (f", weight decay {model.optimizer.weight_decay}" if model.optimizer.weight_decay else "")
        + (f", baseline {source.baseline:.3f}" if hasattr(source, "baseline") else ""))
    if getattr(source, "note", None):
        say(f"fastlstm: note: {source.note}")
    start, t0, speed = model.steps, time.perf_counter(), training.Throughput()
    t_run = t0 - (model.extra.get("seconds", 0.0) if args.resume else 0.0)    # the log's seconds go on across resumes
    bar = tqdm(total=r.total, initial=start, disable=args.quiet, unit="step", dynamic_ncols=True, file=err_stream)
    ema, solved = None, False
    interrupt.defer()
    try:
        while not r.done and not stop():
            t_step = time.perf_counter()
            loss = r.step(step)
            speed.add(r.batches.B, time.perf_counter() - t_step)
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            bar.set_postfix(loss=_number(ema), seq_s=f"{speed.rate or 0:.0f}", refresh=False)
            bar.update(1)                           # redraws at most every 0.1 s (tqdm's mininterval)
            if r.due:
                m, improved = r.evaluate(time.perf_counter() - t_run)
                if lead:
                    bar.write(f"step {model.steps}: {_metrics(m)}" + (" (best)" if improved else ""), file=out_stream)
                    metrics.append(m)               # before the checkpoint that counts it
                save()
                if improved:
                    save(best_out)
                if hasattr(source, "solved") and source.solved(m):
                    solved = True
                    if not args.full:
                        break
    finally:
        bar.close()
    save()
    if args.distributed:
        dp.comm.Barrier()        # no rank exits (mpi4py aborts the job on status 130) during rank 0's save
    wall = time.perf_counter() - t0
    if interrupt.requested:
        why = (f"error: {interrupt.failed}: stopped" if interrupt.failed else
               "the reader of its output went away" if interrupt.status == 128 + signal.SIGPIPE else "interrupted")
        say(f"fastlstm: {why} at step {model.steps}; checkpoint saved to {out} (continue with --resume)",
            file=out_stream if not out_stream.gone else err_stream)
        return interrupt.status
    m = r.last if r.last and r.last["step"] == model.steps else dict(source.metrics(model))
    why = ("solved" if solved or (hasattr(source, "solved") and source.solved(m)) else
           f"stopped early: no better {r.stopper.name} in {r.stopper.patience} evaluations" if r.stopper.stop else
           "not solved yet" if hasattr(source, "solved") else "done")
    say(f"fastlstm: {counted(model.steps - start, 'step')} in {wall:.1f} s; {_metrics(m)}; {why}; checkpoint {out}"
        + (f", best {r.stopper.name} {_number(r.stopper.best)} at step {r.stopper.best_step} in {best_out}"
           if r.stopper.best is not None else "") + f"; log {log}")
    return 0


def _text_vocab(model, path):
    """The character vocabulary of a text checkpoint (--data text, or the text task)."""
    spec, task = _data_record(model, path), model.extra.get("task")
    if spec is not None and spec["kind"] == "text":
        return spec["vocab"]
    if isinstance(task, dict) and task.get("name") == "text":
        return _make_task("text", task.get("T"), path).vocab
    raise UsageError(f"{path} is not a checkpoint of text (trained with --data on a text file, or --task text)")


def sample(args, interrupt):
    import numpy as np

    import fastlstm
    _at_least(args, seed=0, length=0)
    _real(args, "temperature")
    model = fastlstm.load(args.checkpoint)
    vocab = _text_vocab(model, args.checkpoint)
    index = {ch: i for i, ch in enumerate(vocab) if ch}
    if args.prime is None:                 # an untyped default must not fail on a text without a capital T
        args.prime = "The " if set("The ") <= set(index) else ""
    bad = sorted(set(args.prime) - set(index))
    if bad:
        from .data import _listed           # a pasted page of another script lacks thousands: the first 12
        raise UsageError(f"--prime has characters the model's vocabulary lacks: {_listed(bad, quote=True)}")
    rng = np.random.default_rng(args.seed)
    xt = np.zeros((1, len(vocab)), model.dtype)

    def feed(k):                       # token id k, or its one-hot vector for a model without an embedding
        if model.vocab_size:
            return model.step(np.array([k]))[0]
        xt[:] = 0
        xt[0, k] = 1
        return model.step(xt)[0]
    model.reset_state(1)
    for ch in args.prime or "\n":
        p = feed(index.get(ch, 0))
    out = _stdout_open("the sample")   # each character as it comes: a long sample shows at once, and
    out.write(args.prime)              # Ctrl-C (which ends the process) keeps what was written
    unknown = [k for k, ch in enumerate(vocab) if not ch]   # id 0 of --data text: a character unseen in
    for _ in range(args.length):                           # training, never one to write (it printed U+FFFD)
        logp = np.log(np.maximum(p.astype(np.float64), 1e-30))
        logp[unknown] = -np.inf
        with np.errstate(over="ignore", under="ignore"):  # a tiny temperature: -inf, exp 0, the argmax
            q = np.exp((logp - logp.max()) / args.temperature)
        k = rng.choice(len(q), p=q / q.sum())
        out.write(vocab[k])
        out.flush()
        p = feed(k)
    out.write("\n")
    return 0


def _stdout_open(what):
    """sys.stdout, or UsageError when the process started with it closed (`>&-`: Python's None)."""
    if sys.stdout is None:
        raise UsageError(f"standard output is closed (the command ran with >&-): {what} would go there"
                         + ("; give --out FILE" if what == "the predictions" else ""))
    return sys.stdout


def _write_rows(path, header, rows, sep=","):
    """CSV rows to `path` (atomically: a failure leaves it as it was), or printed when path is None;
    their cells separated by `sep`."""
    import contextlib
    import csv

    from .checkpoint import atomic_file
    if not path:
        _stdout_open("the predictions")
    with atomic_file(path, "the predictions", text=True) if path else contextlib.nullcontext(sys.stdout) as f:
        w = csv.writer(f, delimiter=sep, lineterminator="\n")   # not the csv module's \r\n: awk, cut and pandas expect \n
        w.writerow(header)
        w.writerows(rows)


def predict(args, interrupt):
    import numpy as np

    import fastlstm
    from . import data
    from ._validate import counted
    args.out = None if args.out == "-" else args.out
    _not_onto(args.out, checkpoint=args.checkpoint, data=args.data)
    if args.out:
        _writable_folder(args.out, what="the predictions")
    model = fastlstm.load(args.checkpoint)
    spec = _data_record(model, args.checkpoint)
    if spec is None:
        raise UsageError(f"{args.checkpoint} was not trained with --data, so it has no data format to read")
    if args.backtest and spec["kind"] != "series":
        raise UsageError(f"--backtest is for a model trained on a series (a CSV); {args.checkpoint} was trained on "
                         f"{spec['kind']}")
    reading = {k: getattr(args, k) for k in ("fill", "sep", "decimal", "layout") if getattr(args, k) is not None}
    for k in reading:                        # this file read otherwise than the run read its own
        if k not in spec["settings"]:
            raise UsageError(f"--{k} applies to a checkpoint trained on {'series' if k != 'layout' else 'arrays'}; "
                             f"{args.checkpoint} was trained on {spec['kind']}")
    d = data.from_spec(dict(spec, settings=dict(spec["settings"], **reading)), args.data, check=False)
    if hasattr(d, "tokens"):
        d.tokens = model.vocab_size is not None
    mark = d.decimal if d.kind == "series" else "."        # a series in its own dialect, to open where it opens
    fmt = lambda a: [f"{v:.6g}".replace(".", mark) for v in a]                 # noqa: E731
    if d.kind == "series":
        if args.backtest:
            origins = np.arange(0, len(d.values) - d.window - d.horizon + 1)
            if not len(origins):
                raise UsageError(f"{args.data}: {counted(len(d.values), 'row')}; a backtest needs at least window + horizon "
                                 f"= {d.window + d.horizon}")
            pred, true = d.forecast(model, origins), d.actual(origins)
            m = d.scores(model, origins)
            stamp = (lambda i: d.stamp(d.times[i])) if d.times is not None else (lambda i: d.lines[i])
            rows = [[stamp(i + d.window - 1), stamp(i + d.window + k), k + 1,
                     *fmt(np.column_stack([pred[n, k], true[n, k]]).ravel())]
                    for n, i in enumerate(origins) for k in range(d.horizon)]
            header = ["origin", "time" if d.times is not None else "line", "step",   # origin: the last row in
                      *[f"{c}_{w}" for c in d.targets for w in ("forecast", "actual")]]
            _write_rows(args.out, header, rows, d.sep)
            print(f"fastlstm: backtest over {len(origins)} windows: " + ", ".join(
                f"{k.removeprefix('val_')} {_number(v)}" for k, v in m.items() if np.isfinite(v)), file=sys.stderr)
        else:
            times, pred = d.next_forecast(model)
            rows = [[d.stamp(times[k]) if times is not None else k + 1, *fmt(pred[k])] for k in range(d.horizon)]
            _write_rows(args.out, ["time" if times is not None else "step", *d.targets], rows, d.sep)
    elif d.kind == "arrays":
        model._fits(d, args.data)            # before a row is written: D, and y's labels or width
        p = d.predict(model)                 # (N, O), or (T, N, O) with a target per step
        O = p.shape[-1]
        cols = [f"p{k}" for k in range(O)] + ["class"] if d.classes else [f"y{k}" for k in range(O)]
        row = lambda q: [*fmt(q), *([int(q.argmax())] if d.classes else [])]      # noqa: E731
        if d.output == "every":              # a row per (sequence, step) within its length
            L = np.full(p.shape[1], d.T) if d.lengths is None else d.lengths
            _write_rows(args.out, ["row", "step", *cols], ([n, t, *row(p[t, n])] for n in range(p.shape[1])
                                                           for t in range(L[n])))
        else:
            _write_rows(args.out, ["row", *cols], ([n, *row(p[n])] for n in range(len(p))))
        if d.y is not None:
            m = d.metrics(model, np.arange(d.x.shape[1]))
            print("fastlstm: over every row of the file: " + ", ".join(f"{k.removeprefix('val_')} {_number(v)}"
                                                                   for k, v in m.items() if k.startswith("val_")),
                  file=sys.stderr)
    else:
        m = d.score_all(model)
        _write_rows(args.out, ["characters", "bpc"], [[m["characters"], f"{m['bpc']:.6g}"]])
    if args.out:
        print(f"fastlstm: wrote {args.out}", file=sys.stderr)
    return 0


def plot(args, interrupt):
    from .training import plot as draw
    _not_onto(args.out, log=args.log)
    _writable_folder(args.out, what="the plot")
    draw(args.log, args.out)
    print(f"fastlstm: wrote {args.out}")
    return 0


def export(args, interrupt):
    import fastlstm
    from ._validate import counted
    _not_onto(args.out, checkpoint=args.checkpoint)
    _writable_folder(args.out, option=None, what="the ONNX model")
    model = fastlstm.load(args.checkpoint)
    cast = args.float32 and model.dtype != "float32"
    spec = _data_record(model, args.checkpoint)
    series, scale = spec is not None and spec["kind"] == "series", None
    if series:                                   # the graph standardises, as `fastlstm predict` does
        from .data import series_scale
        scale = series_scale(spec)
    fastlstm.export_onnx(model.astype("float32") if cast else model, args.out, streaming=args.streaming,
                         scale=scale)
    layout = "x (B, T, ·), batch first" if model.batch_first else "x (T, B, ·), time-major"
    units = (f"; x: the window's {', '.join(spec['settings']['features'])} in the data's units, predictions: "
             f"{counted(spec['settings']['horizon'], 'row')} of {', '.join(spec['settings']['target'])} in theirs"
             if series else
             "; x: token ids of the checkpoint's vocabulary, fastlstm.load(CKPT).extra['data']['vocab']"
             if model.vocab_size and spec is not None else "")
    print(f"fastlstm: wrote {args.out} ({'one streaming step' if args.streaming else 'whole sequences of ' + layout}"
          f"{', a float32 copy of the float64 model' if cast else ''}{units})")
    return 0


def carousel(args, interrupt):
    from . import carousel as cr
    _at_least(args, seed=0, T=2, hidden=1, batch=1, train=0)
    if args.plot is not None:                  # before the measurement, which can take minutes
        if not args.plot or os.path.isdir(args.plot):
            raise UsageError(f"--plot {args.plot!r} is {'a folder' if args.plot else 'empty'}; give a PNG file name")
        _writable_folder(args.plot, args.plot, option="--plot", what="the plot")
        from .training import figure_format
        figure_format(args.plot)                # matplotlib there, and a format it writes
    results = cr.run(T=args.T, hidden=args.hidden, batch=args.batch, seed=args.seed, train_steps=args.train)
    print(f"Gradient norm w.r.t. the state k steps before a loss at the last step (T = {args.T}, "
          f"H = {args.hidden}, {'after training' if args.train else 'untrained'}), relative to k = 1:\n")
    print(cr.table(results, args.T))
    if args.plot is not None:
        cr.plot(results, args.T, args.plot)
        print(f"\nplot written to {args.plot}")
    return 0


def main(argv=None, *, restore_handler=True):
    """Run a command; returns the exit status: 0, 2 for bad options or files (a
    `fastlstm: error:` line, never a traceback), 130 when interrupted (Ctrl-C), 143 when
    terminated (SIGTERM), 129 on SIGHUP, 138, 140 and 152 on SIGUSR1, SIGUSR2 and SIGXCPU,
    141 for a run whose output's reader went away (_Pipe; for the other commands that reader
    has what it wanted: 0).

    restore_handler=False (the `fastlstm` command itself) ignores SIGINT once the command
    is done instead of restoring Python's handler, which would raise KeyboardInterrupt
    while the process exits."""
    interrupt, previous = _Interrupt(), {}
    interrupt.trains = list(sys.argv[1:] if argv is None else argv)[:1] == ["train"]   # before parsing, for a signal then
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, interrupt) for s in _Interrupt.handled()}
    try:
        args = _parser().parse_args(argv)
        if args.command == "train":
            args.typed = vars(_parser(typed_only=True).parse_args(argv))
        with _escaping_stdout(), _named_stdout(args.command):
            status = {"train": train, "predict": predict, "plot": plot, "sample": sample, "export": export,
                      "carousel": carousel}[args.command](args, interrupt)
        return interrupt.status if interrupt.requested else status
    except BrokenPipeError:                  # `fastlstm predict ... | head`: the reader has what it wanted
        _to_devnull(sys.stdout)                                          # nothing left to flush at exit
        return 0
    except KeyboardInterrupt:
        kept = (f"; the checkpoint {interrupt.saved[0]} (step {interrupt.saved[1]}) is kept" if interrupt.saved else
                "; no checkpoint was written" if interrupt.trains else "")
        print(f"\nfastlstm: interrupted{kept}", file=sys.stderr)
        return interrupt.status
    except (UsageError, ValueError, TypeError, OSError, RuntimeError, ArithmeticError, MemoryError) as e:
        # bad options, files or data: a message, not a traceback (NonFiniteError is an ArithmeticError)
        kept = f" (the checkpoint {interrupt.saved[0]} holds step {interrupt.saved[1]})" if interrupt.saved else ""
        said = re.sub(r"^\[Errno -?\d+\] ", "", str(e)) if isinstance(e, OSError) else e    # Python's, not ours
        print(f"fastlstm: error: {said}{kept}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if restore_handler or s != signal.SIGINT else signal.SIG_IGN)


def run():
    """The `fastlstm` command (console script and `python -m fastlstm`)."""
    sys.exit(main(restore_handler=False))


if __name__ == "__main__":
    run()
