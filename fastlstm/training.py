"""The training loop's parts, shared by `fastlstm train` and `Model.fit`: resumable batches,
learning-rate schedules, early stopping and the metrics log.

`Run` holds all of a run's state besides the model (batch order, schedule, early stopping,
the training loss since the last evaluation), and `state()` gives it as JSON for the
checkpoint, so that a resumed run continues bitwise as if it had never stopped; its
evaluations go to `history` (what `Model.fit` returns) and to the metrics log.
"""
import csv
import functools
import io
import math
import os

import numpy as np

from . import _validate as v
from .checkpoint import ZIP, append_file, atomic_file, open_regular
from .choices import SCHEDULES


class Batches:
    """Training batches of a dataset, drawn with a numpy Generator.

    A dataset with `size` examples and `take(index, dtype)` is visited in epochs: at each
    epoch's start a permutation is drawn from the Generator (in order with shuffle=False), and
    the epoch is its `size // B` full batches (the remainder waits for another epoch, so every
    step has the same shape and allocates nothing new). A built-in task generates its batches
    with `batch(rng, B, dtype)`. `state()` is the Generator's state at the epoch's start, the
    epoch and the batch within it."""

    def __init__(self, data, batch_size, rng, shuffle=True):
        self.data, self.rng, self.shuffle = data, rng, shuffle
        self.finite = hasattr(data, "take")
        self.B = min(batch_size, data.size) if self.finite else batch_size
        self.per_epoch = data.size // self.B if self.finite else None
        self.epoch = self.pos = 0
        self._order, self._start = None, None

    def next(self, dtype):
        if not self.finite:
            return self.data.batch(self.rng, self.B, dtype)
        if self._order is None:
            self._draw()
        batch = self.data.take(self._order[self.pos * self.B:(self.pos + 1) * self.B], dtype)
        self.pos += 1
        if self.pos == self.per_epoch:
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return batch

    def _draw(self):
        """The epoch's order, drawn from the Generator (whose state before it is kept)."""
        self._start = self.rng.bit_generator.state
        self._order = self.rng.permutation(self.data.size) if self.shuffle else np.arange(self.data.size)

    def state(self):
        rng = self._start if self._order is not None else self.rng.bit_generator.state
        return dict(rng=rng, epoch=self.epoch, pos=self.pos)

    def load_state(self, state):
        """Continue from what state() gave (from a checkpoint: each field checked)."""
        if not isinstance(state, dict):
            raise TypeError(f"the batches' state must be an object, got {type(state).__name__}")
        epoch = v.positive_int("epoch", state.get("epoch", 0), minimum=0)
        pos = v.positive_int("pos", state.get("pos", 0), minimum=0)
        self.rng.bit_generator.state = _pcg64_state(state["rng"])
        self.epoch, self.pos = epoch, pos
        self._order = None
        if self.finite and self.pos:
            if not 0 < self.pos < self.per_epoch:
                raise ValueError(f"batch {self.pos} of an epoch of {self.per_epoch}")
            self._draw()                 # the order of the epoch under way, from its start's state


def _pcg64_state(st):
    """st, if it is a PCG64 generator's state as NumPy gives it; else ValueError (NumPy takes
    a float for an integer there, and raises OverflowError for one out of range)."""
    inner = st.get("state") if isinstance(st, dict) else None
    if not (isinstance(inner, dict) and st.get("bit_generator") == "PCG64" and v.is_count(inner.get("state"), 1 << 128)
            and v.is_count(inner.get("inc"), 1 << 128) and v.is_count(st.get("has_uint32"), 2)
            and v.is_count(st.get("uinteger"), 1 << 32)):
        raise ValueError(f"the batches' rng must be a PCG64 generator's state, got {str(st)[:200]}")
    return st


def _min_scale(name, value):
    x = v.finite_float(name, value, le=1)
    if x <= 0:            # a rate of 0 ended a cosine fit at its last step, with the optimizer's error
        raise ValueError(f"{name} must be > 0 (the optimizers take a learning rate > 0), got {value!r}")
    return x


