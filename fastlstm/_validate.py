"""Checks that every public call makes once, before it touches any state.

Each raises ValueError or TypeError with a message that says what was expected and what came
(`optional`, RuntimeError with the pip command for a missing extra).
"""
import importlib
import math
import numbers
import os
import re
import shlex
import sys
import threading

import numpy as np

from . import choices
from ._config import address_space_left, cgroup_memory_limit
from .kernels import COPY_PARALLEL, all_finite, all_finite_runs, int_bounds

DTYPES = tuple(np.dtype(d) for d in choices.DTYPES)


class NonFiniteValue(ValueError):
    """An input array holds NaN or ±Inf."""


class NonFiniteError(FloatingPointError):
    """A step's result would not be finite (a training step's loss, gradient or update; a
    streaming step's new state): nothing was changed. fastlstm.NonFiniteError."""


_runs = threading.local()      # run_flags' scratch, one per Python thread (the kernels drop the GIL)


def run_flags(n, run=COPY_PARALLEL):
    """A bool scratch of one flag for each run of `run` entries of an n-entry array (the
    kernels that split whole arrays among the threads write each run's verdict there): a
    view of one buffer per Python thread, grown only for a longer array, so no allocation
    in a step."""
    runs = -(-n // run)
    ok = getattr(_runs, "ok", None)
    if ok is None or ok.size < runs:
        ok = _runs.ok = np.empty(runs, np.bool_)
    return ok[:runs]


def is_finite(a):
    """True if the 1-D array `a` holds no NaN or ±Inf: from COPY_PARALLEL entries on the
    threads."""
    return all_finite(a) if a.size < COPY_PARALLEL else all_finite_runs(a, run_flags(a.size))


def dtype_of(dtype):
    """The model dtype (float32 or float64) named by `dtype`. None is refused: NumPy reads it
    as float64 and PyTorch as its default, float32, fastlstm's too; either reading would surprise."""
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None (the default is float32)")
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from e
    if dt not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def cast(arrays, dtype):
    """{name: array} cast to the model dtype `dtype` (astype's copies), or ValueError naming
    the first array that holds a value beyond dtype's range (float64 → float32 would give ±Inf)."""
    top = np.finfo(dtype).max
    for name, a in arrays.items():
        big = np.abs(a).max(initial=0) if dtype.itemsize < a.dtype.itemsize else 0
        if big > top:
            raise ValueError(f"{name} holds {big:.6g}, beyond {dtype}'s range (at most {top:.6g})")
    return {name: a.astype(dtype) for name, a in arrays.items()}


def integer(name, value):
    """`value` as an int; bools, floats (2.5, 2.0) and strings ("5") are refused, not truncated
    or parsed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def is_count(n, below=None):
    """Whether n is an integer >= 0 (and < below, if given), as a file's record must hold one:
    a bool is none (JSON's true would pass for 1)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 and (below is None or n < below)


def positive_int(name, value, minimum=1, below=None):
    """`value` as an int ≥ minimum (and < below, if given); bools and non-integers are refused."""
    value = integer(name, value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be < {below}, got {value}")
    return int(value)


MAX_ROW = 1 << 62       # a batch row's index: far past any batch, and row + B stays in int64
MAX_COUNT = 1 << 62     # steps, Adam's t, the masks' step: what a checkpoint holds; + 1 stays in int64
SEED_END = 1 << 63      # dropout_seed: the masks' kernel takes it as an int64
BLAS_MAX = (1 << 31) - 1   # a product's dimensions: fastlstm's OpenBLAS counts in 32-bit integers


def product_size(what, n, then):
    """ValueError unless n, a dimension of the products fastlstm runs, fits BLAS_MAX: past
    it the 32-bit BLAS would take it modulo 2³² and compute on part of the data, silently."""
    if n > BLAS_MAX:
        raise ValueError(f"{what} is {n:,}, past {BLAS_MAX:,}, the most a dimension of fastlstm's matrix products "
                         f"can be (its OpenBLAS counts in 32-bit integers): {then}")


def boolean(name, value):
    """`value`, which must be True or False (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def count(name, value):
    """`value` as an int in 0..MAX_COUNT-1: a step count (a model's steps, Adam's t)."""
    return positive_int(name, value, minimum=0, below=MAX_COUNT)


def room(name, value):
    """ValueError for a count one more step would take past MAX_COUNT - 1, what a checkpoint
    holds: said before the step, which would otherwise fail halfway, updated but not counted."""
    if value >= MAX_COUNT - 1:
        raise ValueError(f"{name} is {value}: one more step would pass the {MAX_COUNT - 1} a checkpoint counts")


def probability(name, value):
    """`value` as a float in [0, 1): a dropout rate."""
    p = finite_float(name, value)
    if not 0 <= p < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return p


def clip(name, value):
    """None, or `value` as a float > 0: a gradient norm's bound."""
    x = None if value is None else finite_float(name, value)
    if x is not None and x <= 0:
        raise ValueError(f"{name} must be > 0 or None, got {value}")
    return x


def caller_level():
    """warnings.warn's stacklevel, from the function that calls warn, of the first frame
    outside fastlstm: the user's line, however many of fastlstm's constructors lie between."""
    here, frame, level = os.path.dirname(os.path.abspath(__file__)) + os.sep, sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    return level


_UNSET = object()


class Settings:
    """The settings a model, stack or schedule keeps from its constructor (m.loss,
    lstm.dropout, schedule.warmup), as plain attributes guarded when assigned, as the
    optimizers' hyperparameters are (reads stay plain: a streaming step reads a score of
    them, and a descriptor, or touching the instance's __dict__, made it 0.5 µs slower).

    CHECKED {name: check(name, value), which gives the value as kept}: a later assignment is
    checked as the constructor checks it and changes nothing when refused (m.clip = -1
    trained on unclipped, lstm.training = "no" dropped out); then the method AFTER[name], if
    any, runs under the object's lock, given the name and the old value. FIXED {name: what
    to do instead, or None}: the buffers, views, kernels and head were made from it and
    would not follow, so another value raises AttributeError where the model ran on,
    silently wrong (m.loss = "xent" on a regression head)."""
    CHECKED, AFTER, FIXED = {}, {}, {}

    def __setattr__(self, name, value):
        check = self.CHECKED.get(name)
        if check is not None:
            value = check(name, value)
            if name in self.AFTER:
                with self._lock:
                    old = getattr(self, name, None)
                    object.__setattr__(self, name, value)
                    getattr(self, self.AFTER[name])(name, old)
                return
        elif name in self.FIXED:
            old = getattr(self, name, _UNSET)
            if old is not _UNSET:
                try:
                    same = bool(old == value)            # m.loss = m.loss changes nothing
                except (TypeError, ValueError):
                    same = False
                if same:
                    return
                kind = type(self).__name__
                fix = self.FIXED[name] or f"build a new {kind} with {name}={value!r}"
                raise AttributeError(f"{kind}.{name} is fixed when the {kind} is built (its arrays and its "
                                     f"arithmetic were made for it): {fix}")
        object.__setattr__(self, name, value)


def counted(n, noun):
    """n and the noun, plural unless n is 1: "1 row", "2 rows" (what messages say)."""
    return f"{n} {noun}{'s' * (n != 1)}"


MAX_LAYERS = 1024   # far deeper than any recurrent stack in use; stops 10**7 layer objects


def proj_size(value, hidden_size):
    """A projection size: 0 for none, else in 1..hidden_size-1 (PyTorch's bounds)."""
    P = positive_int("proj_size", value, minimum=0)
    if P >= hidden_size:
        raise ValueError(f"proj_size must be < hidden_size = {hidden_size} (or 0 for none), got {P}")
    return P


def no_projection(cell, value):
    """A GRU's or RNN's proj_size: 0 alone (PyTorch's nn.GRU and nn.RNN refuse any other)."""
    if positive_int("proj_size", value, minimum=0):
        raise ValueError(f"proj_size applies to the LSTM only (PyTorch's proj_size); {'an' if cell == 'RNN' else 'a'} "
                         f"{cell} has no projection: use proj_size=0")


# PyTorch's constructor arguments that fastlstm's stacks do not take, with the value that
# PyTorch's code may state (its default, which is fastlstm's way too) and why another is refused
TORCH_ONLY = dict(
    bias=(True, "fastlstm's layers always have their biases"),
    device=("cpu", "fastlstm runs on the CPU, on NumPy arrays"))


def torch_only(owner, kwargs, takes):
    """Keyword arguments beyond a stack's own: PyTorch's (TORCH_ONLY, those `takes` names)
    pass at the value fastlstm has anyway and are refused otherwise, with why; any other is
    refused as Python refuses an unknown keyword, under the class's own name."""
    for k, value in kwargs.items():
        if k not in takes:
            unexpected(owner, k)
        same, why = TORCH_ONLY[k]
        value = str(value) if k == "device" else value          # torch.device("cpu") as "cpu"
        if not (type(value) is type(same) and value == same):
            raise ValueError(f"{owner}(): {k}={value!r} is not supported: {why}")


# Keras's fit arguments (and the command line's options) that Model.fit does not take, with
# what to pass instead
KERAS_FIT = dict(
    validation_data="fastlstm's fit calls it validation=(x, y) or (x, y, lengths)",
    verbose="fastlstm's fit shows a progress bar unless progress=False",
    callbacks="fastlstm's fit takes patience= (early stopping) and schedule= (the learning rate); "
              "for anything else, loop over model.train_step",
    initial_epoch="each call of fit trains on from where the model is, its epochs counted from 1",
    sample_weight="fastlstm weighs every sequence alike",
    class_weight="fastlstm weighs every class alike",
    warmup="pass schedule=fastlstm.training.Schedule('cosine', warmup=N) (or 'constant', 'plateau')",
    steps="fit counts epochs; for a number of steps, loop over model.train_step",
    lr="the optimizer holds it: Model(..., optimizer=fastlstm.Adam(lr=...)), or model.optimizer.lr = ...")
KERAS_FIT["learning_rate"] = KERAS_FIT["lr"]


def unexpected(owner, k, hints=None):
    """Refuse keyword argument k as Python refuses an unknown keyword, adding what to pass
    instead where `hints` knows it."""
    raise TypeError(f"{owner}() got an unexpected keyword argument {k!r}" + (f": {hints[k]}" if hints and k in hints else ""))


def optional(module, what, extra, needs, then=""):
    """importlib.import_module(module), or RuntimeError: `what` needs `needs`, and the pip
    command that installs fastlstm's `extra`, by its packages as pyproject.toml pins them:
    fastlstm is installed from its checkout, so 'fastlstm[extra]' would ask PyPI for another
    project of that name. `then`: what to do after installing, where there is more."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise RuntimeError(f"{what} needs {needs}: {pip_install(extra)}{then}") from e


def pip_install(extra):
    """'pip install PKG ...' for fastlstm's optional `extra`, read from its installed metadata."""
    from importlib import metadata
    try:
        pins = metadata.requires("fastlstm") or []
    except metadata.PackageNotFoundError:             # imported from a checkout it was not installed from
        pins = []
    pins = [p.split(";")[0].strip() for p in pins if re.search(rf"extra\s*==\s*['\"]{extra}['\"]", p)]
    if not pins:
        return f"pip install -e '.[{extra}]' in fastlstm's checkout"
    return "pip install " + " ".join(map(shlex.quote, pins))


def num_layers(value):
    """A layer count in 1..MAX_LAYERS."""
    n = positive_int("num_layers", value)
    if n > MAX_LAYERS:
        raise ValueError(f"num_layers must be <= {MAX_LAYERS}, got {n}")
    return n


def fits_in_memory(what, nbytes, new=True, held=0):
    """MemoryError, before anything is allocated, for a request beyond the machine's RAM or
    the memory limit of the process's cgroup (a container's, a job's), whichever is lower:
    past the limit the kernel's OOM killer would end the process, with no word said. held:
    bytes allocated already that the request comes on top of (a Model's workspace under its
    head's buffers), counted against memory, not address space. A new allocation (new; not
    a caller's buffer, mapped already) must also fit in the address space the process has
    left (address_space_left)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    limit, total = cgroup_memory_limit(), nbytes + held
    if limit is not None and limit < ram and total > limit:
        raise MemoryError(f"{what} would need {_bytes(total)}, more than the {_bytes(limit)} of memory this "
                          f"process may use (its cgroup's limit; the machine has {_bytes(ram)})")
    if total > ram:
        raise MemoryError(f"{what} would need {_bytes(total)}, more than this machine's {_bytes(ram)} of memory")
    room = address_space_left() if new else None
    if room is not None and nbytes > room:
        raise MemoryError(f"{what} would need {_bytes(nbytes)}, more than the {_bytes(room)} of address space "
                          f"this process has left under its limit (ulimit -v)")


def _bytes(n):
    """n bytes in GiB, or MiB below one GiB (a small cgroup's limit); a power of ten past any
    memory (a size from a hostile file can pass float's range, where n / 2**30 would raise)."""
    if n >= 2**80:
        return f"about 10^{len(str(n)) - 1} bytes"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def finite(value):
    """float(value) where that is finite, else None: NaN, ±Inf, and an integer beyond float's
    range (10**400, which float() refuses with OverflowError and np.isfinite with TypeError)."""
    try:
        x = float(value)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def finite_float(name, value, *, gt=None, ge=None, lt=None, le=None):
    """`value` as a finite float, within the bounds given (gt: >, ge: >=, lt: <, le: <=)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):     # "1" is no number: not NaN either
        raise TypeError(f"{name} must be a finite number, got {value!r:.40}")
    x = finite(value)
    if x is None:
        raise NonFiniteValue(f"{name} must be a finite number, got {value!r:.40}")
    for bound, ok, sign in ((gt, x.__gt__, ">"), (ge, x.__ge__, ">="), (lt, x.__lt__, "<"), (le, x.__le__, "<=")):
        if bound is not None and not ok(bound):
            raise ValueError(f"{name} must be {sign} {bound}, got {value!r}")
    return x


def rng(seed):
    """np.random.default_rng(seed) for a seed that is None, an integer >= 0 or a Generator."""
    if seed is not None and not isinstance(seed, np.random.Generator):
        positive_int("seed", seed, minimum=0)
    return np.random.default_rng(seed)


def choice(name, value, options):
    """`value`, which must be one of the strings `options`; the error names the option meant
    when the value is one in capitals ('LSTM', Keras's 'Adam') or another library's name for
    it (choices.FOREIGN_NAMES: Keras's 'categorical_crossentropy')."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}{meant(value, options)}")
    return value


def unknown(what, names, known):
    """ValueError for settings a checkpoint holds that this fastlstm does not know (from a
    newer one, most likely)."""
    extra = sorted(set(names) - set(known))
    if extra:
        from . import __version__
        raise ValueError(f"unknown {what} {extra} (written by a newer fastlstm? this is {__version__})")


def meant(value, options):
    """" (fastlstm's name for it: 'xent')" when `value` names one of `options` in other
    words (capitals, spaces, choices.FOREIGN_NAMES), else ""."""
    if not isinstance(value, str):
        return ""
    key = value.strip().lower()
    key = choices.FOREIGN_NAMES.get(key.replace("-", "_").replace(" ", "_"), key)
    return f" (fastlstm's name for it: {key!r})" if key in options else ""


def array(name, a, shape, dtype, *, writable=False, finite=True):
    """Check that `a` is an ndarray of `shape` (leading None entries match anything), `dtype`,
    C-contiguous and finite (and writable, for output buffers). Returns it (a subclass as a
    plain ndarray view of the same memory).
    finite=False leaves the scan for NaN/Inf to a kernel that does it anyway (the streaming
    step, where these checks are a fifth of the call); `nonfinite` then names the culprit."""
    if type(a) is not np.ndarray:
        if not isinstance(a, np.ndarray):
            how = (f"{name}.detach().numpy()" if hasattr(a, "detach") else           # a torch tensor
                   f"np.asarray({name}, np.{np.dtype(dtype)})" if isinstance(a, (list, tuple)) else None)
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}"
                            + (f" (pass {how})" if how else ""))
        if np.ma.is_masked(a):       # the kernels would read the values under the mask
            raise ValueError(f"{name} is a masked array with masked entries, and fastlstm reads the values "
                             f"under its mask: pad with lengths, or pass {name}.filled(0)")
        a = a.view(np.ndarray)       # a subclass's data (a masked array's, a memmap's): what Numba takes
    if a.shape != shape and _mismatch(shape, a.shape):      # equal tuples: the fast case
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        one = (f" (for a last axis of 1 pass {name}[..., None])"
               if shape[-1] == 1 and a.ndim == len(shape) - 1 and not _mismatch(shape[:-1], a.shape) else "")
        raise ValueError(f"{name} must have shape {want}, got {a.shape}{one}")
    if a.dtype is not dtype and a.dtype != dtype:           # `is`: the common case, fast
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype} "
                        f"(convert with {name}.astype(np.{np.dtype(dtype)}))")
    flags = a.flags
    if not flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray({name}))")
    if writable and not flags.writeable:
        raise ValueError(f"{name} is read-only; an output buffer must be writable")
    if finite:
        check_finite(name, a)
    return a


def check_finite(name, a):
    """NonFiniteValue for the first NaN or ±Inf in `a` if it is a float array (a scan by
    a kernel, then NumPy's to find where)."""
    if a.dtype.kind == "f" and a.size and not is_finite(a.reshape(-1)):
        nonfinite(name, a)


def first_nonfinite(a):
    """The index (a tuple of ints) of the first NaN or ±Inf in `a`, or None. A C-contiguous,
    aligned, writable float32 or float64 `a` is scanned by a kernel first, with no temporary (a
    batch_first model's per-step targets, at every step)."""
    if not a.size:
        return None
    kernel = a.flags.carray and a.dtype in (np.float32, np.float64)
    if is_finite(a.reshape(-1)) if kernel else np.isfinite(a).all():
        return None
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])


