"""Recurrent layer stacks (LSTM, GRU and vanilla RNN): flat parameters, a reusable
workspace, validated forward/backward, streaming steps, PyTorch interchange.

The forward, z_t = W [x_t ; h_{t-1}] + b and the cell, runs in one kernel (kernels.py); for
a wide layer (_tiles_from) the input half X W_xᵀ (T·B, G) is one BLAS product first and
the kernel adds b + U h_{t-1}. The backward's cell and δh_{t-1} = Uᵀ δz_t run in one
kernel. Then big products run once per layer (fastlstm's own OpenBLAS, `_blas.py`), all
of a layer's in one parallel region that starts as soon as the kernel ends:
             δW += δZᵀ I,  δb += Σ δZ       (R, D+H)   δW = Σ_t δz_t I_tᵀ
             δX  = δZ W_x                   (T·B, D)   first D entries of δI_t = Wᵀ δz_t
W has R rows and Z has G columns: R = G = 4H for the LSTM (gate blocks a, i, f, o), H for
the RNN; the GRU's R = 3H rows [n ; r ; z] feed G = 4H columns [n̂_x ; r̂ ; ẑ ; ĥn]
(kernels.BLOCKS says which rows meet which part of [x ; h]; each product above runs per run
of blocks).
"""
import _signal
import collections.abc
import functools
import math
import operator
import os
import threading
import time
import warnings
from dataclasses import dataclass

import numba
import numpy as np

from . import _validate as v
from . import _blas, _config
from ._config import blas_turn
from .kernels import (BLOCKS, COPY_PARALLEL, GRU_CELL, LSTM_CELL, RNN_CELL, RNN_RELU_CELL, STEP_AWAKE,
                      STEP_BAD_INPUT, STEP_OVERFLOW, STEP_OVERLAP, TILE_BYTES, add_row_sums, apply_dropout,
                      block_counts, copy_hidden, copy_rows, copy_steps, fill_zero, fingerprint, pack_unit,
                      panel_extent, recurrent_backward, recurrent_forward, recurrent_step, zeros)


@dataclass(frozen=True)
class Layer:
    """Views of one layer into the flat arrays.

    W, dW (R, D+Hr): rows in gate order (a, i, f, o for the LSTM; n, r, z for the GRU);
    columns [x | h] (W_x, U), h being Hr = H wide, or P with a projection. b, db (G,): one
    bias per column of Z. R, dR (Hr, H): the projection W_hr, or None.
    """
    D: int
    H: int
    W: np.ndarray
    b: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    R: np.ndarray = None
    dR: np.ndarray = None


def one_call_at_a_time(method=None, *, interruptible=False):
    """Run `method` under the model's lock: calls on one model from several threads take
    turns. They share its workspace, parameters and saved forward, and the kernels release
    the GIL, so overlapping calls would mix their arithmetic (a Model shares its stack's
    lock, and the lock is re-entrant for the calls a call makes). In a forked child
    (_config.FORKED) it refuses instead, with a way out.

    Ctrl-C is held back until a call that changes the model has ended (_sigint_held), so a
    model is always that of whole calls. Calls that only read it, or that are made of such
    whole calls (fit, evaluate, predict), are `interruptible`: Ctrl-C stops them at once."""
    if method is None:
        return functools.partial(one_call_at_a_time, interruptible=interruptible)

    @functools.wraps(method)
    def in_turn(self, *args, **kwargs):
        if _config.FORKED:
            _config.not_forked()
        with self._lock:
            serial = _config.SERIAL               # Numba's workqueue layer: one call at a time in the process
            if serial is not None:
                serial.acquire()
            try:
                if (interruptible or _holding or not callable(_signal.getsignal(_signal.SIGINT))
                        or threading.current_thread() is not threading.main_thread()):
                    return method(self, *args, **kwargs)
                return _sigint_held(method, self, *args, **kwargs)
            finally:
                if serial is not None:
                    serial.release()
    return in_turn


_holding = False    # a held call is under way (the main thread's; calls it makes need not hold)


def _sigint_held(method, *args, **kwargs):
    """method(*args, **kwargs) with SIGINT's Python handler (KeyboardInterrupt) held back
    until it returns, then run for each SIGINT that came. Why: the kernels release the GIL, and
    Python runs its handler at the first bytecode after one returns; so a Ctrl-C during the
    update kernel raised right after it, before the step was counted (params one step ahead
    of `steps` and Adam's t, for 3 of 30 interrupts of a training loop at H = 256), and one
    during a forward left the dropout masks' counter behind. Only from the main thread (the
    one Python runs handlers in) with a Python handler in place (in_turn): SIG_DFL, SIG_IGN
    or a C program's own handler (the C ABI) are left alone. `_signal`, not `signal`: the
    latter's enum conversions cost 4 µs a call, this 0.4 µs."""
    global _holding
    came = []
    previous = _signal.signal(_signal.SIGINT, lambda signum, frame: came.append(frame))
    _holding = True
    try:
        return method(*args, **kwargs)
    finally:
        _holding = False
        _signal.signal(_signal.SIGINT, previous)
        for frame in came:                  # each: a handler may count them (the CLI's second stops)
            previous(_signal.SIGINT, frame)


def flat(name, copy_in=False):
    """The property `name` of a model: its flat params or grads (copy_in), or a view into
    them (a Model's V, bias, E and their gradients). The layers and the kernels hold views of
    the buffers, and rebinding the name would leave them behind, silently: so assigning
    copies the values in, checked as any input (copy_in), or is refused."""
    slot = "_" + name

    def assign(self, value):
        if value is getattr(self, slot):             # `m.V += d` sets the name to its own array
            return
        if not copy_in:
            raise AttributeError(f"{name} is a view into the model's flat parameters or gradients: assign into "
                                 f"it ({name}[...] = values), not over it")
        with self._lock:
            buf = getattr(self, slot)
            buf[...] = v.array(name, value, buf.shape, buf.dtype)
    return property(operator.attrgetter(slot), assign)


def _unpickle(cls, settings, params, grads, state):
    """_Recurrent.__reduce__'s inverse: the stack made anew, its arrays and counters copied in."""
    with warnings.catch_warnings():              # the original's construction gave any warning
        warnings.simplefilter("ignore")
        stack = cls(**settings)
    for name, mine, theirs in (("params", stack.params, params), ("grads", stack.grads, grads)):
        mine[:] = v.array(name, theirs, mine.shape, mine.dtype, finite=False)
    stack.training, stack.dropout_step = state["training"], state["dropout_step"]
    stack._forgot = "a copy (pickle, copy.deepcopy, astype) does not carry the original's forward"
    return stack


def _view(buf, *shape):
    return buf[:math.prod(shape)].reshape(shape)


def tile_bytes(environ=os.environ, features=None):
    """The recurrent products' tile width in bytes for this CPU: 128 (two 512-bit vectors a
    row) where it has AVX-512, else 64 (two 256-bit vectors). FASTLSTM_TILE_BYTES=64 or 128
    forces one (the tests run both); both give the same bits."""
    forced = environ.get("FASTLSTM_TILE_BYTES")
    if forced:
        if forced not in {str(b) for b in TILE_BYTES}:
            raise ValueError(f"FASTLSTM_TILE_BYTES must be one of {TILE_BYTES}, got {forced!r}")
        return int(forced)
    if features is None:
        from llvmlite import binding
        features = binding.get_host_cpu_features()
    return TILE_BYTES[1] if features.get("avx512f") else TILE_BYTES[0]


def _host_cpu():
    from llvmlite import binding
    return binding.get_host_cpu_name()


TILE = tile_bytes()

# When this process's last streaming step ended (time.perf_counter()). Numba's threads spin
# some tens of µs after a kernel, then sleep (_config.py): a step that comes later than
# STEP_AWAKE after the last one runs on the calling thread alone (kernels.recurrent_step).
_last_step = [-math.inf]


def l1d_bytes(path="/sys/devices/system/cpu/cpu0/cache"):
    """The level-1 data cache of one core in bytes (Linux's sysfs), or 32 KiB where unknown."""
    try:
        for index in sorted(os.listdir(path)):
            info = {}
            for key in ("level", "type", "size"):
                with open(os.path.join(path, index, key)) as f:
                    info[key] = f.read().strip()
            if info["level"] == "1" and info["type"] in ("Data", "Unified"):
                size = info["size"]
                return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
    except (OSError, ValueError, KeyError):
        pass
    return 32 * 1024