class Schedule(v.Settings):
    """The learning rate at each step: base_lr times a linear warm-up over the first `warmup`
    steps, times "constant" (1), "cosine" (from 1 down to min_scale at the last step) or
    "plateau" (halved, by `factor`, after `patience` evaluations without a new best of the
    monitored metric, down to min_scale: Keras's ReduceLROnPlateau with min_delta 0, and
    PyTorch's with threshold 0 and patience - 1, since PyTorch's halves after patience + 1
    evaluations without one). min_scale in (0, 1]: unlike PyTorch's eta_min it cannot be 0,
    as the optimizers refuse a rate of 0."""

    # each checked as the constructor checks it, then and when set later (v.Settings)
    CHECKED = dict(kind=lambda name, x: v.choice("schedule", x, SCHEDULES),
                   warmup=functools.partial(v.positive_int, minimum=0), patience=v.positive_int,
                   factor=functools.partial(v.finite_float, gt=0, lt=1), min_scale=_min_scale)

    def __init__(self, kind="constant", warmup=0, factor=0.5, patience=2, min_scale=1e-3):
        self.kind, self.warmup, self.factor, self.patience, self.min_scale = kind, warmup, factor, patience, min_scale
        self.base_lr, self.total, self.scale, self.bad = None, None, 1.0, 0

    @classmethod
    def of(cls, schedule, warmup=0):
        if schedule is None or isinstance(schedule, str):
            return cls(schedule or "constant", warmup)
        if not isinstance(schedule, cls):
            raise TypeError(f"schedule must be one of {SCHEDULES} or a fastlstm.training.Schedule, got {schedule!r}")
        return schedule

    def start(self, base_lr, total):
        """Begin afresh over `total` steps from base_lr: a Schedule given to a second run (or
        fit) does not go on at the rate its plateau left the first one at."""
        self.base_lr, self.total, self.scale, self.bad = float(base_lr), total, 1.0, 0

    def lr(self, step):
        """The learning rate of the step that follows `step` steps done."""
        s = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind == "cosine" and self.total:
            progress = min(1.0, max(0.0, (step - self.warmup) / max(1, self.total - 1 - self.warmup)))
            s *= self.min_scale + (1 - self.min_scale) * 0.5 * (1 + math.cos(math.pi * progress))
        elif self.kind == "plateau":
            s *= self.scale
        return self.base_lr * s

    def observe(self, improved):
        if self.kind != "plateau":
            return
        self.bad = 0 if improved else self.bad + 1
        if self.bad >= self.patience:
            self.scale, self.bad = max(self.min_scale, self.scale * self.factor), 0

    def state(self):
        return dict(kind=self.kind, warmup=self.warmup, factor=self.factor, patience=self.patience,
                    min_scale=self.min_scale, base_lr=self.base_lr, total=self.total, scale=self.scale, bad=self.bad)

    @classmethod
    def from_state(cls, st):
        """The schedule that `state()` described, every field checked (it comes from a file)."""
        s = cls(st["kind"], st["warmup"], st["factor"], st["patience"], st["min_scale"])
        s.base_lr = v.finite_float("base_lr", st["base_lr"], ge=0)
        s.total = v.positive_int("total", st["total"])
        s.scale = v.finite_float("scale", st["scale"], ge=s.min_scale, le=1)
        s.bad = v.positive_int("bad", st["bad"], minimum=0)
        return s


class EarlyStopping:
    """Follows the monitored metric (name, "min" or "max"): `update` says whether it reached a
    new best; `stop` once `patience` evaluations in a row brought none (never with None)."""

    def __init__(self, monitor, patience=None):
        self.name, self.mode = monitor
        if patience is not None:
            patience = v.positive_int("patience", patience)
        self.patience, self.best, self.best_step, self.bad = patience, None, None, 0

    def update(self, metrics, step):
        value = metrics.get(self.name)
        if value is None or not math.isfinite(value):
            improved = False
        else:
            improved = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if improved:
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return improved

    @property
    def stop(self):
        return self.patience is not None and self.bad >= self.patience

    def state(self):
        return dict(best=self.best, best_step=self.best_step, bad=self.bad)

    def load_state(self, st):
        best, step = st["best"], st["best_step"]
        if (best is None) != (step is None):
            raise ValueError(f"best and best_step must both be null or both be set, got {best!r}, {step!r}")
        self.best = None if best is None else v.finite_float("best", best)
        self.best_step = None if step is None else v.positive_int("best_step", step, minimum=0)
        self.bad = v.positive_int("bad", st["bad"], minimum=0)


