"""Model: LSTM (or vanilla RNN) layers plus a dense head with a loss, an optimizer and
checkpoints.

One flat parameter array holds the layers' W, b followed by the head's V (O, H) and bias
(O); gradients mirror it. The model reaches the layer stack only through its composer
interface (check_input, run_forward, last_hidden, hidden_into, run_backward, advance).
The head reads h_t (every step) or h at each row's last real step
(last), and its δ enters the layers as δy (every) or δhn of the top layer (last).
"""
import contextlib
import copy
import functools
import math
import numbers
import os
import sys
import warnings

import numpy as np

from . import _validate as v
from . import checkpoint, choices, heads, optim
from . import _blas
from ._config import blas_turn
from ._validate import NonFiniteError  # noqa: F401  (fastlstm.NonFiniteError; raised here and by the stacks)
from .kernels import add_row_sums, all_finite, fill_zero, int_bounds_within, scatter_rows, zeros
from .recurrent import GRU, LSTM, ONE_LAYER_DROPOUT, RNN, dropout_seed_from, flat, one_call_at_a_time

CELLS = dict(zip(choices.CELLS, (LSTM, RNN, GRU, RNN)))     # cell -> its stack ("rnn_relu": RNN's ReLU)
ONE_HOT = " (of one-hot rows: y.argmax(-1))"   # the hint for Keras's one-hot targets given to a classifier


def _int64_as_is(a):
    """True if the kernels take integer array a without a copy (Model._int64): int64 and
    C-contiguous, aligned and writable (flags.carray), as they are compiled for."""
    return a.dtype == np.int64 and a.flags.carray


