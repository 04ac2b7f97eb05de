"""The C ABI's implementations (see capi.py and capi/fastlstm.h), run inside the embedded
interpreter. Each turns C pointers into NumPy views (zero-copy), calls the Python API, and
maps every exception to a status code with a message for fastlstm_last_error(): nothing
escapes to C as a crash, and validation happens before any state changes, so a failed call
leaves the model as it was.
"""
import itertools
import math
import os
import secrets
import types
import warnings

import numpy as np

from . import checkpoint, optim
from ._validate import MAX_ROW, NonFiniteValue, fits_in_memory, positive_int
from .kernels import all_finite
from .model import Model, NonFiniteError, load
from .recurrent import ONE_LAYER_DROPOUT

# The header's constants, as cffi parsed them from its #defines (register() fills these):
S = types.SimpleNamespace()    # status codes: S.OK, S.NULL_POINTER, ..., S.INTERNAL
SETTINGS = {}                  # "cell", "loss", "output", "optimizer" -> names by value: ("lstm", "rnn")
_MAX_BYTES = 1 << 46                     # no single buffer beyond 64 TiB: sizes that overflow
# The Python API warns (as PyTorch) about dropout on one layer; a C library prints nothing of
# its own accord, and the header says it instead.
warnings.filterwarnings("ignore", ONE_LAYER_DROPOUT, UserWarning)

_models = {}                             # handle id -> Model
_first_rows = {}                         # handle id -> fastlstm_set_first_row's row, where set
# Handle ids: the n-th model gets ((n * _KEY) mod 2^59) << 4, a random odd _KEY making the
# sequence a permutation. No id is ever handed out twice, so a freed handle stays refused,
# with no record of the freed ones (a set of them grew by 180 bytes a model, for as long as
# a server creating and freeing models ran), and a guessed pointer is almost surely none.
_KEY = secrets.randbits(59) | 1
_made = itertools.count(1)


class ApiError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _status(e):
    """The status code for an exception raised by the Python API."""
    if isinstance(e, ApiError):
        return e.code
    if isinstance(e, (NonFiniteError, NonFiniteValue)):
        return S.NON_FINITE
    if isinstance(e, checkpoint.CheckpointError):
        return S.BAD_CHECKPOINT
    if isinstance(e, OSError):
        return S.IO
    if isinstance(e, (ValueError, TypeError, KeyError, MemoryError)):   # MemoryError: sizes too big
        return S.INVALID_ARGUMENT
    return S.INTERNAL


def _header_constants(lib, prefix):
    """{NAME: value} for the header's `#define FASTLSTM_<prefix>NAME value` lines."""
    return {k[len(prefix):]: getattr(lib, k) for k in dir(lib) if k.startswith(prefix)}