def written_outside(params):
    """None, or what a refused result says when the flat `params` hold a NaN or ±Inf: no
    update and no setter writes one, so the user's code did, and no learning rate helps."""
    bad = first_nonfinite(params)
    return None if bad is None else (f"params[{bad[0]}] is {params[bad]}, written from outside the updates: "
                                     f"load a checkpoint or call reset_parameters")


def padded_hint(where, L, what="targets"):
    """What to add where a value of a step at index `where` (t, b, ...) is not finite and the
    step is padding (past lengths[b]; L None: no padding): it counts for nothing, yet NaN
    there is refused as anywhere (an input's NaN would reach δW as 0 · NaN)."""
    if where is None or L is None or where[0] < L[where[1]]:
        return ""
    return (f", a padded step (lengths[{where[1]}] = {L[where[1]]}): padded {what} count for nothing but must be "
            f"finite, so pad with 0")


def last_axis_hint(y, lead):
    """What to add where labels should be `lead`-shaped and have a last axis of 1 besides
    (Keras's sparse labels, (N, 1))."""
    return "; for labels with a last axis of 1 pass y[..., 0]" if y.shape == lead + (1,) else ""


def bool_hint(y):
    """What to add where labels came as booleans (a comparison's result, y = x.sum(...) > 0)."""
    boolean = getattr(y, "dtype", None) == bool     # noqa: E721 (a dtype, which equals bool)
    return "; for booleans as labels 0 and 1 pass y.astype(np.int64)" if boolean else ""