class Model(v.Settings):
    """LSTM layers (cell="lstm", the default), GRU layers (cell="gru") or vanilla RNN layers
    (cell="rnn": tanh; cell="rnn_relu": ReLU, torch.nn.RNN(nonlinearity="relu")) + dense head.

    loss: "mse" (regression, float targets (B, O) or (T, B, O)) or "xent" (softmax
    cross-entropy, integer labels (B,) or (T, B) in 0..O-1). output: "last" (one prediction
    per sequence, at its last real step) or "every" (one per step, padded steps ignored).
    optimizer: an optim.SGD / optim.Adam (default Adam(lr=1e-3)). clip: max global gradient
    norm (as PyTorch's clip_grad_norm_) or None. on_nonfinite: "raise" (NonFiniteError) or
    "skip" (count it, change nothing).
    bidirectional, dropout, proj_size (the LSTM's only): as the layer stacks take them;
    vocab_size: token ids in, through an embedding E (vocab_size, input_size). batch_first:
    the Python calls take x (B, T, D) (ids (B, T)), per-step y (B, T[, O]) and give per-step
    predictions (B, T, O), as PyTorch's batch_first and Keras's arrays; the C ABI, the
    command line and ONNX stay time-major.
    params, grads: the flat arrays (`m.params = new` copies new in); V (O, width), bias (O,),
    E and their gradients dV, dbias, dE: views into them.
    """
    params, grads = flat("params", copy_in=True), flat("grads", copy_in=True)
    V, bias, E, dV, dbias, dE = (flat(name) for name in ("V", "bias", "E", "dV", "dbias", "dE"))
    FIXED = dict(dict.fromkeys(("cell", "loss", "output", "output_size", "vocab_size", "forget_bias")),
                 core="copy weights into its params (model.core.params[...] = values), or build a new Model",
                 batch_first="`with model.time_major():` takes time-major arrays for a while")
    CHECKED = dict(clip=v.clip, training=v.boolean, steps=v.count, skipped_steps=v.count,
                   on_nonfinite=functools.partial(v.choice, options=choices.ON_NONFINITE))

    def __init__(self, input_size, hidden_size, output_size, num_layers=1, *, cell="lstm",
                 loss="mse", output="last", dtype=np.float32, forget_bias=1.0, seed=None,
                 optimizer=None, clip=None, on_nonfinite="raise", bidirectional=False, dropout=0.0,
                 vocab_size=None, dropout_seed=None, proj_size=0, batch_first=False):
        v.choice("cell", cell, choices.CELLS)
        v.choice("loss", loss, choices.LOSSES)
        v.choice("output", output, choices.OUTPUTS)
        D = v.positive_int("input_size", input_size)
        H = v.positive_int("hidden_size", hidden_size)
        O = v.positive_int("output_size", output_size)
        v.product_size("output_size", O, "fewer outputs")
        if loss == "xent" and O < 2:            # softmax over one class is 1: a loss of 0, no gradient, ever
            raise ValueError("loss 'xent' needs output_size >= 2 classes (the softmax of one class is always 1, so "
                             "nothing would train); for a yes/no label give output_size=2")
        Vn = None if vocab_size is None else v.positive_int("vocab_size", vocab_size)
        bidirectional = v.boolean("bidirectional", bidirectional)
        if cell != "lstm":
            name = choices.CELL_NAMES[cell]
            v.no_projection(name, proj_size)
            # 1 is the default; 0 is what such a model's config() reports, so that it loads again
            if v.finite_float("forget_bias", forget_bias) not in (0.0, 1.0):
                raise ValueError(f"forget_bias applies to the LSTM only; {'an' if name == 'RNN' else 'a'} "
                                 f"{name} has no forget gate, got {forget_bias!r}")
        proj_size = v.proj_size(proj_size, H)
        n, Hout, size = _layout(cell, D, H, v.num_layers(num_layers), bidirectional, proj_size, O, Vn)
        self.clip = clip
        self.cell, self.loss, self.output, self.on_nonfinite = cell, loss, output, on_nonfinite
        self.batch_first = v.boolean("batch_first", batch_first)
        self._batch_major = self.batch_first    # the layout the public calls take now (see time_major)
        dtype = v.dtype_of(dtype)
        v.fits_in_memory("the model's parameters and gradients", 2 * size * dtype.itemsize)
        self._params, self._grads = zeros(size, dtype), zeros(size, dtype)
        extra = (dict(forget_bias=forget_bias, proj_size=proj_size) if cell == "lstm" else
                 dict(nonlinearity="relu") if cell == "rnn_relu" else {})
        if dropout_seed is None:             # from the model's seed (the stack is given none)
            dropout_seed = dropout_seed_from(seed)
        self.core = CELLS[cell](input_size, hidden_size, num_layers, dtype=dtype, bidirectional=bidirectional,
                                dropout=dropout, dropout_seed=dropout_seed,
                                buffers=(self.params[:n], self.grads[:n]), **extra)
        self._lock = self.core._lock         # one lock for the model and its stack: they share buffers
        o = n + O * Hout
        self._V, self._bias = self.params[n:o].reshape(O, Hout), self.params[o:o + O]
        self._dV, self._dbias = self.grads[n:o].reshape(O, Hout), self.grads[o:o + O]
        # token inputs: the embedding E (vocab_size, D) after the head; x holds ids (T, B)
        self.vocab_size = Vn
        self._E = self.params[o + O:].reshape(Vn, D) if Vn else None
        self._dE = self.grads[o + O:].reshape(Vn, D) if Vn else None
        self.training = True      # train_step drops out (dropout > 0) in training mode; see eval()
        self.output_size, self.seed, self.forget_bias = O, seed, self.core.forget_bias   # a GRU's or RNN's is 0
        self.reset_parameters(seed)
        self._optimizer = None
        self.optimizer = optimizer
        self.steps = 0            # training steps applied
        self.skipped_steps = 0    # steps refused for a non-finite loss or gradient
        self._bufs = {}           # the head's buffers, {(T, B): views of _flat} for the last (T, B)
        self._flat = {}
        self._state = None        # streaming (h, c), see step()
        self.extra = {}           # what a checkpoint carried besides the model

    @property
    def dtype(self):
        return self.params.dtype

    @property
    def optimizer(self):
        """The update rule, bound to this model (its state is this model's moments)."""
        return self._optimizer

    @optimizer.setter
    @one_call_at_a_time
    def optimizer(self, optimizer):
        """`model.optimizer = fastlstm.SGD(lr=0.1)` swaps the rule, as Keras's compile does: it
        takes what the constructor takes and starts afresh (t = 0, zero state); the one it
        replaces is free for another model. Refused (TypeError, ValueError), nothing changes."""
        old = self._optimizer
        if optimizer is old and old is not None:
            return                                      # m.optimizer = m.optimizer keeps its moments
        self._optimizer = optim.of(optimizer).bind(self.params.size, self.dtype, self)
        if old is not None:
            old._owner = None

    @one_call_at_a_time
    def reset_parameters(self, seed=None):
        """Layers as the stack's reset_parameters; V ~ U(±1/√width) and bias 0 (torch.nn.Linear's
        bound); E ~ N(0, 1) (torch.nn.Embedding's)."""
        rng = v.rng(seed)
        self.core.reset_parameters(rng)
        k = 1 / np.sqrt(self.core.output_size)
        self.V[:] = rng.uniform(-k, k, self.V.shape)
        self.bias[:] = 0
        if self.E is not None:
            self.E[:] = rng.standard_normal(self.E.shape)

    def train(self, mode=True):
        """Training mode (train_step drops out) or, with mode=False, evaluation mode (it does
        not). predict, evaluate and step never drop out. Returns self."""
        self.training = v.boolean("mode", mode)     # "no" is truthy
        return self

    def eval(self):
        return self.train(False)

    @property
    def _drops_out(self):
        """Whether a training step drops out: training mode and dropout > 0."""
        return self.training and self.core.dropout > 0

    @one_call_at_a_time(interruptible=True)
    def astype(self, dtype):
        """A copy of the model in `dtype` (float32 or float64; PyTorch's model.float() and
        .double()): parameters and optimizer state cast, everything else as `save` keeps it
        (the streaming state and gradients start afresh). Casting to float32 refuses a value
        beyond float32's range (ValueError), and leaves this model as it is."""
        dtype = v.dtype_of(dtype)
        header, arrays = self._checkpoint(self.extra)
        model = _restore(dict(header, model=dict(header["model"], dtype=dtype.name), extra=copy.deepcopy(self.extra)),
                         v.cast(arrays, dtype))
        model.seed, model.training = self.seed, self.training
        return model

    def config(self):
        l = self.core
        return dict(input_size=l.input_size, hidden_size=l.hidden_size, output_size=self.output_size,
                    num_layers=l.num_layers, cell=self.cell, loss=self.loss, output=self.output,
                    dtype=str(self.dtype), forget_bias=l.forget_bias, clip=self.clip,
                    on_nonfinite=self.on_nonfinite, bidirectional=l.bidirectional, dropout=l.dropout,
                    dropout_seed=l.dropout_seed, vocab_size=self.vocab_size, proj_size=l.proj_size,
                    batch_first=self.batch_first)

    def __repr__(self):
        return (f"Model({', '.join(f'{k}={v!r}' for k, v in self.config().items())}, optimizer={self.optimizer!r}, "
                f"params={self.params.size})")

    # -- inputs ------------------------------------------------------------------------

    def _check_y(self, y, T, B, L):
        """y checked against x's (T, B) (time-major, as _check_x gives them): (B,) or (B, O)
        for output "last"; (T, B) or (T, B, O) for "every", or with batch_first (B, T[, O]),
        checked as given and returned as a time-major copy."""
        swapped = self._batch_major and self.output == "every" and isinstance(y, np.ndarray)
        if swapped:
            y = self._per_step_y(y, T, B, L)             # scanned for NaN there, as given
        lead = (B,) if self.output == "last" else (T, B)
        if self.output == "last" and isinstance(y, np.ndarray) and y.ndim and y.shape[0] == T != B:
            raise ValueError(f"y must have shape {lead + (self.output_size,) * (self.loss == 'mse')}, got {y.shape}: "
                             f"a row for each of x's T = {T} steps; " + (
                                 "this model is batch_first, so x is (B, T, D): for x of shape (T, B, D) pass "
                                 "np.swapaxes(x, 0, 1)" if self._batch_major else
                                 "x is time-major (T, B, D), so for x of shape (B, T, D) pass np.swapaxes(x, 0, 1) "
                                 "(or make the model with batch_first=True)"))   # the commonest mistake
        if self.loss == "mse":
            try:
                y = v.array("y", y, lead + (self.output_size,), self.dtype, finite=not swapped)
            except v.NonFiniteValue as e:
                every = self.output == "every"
                raise v.NonFiniteValue(f"{e}{v.padded_hint(v.first_nonfinite(y), L) if every else ''}") from None
            return y.reshape((1,) + y.shape if self.output == "last" else y.shape)
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu":
            onehot = isinstance(y, np.ndarray) and y.shape == lead + (self.output_size,)
            raise TypeError(f"y must be an integer ndarray of class labels, got "
                            f"{getattr(y, 'dtype', type(y).__name__)}{ONE_HOT * onehot}{v.bool_hint(y)}")
        if y.shape != lead:
            raise ValueError(f"y must have shape {lead}, got {y.shape}{v.last_axis_hint(y, lead)}")
        O, every = self.output_size, self.output == "every"
        lo, hi = v.bounds(y)
        y64 = self._int64(y, "labels (int64)")
        if (lo < 0 or hi >= O) and every:                   # a label past a row's length counts for nothing
            lo, hi = int_bounds_within(y64, L)
        if lo < 0 or hi >= O:
            bad = (y64 < 0) | (y64 >= O)
            if every:
                bad &= np.arange(T)[:, None] < L               # the real steps
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"class labels must lie in 0..{O - 1}, got min {lo}, max {hi}: row {at[-1]} has "
                             f"{y[at]}{f' at step {at[0]}' if every else ''}" + (
                                 " (fastlstm has no ignore_index: the steps past a row's length count for nothing, "
                                 "whatever their labels)" if y[at] == -100 and every else ""))
        return y64.reshape((1, B) if self.output == "last" else (T, B))

    def _per_step_y(self, y, T, B, L):
        """A batch_first model's targets per step, (B, T) or (B, T, O), checked for shape and
        finiteness as given (so errors name the caller's indices), as a time-major copy."""
        want = (B, T) + ((self.output_size,) if self.loss == "mse" else ())
        if y.shape != want:
            raise ValueError(f"y must have shape {want} (batch_first: a target per row and step), got {y.shape}")
        bad = v.first_nonfinite(y) if y.dtype.kind == "f" else None
        if bad is not None:
            raise v.NonFiniteValue(f"y must be finite; found {y[bad]} at index {bad}"
                                   f"{v.padded_hint((bad[1], bad[0]) + bad[2:], L)}")
        return self._swapped(y, "y (time-major)")

    def _buffers(self, T, B):
        """The head's buffers for this (T, B): views of flat buffers (`_flat`) that grow to the
        largest size asked for and never shrink, as the layers' workspace does, so that
        batches of other shapes in turn (training steps, then `evaluate` in chunks) allocate
        nothing once each shape has run. Every buffer is written whole before it is read."""
        if (T, B) not in self._bufs:
            shapes, sizes, grow = self._head_growth(T, B)
            held = self.core._ws.nbytes                  # the workspace, grown for this (T, B) already
            v.fits_in_memory(f"the head's buffers for T = {T}, B = {B} with the workspace's {v._bytes(held)}",
                             sum(grow.values()) * self.dtype.itemsize, held=held)
            self._flat.update({k: zeros(n, self.dtype) for k, n in grow.items()})   # all made before any is replaced
            self._bufs = {(T, B): {k: self._flat[k][:sizes[k]].reshape(s) for k, s in shapes.items()}}
        return self._bufs[(T, B)]

    def _head_growth(self, T, B):
        """(shapes, sizes, grow) of the head's buffers for (T, B): each buffer's shape and
        size, and the sizes of those that must grow."""
        c, O = self.core, self.output_size
        H, Hr, Hout, states, D = c.hidden_size, c.Hr, c.output_size, c.num_states, c.input_size
        S, TE = (1 if self.output == "last" else T), (T if self.E is not None else 0)
        TY = 0 if self.output == "last" else T       # y and δy per step: none for a head on the last step
        shapes = dict(y=(TY, B, Hout), P=(S, B, O), dP=(S, B, O), dV=(O, Hout), dbias=(O,), dY=(TY, B, Hout),
                      dhn=(states, B, Hr), dh0=(states, B, Hr), dc0=(states, B, H), dlast=(B, Hout),
                      x=(TE, B, D), dx=(TE, B, D))
        sizes = {k: math.prod(s) for k, s in shapes.items()}
        return shapes, sizes, {k: n for k, n in sizes.items() if k not in self._flat or self._flat[k].size < n}

    def _head_bytes(self, T, B):
        """("the head's buffers", bytes they grow by for (T, B)): what the workspace's memory
        check adds (recurrent.check_fits's `also`)."""
        return "the head's buffers", sum(self._head_growth(T, B)[2].values()) * self.dtype.itemsize

    # -- forward through the head -------------------------------------------------------

    def _head_input(self, T, B, buf):
        """(S·B, H) rows the head reads: h_t for every step, or h at the last real step."""
        if self.output == "last":
            return self.core.last_hidden()
        self.core.hidden_into(buf["y"])
        return buf["y"].reshape(T * B, -1)

    def _check_x(self, x, lengths, time_major=None, rows=None):
        """x and lengths checked: floats (T, B, D), or token ids (T, B) in 0..vocab_size-1 for a
        model with an embedding; with batch_first (B, T, D) or (B, T), checked as given and
        returned time-major by time_major(x) (default: a copy in the model's buffer). rows:
        how many rows run at once (None: all), whose workspace must fit before x is scanned
        (0: none checked here; core.check_fits)."""
        bm = self._batch_major
        copied = bm and time_major is None       # a time-major copy in the model's buffer (checked before the scan)
        time_major = time_major or (lambda a: self._swapped(a, "x (time-major)"))
        kept_lengths = lambda B: self._kept("lengths (int64)", (B,), np.int64)  # noqa: E731
        if self.E is None:
            copy = lambda T, B: self._kept_fits("x (time-major)", T * B * self.core.input_size, self.dtype)  # noqa: E731
            return self.core.check_input(x, lengths, bm, time_major, kept_lengths, rows, copy if copied else None,
                                         self._head_bytes)
        layout = "(B, T)" if bm else "(T, B)"
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "iu":
            raise TypeError(f"this model embeds tokens: x must be an integer ndarray of ids {layout}, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x must be token ids of shape {layout} with T, B >= 1, got {x.shape}")
        T, B = x.shape[::-1] if bm else x.shape
        self.core.check_fits(T, B, rows, self._head_bytes)   # before the ids' scan, as check_input does,
        if not _int64_as_is(x):                          # with the copies _int64 and time_major make
            self._kept_fits("token ids (int64)", T * B, np.int64)
        if copied:
            self._kept_fits("x (time-major)", T * B, np.int64)
        lo, hi = v.bounds(x)
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}, got min {lo}, max {hi}")
        L = v.lengths(lengths, B, T, int(bm), kept_lengths(B))
        x = self._int64(x, "token ids (int64)")
        return (time_major(x) if bm else x), L

    def _kept(self, name, shape, dtype):
        """A buffer of `shape` and dtype kept under `name` (grown, never shrunk, as the head's),
        so that a warm step allocates no array for what a call copies: the time-major copy
        of batch_first x or y, labels and ids as int64, the lengths."""
        n = math.prod(shape)
        if self._kept_fits(name, n, dtype):
            self._flat[name] = zeros(n, dtype)
        return self._flat[name][:n].reshape(shape)

    def _kept_fits(self, name, n, dtype):
        """True if the buffer kept under `name` must grow to hold n of dtype, after
        MemoryError where that would not fit in memory; nothing is allocated."""
        buf = self._flat.get(name)
        if buf is not None and buf.size >= n and buf.dtype == dtype:
            return False
        v.fits_in_memory(f"the copy of {name}", n * np.dtype(dtype).itemsize)
        return True

    def _int64(self, a, name):
        """Integer a (labels, ids) as a C-contiguous int64 array: a itself if it is one (aligned
        and writable too, as the kernels are compiled for), else a copy in a buffer kept
        under `name`."""
        if _int64_as_is(a):
            return a
        out = self._kept(name, a.shape, np.int64)
        out[...] = a
        return out

    def _swapped(self, a, name):
        """a (B, T, ...) as (T, B, ...): a C-contiguous copy in a buffer kept under `name`."""
        out = self._kept(name, a.shape[1::-1] + a.shape[2:], a.dtype)
        out[...] = a.swapaxes(0, 1)
        return out

    @contextlib.contextmanager
    def time_major(self):
        """`with model.time_major():` the calls inside take and give time-major arrays,
        whatever batch_first says: for batches that come so (the built-in tasks', fastlstm's
        own data sets' and fit's loop use it). It holds the model's lock, so calls from other
        threads wait until it ends."""
        with self._lock:
            kept, self._batch_major = self._batch_major, False
            try:
                yield self
            finally:
                self._batch_major = kept

    def _forward_head(self, x, L, step=None, row0=0, inference=False):
        """Forward through the layers (ids embedded first) and the head's product; step: the
        dropout masks' step, None for none; row0: x's first row in the batch (the masks' key);
        inference: no backward follows (core.run_forward)."""
        T, B = x.shape[:2]
        buf = self._reserve(T, B)
        if self.E is not None:
            np.take(self.E, x, axis=0, out=buf["x"], mode="clip")  # x_t = E[id_t] (ids checked; "raise" would buffer)
            x = buf["x"]
        self.core.run_forward(x, None, None, L, step, row0, inference)
        Y = self._head_input(T, B, buf)
        with blas_turn():
            _blas.matmul(Y, self.V.T, buf["P"].reshape(-1, self.output_size))
        return buf, Y

    def _loss(self, buf, y, L):
        every = self.output == "every"
        if self.loss == "mse":
            return heads.mse(buf["dP"], buf["P"], self.bias, y, L, every), None
        return heads.softmax_xent(buf["dP"], buf["P"], self.bias, y, L, every)

    # -- training -------------------------------------------------------------------------

    @one_call_at_a_time
    def compute_gradients(self, x, y, lengths=None, record=False, first_row=0):
        """Zero the gradients, then forward, loss and backward: fills `grads`; returns the loss.

        Parameters are not touched (a distributed driver sums `grads` across ranks, then
        calls apply_gradients). record=True fills core.flow (see LSTM.backward). first_row:
        the row of the whole batch that x's first row is, when x is a part of it (a
        DataParallel shard), so that dropout draws each row the whole batch's mask."""
        record = v.boolean("record", record)
        first_row = v.positive_int("first_row", first_row, minimum=0, below=v.MAX_ROW)
        x, L = self._check_x(x, lengths)
        T, B = x.shape[:2]
        y = self._check_y(y, T, B, L)
        for name, a in (("x", x), ("y", y)):
            if np.may_share_memory(a, self.grads):
                raise ValueError(f"{name} overlaps the model's grads, which a step zeroes before it reads {name}: "
                                 f"pass a copy ({name}.copy())")
        fill_zero(self.grads)
        with np.errstate(over="ignore", invalid="ignore"):   # apply_gradients checks finiteness
            return self._gradients(x, y, L, T, B, record, first_row)

    def _gradients(self, x, y, L, T, B, record, row0=0):
        buf, Y = self._forward_head(x, L, self.steps if self._drops_out else None, row0)  # masks keyed by step and row
        loss, _ = self._loss(buf, y, L)
        dP2 = buf["dP"].reshape(-1, self.output_size)
        with blas_turn():
            _blas.matmul(dP2.T, Y, buf["dV"])                  # δV = Σ δP hᵀ
            self.dV += buf["dV"]
            add_row_sums(self.dbias, dP2, buf["dbias"])        # δbias = Σ δP
            if self.output == "last":
                dirs, dhn = self.core.directions, buf["dhn"]
                dhn[:-dirs] = 0
                if dirs == 1:
                    _blas.matmul(dP2, self.V, dhn[-1])            # δh at the last step enters as δhn
                else:                                            # [δh_fwd ; δh_bwd], each direction's δhn
                    _blas.matmul(dP2, self.V, buf["dlast"])
                    dhn[-dirs:] = buf["dlast"].reshape(B, dirs, -1).transpose(1, 0, 2)
                dy = buf["dY"]                                     # (0, B, ·): no δy_t (run_backward)
            else:
                _blas.matmul(dP2, self.V, buf["dY"].reshape(T * B, -1))
                dy, dhn = buf["dY"], None
        dx = buf["dx"] if self.E is not None else None
        self.core.run_backward(dy, dhn, None, dx, buf["dh0"], buf["dc0"], record)
        if self.E is not None:
            scatter_rows(self.dE, x, dx)                          # δE[id] += δx_t, no one-hot
        return float(loss)

    @one_call_at_a_time
    def apply_gradients(self, loss=0.0):
        """Clip `grads` by global norm and take one optimizer step, unless the loss or a
        gradient is not finite: then raise NonFiniteError (or skip), leaving params and
        optimizer state exactly as they were. Returns True if the step was applied."""
        if isinstance(loss, bool) or not isinstance(loss, numbers.Real):     # before clip scales grads
            raise TypeError(f"loss must be a number (what compute_gradients returns), got {loss!r:.40}")
        for name, n in (("steps", self.steps), ("skipped_steps", self.skipped_steps),
                        ("optimizer.t", self.optimizer.t)):
            v.room(name, n)
        finite_loss = v.finite(loss) is not None
        norm = optim.clip_by_global_norm(self.grads, self.clip if finite_loss else None)   # grads kept if refused
        if not (finite_loss and np.isfinite(norm)):
            cause = v.written_outside(self.params) or "lower the learning rate or set clip"
            why = (f"non-finite {'gradient' if finite_loss else 'loss'} (loss {str(loss):.40}, "
                   f"gradient norm {norm}: {cause})")
        elif not self.optimizer.step(self.params, self.grads):
            why = (f"the {self.optimizer.name} update would make parameters or optimizer state "
                   f"non-finite (overflow in {self.dtype}; gradient norm {norm:.3g}: scale the "
                   f"targets, lower the learning rate or set clip)")
        else:
            self.steps += 1
            return True
        self.skipped_steps += 1
        if self.on_nonfinite == "raise":
            raise NonFiniteError(f"{why}; the model was not updated")
        return False

    @one_call_at_a_time
    def train_step(self, x, y, lengths=None):
        """One step on a batch: x (T, B, D) ((B, T, D) with batch_first); y as the loss needs;
        lengths (B,) or None.
        Returns the loss before the update."""
        loss = self.compute_gradients(x, y, lengths)
        self.apply_gradients(loss)
        return loss

    def _column(self, y):
        """A 1-D float y (N,) as the (N, 1) targets of a one-output mse model (fit, evaluate)."""
        if (isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind == "f" and self.loss == "mse"
                and self.output_size == 1):
            return y[:, None]
        return y

    def _fits(self, d, who="fit"):
        """ValueError, beginning with `who`, saying how the data `d` (data.Arrays) and this
        model disagree, if they do (fit, and `fastlstm predict` on arrays)."""
        O = self.output_size
        seen = d.output_size if d.y is None else (int(d.y.max()) + 1 if d.classes else d.y.shape[-1])
        if d.input_size not in (None, self.core.input_size):          # None: token ids, embedded
            why = f"x has D = {d.input_size} inputs a step, and this model takes {self.core.input_size}"
        elif d.loss != self.loss:
            onehot = ONE_HOT * (d.y is not None and d.y.ndim > 1 and d.y.shape[-1] == O)
            why = ("y holds integers (class labels: loss 'xent'), and this model's loss is 'mse': give float "
                   "targets (y.astype(np.float32)), or build the model with loss='xent'" if self.loss == "mse" else
                   f"y holds floats (targets: loss 'mse'), and this model's loss is 'xent': give integer class "
                   f"labels 0..{O - 1}{onehot}, or build the model with loss='mse'")
        elif seen > O or (self.loss == "mse" and seen != O):
            why = (f"y's class labels reach {seen - 1}{' (validation included)' * (who == 'fit')}, and this "
                   f"model has {O} classes, labels 0..{O - 1}" if self.loss == "xent" else
                   f"y has {v.counted(seen, 'target')} a sequence, and this model predicts {O}")
        else:
            return
        raise ValueError(f"{who}: {why}")

    @one_call_at_a_time(interruptible=True)
    def fit(self, x, y, lengths=None, *, epochs, batch_size=32, validation=None, validation_split=None, shuffle=True,
            seed=None, patience=None, schedule=None, progress=True, **keras):
        """Train on arrays in memory, Keras-style: x (T, N, D) ((N, T, D) with batch_first), y
        as train_step takes it for N sequences ((N,) labels or (N, O) values), lengths (N,) or
        None.

        Each epoch visits the N sequences in batches of batch_size (in a fresh seeded order
        with shuffle; the last N mod batch_size wait for the next epoch), then scores
        `validation` = (x, y) or (x, y, lengths) (same T and D), or the last `validation_split`
        (a fraction in (0, 1)) of the N sequences, held out before shuffling, as Keras's
        validation_split; `patience` (early stopping: epochs without a new best) and schedule
        "plateau" follow its loss. schedule: None
        (constant), "cosine", "plateau" or a `fastlstm.training.Schedule`. Returns the history,
        {"epoch": [...], "step": [...], "loss": [...], "lr": [...], "val_loss": [...], ...}, one
        entry per epoch; the weights are those of the last epoch.

        Each call trains `epochs` more epochs from where the model is (as Keras's fit): its
        epochs count from 1, its schedule spans its own steps, `step` goes on from the
        model's `steps`, and the optimizer's lr is as it was given afterwards. It trains in
        training mode (dropout on) whatever the model's mode, which it leaves as it was."""
        from tqdm import tqdm

        from . import data, training
        if keras:
            v.unexpected("Model.fit", next(iter(keras)), v.KERAS_FIT)
        if y is None:
            raise TypeError("fit needs targets y: " + ("(T, N) class labels or (T, N, O) values, a target per step"
                                                        if self.output == "every" else
                                                        "(N,) class labels or (N, O) values") + " for the N sequences of x")
        y = self._column(y)
        if validation is not None and (not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3)):
            raise TypeError(f"validation must be (x, y) or (x, y, lengths), got {type(validation).__name__}"
                            + (f" of {len(validation)} items" if isinstance(validation, (tuple, list)) else ""))
        if validation_split is not None:
            if validation is not None:
                raise ValueError("give validation=(x, y) or validation_split, not both")
            validation_split = v.finite_float("validation_split", validation_split, gt=0, lt=1)
        progress = v.boolean("progress", progress)
        d = data.Arrays("fit", layout="batch" if self._batch_major else "time", _arrays=(x, y, lengths),
                        output=self.output, tokens=self.vocab_size,
                        validation=None if validation is None else tuple(validation) + (None,) * (3 - len(validation)),
                        holdout=validation_split)
        if validation is None and validation_split is None:
            plateau = getattr(schedule, "kind", schedule) == "plateau"     # as Keras's ReduceLROnPlateau
            for what, given in (("patience (early stopping)", patience is not None),
                                ("schedule 'plateau' (it halves the rate)", plateau)):
                if given:
                    raise ValueError(f"{what} follows the validation loss: pass validation=(x, y) or validation_split")
        self._fits(d)
        epochs = v.positive_int("epochs", epochs)
        run = training.Run(self, d, v.positive_int("batch_size", batch_size), v.rng(seed),
                           epochs=epochs, patience=patience, schedule=schedule, shuffle=v.boolean("shuffle", shuffle))
        run.eval_every = run.batches.per_epoch
        # no bar without a sys.stderr (pythonw, a service, 2>&-): tqdm would raise AttributeError at its first write
        bar = tqdm(total=epochs, disable=not progress or sys.stderr is None, unit="epoch", dynamic_ncols=True)
        mode, self.training = self.training, True       # dropout on, as Keras's fit, even after eval()
        try:
            with self.time_major():                      # the batches and the metrics below are time-major
                while not run.done:
                    run.step(self.train_step)
                    if run.due:
                        row, _ = run.evaluate(0.0)
                        bar.update(1)
                        bar.set_postfix({k: f"{val:.4g}" for k, val in row.items()
                                         if k in ("train_loss", "val_loss")})
        finally:
            bar.close()
            self.training = mode
            self.optimizer.lr = run.schedule.base_lr          # the schedule's last rate is not the next call's
        names = list(dict.fromkeys(k for row in run.history for k in row if k != "seconds"))
        return {("loss" if k == "train_loss" else k): [row.get(k) for row in run.history] for k in names}

    # -- inference --------------------------------------------------------------------------

    @one_call_at_a_time(interruptible=True)
    def predict(self, x, lengths=None, batch_size=None):
        """Predictions (B, O) for output="last" or (T, B, O) for "every" ((B, T, O) with
        batch_first; zero past lengths):
        values for mse, class probabilities for xent. A new array. batch_size: rows per
        forward (None: all B at once); the model's workspace grows to the largest forward it
        has run and stays, so a bound keeps a large B from holding T·B·4H of memory after
        the call. Chunked results agree with whole ones to rounding (a product's blocking
        may follow B)."""
        S = v.positive_int("batch_size", batch_size) if batch_size is not None else None
        try:
            x, L = self._check_x(x, lengths, rows=S)
        except MemoryError as e:            # all B rows in one forward: name the bound that runs them
            if S is not None or not str(e).startswith("the workspace"):     # (a copy of all of x: no bound helps)
                raise
            raise MemoryError(f"{e}: give predict a batch_size, the rows a forward runs (batch_size=256, say)") from None
        T, B = x.shape[:2]
        S = S or B
        P = np.empty((1 if self.output == "last" else T, B, self.output_size), self.dtype)
        for rows, xb, Lb in _row_blocks(S, x, L):
            P[:, rows] = self._forward_head(xb, Lb, inference=True)[0]["P"]
        P = self._predictions(P)
        if self.output == "last":
            return P[0]
        P[np.arange(T)[:, None] >= L[None, :]] = 0
        return np.ascontiguousarray(P.swapaxes(0, 1)) if self._batch_major else P

    @one_call_at_a_time(interruptible=True)
    def step(self, x):
        """Streaming inference: one time step x (B, D) (token ids (B,) with an embedding) for B
        independent streams, with (h, c) kept in the model between calls (a bidirectional
        model cannot stream: ValueError). Returns predictions (B, O) at this step (class
        probabilities for xent). reset_state() starts the streams afresh, and so does a call
        with another B (B fresh streams, as the C ABI's fastlstm_step). A step whose new
        state would not be finite raises NonFiniteError and keeps the state as it was."""
        if self.E is not None:                              # ids (B,) → their embeddings (B, D)
            if not (isinstance(x, np.ndarray) and x.dtype.kind in "iu"):
                raise TypeError(f"this model embeds tokens: x must be an integer ndarray of token ids (B,), one per "
                                f"stream, got {getattr(x, 'dtype', type(x).__name__)}")
            if x.ndim != 1 or x.size == 0:
                raise ValueError(f"x must be token ids of shape (B,) (one per stream), got {x.shape}")
            # one step as _check_x reads x: (B, 1) batch_first, else (1, B)
            ids, _ = self._check_x(x[:, None] if self._batch_major else x[None], None)
            x = self.E[ids[0]]
        B = x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else None
        state = self._state
        if state is None or state[0].shape[1] != B:
            state = self._zero_state(B or 1)                # kept only if the step succeeds
        try:
            top = self.core.advance(x, *state)
        except v.NonFiniteValue:
            # the ids were checked and the state is the model's: only E, written from outside, is left
            outside = None if self.E is None else v.written_outside(self.params)
            if outside is None:
                raise
            raise v.NonFiniteError(f"this step's input would not be finite: {outside}; the state was left as it "
                                   f"was") from None
        if state is not self._state:                        # a fresh one (a write costs Settings.__setattr__)
            self._state = state
        P = np.empty((top.shape[0], self.output_size), self.dtype)
        heads.step_predictions(P, top, self.V, self.bias, self.loss == "xent")
        return P

    def _predictions(self, P):
        """The head's products P (S, B, O) = h Vᵀ become predictions in place: P + bias for
        mse, softmax(P + bias) for xent."""
        if self.loss == "xent":
            heads.softmax(P, self.bias)
        else:
            P += self.bias
        return P

    @one_call_at_a_time
    def reserve(self, T, B):
        """Make the buffers a step of T steps and B rows uses (the layers' workspace, the
        head's), checking first that they fit in memory: a run too big for the machine fails
        here, before it starts, and not at its first step."""
        self._reserve(v.positive_int("T", T), v.positive_int("B", B))

    def _reserve(self, T, B):
        self.core._reserve(T, B, self._head_bytes)    # the workspace and the head checked together
        return self._buffers(T, B)

    @one_call_at_a_time
    def reset_state(self, batch_size=1):
        """Zero the streaming state (h, c) for batch_size streams."""
        self._state = self._zero_state(v.positive_int("batch_size", batch_size))

    def _zero_state(self, B):
        """Streaming state (h, c): (num_states, B, Hr) and (num_states, B, H)."""
        c = self.core
        v.fits_in_memory(f"the streaming state for B = {B}",
                         c.num_states * B * (c.Hr + c.hidden_size) * self.dtype.itemsize)
        return zeros((c.num_states, B, c.Hr), self.dtype), zeros((c.num_states, B, c.hidden_size), self.dtype)

    @one_call_at_a_time(interruptible=True)
    def evaluate(self, x, y, lengths=None, batch_size=256):
        """Mean loss (and accuracy for xent) over a data set, in batches along B.
        Returns {"loss": float[, "accuracy": float]}."""
        batch_size = v.positive_int("batch_size", batch_size)
        x, L = self._check_x(x, lengths, rows=batch_size)
        T, B = x.shape[:2]
        y = self._check_y(self._column(y), T, B, L)
        total = correct = count = 0.0
        for _, xb, Lb, yb in _row_blocks(batch_size, x, L, y):
            buf, _ = self._forward_head(xb, Lb, inference=True)
            loss, right = self._loss(buf, yb, Lb)
            n = len(Lb) if self.output == "last" else int(Lb.sum())
            n *= self.output_size if self.loss == "mse" else 1
            total += loss * n
            count += n
            correct += right or 0
        out = {"loss": total / count}
        if self.loss == "xent":
            out["accuracy"] = correct / (count)
        return out

    # -- checkpoints --------------------------------------------------------------------------

    @one_call_at_a_time(interruptible=True)
    def save(self, path, extra=None):
        """Write weights, optimizer state, configuration and `extra` (a dict, standard JSON: string keys,
        finite numbers only, NumPy scalars taken as their numbers) atomically."""
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
        try:
            header, arrays = self._checkpoint(extra or {})
        except ValueError as e:
            raise ValueError(f"cannot save {os.fsdecode(path)}: {e} (load would refuse the file; no step writes "
                             f"that, so it was written from outside); the file is left as it was") from None
        checkpoint.write(path, header, arrays)

    def _checkpoint(self, extra):
        """(header, arrays) of a checkpoint: what `save` writes and `_restore` rebuilds from,
        its values checked as `_restore` checks them (ValueError)."""
        opt, n = self.optimizer, self.params.shape
        if sorted(opt.state) != sorted(opt.state_names) or any(
                not isinstance(a, np.ndarray) or a.shape != n or a.dtype != self.dtype for a in opt.state.values()):
            raise ValueError(f"the optimizer's state holds other arrays than its {', '.join(opt.state_names)}, each "
                             f"{n} {self.dtype}")
        arrays = {"params": self.params, **{f"optimizer.{k}": opt.state[k] for k in opt.state_names}}
        _check_values(opt, arrays)
        return dict(model=self.config(), optimizer=opt.config(), steps=self.steps,
                    skipped_steps=self.skipped_steps, extra=extra), arrays

    @one_call_at_a_time(interruptible=True)
    def __reduce__(self):
        """pickle and copy.deepcopy: what `save` writes (with `extra`), and the seed, the
        gradients, the training mode and the streaming state. A forward awaiting its backward
        is not carried: the copy's first call starts afresh."""
        header, arrays = self._checkpoint(self.extra)
        return _unpickle, (header, dict(arrays, grads=self.grads), dict(seed=self.seed, training=self.training,
                                                                        state=self._state))