class Throughput:
    """Sequences a second for `fastlstm train`'s progress bar: a moving average of each
    step's own rate (`add` takes a step's sequences and seconds), from the second step on:
    the first compiles the kernels, 20-30 s on a cold cache. What runs between steps
    (evaluations, checkpoints) is not a step's time."""

    def __init__(self, keep=0.9):
        self.keep, self.rate, self.first = keep, None, True

    def add(self, sequences, seconds):
        now = sequences / max(seconds, 1e-9)
        if self.first:
            self.first = False
        else:
            self.rate = now if self.rate is None else self.keep * self.rate + (1 - self.keep) * now


class Run:
    """A model, a dataset (or built-in task) and everything a run carries between steps.

    start: the model's steps when the run began (0 for `fastlstm train`'s runs; a model that
    `Model.fit` trains again goes on from where it was). total: the step count to reach
    (steps, or start + epochs × batches per epoch for finite data, whichever is smaller).
    The schedule, the evaluations and the epochs count from start. Each `step()` sets the
    learning rate, draws a batch, runs `step_fn` (Model.train_step, or DataParallel's) and
    adds the loss to the running mean that the next evaluation reports as train_loss. Each
    evaluation's row is `last`, and goes to `history` too (what Model.fit returns) unless
    history=False (the command line's go to its log)."""

    def __init__(self, model, data, batch_size, rng, *, steps=None, epochs=None, eval_every=None, patience=None,
                 schedule=None, warmup=0, shuffle=True, history=True):
        self.model, self.data, self.start = model, data, model.steps
        self.batches = Batches(data, batch_size, rng, shuffle)
        self.schedule = Schedule.of(schedule, warmup)
        self.end_at(steps, epochs)
        self.eval_every = eval_every or min(self.batches.per_epoch or 500, 500)
        self.schedule.start(model.optimizer.lr, self.total - self.start)
        self.stopper = EarlyStopping(data.monitor, patience)
        self.loss_sum, self.loss_count, self.history, self.last = 0.0, 0, [] if history else None, None

    def end_at(self, steps=None, epochs=None):
        """End the run at `steps`, or at start + epochs × batches per epoch, whichever comes
        first (ValueError for neither, or epochs of a built-in task); the schedule's end
        moves with it (a cosine decays to its floor there)."""
        if epochs is not None and not self.batches.finite:
            raise ValueError("epochs need finite data (--data); a built-in task counts steps")
        totals = [t for t in (steps, self.start + epochs * self.batches.per_epoch if epochs is not None else None)
                  if t is not None]
        if not totals:
            raise ValueError("give steps or epochs")
        self.total = min(totals)
        self.schedule.total = self.total - self.start

    def step(self, step_fn):
        lr = self.schedule.lr(self.model.steps - self.start)
        if lr != self.model.optimizer.lr:          # the assignment is checked (5 µs): only when the rate moves
            self.model.optimizer.lr = lr
        x, y, lengths = self.batches.next(self.model.dtype)
        loss = step_fn(x, y, lengths)
        self.loss_sum += loss
        self.loss_count += 1
        return loss

    @property
    def due(self):
        s = self.model.steps
        return (s - self.start) % self.eval_every == 0 or s == self.total

    @property
    def done(self):
        return self.model.steps >= self.total or self.stopper.stop

    def evaluate(self, seconds):
        """Score the validation set; returns (history row, whether it is a new best)."""
        m = self.data.metrics(self.model)
        row = dict(step=self.model.steps, epoch=round((self.model.steps - self.start) / self.batches.per_epoch, 3)
                   if self.batches.finite else None, seconds=round(seconds, 2),
                   train_loss=self.loss_sum / self.loss_count if self.loss_count else None,
                   lr=self.model.optimizer.lr, **m)
        row = {k: val for k, val in row.items() if val is not None}
        self.loss_sum, self.loss_count = 0.0, 0
        improved = self.stopper.update(m, self.model.steps)
        self.schedule.observe(improved)
        self.last = row
        if self.history is not None:
            self.history.append(row)
        return row, improved

    def state(self):
        return dict(batches=self.batches.state(), schedule=self.schedule.state(), stopper=self.stopper.state(),
                    loss_sum=self.loss_sum, loss_count=self.loss_count, total=self.total, eval_every=self.eval_every,
                    start=self.start)

    def load_state(self, st):
        """Continue the run that `state()` described (from a checkpoint, so each field is
        checked: a bad one raises ValueError or TypeError)."""
        self.batches.load_state(st["batches"])
        self.schedule = Schedule.from_state(st["schedule"])
        self.stopper.load_state(st["stopper"])
        self.loss_sum = v.finite_float("loss_sum", st["loss_sum"])
        self.loss_count = v.positive_int("loss_count", st["loss_count"], minimum=0, below=v.MAX_ROW)  # loss_sum / it
        self.total, self.eval_every = v.positive_int("total", st["total"]), v.positive_int("eval_every", st["eval_every"])
        self.start = v.positive_int("start", st.get("start", 0), minimum=0)      # absent before fit could continue
        if self.start > self.model.steps:
            raise ValueError(f"start {self.start} is past the model's {self.model.steps} steps")