def fused_limits(cpu, l1d):
    """(FUSED_PANEL, SPLIT_D) for the CPU LLVM names `cpu` with an L1 data cache of `l1d`
    bytes. From SPLIT_D inputs D_l, or when a packed panel of all D_l + H columns (D_l + Hr
    rows of TILE bytes) exceeds FUSED_PANEL bytes, a layer's forward computes the input half
    X W_xᵀ of z for all steps as one BLAS product before the time loop, and its tiles sum
    only U h_{t-1} (_tiles_from): there BLAS's rate beats the tiles' by more than the extra
    pass over Z costs, and the packed weights shrink from W to U. Otherwise one tile sum
    covers all D+H columns. Most CPUs: the panel in L1, where every row block of a thread
    rereads it each step, and D < 512. AMD Zen 4 ("znver4") runs a 512-bit FMA as two
    256-bit halves, so its tiles read their panel at half the bytes a cycle of a full-width
    AVX-512 core and L2 keeps up: one pass wins up to 256 KiB panels, whatever D
    (docs/performance.md has the figures of each CPU)."""
    if cpu == "znver4":
        return 256 * 1024, math.inf
    return l1d, 512


L1D = l1d_bytes()
FUSED_PANEL, SPLIT_D = fused_limits(_host_cpu(), L1D)


def _tile_width(dtype):
    """TW, the columns of a packed panel: TILE bytes of `dtype` (kernels.pack_panels)."""
    return TILE // np.dtype(dtype).itemsize


def _panels_size(blocks, D, H, Hr, a0, forward, dtype):
    """Elements of a unit's packed panels (kernels.pack_unit): W's over k ≥ a0 (and W_hr's)
    for the forward, U's (and W_hr's) for the backward."""
    TW = _tile_width(dtype)
    return sum(math.prod(panel_extent(q, blocks, D, H, Hr, a0, forward, TW)) * TW for q in range(len(blocks) + 1))


def _runs(blocks, H, part):
    """The cell's blocks with a `part` ("x": those with an input half, for the forward's
    X W_xᵀ and δX; "dW": all), consecutive ones merged where their Z columns and W rows both
    continue (and, for "dW", they read the same part of [x ; h]): [(zc, n, wr, x, h)] in
    columns and rows. One BLAS product per run: the LSTM's and RNN's are single runs; the
    GRU's input half is one run, its δW three."""
    out = []
    for zc, n, wr, x, h in (blk * (H, H, H, 1, 1) for blk in blocks):
        if part == "x" and not x:
            continue
        if out and out[-1][0] + out[-1][1] == zc and out[-1][2] + out[-1][1] == wr and (
                part != "dW" or out[-1][3:] == (x, h)):
            out[-1] = (out[-1][0], out[-1][1] + n, out[-1][2], x, h)
        else:
            out.append((zc, n, wr, x, h))
    return [tuple(int(i) for i in r) for r in out]


def _tiles_from(D, Hr):
    """The first column of W the forward's tiles sum over: 0 (all of [x ; h] in the tiles)
    while a fused panel, D + Hr rows of TILE bytes, is at most FUSED_PANEL bytes and
    D < SPLIT_D; else D (the input half a BLAS product before the time loop, the tiles over
    U's panels of Hr rows). See fused_limits."""
    return D if D >= SPLIT_D or (D + Hr) * TILE > FUSED_PANEL else 0


def dropout_seed_from(seed):
    """The dropout masks' key drawn from `seed` (an int, None or a Generator), so that a
    seeded run repeats its masks."""
    return int(v.rng(seed).integers(1 << 62))