def _row_blocks(size, x, L, *more):
    """(rows, x[:, rows], L[rows], each of `more`'s [:, rows]) for blocks of `size` batch rows,
    as C-contiguous arrays (views where they already are: one block is x itself)."""
    B = x.shape[1]
    for b0 in range(0, B, size):
        rows = slice(b0, min(B, b0 + size))
        yield (rows, np.ascontiguousarray(x[:, rows]), np.ascontiguousarray(L[rows]),
               *(np.ascontiguousarray(a[:, rows]) for a in more))


def _layout(cell, D, H, layers, bidirectional, proj_size, O, vocab_size):
    """(n, Hout, size): the stack's parameter count n, the width Hout the head reads
    ([h_fwd ; h_bwd] when bidirectional, each proj_size or H wide), and the flat array's
    length: the stack, the head's V (O, Hout) and bias (O), and the embedding
    E (vocab_size, D) when there is one."""
    n = CELLS[cell].param_count(D, H, layers, bidirectional, proj_size)
    Hout = (proj_size or H) * (1 + bidirectional)
    return n, Hout, n + O * Hout + O + (vocab_size or 0) * D


_CONFIG_KEYS = {"input_size", "hidden_size", "output_size", "num_layers", "cell", "loss", "output", "dtype",
                "forget_bias", "clip", "on_nonfinite", "bidirectional", "dropout", "dropout_seed", "vocab_size",
                "proj_size", "batch_first"}