def register(ffi, lib):
    """Take the header's constants, then bind every extern "Python" function of the library
    to its implementation."""
    S.__dict__.update(_header_constants(lib, "FASTLSTM_ERROR_"), OK=lib.FASTLSTM_OK)
    for kind in ("cell", "loss", "output", "optimizer"):
        by_value = sorted((v, k.lower()) for k, v in _header_constants(lib, f"FASTLSTM_{kind.upper()}_").items())
        SETTINGS[kind] = tuple(name for _, name in by_value)

    def api(fn):
        def call(*args):
            try:
                fn(*args)
                return S.OK
            except Exception as e:  # noqa: BLE001  (every exception becomes a status code)
                lib._fl_set_error(f"{type(e).__name__}: {e}".encode(errors="replace"))
                return _status(e)
        call.__name__ = fn.__name__
        return ffi.def_extern(name=fn.__name__, error=S.INTERNAL, onerror=_on_error)(call)

    def _on_error(exc, value, tb):
        lib._fl_set_error(f"internal error: {exc.__name__}: {value}".encode(errors="replace"))

    def model(handle):
        try:
            return _models[handle]
        except KeyError:
            raise ApiError(S.INVALID_HANDLE, f"model handle 0x{handle:x} is not a live fastlstm model "
                                           "(freed, or not made by fastlstm_create/fastlstm_load)") from None

    def need(ptr, name):
        if ptr == ffi.NULL:
            raise ApiError(S.NULL_POINTER, f"{name} is NULL")

    views = {}      # (address, ctype, shape, writable) -> view: a view only wraps an address,
                    # so one made for an earlier call is the same view (a quarter of a stream step)

    def array(ptr, name, ctype, dtype, shape, writable=False):
        """A NumPy view of a caller's buffer (no copy), after checks of pointer and size."""
        need(ptr, name)
        key = (int(ffi.cast("uintptr_t", ptr)), ctype, shape, writable)
        a = views.get(key)
        if a is not None:
            return a
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > _MAX_BYTES:
            raise ApiError(S.INVALID_ARGUMENT, f"{name}: sizes {shape} overflow")
        # the sizes are the caller's word for its buffer: one beyond this machine's memory cannot
        # be there, and reading it (the NaN scan comes before any workspace is sized) would crash
        fits_in_memory(f"{name} of sizes {shape}", nbytes, new=False)
        a = np.frombuffer(ffi.buffer(ffi.cast(ctype + " *", ptr), nbytes), dtype).reshape(shape)
        if not writable:
            a.flags.writeable = False
        if len(views) >= 64:
            views.clear()
        views[key] = a
        return a

    def sizes(**kw):
        for name, value in kw.items():
            if value < 1:
                raise ApiError(S.INVALID_ARGUMENT, f"{name} must be >= 1, got {value}")

    def new_handle(m, out):
        need(out, "out")
        if m.dtype != np.float32:
            raise ApiError(S.INVALID_ARGUMENT, f"the C API runs float32 models; this one is {m.dtype} (save a float32 "
                                               f"copy in Python: fastlstm.load(path).astype('float32').save(path32))")
        h = (next(_made) * _KEY % (1 << 59)) << 4
        m._batch_major = False               # C passes x[T][B][D] (the header's layout), whatever batch_first says
        _models[h] = m
        out[0] = h

    @api
    def _fl_py_create(cfg, out):
        need(cfg, "cfg")
        need(out, "out")
        for name in SETTINGS:
            if not 0 <= getattr(cfg, name) < len(SETTINGS[name]):
                raise ApiError(S.INVALID_ARGUMENT, f"cfg->{name} = {getattr(cfg, name)} is not a "
                                                   f"FASTLSTM_{name.upper()}_ constant")
        if not (cfg.clip == 0 or cfg.clip > 0):       # NaN and negatives are not "no clipping"
            raise ApiError(S.INVALID_ARGUMENT, f"cfg->clip must be 0 (no clipping) or > 0, got {cfg.clip}")
        if cfg.bidirectional not in (0, 1):
            raise ApiError(S.INVALID_ARGUMENT, f"cfg->bidirectional must be 0 or 1, got {cfg.bidirectional}")
        try:
            name = SETTINGS["optimizer"][cfg.optimizer]
            opt = (optim.SGD(cfg.learning_rate, cfg.momentum, cfg.weight_decay) if name == "sgd" else
                   optim.OPTIMIZERS[name](cfg.learning_rate, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay))
            m = Model(int(cfg.input_size), int(cfg.hidden_size), int(cfg.output_size), int(cfg.num_layers),
                      cell=SETTINGS["cell"][cfg.cell], loss=SETTINGS["loss"][cfg.loss],
                      output=SETTINGS["output"][cfg.output],
                      dtype=np.float32, forget_bias=cfg.forget_bias, seed=int(cfg.seed), optimizer=opt,
                      clip=cfg.clip if cfg.clip > 0 else None, bidirectional=bool(cfg.bidirectional),
                      dropout=cfg.dropout, proj_size=int(cfg.proj_size),
                      vocab_size=int(cfg.vocab_size) or None)
        except NonFiniteValue as e:                      # a NaN setting is an invalid argument
            raise ApiError(S.INVALID_ARGUMENT, f"cfg: {e}") from None
        new_handle(m, out)

    @api
    def _fl_py_load(path, out):
        need(path, "path")
        need(out, "out")
        new_handle(load(os.fsdecode(ffi.string(path))), out)     # any bytes the OS takes

    @ffi.def_extern(name="_fl_py_free", onerror=_on_error)
    def _fl_py_free(handle):
        _models.pop(handle, None)
        _first_rows.pop(handle, None)

    def inputs(m, x, ids, shape):
        """The caller's inputs: token ids (shape) int64 for a model with an embedding, else
        floats (shape + (D,)); the wrong kind for the model is refused, naming the right one."""
        if ids != (m.vocab_size is not None):
            raise ApiError(S.INVALID_ARGUMENT,
                           f"this model takes token ids (vocab_size = {m.vocab_size}): call the *_ids functions"
                           if ids == 0 else "this model takes float inputs (it has no vocab_size): call the "
                                            "functions without _ids")
        if ids:
            return array(x, "ids", "int64_t", np.int64, shape)
        return array(x, "x", "float", np.float32, shape + (m.core.input_size,))

    def batch(m, x, ids, lengths, T, B):
        sizes(T=T, B=B)
        xs = inputs(m, x, ids, (T, B))
        L = None if lengths == ffi.NULL else array(lengths, "lengths", "int64_t", np.int64, (B,))
        return xs, L

    @api
    def _fl_py_train(handle, x, ids, lengths, targets, labels, T, B, loss, apply):
        m = model(handle)
        xs, L = batch(m, x, ids, lengths, T, B)
        lead = (B,) if m.output == "last" else (T, B)
        if m.loss == "mse":
            y = array(targets, "targets", "float", np.float32, lead + (m.output_size,))
        else:
            y = array(labels, "labels", "int32_t", np.int32, lead)
        if apply:
            value = m.train_step(xs, y, L)
        else:
            value = m.compute_gradients(xs, y, L, first_row=_first_rows.get(handle, 0))
        if loss != ffi.NULL:
            loss[0] = value

    @api
    def _fl_py_apply(handle):
        model(handle).apply_gradients(0.0)

    def output(m, out, out_len, shape):
        need(out, "out")
        n = math.prod(shape)
        if out_len < n:
            raise ApiError(S.BUFFER_TOO_SMALL, f"out holds {out_len} floats; the result needs {n} {shape}")
        return array(out, "out", "float", np.float32, shape, writable=True)

    @api
    def _fl_py_predict(handle, x, ids, lengths, T, B, out, out_len):
        m = model(handle)
        xs, L = batch(m, x, ids, lengths, T, B)
        shape = (B, m.output_size) if m.output == "last" else (T, B, m.output_size)
        dst = output(m, out, out_len, shape)
        dst[...] = m.predict(xs, L, batch_size=B)       # one forward, as asked (no Python hint of a bound)

    @api
    def _fl_py_step(handle, x, ids, B, out, out_len):
        m = model(handle)
        sizes(B=B)
        xs = inputs(m, x, ids, (B,))
        dst = output(m, out, out_len, (B, m.output_size))
        dst[...] = m.step(xs)

    @api
    def _fl_py_reset(handle, B):
        m = model(handle)
        sizes(B=B)
        m.reset_state(int(B))

    @api
    def _fl_py_save(handle, path):
        m = model(handle)
        need(path, "path")
        m.save(os.fsdecode(ffi.string(path)))

    @api
    def _fl_py_count(handle, n):
        m = model(handle)
        need(n, "n")
        n[0] = m.params.size

    @api
    def _fl_py_lr(handle, out, lr, into_model):
        m = model(handle)
        if not into_model:
            need(out, "lr")
            out[0] = m.optimizer.lr
            return
        opt, old = m.optimizer, m.optimizer.lr
        try:
            opt.lr = lr                      # checked as the constructor checks it (finite, > 0)
            opt.hyper_in(m.dtype)            # and held by float32: 1e300 would be inf at the next step
        except NonFiniteValue as e:
            raise ApiError(S.INVALID_ARGUMENT, str(e)) from None
        except ValueError:
            object.__setattr__(opt, "lr", old)
            raise

    @api
    def _fl_py_first_row(handle, first_row):
        model(handle)
        _first_rows[handle] = positive_int("first_row", first_row, minimum=0, below=MAX_ROW)

    @api
    def _fl_py_copy(handle, buf, n, grads, into_model):
        m = model(handle)
        flat = m.grads if grads else m.params
        if n != flat.size:
            raise ApiError(S.INVALID_ARGUMENT, f"n = {n}, but the model has {flat.size} "
                                             f"{'gradients' if grads else 'parameters'}")
        a = array(buf, "in" if into_model else "out", "float", np.float32, (flat.size,), writable=not into_model)
        if into_model:
            if not all_finite(a):
                raise ApiError(S.NON_FINITE, "the values must be finite; nothing was changed")
            flat[:] = a
        else:
            a[:] = flat