def _nchunks(B, dirs=1):
    """Tasks per direction to split the B rows over (the threads shared by the directions
    that run side by side): any value gives the same bits."""
    return max(1, min(numba.get_num_threads() // dirs, B))


def _alone(kernel, *args):
    """kernel(*args) with Numba's parallel regions as teams of one thread, the caller. For an
    inference forward of one task whose threads sleep (nothing in the call has woken them):
    a region of the whole pool would wake a thread with nothing to do, and the region ends
    only when it has checked in, 100 µs later on the virtual machines measured
    (docs/performance.md, thirty-sixth run). Training keeps the pool's region: there it
    wakes the threads beside the caller's own task, for the products after the backward."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)


def _nbytes(sizes, dtype):
    """The bytes of a workspace's buffers of these sizes ({name: elements, or a list of them})."""
    return sum(sum(n) if isinstance(n, list) else n for n in sizes.values()) * np.dtype(dtype).itemsize


class _Workspace:
    """What backward needs from forward, for a (T, B) capacity; grows, never shrinks.

    Buffers are flat; views of the exact (T, B) are C-contiguous, so the kernels see one
    array layout and the big products can reshape (T, B, ·) to (T·B, ·) without copies.
    """

    def __init__(self, dims, H, Hr, blocks, has_c, carry, dtype, dirs=1, mixes=False):
        self.dims, self.H, self.Hr, self.blocks, self.Hc, self.dtype = dims, H, Hr, blocks, H * has_c, dtype
        self.Hm = H * (Hr < H)                       # m_t's width: H with a projection, else 0
        self.G = block_counts(blocks)[1] * H        # Z's columns
        self.Hd = H * carry                          # the δc carry (the LSTM's), or the GRU's z⊙δh
        self.dirs, self.mixes = dirs, mixes      # mixes: layer inputs go through Xb (bidirectional or dropout)
        self.gemms = np.zeros((5 * dirs, 14), np.int64)  # a layer's backward products (_blas.plan):
        # per direction at most 3 δW runs (the GRU's), δW_hr and δX
        self.cap_tb = self.cap_b = self.nbytes = 0    # nbytes: what the buffers hold now
        self._views, self._views_tb = {}, None       # _cached

    def ensure(self, T, B, also=None):
        """Grow to hold (T, B); True if it grew. All new buffers are made before any is replaced, so a
        failed allocation (MemoryError) leaves the workspace, and the forward it holds, as
        it was. also: as fits's."""
        sizes = self.fits(T, B, also)
        if sizes is None:
            return False
        e = self.dtype
        new = {k: [zeros(m, e) for m in n] if isinstance(n, list) else zeros(n, e) for k, n in sizes.items()}
        self.__dict__.update(new)
        self.nbytes = _nbytes(sizes, e)
        self.cap_tb, self.cap_b = max(T * B, self.cap_tb), max(B, self.cap_b)
        self._views, self._views_tb = {}, None       # views of the old buffers: let them go
        return True

    def fits(self, T, B, also=None):
        """None if the workspace holds (T, B) already; else the sizes of the buffers it would
        grow to, after MemoryError if they would not fit in memory. Nothing is allocated, so
        a caller can ask before it reads a large input (check_input). also(T, B): (what,
        bytes) a composer's buffers (a Model's head) add for the same (T, B), asked only when
        the workspace grows and checked with it: each part may fit where both would not, and
        the OOM killer ends the process at the first touch of what does not."""
        if T * B <= self.cap_tb and B <= self.cap_b:
            return None
        v.product_size(f"T·B = {T} × {B}, the rows of steps a forward runs at once,", T * B,
                       "run fewer rows at once (predict's and evaluate's batch_size) or shorter sequences (carry "
                       "the state from one part to the next)")
        tb, b, H, Hr, G, Hc, e = (max(T * B, self.cap_tb), max(B, self.cap_b), self.H, self.Hr, self.G, self.Hc,
                                  self.dtype)
        blocks, Hm, dirs = self.blocks, self.Hm, self.dirs
        sizes = dict(
            I=[(tb + b) * (D + Hr) for D in self.dims], Z=[tb * G for _ in self.dims],
            C=[(tb + b) * Hc for _ in self.dims], TC=[tb * Hc for _ in self.dims],
            M=[tb * Hm for _ in self.dims],               # m_t = o ⊙ tanh(c_t) with a projection
            dh=b * Hr * dirs, dhs=b * Hr * dirs, dc=b * self.Hd * dirs,     # per direction
            dH=tb * Hr * dirs * (Hm > 0), dm=b * Hm * dirs,    # the projection's, per direction
            zero=H,                                  # δy_t = 0 for the cells: no δY (run_backward), or a projection
            dX=tb * Hr * dirs * (len(self.dims) > dirs),   # δX of layer l = δY of layer l-1
            Xb=tb * Hr * dirs * self.mixes,          # layer l's input in natural time, dropped out
            dYs=tb * Hr * dirs * (dirs > 1),         # each direction's share of δY, in its own time
            dXr=tb * max(self.dims) * (dirs > 1),    # the reverse direction's δX, in its own time
            last=b * Hr * dirs * (dirs > 1),         # [h_fwd at the last step ; h_bwd at step 0]
            P=dirs * max(max(_panels_size(blocks, D, H, Hr, _tiles_from(D, Hr), True, e) for D in self.dims),
                         _panels_size(blocks, 0, H, Hr, 0, False, e)),  # per direction; forward: W or U; backward: U
            dbp=dirs * b * G, dbs=G)                 # δb per row, per direction; their sum
        what, more = also(T, B) if also else ("", 0)
        v.fits_in_memory(f"the workspace{f' and {what}' * bool(more)} for T = {T}, B = {B}", _nbytes(sizes, e) + more)
        return sizes

    def _cached(self, key, T, B, make):
        """The views `make()` gives for (T, B), made once while (T, B) and the buffers stay:
        a step asks for each several times, and making one costs about a microsecond."""
        if self._views_tb != (T, B):
            self._views, self._views_tb = {}, (T, B)
        views = self._views.get(key)
        if views is None:
            views = self._views[key] = make()
        return views

    def panels(self, d=0):
        """Direction d's share of the flat buffer for packed weights (kernels.pack_unit)."""
        n = self.P.size // self.dirs
        return self.P[d * n:(d + 1) * n]

    def carries(self, T, B, d):
        """Direction d's buffers for the backward: δh carry, δh scratch (B, Hr), δc carry
        (B, H), the projection's δh_t (T, B, Hr) and δm scratch (B, H) (width 0 without),
        and δb per row (B, G)."""
        Hr, Hd, Hm, G = self.Hr, self.Hd, self.Hm, self.G
        return self._cached(("carries", d), T, B, lambda: (
            _view(self.dh[d * B * Hr:], B, Hr), _view(self.dhs[d * B * Hr:], B, Hr),
            _view(self.dc[d * B * Hd:], B, Hd), _view(self.dH[d * T * B * Hr:], T, B, Hr * (Hm > 0)),
            _view(self.dm[d * B * Hm:], B, Hm), _view(self.dbp[d * B * G:], B, G)))

    def layer(self, l, T, B):
        """(I, Z, C, TC) of unit l as (T+1,B,D+Hr), (T,B,G), (T+1,B,Hc), (T,B,Hc)."""
        D, Hr, Hc = self.dims[l], self.Hr, self.Hc
        return self._cached(("layer", l), T, B, lambda: (
            _view(self.I[l], T + 1, B, D + Hr), _view(self.Z[l], T, B, self.G),
            _view(self.C[l], T + 1, B, Hc), _view(self.TC[l], T, B, Hc)))

    def m(self, l, T, B):
        """M of unit l, (T,B,H): m_t = o ⊙ tanh(c_t) with a projection (width 0 without)."""
        return self._cached(("m", l), T, B, lambda: _view(self.M[l], T, B, self.Hm))


# The start of PyTorch's warning for dropout on one layer, which _restore and the C ABI filter
ONE_LAYER_DROPOUT = "dropout drops the outputs of every layer but the last"


class _Recurrent(v.Settings):
    """A stack of recurrent layers, time-major: x (T, B, D) → y (T, B, Hr), with h Hr = H wide,
    or P = proj_size with a projection (the LSTM's). With batch_first (PyTorch's) the public
    forward and backward take and give x, y, dy, dx as (B, T, ·), through a transposed copy;
    the kernels, the workspace and a Model's calls stay time-major.

    Parameters live in one flat array `params`, gradients in `grads` (same layout); per
    layer, `layers[k].W` (R, D_k+Hr), `layers[k].b` (G) and `layers[k].R` (Hr, H) (a
    projection's W_hr, or None) are views into them (`m.params = new` copies new in).
    Subclasses set CELL (kernel cell kind; kernels.BLOCKS[CELL] gives R and G), HAS_C (a
    cell state), CARRY (the backward's second carry: the LSTM's δc, the GRU's z⊙δh),
    TORCH_BLOCK (our row block q is PyTorch's block TORCH_BLOCK[q]) and TORCH_BIAS (per
    block of b: PyTorch's block of bias_ih, and of bias_hh, that add up to it; -1 none).
    """
    CELL = HAS_C = CARRY = TORCH_BLOCK = TORCH_BIAS = None
    OWN_SETTINGS = ()           # a subclass's own constructor settings, which __reduce__ carries
    TORCH_TAKES = ("bias", "device")     # PyTorch's arguments taken at fastlstm's value (v.torch_only)
    params, grads = flat("params", copy_in=True), flat("grads", copy_in=True)
    FIXED = dict(dict.fromkeys(("input_size", "hidden_size", "num_layers", "proj_size", "bidirectional",
                                "forget_bias")),
                 dtype="astype(dtype) makes a copy in another dtype", directions="it follows from bidirectional",
                 Hr="h's width follows from proj_size",
                 output_size="y's width follows from hidden_size, proj_size and bidirectional",
                 num_states="hn's rows follow from num_layers and bidirectional")
    # settable as PyTorch's and Keras's layers take them, each checked as the constructor checks it
    CHECKED = dict(batch_first=v.boolean, training=v.boolean, dropout=v.probability, dropout_step=v.count,
                   dropout_seed=functools.partial(v.positive_int, minimum=0, below=v.SEED_END))
    AFTER = dict(dropout="_dropout_set", dropout_seed="_dropout_set")

    @classmethod
    def _counts(cls, H):
        """(R, G): W's rows and Z's columns (b's entries) for H hidden units."""
        rows, cols = block_counts(BLOCKS[cls.CELL])
        return int(rows) * H, int(cols) * H

    def __init__(self, input_size, hidden_size, num_layers, dtype, forget_bias, seed, buffers,
                 bidirectional=False, dropout=0.0, dropout_seed=None, proj_size=0, batch_first=False):
        D = v.positive_int("input_size", input_size)
        H = v.positive_int("hidden_size", hidden_size)
        self._lock = threading.RLock()                # see one_call_at_a_time
        self.proj_size = v.proj_size(proj_size, H)
        self.Hr = Hr = self.proj_size or H            # h's width
        layers = v.num_layers(num_layers)
        self.dtype = v.dtype_of(dtype)
        self.forget_bias = v.finite_float("forget_bias", forget_bias)
        big = float(np.finfo(self.dtype).max)
        if abs(self.forget_bias) > big:                  # would be stored as ±inf
            raise ValueError(f"forget_bias must fit in {self.dtype} (|b| <= {big:.4g}), "
                             f"got {forget_bias!r}")
        self.input_size, self.hidden_size, self.num_layers = D, H, layers
        self.dropout = dropout
        self._warn_one_layer()
        self.bidirectional = v.boolean("bidirectional", bidirectional)
        self.batch_first = v.boolean("batch_first", batch_first)
        self.directions = 1 + bidirectional
        self.output_size = Hr * self.directions      # y's width: [forward ; reverse]
        self.num_states = layers * self.directions    # hn's rows: layer-major, direction-minor (PyTorch's)
        self._dims = [D] * self.directions + [self.output_size] * self.directions * (layers - 1)   # per unit
        v.product_size("a layer's width [x ; h]", max(self._dims) + Hr, "a smaller input_size or hidden_size")
        v.product_size("the gates' width", self._counts(H)[1], "a smaller hidden_size")
        n = self.param_count(D, H, layers, bidirectional, self.proj_size)
        if buffers is None:
            v.fits_in_memory("the parameters and gradients", 2 * n * self.dtype.itemsize)
        self._params, self._grads = buffers or (zeros(n, self.dtype), zeros(n, self.dtype))
        assert self.params.shape == self.grads.shape == (n,) and self.params.dtype == self.dtype
        # units k = l·directions + d: layer l, direction d (1: the reverse one)
        self.layers = [Layer(d, H, W, b, dW, db, R, dR) for d, (W, b, R), (dW, db, dR)
                       in zip(self._dims, self._layer_views(self.params), self._layer_views(self.grads))]
        self.reset_parameters(seed)
        self.dropout_seed = dropout_seed_from(seed) if dropout_seed is None else dropout_seed
        self.dropout_step = 0       # forward()'s masks' step counter (a Model passes its step count instead)
        self.training = True        # forward() drops out in training mode only (train() / eval())
        self._ws = _Workspace(self._dims, H, Hr, BLOCKS[self.CELL], self.HAS_C, self.CARRY, self.dtype,
                              self.directions, self.directions > 1 or self.dropout > 0)
        self._x_runs, self._dW_runs = (_runs(BLOCKS[self.CELL], H, part) for part in ("x", "dW"))   # the BLAS products
        self._saved = None          # (T, B, lengths) of the forward that backward may use
        self._ran_with = None       # fingerprint(params) at a public forward(), for its backward()
        self._forgot = "none has run on this stack"     # why _saved is None, for backward's error
        self._step_scratch = None   # step()'s buffers for one batch size
        self.flow = None            # gradient-flow probe of the last backward(record=True)

    @classmethod
    def param_count(cls, input_size, hidden_size, num_layers=1, bidirectional=False, proj_size=0):
        """Σ_k R (D_k + Hr) + G + Hr·H·[proj]: every unit's W, b (and W_hr) (units: layers ×
        directions; a layer above the first reads the Hr·directions outputs of the one below)."""
        D, H, dirs, P = input_size, hidden_size, 1 + bool(bidirectional), proj_size
        Hr = P or H
        R, G = cls._counts(H)
        unit = lambda d: R * (d + Hr) + G + Hr * H * (P > 0)       # noqa: E731
        return dirs * (unit(D) + (num_layers - 1) * unit(dirs * Hr))

    def _warn_one_layer(self):
        if self.dropout and self.num_layers == 1:            # PyTorch's warning, for PyTorch's reason
            warnings.warn(f"{ONE_LAYER_DROPOUT}, so with num_layers=1 it does nothing (dropout={self.dropout})",
                          UserWarning, stacklevel=v.caller_level())

    def _dropout_set(self, name, old):
        """After dropout or dropout_seed is set anew on a built stack: a forward awaiting its
        backward is let go (its masks were other ones); for dropout, PyTorch's warning for one
        layer, and layer inputs gathered into Xb from the next forward on."""
        ws = getattr(self, "_ws", None)
        if ws is None or getattr(self, name) == old:         # the constructor's own, or no change
            return
        self._forget(f"{name} was set since the last forward()")
        if name == "dropout":
            self._warn_one_layer()
            if self.dropout and not ws.mixes:
                ws.mixes, ws.cap_tb, ws.cap_b = True, 0, 0      # ensure() makes the buffers again, Xb among them

    def train(self, mode=True):
        """Training mode (dropout applies) or, with mode=False, evaluation mode; returns self."""
        self.training = v.boolean("mode", mode)     # "no" is truthy
        return self

    def eval(self):
        return self.train(False)

    def _layer_views(self, flat):
        """[(W (R, D_k+Hr), b (G,), W_hr (Hr, H) or None) for each unit k]: views into a flat
        parameter array, in that order."""
        H, Hr, out, o = self.hidden_size, self.Hr, [], 0
        R, G = self._counts(H)
        for d in self._dims:
            nw, nr = R * (d + Hr), Hr * H * (Hr < H)
            out.append((flat[o:o + nw].reshape(R, d + Hr), flat[o + nw:o + nw + G],
                        flat[o + nw + G:o + nw + G + nr].reshape(Hr, H) if nr else None))
            o += nw + G + nr
        return out

    @one_call_at_a_time
    def reset_parameters(self, seed=None):
        """W and W_hr ~ U(-1/√H, 1/√H) (as PyTorch), b = 0 except the LSTM's forget gate: forget_bias.
        seed: an int, None, or a numpy Generator to draw from."""
        rng = v.rng(seed)
        H, k = self.hidden_size, 1 / np.sqrt(self.hidden_size)
        for layer in self.layers:
            layer.W[:] = rng.uniform(-k, k, layer.W.shape)
            layer.b[:] = 0
            if layer.R is not None:
                layer.R[:] = rng.uniform(-k, k, layer.R.shape)
            if self.HAS_C:
                layer.b[2 * H:3 * H] = self.forget_bias
        self._forget("reset_parameters() replaced the parameters since the last forward()")

    # the constructor's defaults of the settings below; __repr__ shows those that differ
    DEFAULTS = dict(bidirectional=False, dropout=0.0, batch_first=False, forget_bias=1.0, proj_size=0,
                    nonlinearity="tanh")

    def _settings(self):
        """The constructor's settings that rebuild this stack (dropout_seed as drawn)."""
        settings = dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                        bidirectional=self.bidirectional, dropout=self.dropout, dtype=self.dtype.name,
                        dropout_seed=self.dropout_seed, batch_first=self.batch_first)
        settings.update({k: getattr(self, k) for k in self.OWN_SETTINGS})
        return settings

    @one_call_at_a_time(interruptible=True)
    def __reduce__(self):
        """pickle and copy.deepcopy: the settings, parameters, gradients, training mode and
        dropout step. The copy owns its buffers (a Model's stack copies alone), and a forward
        awaiting its backward is not carried: the copy's backward() needs a forward of its own."""
        return _unpickle, (type(self), self._settings(), self.params, self.grads,
                           dict(training=self.training, dropout_step=self.dropout_step))

    @one_call_at_a_time
    def astype(self, dtype):
        """A copy of the stack in `dtype` (float32 or float64; PyTorch's .float() and
        .double()): the parameters cast, the settings, training mode and dropout step kept,
        the gradients zero. Casting to float32 refuses a value beyond float32's range
        (ValueError), and leaves this stack as it is."""
        dtype = v.dtype_of(dtype)
        params = v.cast(dict(params=self.params), dtype)["params"]
        return _unpickle(type(self), dict(self._settings(), dtype=dtype.name), params, np.zeros_like(params),
                         dict(training=self.training, dropout_step=self.dropout_step))

    def __repr__(self):
        """The sizes, every setting that differs from its default (PyTorch's way), dtype and size."""
        settings = self._settings()
        shown = [f"{k}={settings[k]!r}" for k in ("input_size", "hidden_size", "num_layers")]
        shown += [f"{k}={settings[k]!r}" for k in settings if k in self.DEFAULTS and settings[k] != self.DEFAULTS[k]]
        return f"{type(self).__name__}({', '.join(shown)}, dtype={self.dtype}, params={self.params.size})"

    @one_call_at_a_time
    def zero_grad(self):
        fill_zero(self.grads)

    def _forget(self, why):
        """Let go of the forward that awaits its backward (the workspace or the parameters it
        used are no longer what it left), keeping `why` for backward()'s error."""
        self._saved, self._forgot = None, why

    @one_call_at_a_time
    def reserve(self, T, B):
        """Grow the workspace to hold a forward and backward of T steps and B rows now, after
        checking that it fits in memory, instead of at the first call of that size. Growing
        lets go of a forward that waits for its backward."""
        self._reserve(v.positive_int("T", T), v.positive_int("B", B))

    def check_fits(self, T, B, rows=None, also=None):
        """MemoryError if the workspace cannot grow to run (T, B) in chunks of `rows` rows
        (None: all at once; 0: no check here, for a caller that checks its part where the
        failure is shared: a DataParallel rank); nothing is allocated. also(T, S): the
        composer's (what, bytes) that grow with it for chunks of S rows (_Workspace.fits)."""
        if rows != 0:
            self._ws.fits(T, B if rows is None else min(B, rows), also)

    def _reserve(self, T, B, also=None):
        """reserve on checked T, B, under a lock already held (a Model's step); also: as
        check_fits's, checked with the workspace before it grows."""
        if self._ws.ensure(T, B, also):
            self._forget("reserve() regrew the workspace that held the last forward()")

    # -- forward ---------------------------------------------------------------------

    def _check_state(self, name, s, B, width):
        """h0, dhn (num_states, B, Hr); c0, dcn (num_states, B, H): `width` says which."""
        if s is None:
            return None
        return v.array(name, s, (self.num_states, B, width), self.dtype)

    # The interface a composer (Model) builds on: check the input once, run forward and
    # backward on checked arrays into buffers it owns, read the top layer's h, step.

    def check_input(self, x, lengths, batch_first=None, time_major=None, kept=None, rows=None, fits=None, also=None):
        """x (T, B, D) checked (shape, dtype, contiguity, finiteness; T, B ≥ 1) and lengths
        as int64 (B,) in 1..T (all T for None): the one check of a sequence batch. With
        batch_first (the stack's, or the composer's) x comes as (B, T, D) and goes on as its
        time-major copy, made by time_major(x) (the composer's buffer) or a new array. The
        lengths go into kept(B) (the composer's buffer) or a new array. rows: how many of
        x's rows the caller runs at once (a chunk; None: all): the workspace for them must
        fit in memory (MemoryError) before x is scanned, which reads all of a memmap, and so
        must what fits(T, B) checks (the composer's copies), and also(T, S) (check_fits)."""
        bf = self.batch_first if batch_first is None else batch_first
        x = v.array("x", x, (None, None, self.input_size), self.dtype, finite=False)
        if min(x.shape[:2]) < 1:
            raise ValueError(f"x must have at least one step and one batch row, got shape {x.shape}")
        T, B = x.shape[1::-1] if bf else x.shape[:2]
        self.check_fits(T, B, rows, also)
        if fits:
            fits(T, B)
        try:
            v.check_finite("x", x)
            nonfinite = None
        except v.NonFiniteValue as e:
            nonfinite = e
        if nonfinite:              # bad lengths are said first (they tell padding from data), then the
            bad = v.first_nonfinite(x)          # value, and at a padded step what to pad with
            L = v.lengths(lengths, x.shape[1 - int(bf)], x.shape[int(bf)], int(bf))
            raise v.NonFiniteValue(f"{nonfinite}{v.padded_hint(bad[1::-1] if bf else bad, L, 'inputs')}")
        if bf:
            x = (time_major or _transposed)(x)
        T, B = x.shape[:2]
        return x, v.lengths(lengths, B, T, int(bf), kept and kept(B))

    def _swap(self, a):
        """a (T, B, ·) as (B, T, ·), or back, for a batch_first stack; else a itself."""
        return _transposed(a) if self.batch_first else a

    def last_hidden(self):
        """The top layer's h at each row's last real step (B, H) after run_forward: a view
        into the workspace (the frozen state), valid until the next forward. Bidirectional:
        (B, 2H) = [h_fwd at the last real step ; h_bwd at step 0], each direction's final
        state (what PyTorch users build from hn[-2], hn[-1])."""
        T, B = self._saved[:2]
        top = [self._ws.layer(k, T, B)[0][T, :, self.layers[k].D:] for k in self._top()]
        if self.directions == 1:
            return top[0]
        last = _view(self._ws.last, B, self.output_size)
        for d, h in enumerate(top):
            last[:, d * self.Hr:(d + 1) * self.Hr] = h
        return last

    def _top(self):
        return range(self.num_states - self.directions, self.num_states)

    def hidden_into(self, y):
        """Copy the top layer's h_t of the last run_forward into y (T, B, H·directions), zero
        past each row's length; the reverse direction's outputs back in natural time."""
        T, B, L = self._saved[:3]
        H = self.Hr
        for d, k in enumerate(self._top()):
            out = y if self.directions == 1 else y[:, :, d * H:(d + 1) * H]
            copy_hidden(out, self._ws.layer(k, T, B)[0], L, self.layers[k].D, d == 1)

    @one_call_at_a_time
    def _forward_public(self, x, h0, c0, lengths):
        """Validate, run, and return y (T,B,H·directions), hn, cn (num_states,B,H) as new arrays."""
        x, L = self.check_input(x, lengths)
        T, B = x.shape[:2]
        h0 = self._check_state("h0", h0, B, self.Hr)
        c0 = self._check_state("c0", c0, B, self.hidden_size)
        drop = self.training and self.dropout > 0
        if drop:
            v.room("dropout_step", self.dropout_step)
        ran_with = fingerprint(self.params)
        self.run_forward(x, h0, c0, L, self.dropout_step if drop else None)
        self._ran_with = ran_with
        self.dropout_step += drop                    # each training forward draws fresh masks
        y = np.empty((T, B, self.output_size), self.dtype)
        hn = np.empty((self.num_states, B, self.Hr), self.dtype)
        cn = np.empty((self.num_states, B, self.hidden_size), self.dtype)
        self._outputs(y, hn, cn)
        return self._swap(y), hn, cn

    def run_forward(self, x, h0, c0, L, step=None, row0=0, inference=False):
        """Forward on checked inputs, leaving everything backward needs in the workspace.
        step: None (no dropout), or the step whose dropout masks drop the inputs of every
        layer above the first (the backward applies the same); row0: the batch row that x's
        first row is (a data-parallel shard's), which keys the masks with the step.
        inference: no backward follows (Model.predict, evaluate), so a small layer (one
        direction, B ≤ 4, W and x below COPY_PARALLEL elements) whose threads are asleep runs
        as one task in a team of one (_alone): splitting its rows saves less than a wake-up."""
        T, B = x.shape[:2]
        self._ws.ensure(T, B)
        self._forget("the last forward() did not finish")
        self._ran_with = None                   # a Model's forward and backward are one call
        X, dirs = x, self.directions
        for l in range(self.num_layers):
            if l > 0:
                X = self._layer_input(l, T, B, L, step, row0)
            units = [self._unit_input(l * dirs + d, X, h0, c0, L, T, B, d == 1) for d in range(dirs)]
            D, H, a0 = self._dims[l * dirs], self.hidden_size, units[0][-1]     # (I's width says Hr)
            packed = units[0][5]                 # P of _unit_input's (Z, C, TC, I, M, P, b, a0)
            # below COPY_PARALLEL this thread alone packed W and copied and checked x: the others still sleep
            alone = inference and dirs == 1 and B <= 4 and packed.size < COPY_PARALLEL and X.size < COPY_PARALLEL
            nc = 1 if alone else _nchunks(B, dirs)
            args = (*units[0][:-1], *units[-1][:-1], L, D, H, a0, nc, dirs, self.CELL, BLOCKS[self.CELL],
                    _tile_width(self.dtype))
            if alone:
                _alone(recurrent_forward, *args)
            else:
                recurrent_forward(*args)
        self._saved = (T, B, L, step, row0)

    def _layer_input(self, l, T, B, L, step, row0):
        """Layer l's input (T, B, H·directions) in natural time: the outputs of layer l-1, a
        view when nothing mixes them, else gathered into Xb and dropped out."""
        below = [(self._ws.layer(k, T, B)[0], self.layers[k].D) for k in range((l - 1) * self.directions,
                                                                            l * self.directions)]
        if not self._ws.mixes:
            I, D = below[0]
            return I[1:, :, D:]
        Xb, H = _view(self._ws.Xb, T, B, self.output_size), self.Hr
        for d, (I, D) in enumerate(below):
            copy_hidden(Xb[:, :, d * H:(d + 1) * H] if self.directions > 1 else Xb, I, L, D, d == 1)
        if step is not None:
            apply_dropout(Xb, self.dropout_seed, step, l - 1, self.dropout, row0)
        return Xb

    def _unit_input(self, k, x, h0, c0, L, T, B, reverse):
        """Unit k's buffers made ready for recurrent_forward over x (T,B,D_k), given in natural
        time: (Z, C, TC, I, M, P, b, a0). The reverse direction reads each row's steps backwards
        (its own L, PyTorch's packed sequences), so padding never enters."""
        layer, H = self.layers[k], self.hidden_size
        D = layer.D
        I, Z, C, TC = self._ws.layer(k, T, B)
        if reverse:
            copy_steps(I[:T, :, :D], x, L, True, False, 0, 0)
        elif x.flags.c_contiguous:          # the first layer's x (or a gathered Xb): on the threads
            copy_rows(I[:T], x)
        else:                               # the layer below's h, a view: NumPy's copy is as fast
            I[:T, :, :D] = x
        I[0, :, D:] = 0 if h0 is None else h0[k]
        if self.HAS_C:
            C[0] = 0 if c0 is None else c0[k]
        a0, G, blocks = _tiles_from(D, self.Hr), self._ws.G, BLOCKS[self.CELL]
        if a0:                                                     # Z = X W_xᵀ, all steps at once
            with blas_turn():
                for zc, n, wr, *_ in self._x_runs:
                    _blas.matmul(I[:T, :, :D].reshape(T * B, D), layer.W[wr:wr + n, :D].T,
                                 Z.reshape(T * B, G)[:, zc:zc + n])
        P = self._ws.panels(k % self.directions)
        pack_unit(P, layer.W, self._R(layer), blocks, D, H, self.Hr, a0, True, _tile_width(self.dtype))
        return Z, C, TC, I, self._ws.m(k, T, B), P, layer.b, a0

    def _R(self, layer):
        """The unit's projection W_hr for the kernels: (Hr, H), or an empty array without one."""
        return layer.R if layer.R is not None else layer.W[:0]

    def _outputs(self, y, hn, cn):
        """Copy the last forward's y (T,B,Hr·directions), hn (num_states,B,Hr), cn (num_states,B,H)
        into the given arrays."""
        T, B = self._saved[:2]
        for k in range(self.num_states):
            I, _, C, _ = self._ws.layer(k, T, B)
            hn[k] = I[T, :, self.layers[k].D:]
            cn[k] = C[T] if self.HAS_C else 0
        self.hidden_into(y)

    def advance(self, x, h, c):
        """One streaming step of every layer: x (B, D) checked here, the state h (num_layers,
        B, Hr) (and c (num_layers, B, H) for the LSTM; ignored otherwise) updated in place.
        Returns h[-1]. Under the model's lock, taken here rather than by one_call_at_a_time,
        whose call through *args costs as much again (0.3 µs of a 20 µs step)."""
        if _config.FORKED:
            _config.not_forked()
        with self._lock:
            return self._advance(x, h, c)

    def _advance(self, x, h, c):
        if self.bidirectional:
            raise ValueError("a bidirectional stack cannot stream: its reverse direction needs each whole "
                             "sequence first (use forward, or predict, on whole sequences)")
        x = v.array("x", x, (None, self.input_size), self.dtype, finite=False)
        B = x.shape[0]
        if B < 1:
            raise ValueError("x must have at least one batch row")
        H, Hr = self.hidden_size, self.Hr
        h = v.array("h", h, (self.num_layers, B, Hr), self.dtype, writable=True, finite=False)
        if self.HAS_C:
            c = v.array("c", c, (self.num_layers, B, H), self.dtype, writable=True, finite=False)
        state = (("x", x), ("h", h), ("c", c)) if self.HAS_C else (("x", x), ("h", h))
        if self._step_scratch is None or self._step_scratch[0].shape[0] != B:
            self._step_scratch = (zeros((B, max(self.input_size, Hr) + Hr), self.dtype),
                                  zeros((B, self._ws.G), self.dtype), zeros((2, H), self.dtype),
                                  zeros((B, self._ws.Hm), self.dtype),
                                  zeros(self.num_layers * B * (Hr + H * self.HAS_C), self.dtype))
        c = c if self.HAS_C else h[:, :, :0]
        awake = time.perf_counter() - _last_step[0] < STEP_AWAKE        # a stream fed in real time: serial
        verdict = recurrent_step(h, c, x, *self._step_scratch, self.params, self.input_size, H, self.CELL,
                                 BLOCKS[self.CELL], awake)
        _last_step[0] = time.perf_counter()
        if verdict == STEP_OVERLAP:                  # the kernel wrote nothing
            if np.may_share_memory(h, c):
                raise ValueError("h and c must be separate arrays; they overlap in memory")
            name = "h" if np.may_share_memory(h, self.params) else "c"
            raise ValueError(f"{name} overlaps the stack's params, and step() writes the state in place: give "
                             f"{name} an array of its own ({name}.copy())")
        if verdict == STEP_BAD_INPUT:
            for name, a in state:                    # the kernel found NaN/Inf and wrote nothing
                v.nonfinite(name, a)
        elif verdict == STEP_OVERFLOW:
            cause = v.written_outside(self.params) or ("inputs or weights this large overflow the cell (a ReLU "
                                                       "RNN's h grows without bound)")
            raise v.NonFiniteError(f"this step's new state would not be finite in {self.dtype}: {cause}; the state "
                                   f"was left as it was")
        return h[-1]

    # -- backward --------------------------------------------------------------------

    @one_call_at_a_time
    def _backward_public(self, dy, dhn, dcn, record):
        record = v.boolean("record", record)
        if self._saved is None:
            raise RuntimeError(f"backward() needs a forward() first: {self._forgot}")
        if self._ran_with is not None and fingerprint(self.params) != self._ran_with:
            raise RuntimeError("backward() needs the parameters its forward() ran with, and params have changed "
                               "since that forward() (written into, directly or through a view such as "
                               "layers[k].W): update them after backward(), as the optimizers do, or run forward() "
                               "again")
        T, B = self._saved[:2]
        dy = self._swap(v.array("dy", dy, (B, T, self.output_size) if self.batch_first else (T, B, self.output_size),
                                self.dtype))
        dhn = self._check_state("dhn", dhn, B, self.Hr)
        dcn = self._check_state("dcn", dcn, B, self.hidden_size)
        for name, a in (("dy", dy), ("dhn", dhn), ("dcn", dcn)):
            if a is not None and np.may_share_memory(a, self.grads):
                raise ValueError(f"{name} overlaps the stack's grads, which backward() adds into while it reads "
                                 f"{name}: pass a copy ({name}.copy())")
        dx = np.empty((T, B, self.input_size), self.dtype)
        dh0 = np.empty((self.num_states, B, self.Hr), self.dtype)
        dc0 = np.empty((self.num_states, B, self.hidden_size), self.dtype)
        self.run_backward(dy, dhn, dcn, dx, dh0, dc0, record)
        return self._swap(dx), dh0, dc0

    def run_backward(self, dy, dhn, dcn, dx, dh0, dc0, record=False):
        """Backward of the last run_forward on checked inputs into the given outputs
        (dx may be None); parameter gradients accumulate into grads. dy (T,B,Hr·directions),
        or (0,B,·): none, the gradient entering through dhn alone (a head on the last step)."""
        T, B, L, step, row0 = self._saved
        self._forget("the last forward()'s backward() has run, and each forward() supports one")
        ws, H, Hr, G, dirs, blocks = self._ws, self.hidden_size, self.Hr, self._ws.G, self.directions, BLOCKS[self.CELL]
        TW = _tile_width(self.dtype)
        probes = [np.zeros((T, B, 2) if record else (0, 0, 2)) for _ in range(dirs)]
        self.flow = self._forget_means(T, B, L) if record else None
        dY = dy
        with blas_turn():
            for l in range(self.num_layers - 1, -1, -1):
                D = self._dims[l * dirs]
                dX = _view(ws.dX, T, B, D) if l > 0 else dx                 # δ of layer l's input
                dYd = [dY] * dirs
                if dirs > 1 and len(dY):   # each direction's share, in its own time, before dX (dY's buffer) is written
                    dYd = [_view(ws.dYs[d * T * B * Hr:], T, B, Hr) for d in range(dirs)]
                    for d in range(dirs):
                        copy_steps(dYd[d], dY, L, d == 1, False, 0, d * Hr)
                args, products = [], []
                for d in range(dirs):
                    k = l * dirs + d
                    layer = self.layers[k]
                    I, Z, C, TC = ws.layer(k, T, B)
                    dh, dhs, dc, dH, dm, dbp = ws.carries(T, B, d)
                    dh[:] = 0 if dhn is None else dhn[k]
                    dc[:] = 0 if dcn is None or not self.HAS_C else dcn[k]
                    P = ws.panels(d)                     # U's (and W_hr's), for δh_{t-1} = Uᵀ δz_t
                    pack_unit(P, layer.W, self._R(layer), blocks, D, H, Hr, 0, False, TW)
                    args.append((Z, dh, dc, dhs, probes[d], dYd[d], C, TC, I, P, dH, dm, dbp))
                    Z2, I2 = Z.reshape(T * B, G), I[:T].reshape(T * B, D + Hr)
                    for zc, n, wr, x, h in self._dW_runs:                    # δW += Σ_t δz_t I_tᵀ
                        lo, hi = (0 if x else D), (D + Hr if h else D)
                        products.append((Z2[:, zc:zc + n].T, I2[:, lo:hi], layer.dW[wr:wr + n, lo:hi], True))
                    if layer.R is not None:                                     # δW_hr += Σ_t δh_t m_tᵀ
                        products.append((dH.reshape(T * B, Hr).T, ws.m(k, T, B).reshape(T * B, H), layer.dR, True))
                    if dX is not None:           # δx_t: first D of Wᵀδz_t (the reverse's in its own time)
                        (zc, n, wr, *_), = self._x_runs                          # the input half: one run
                        out = dX if d == 0 else _view(ws.dXr, T, B, D)
                        products.append((Z2[:, zc:zc + n], layer.W[wr:wr + n, :D], out.reshape(T * B, D), False))
                products = _blas.plan(products, ws.gemms)   # made now, run as soon as the kernel ends
                recurrent_backward(*args[0], *args[-1], ws.zero, L, _nchunks(B, dirs), dirs, self.CELL, blocks, TW)
                _blas.run(products)
                for d, (_, dh, dc, *_, dbp) in enumerate(args):
                    k = l * dirs + d
                    add_row_sums(self.layers[k].db, dbp, ws.dbs)   # δb = Σ_t δz_t, the rows' sums in order
                    if dX is not None and d == 1:                               # back to natural time, added
                        copy_steps(dX, _view(ws.dXr, T, B, D), L, True, True, 0, 0)
                    dh0[k] = dh
                    dc0[k] = dc if self.HAS_C else 0
                    if record:
                        self.flow["dh"][k], self.flow["dc"][k] = np.sqrt(probes[d].sum(axis=1)).T
                if l > 0 and step is not None:
                    apply_dropout(dX, self.dropout_seed, step, l - 1, self.dropout, row0)   # the forward's mask
                dY = dX

    def _forget_means(self, T, B, L):
        """The probe's record, begun before backward overwrites the gates: per layer and step,
        the mean forget gate over the rows inside their length (NaN for the RNN)."""
        layers, H = self.num_states, self.hidden_size
        f = np.full((layers, T), np.nan)
        if self.CARRY:                             # the LSTM's f and the GRU's z: both Z's block 2
            live = np.arange(T)[:, None] < L[None, :]                      # (T, B)
            for l in range(layers):
                gates = self._ws.layer(l, T, B)[1][:, :, 2 * H:3 * H].mean(axis=2)
                f[l] = np.where(live, gates, 0).sum(axis=1) / np.maximum(live.sum(axis=1), 1)
        return {"dh": np.zeros((layers, T)), "dc": np.zeros((layers, T)), "forget": f}

    # -- PyTorch interchange ---------------------------------------------------------

    def _torch_names(self):
        """(unit k, PyTorch's suffix) for every unit: l{layer}, and _reverse for direction 1."""
        return [(k, f"_l{k // self.directions}" + ("_reverse" if k % self.directions else ""))
                for k in range(self.num_states)]

    def _cell_keys(self):
        """Whether torch.nn.LSTMCell's / GRUCell's / RNNCell's names (weight_ih, ..., without
        _l0) can stand for this stack's: one layer, one direction, no projection."""
        return self.num_states == 1 and not self.proj_size

    @one_call_at_a_time(interruptible=True)
    def torch_state_dict(self, cell=False):
        """Parameters under torch.nn.LSTM's / GRU's / RNN's names (NumPy arrays, in PyTorch's
        gate order: i, f, g, o for the LSTM, r, z, n for the GRU; the reverse direction's as
        `..._reverse`). Each block of b goes to bias_ih where PyTorch has one there, else to
        bias_hh (the GRU's b_hn); the other is zero (PyTorch adds the two). A projection's
        W_hr is `weight_hr_l{k}`. Load into torch with {k: torch.from_numpy(v) for k, v in
        sd.items()}. cell=True: under torch.nn.LSTMCell's / GRUCell's / RNNCell's names
        (weight_ih, weight_hh, bias_ih, bias_hh), for a one-layer unidirectional stack
        without projection."""
        if v.boolean("cell", cell) and not self._cell_keys():
            raise ValueError(f"torch's cell modules hold one layer of one direction without projection; this is "
                             f"{self!r}")
        H, Hr, sd = self.hidden_size, self.Hr, {}
        R = self._counts(H)[0]
        inv = np.argsort(self.TORCH_BLOCK)
        for k, suffix in self._torch_names():
            layer = self.layers[k]
            W = layer.W.reshape(-1, H, layer.D + Hr)[inv].reshape(R, layer.D + Hr)
            sd[f"weight_ih{suffix}"] = W[:, :layer.D].copy()
            sd[f"weight_hh{suffix}"] = W[:, layer.D:].copy()
            bias = {"ih": np.zeros((R // H, H), self.dtype), "hh": np.zeros((R // H, H), self.dtype)}
            for q, (ih, hh) in enumerate(self.TORCH_BIAS):
                bias["ih" if ih >= 0 else "hh"][max(ih, hh)] = layer.b[q * H:(q + 1) * H]
            sd[f"bias_ih{suffix}"], sd[f"bias_hh{suffix}"] = bias["ih"].reshape(R), bias["hh"].reshape(R)
            if layer.R is not None:
                sd[f"weight_hr{suffix}"] = layer.R.copy()
        return {k[:-3]: a for k, a in sd.items()} if cell else sd          # weight_ih_l0 -> weight_ih

    @one_call_at_a_time
    def load_torch_state_dict(self, state_dict):
        """Take parameters from a PyTorch state dict (tensors or arrays) of the same
        architecture, or from the torch module itself, whose settings the weights do not
        show are then checked too (nn.RNN's nonlinearity, batch_first). A one-layer
        unidirectional stack without projection also takes torch.nn.LSTMCell's / GRUCell's
        / RNNCell's (keys without _l0). Every key, shape and value is checked before anything
        is written."""
        H, Hr = self.hidden_size, self.Hr
        R = self._counts(H)[0]
        if callable(getattr(state_dict, "state_dict", None)):        # a torch.nn module
            module = state_dict
            for name, default in (("nonlinearity", "tanh"), ("batch_first", False)):
                mine = getattr(self, name, default)
                theirs = getattr(module, name, mine)          # a cell module has no time axis: no batch_first
                if theirs != mine:
                    raise ValueError(f"this {type(module).__name__} has {name}={theirs!r} and this "
                                     f"fastlstm.{type(self).__name__} {mine!r}: make it with {name}={theirs!r}")
            state_dict = module.state_dict()
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"a state dict maps names to tensors (torch_module.state_dict()), got "
                            f"{type(state_dict).__name__}")
        names = self._torch_names()
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") + (("weight_hr",) if self.proj_size else ())
        want, got = {f"{n}{suffix}" for _, suffix in names for n in kinds}, set(state_dict)
        cell_names = bool(got & set(kinds)) and not got & want           # a cell module's names, without _l0
        cell = self._cell_keys() and cell_names
        if cell:
            want = set(kinds)
        if got != want:
            proj = f" with proj_size={self.proj_size}" if self.proj_size else " without projections" * self.HAS_C
            missing = sorted(want - got)
            why = ("; fastlstm's layers always have their biases (a module made with bias=False has none: "
                   "give zeros for them)" if missing and all(k.startswith("bias_") for k in missing)
                   else "; torch's cell modules' names (without _l0) fit only a one-layer unidirectional stack "
                   "without projection" if cell_names and not cell else "")
            raise KeyError(f"state dict keys do not match a {self.num_layers}-layer "
                           f"{'bidirectional ' if self.bidirectional else ''}{type(self).__name__}{proj}"
                           f"{' (torch cell module names)' if cell else ''}: missing {missing}, "
                           f"unexpected {sorted(got - want, key=repr)}{why}")
        ih, hh = (tuple(getattr(state_dict[n if cell else n + names[0][1]], "shape", ()))
                  for n in ("weight_ih", "weight_hh"))
        matrices = len(ih) == len(hh) == 2          # else _as_array below says what shape it wants
        owner = ({H: "an RNN", 3 * H: "a GRU", 4 * H: "an LSTM"}.get(ih[0])
                 if matrices and ih[0] != R and hh[1] == H else None)
        if owner:                         # another cell's weights, of this hidden size: said as such
            raise ValueError(f"weight_ih has {ih[0]} rows, {ih[0] // H} × hidden_size {H}: {owner}'s weights, and "
                             f"this is {'a' if self.CELL == GRU_CELL else 'an'} {type(self).__name__} ({R} rows); "
                             f"load them into fastlstm.{owner.split()[-1]}")
        new = self.params.copy()
        views = self._layer_views(new)
        for k, suffix in names:
            Wk, bk, Rk = views[k]
            D = self.layers[k].D
            a = {n: _as_array(state_dict, n if cell else f"{n}{suffix}", shape)       # a cell's: without _l0
                 for n, shape in (("weight_ih", (R, D)), ("weight_hh", (R, Hr)), ("bias_ih", (R,)), ("bias_hh", (R,)),
                                  ("weight_hr", (Hr, H))) if n in kinds}
            W = np.concatenate([a["weight_ih"], a["weight_hh"]], axis=1)
            Wk[:] = W.reshape(-1, H, D + Hr)[self.TORCH_BLOCK].reshape(R, D + Hr)
            if Rk is not None:
                Rk[:] = a["weight_hr"]
            ih, hh = a["bias_ih"].reshape(-1, H), a["bias_hh"].reshape(-1, H)
            for q, (i, j) in enumerate(self.TORCH_BIAS):
                bk[q * H:(q + 1) * H] = (ih[i] if i >= 0 else 0) + (hh[j] if j >= 0 else 0)
        self.params[:] = new
        self._forget("load_torch_state_dict() replaced the parameters since the last forward()")


def _transposed(a):
    """a (T, B, ·) as a new C-contiguous (B, T, ·), or back."""
    return np.ascontiguousarray(a.swapaxes(0, 1))


def _pair(h_name, h, c_name, c):
    """(h, c) from h and c, or from h = (h, c), a pair as PyTorch passes an LSTM's state."""
    if not isinstance(h, tuple):
        return h, c
    if len(h) != 2 or c is not None:
        raise TypeError(f"give the state as {h_name}=({h_name}, {c_name}), a pair, or as {h_name} and {c_name}; got "
                        + (f"a pair and {c_name} too (lengths goes by keyword: lengths=...)" if c is not None
                           else f"a tuple of {len(h)}"))
    return h


def _as_array(sd, key, shape):
    t = sd[key]
    if hasattr(t, "detach"):                      # a torch tensor, without importing torch
        t = t.detach().cpu()
        t = (t.double() if t.is_floating_point() else t).numpy()   # bfloat16 has no NumPy dtype; widening is exact
    a = np.asarray(t)
    if a.shape != shape:
        raise ValueError(f"{key} must have shape {shape}, got {a.shape}")
    if a.dtype.kind != "f" or not np.isfinite(a).all():
        raise ValueError(f"{key} must hold finite floating-point values")
    return a.astype(np.float64)


class LSTM(_Recurrent):
    """A stack of LSTM layers, like torch.nn.LSTM (time-major, or batch_first; projections with proj_size).

    layers[k].W (4H, D_k+Hr) has rows in gate order a, i, f, o (a = PyTorch's g) and
    columns [x | h]; layers[k].b (4H,); layers[k].R (P, H) the projection W_hr or None.
    h is Hr = H wide, or P = proj_size; c is H wide.
    """
    CELL, HAS_C, CARRY, TORCH_BLOCK = LSTM_CELL, True, True, np.array([2, 0, 1, 3])
    TORCH_BIAS = ((2, 2), (0, 0), (1, 1), (3, 3))
    OWN_SETTINGS = ("forget_bias", "proj_size")

    def __init__(self, input_size, hidden_size, num_layers=1, *, bidirectional=False, dropout=0.0,
                 proj_size=0, batch_first=False, dtype=np.float32, forget_bias=1.0, seed=None, dropout_seed=None,
                 buffers=None, **torch_only):
        """bidirectional: a reverse direction beside each layer (PyTorch's semantics and
        layouts). dropout: p in [0, 1), on the outputs of every layer but the last, in
        training mode. proj_size: P in 1..H-1 for projections (LSTMP, PyTorch's proj_size):
        h_t = W_hr (o_t ⊙ tanh c_t) is P wide, the recurrence and the outputs use it; 0 for
        none. buffers: optional (params, grads) flat arrays of size `param_count(...)` for
        the stack to live in (a Model puts the layers and its head in one flat array).
        batch_first: x, y, dy and dx are (B, T, ·) (PyTorch's batch_first; the states stay
        (num_layers, B, ·)). PyTorch's bias=True and device="cpu" are taken (fastlstm's
        way); other values are refused with why."""
        v.torch_only(type(self).__name__, torch_only, self.TORCH_TAKES)
        super().__init__(input_size, hidden_size, num_layers, dtype, forget_bias, seed, buffers,
                         bidirectional, dropout, dropout_seed, proj_size, batch_first)

    def forward(self, x, h0=None, c0=None, lengths=None):
        """Run the stack over a sequence batch.

        x (T, B, D) (B, T, D with batch_first); h0 (num_layers, B, Hr), c0 (num_layers, B, H)
        or None for zeros; lengths (B,) integers in 1..T or None (all T). Past its length a
        row's outputs are zero and its state is frozen, so hn, cn are the states at its last
        real step (PyTorch's packed sequences). Returns y (T, B, Hr) ((B, T, Hr) with
        batch_first), (hn (num_layers, B, Hr), cn (num_layers, B, H)), as new arrays (with
        num_layers·2 and 2Hr when bidirectional).
        The state may come as one pair, h0 = (h0, c0), as PyTorch takes it and as forward
        returns it: `y2, state = lstm.forward(x2, state)` carries it on.
        """
        h0, c0 = _pair("h0", h0, "c0", c0)
        y, hn, cn = self._forward_public(x, h0, c0, lengths)
        return y, (hn, cn)

    def backward(self, dy, dhn=None, dcn=None, record=False):
        """Gradients of the last forward; parameter gradients accumulate into `grads`.

        dy (T, B, Hr) the loss's gradient w.r.t. y (laid out as y); dhn, dcn as hn, cn, or None.
        Returns dx (T, B, D) (laid out as x), (dh0, dc0) shaped as h0, c0, as new arrays.
        Each forward supports one backward (backward overwrites the saved gates with δz).
        record=True fills `flow` with the gradient-flow probe: per layer and step t,
        flow["dh"][l, t] = ‖∂E/∂h_{t-1}‖ and flow["dc"][l, t] = ‖∂E/∂c_{t-1}‖ (norms over
        the batch of the gradient w.r.t. the state that step t received), and
        flow["forget"][l, t] the mean forget gate at step t. dhn may be the pair (dhn, dcn).
        """
        dhn, dcn = _pair("dhn", dhn, "dcn", dcn)
        dx, dh0, dc0 = self._backward_public(dy, dhn, dcn, record)
        return dx, (dh0, dc0)

    def step(self, x, h, c=None):
        """Streaming inference: advance the state (h, c) by one time step x (B, D), in place
        (h may be the pair (h, c)).

        h (num_layers, B, Hr), c (num_layers, B, H) writable; returns h[-1], the top layer's
        output (B, Hr), a view.
        One kernel call for all layers (no workspace; threads only where the layer is big
        enough to pay for waking them): the fast path for online inference. Does not touch
        what backward() would use. A step whose new state would not be finite raises
        NonFiniteError, the state left as it was.
        """
        return self.advance(x, *_pair("h", h, "c", c))


NONLINEARITIES = ("tanh", "relu")      # torch.nn.RNN's


class _HiddenOnly(_Recurrent):
    """The interface of the cells whose state is h alone (RNN, GRU)."""

    def __init__(self, input_size, hidden_size, num_layers=1, *, bidirectional=False, dropout=0.0,
                 batch_first=False, dtype=np.float32, seed=None, dropout_seed=None, buffers=None, proj_size=0,
                 **torch_only):
        v.torch_only(type(self).__name__, torch_only, self.TORCH_TAKES)
        v.no_projection(type(self).__name__, proj_size)
        super().__init__(input_size, hidden_size, num_layers, dtype, 0.0, seed, buffers, bidirectional,
                         dropout, dropout_seed, batch_first=batch_first)

    def _alone(self, name, h):
        """h, refused as a pair (h, c): an LSTM's state, which this cell has no c for."""
        if isinstance(h, tuple):
            raise TypeError(f"fastlstm.{type(self).__name__}'s state is h alone (no cell state c): give {name} "
                            f"(num_layers, B, H), not a pair")
        return h

    def forward(self, x, h0=None, lengths=None):
        """x (T, B, D) (B, T, D with batch_first), h0 (num_layers, B, H) or None, lengths as
        for LSTM. Returns y (T, B, H) (laid out as x), hn (num_layers, B, H)."""
        y, hn, _ = self._forward_public(x, self._alone("h0", h0), None, lengths)
        return y, hn

    def backward(self, dy, dhn=None, record=False):
        """dy laid out as y. Returns dx (laid out as x), dh0 (num_layers, B, H); grads
        accumulate. record as for LSTM (an RNN: flow["dc"] stays zero and flow["forget"] NaN;
        a GRU: flow["dc"] is the norm
        of z⊙δh, the share of ∂E/∂h_{t-1} that the identity path carries, and
        flow["forget"] the mean update gate z, the share of h_{t-1} kept)."""
        dx, dh0, _ = self._backward_public(dy, self._alone("dhn", dhn), None, record)
        return dx, dh0

    def step(self, x, h):
        """Streaming inference: advance h (num_layers, B, H) by one step x (B, D), in place
        (as LSTM.step: a step that would overflow h raises NonFiniteError, h as it was)."""
        return self.advance(x, self._alone("h", h), None)


class RNN(_HiddenOnly):
    """A stack of vanilla RNN layers, like torch.nn.RNN: h_t = tanh(W [x_t; h_{t-1}] + b), or
    with nonlinearity="relu" h_t = max(W [x_t; h_{t-1}] + b, 0).

    The same buffers, kernels and checks as LSTM, with G = H and no cell state: here the
    gradient is multiplied by Uᵀ diag(1 - h²) (ReLU: Uᵀ diag([h > 0])) at every step back in
    time.
    """
    CELL, HAS_C, CARRY, TORCH_BLOCK, TORCH_BIAS = RNN_CELL, False, False, np.array([0]), ((0, 0),)
    OWN_SETTINGS = ("nonlinearity",)
    FIXED = dict(_HiddenOnly.FIXED, nonlinearity=None)

    def __init__(self, input_size, hidden_size, num_layers=1, *, nonlinearity="tanh", **settings):
        """nonlinearity: "tanh" (the default) or "relu", as torch.nn.RNN's; the rest as GRU's."""
        self.nonlinearity = v.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        self.CELL = RNN_RELU_CELL if nonlinearity == "relu" else RNN_CELL
        super().__init__(input_size, hidden_size, num_layers, **settings)


class GRU(_HiddenOnly):
    """A stack of GRU layers, like torch.nn.GRU (time-major, or batch_first; PyTorch's formulation):
    r = σ(W_ir x + W_hr h + b_r), z = σ(W_iz x + W_hz h + b_z),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 - z) ⊙ n + z ⊙ h.

    layers[k].W (3H, D_k+H) has rows in gate order n, r, z and columns [x | h];
    layers[k].b (4H,) = [b_in ; b_r ; b_z ; b_hn] (b_hn sits inside r ⊙ (·), so it stays
    apart from b_in). Same interface as RNN: forward(x, h0, lengths), backward(dy, dhn),
    step(x, h).
    """
    CELL, HAS_C, CARRY, TORCH_BLOCK = GRU_CELL, False, True, np.array([2, 0, 1])
    TORCH_BIAS = ((2, -1), (0, 0), (1, 1), (-1, 2))