def _count(part, key):
    value = part.get(key)
    if type(value) is not int or not 0 <= value < v.MAX_COUNT:
        raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
    return value


def _checkpoint_arrays(header):
    """The arrays a checkpoint header implies, {name: (shape, dtype)}, after checking the
    header's types and ranges; nothing is built or allocated."""
    cfg, opt = header.get("model"), header.get("optimizer")
    for name, part in (("model", cfg), ("optimizer", opt), ("extra", header.get("extra", {}))):
        if not isinstance(part, dict):
            raise TypeError(f"{name} must be a JSON object, got {type(part).__name__}")
    v.unknown("model settings", cfg, _CONFIG_KEYS)
    for part, key in ((header, "steps"), (header, "skipped_steps"), (opt, "t")):
        _count(part, key)
    cell = v.choice("cell", cfg.get("cell", "lstm"), choices.CELLS)
    D, H, O = (v.positive_int(k, cfg.get(k)) for k in ("input_size", "hidden_size", "output_size"))
    bi, vocab = v.boolean("bidirectional", cfg.get("bidirectional", False)), cfg.get("vocab_size")
    v.boolean("batch_first", cfg.get("batch_first", False))
    vocab = None if vocab is None else v.positive_int("vocab_size", vocab)
    proj = v.proj_size(cfg.get("proj_size", 0), H)
    n = _layout(cell, D, H, v.num_layers(cfg.get("num_layers", 1)), bi, proj, O, vocab)[2]
    dtype = cfg.get("dtype", "float32")
    dtype = v.dtype_of(dtype if isinstance(dtype, str) else repr(dtype))   # only a name: never a dtype spec
    states = optim.from_config(opt).state_names
    v.fits_in_memory("the model this checkpoint declares", (2 + len(states)) * n * dtype.itemsize)
    return {"params": ((n,), dtype), **{f"optimizer.{k}": ((n,), dtype) for k in states}}