def nonfinite(name, a):
    """Raise NonFiniteValue for the first NaN or ±Inf in `a`, if it holds one."""
    bad = first_nonfinite(a)
    if bad is not None:
        raise NonFiniteValue(f"{name} must be finite; found {a[bad]} at index {bad}")


def _mismatch(want, got):
    """True unless got matches want, whose leading None entries match anything."""
    k = want.count(None)                 # slices, not a loop: this runs on every call
    return len(want) != len(got) or want[k:] != got[k:]


def bounds(a):
    """(min, max) of a non-empty integer array: a C-contiguous one's by a kernel (compiled for
    each integer dtype met), which allocates nothing, so that a step's checks of labels, ids
    and lengths do not either. NumPy's for others, and for a byte order not the machine's
    ('>i8' read from a file written on a big-endian one), which no kernel is typed for."""
    if a.flags.carray and a.dtype.isnative:              # C-contiguous, aligned, writable
        return int_bounds(a.reshape(-1))
    return a.min(), a.max()


def lengths(a, B, T, t_axis=0, out=None):
    """Sequence lengths (B,) of any integer dtype, each in 1..T, as int64: a copy, into `out`
    (B,) int64 where given (a Model's kept buffer); T is x.shape[t_axis] (1 for batch-first x)."""
    out = np.empty(B, np.int64) if out is None else out
    if a is None:
        out[:] = T
        return out
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) (one per batch row), got {a.shape}")
    lo, hi = bounds(a) if B else (1, T)
    if lo < 1 or hi > T:
        raise ValueError(f"lengths must lie in 1..{T} (T = x.shape[{t_axis}]), got min {lo}, max {hi}")
    out[:] = a
    return out