def check_history(history):
    """A run's history from a checkpoint: a list of rows, each an object of numbers."""
    if not isinstance(history, list):
        raise TypeError(f"history must be a list of rows, got {type(history).__name__}")
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise TypeError(f"history row {i} must be an object, got {type(row).__name__}")
        v.positive_int(f"history row {i}: step", row.get("step"), minimum=0)
        for k, val in row.items():
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise TypeError(f"history row {i}: {k} must be a number, got {val!r}")
    return list(history)


class MetricsLog:
    """A run's metrics log, runs/NAME.csv: a header, then a row per evaluation (step, epoch,
    seconds, train_loss, lr, every metric). Each row is appended with one write, flushed to
    disk before the checkpoint that counts it is written, so an evaluation costs the same
    at a run's first and its ten-thousandth (the log rewritten whole, and the history in
    every checkpoint, cost 20 µs for each row before it: a run of short epochs slowed to a
    crawl). A new run's first write replaces an earlier run's log whole; a resumed run's
    log is first cut back to the rows its checkpoint counts (`resume`)."""

    def __init__(self, path):
        self.path, self.names, self.rows, self.new = path, None, 0, True

    def resume(self, n, history=None):
        """Continue the log of a checkpoint that counted n rows: a row written after it (its
        evaluation's checkpoint was not) is cut off, and so is a line a crash left half
        written. history: the rows a checkpoint of an earlier fastlstm held instead, written
        whole. Returns the rows the log holds: fewer than n where some were lost."""
        self.new = False
        if history is not None:
            self._replace(history)
            return self.rows
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")[:-1][:n + 1]        # the header and n rows, whole lines only
        kept = b"".join(line + b"\n" for line in lines)
        if kept != data:
            with atomic_file(self.path, "the metrics log") as f:
                f.write(kept)
        append_file(self.path, b"", "the metrics log")   # one it cannot append to stops the run now, not later
        self.names = next(csv.reader([lines[0].decode(errors="replace")]), None) if lines else None
        self.rows = max(len(lines) - 1, 0)
        return self.rows

    def start(self):
        """A new run's log, empty until its first evaluation (an earlier run's goes)."""
        if self.new:
            self._replace([])

    def append(self, row):
        """One evaluation's row, after the header if the log has none."""
        if self.new or self.names is None or not set(row) <= set(self.names):
            # a new log, or one whose header lacks a name (edited since): written whole
            old = []
            if not self.new and self.names is not None:
                with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
                    old = list(csv.DictReader(f))
            self._replace(old + [row])
            return
        line = io.StringIO()
        csv.DictWriter(line, self.names, lineterminator="\n").writerow(row)
        append_file(self.path, line.getvalue().encode(), "the metrics log")
        self.rows += 1

    def _replace(self, rows):
        names = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_file(self.path, "the metrics log", text=True) as f:
            if names:
                w = csv.DictWriter(f, names, lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
        self.names, self.rows, self.new = names or None, len(rows), False


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or RuntimeError naming the extra."""
    v.optional("matplotlib", "plot", "plot", "matplotlib").use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_format(path):
    """The format path's extension names (PNG without one), or ValueError for one matplotlib
    does not write: checked before a plot's data are made (the carousel's take minutes)."""
    pyplot()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    if fmt not in FigureCanvasAgg.get_supported_filetypes():
        raise ValueError(f"{path}: a plot is written as PNG, PDF, SVG or another format matplotlib knows "
                         f"by its extension, not .{fmt}")
    return fmt


def save_figure(fig, path, dpi):
    """A matplotlib figure to path, atomically, in the format its extension names (PNG
    without one): the name given, never one with an extension added."""
    fmt = figure_format(path)
    with atomic_file(path, "the plot") as f:
        fig.savefig(f, format=fmt, dpi=dpi)


def plot(log, out):
    """Curves of a metrics log: train loss, every validation metric, and the learning rate,
    against the step (needs matplotlib, the `plot` extra; the log is read first, so that a
    wrong file is said to be one with or without it)."""
    try:
        f = open_regular(log)
        if f is None:
            raise ValueError("not a regular file: a folder, a pipe or a device")
        with f:
            data = f.read()
        if data[:4] == ZIP:
            raise ValueError("a zip archive, such as a checkpoint; a run's metrics log is the .csv "
                             "beside its checkpoint")
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        names = next(reader, [])
        rows = [(reader.line_num, r) for r in reader if r]            # blank lines skipped, as DictReader does
        if "step" not in names:
            from .data import _listed           # the one way errors list a header's names (a wide one cut)
            raise ValueError(f"no step column; its columns: {_listed(names) or 'none'}")
        if not rows:
            raise ValueError("no rows under the header")
        table = np.full((len(rows), len(names)), np.nan)         # write_log leaves a metric not taken empty
        for i, (line, r) in enumerate(rows):
            if len(r) != len(names):
                raise ValueError(f"line {line} has {len(r)} fields, and the header {len(names)}")
            for j, (k, x) in enumerate(zip(names, r)):
                try:
                    table[i, j] = float(x) if x or k == "step" else np.nan
                except ValueError:
                    raise ValueError(f"line {line}, column {j + 1} ({k!r}): {x!r} is not a number") from None
        cols = {k: table[:, j] for j, k in enumerate(names) if k not in ("step", "epoch", "seconds")}
        step = table[:, names.index("step")]
        if not cols:
            raise ValueError("no column of values to draw beside step, epoch and seconds")
    except (ValueError, TypeError, csv.Error) as e:       # UnicodeDecodeError is a ValueError
        raise ValueError(f"{log}: not a fastlstm metrics log ({e})") from None
    plt = pyplot()
    panels = [("loss", [k for k in cols if k in ("train_loss", "val_loss")]),
              ("validation", [k for k in cols if k not in ("train_loss", "val_loss", "lr") and "skill" not in k]),
              ("skill (1 - RMSE / baseline's)", [k for k in cols if "skill" in k]),
              ("learning rate", [k for k in cols if k == "lr"])]
    panels = [(title, names) for title, names in panels if names]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:                  # baselines (naive, unigram, majority, mean) dashed
            dashed = any(b in name for b in ("naive", "seasonal", "unigram", "majority", "mean_", "baseline"))
            ax.plot(step, cols[name], "--" if dashed else ".-", label=name)
        ax.set(xlabel="step", title=title)
        if len(names) > 1 or title != "learning rate":
            ax.legend(fontsize=8)
    fig.suptitle(os.path.basename(log))
    fig.tight_layout()
    save_figure(fig, out, 100)
    plt.close(fig)