def load(path):
    """A Model from a checkpoint written by Model.save (or the C ABI), exactly as it was
    saved: weights, optimizer and its state, configuration; `model.extra` holds `extra`.

    Anything wrong with the file (truncated, corrupt, foreign, hostile, a wrong version,
    values out of range) raises CheckpointError, with the file's sizes checked against its
    configuration before anything is built; a missing or unreadable path raises OSError."""
    header, arrays = checkpoint.read(path, _checkpoint_arrays)
    try:
        return _restore(header, arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise checkpoint.CheckpointError(f"{os.fsdecode(path)}: inconsistent fastlstm checkpoint: "
                                         f"{type(e).__name__}: {e}") from e


def _restore(header, arrays):
    """A Model from a checkpoint's header and arrays (Model._checkpoint), its values checked."""
    opt = optim.from_config(header["optimizer"])
    with warnings.catch_warnings():      # said when the model was made; not again at each load, resume, predict
        warnings.filterwarnings("ignore", ONE_LAYER_DROPOUT, UserWarning)
        model = Model(**header["model"], optimizer=opt)
    _check_values(opt, arrays)
    for name, a in [("params", model.params)] + [(f"optimizer.{k}", s) for k, s in opt.state.items()]:
        a[:] = arrays[name]
    opt.t = header["optimizer"]["t"]
    model.steps, model.skipped_steps = header["steps"], header["skipped_steps"]
    model.extra = header.get("extra", {})
    return model


def _check_values(opt, arrays):
    """The values a checkpoint's arrays may hold: finite, and a state `opt`'s rule can
    produce (Adam's v >= 0); else ValueError (load refuses others, and save writes none)."""
    for name in ["params", *(f"optimizer.{k}" for k in opt.state_names)]:
        if not all_finite(arrays[name]):
            raise ValueError(f"{name} holds non-finite values")
    opt.check_state({k: arrays[f"optimizer.{k}"] for k in opt.state_names})


def _unpickle(header, arrays, rest):
    """Model.__reduce__'s inverse: the checkpoint's part, then what only a copy carries."""
    model = _restore(header, arrays)
    model.grads[:] = arrays["grads"]
    model.seed, model.training = rest["seed"], rest["training"]
    if rest["state"] is not None:            # into aligned buffers, as the kernels stream them
        model._state = model._zero_state(rest["state"][0].shape[1])
        for mine, theirs in zip(model._state, rest["state"]):
            mine[...] = theirs
    return model
