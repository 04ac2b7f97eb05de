"""Optimizers and gradient clipping on the flat parameter and gradient arrays.

Each update is an in-place Numba kernel over the flat arrays (no temporaries; Adam's on
the threads from UPDATE_RUN entries); the state (velocity, moments) lives in arrays of the
same layout, so checkpoints and MPI see one array each.
"""
import contextlib
import weakref

import numpy as np
from numba import prange

from . import _config, choices
from . import _validate as v
from ._blas import address
from ._config import JIT, PARALLEL_JIT, njit
from ._validate import run_flags
from .kernels import _like, sum_squares, zeros

# From UPDATE_RUN entries the threads split Adam's update in runs of that many, each about
# 15 µs of its work: a bigger run leaves a thread idle at tens of thousands of parameters,
# a smaller one adds regions' start-up (docs/performance.md).
UPDATE_RUN = 1 << 13


@njit(**JIT)
def scale(g, s):
    for k in range(g.size):
        g[k] *= s


@njit(**JIT)
def _grad(p, g, l2, k):
    """g + λ·p, the gradient with L2 weight decay λ (PyTorch's weight_decay; g itself for 0)."""
    return g[k] if l2 == 0 else g[k] + l2 * p[k]


@njit(**JIT)
def _sgd_at(p, g, velocity, lr, momentum, l2, k):
    vk = momentum * velocity[k] + _grad(p, g, l2, k)
    return vk, p[k] - lr * vk


@njit(**JIT)
def sgd_update(p, g, velocity, lr, momentum, l2):
    """velocity = momentum·velocity + (g + λp);  p -= lr·velocity   (plain SGD when momentum =
    0; λ = l2, PyTorch's weight_decay).

    Two passes over the same arithmetic: the first only checks that every new value is
    finite; if one is not, it returns False and nothing is written, so an overflowing step
    leaves parameters and state as they were."""
    ok = True
    for k in range(p.size):                 # checked as stored (in p's dtype)
        vk, pk = _sgd_at(p, g, velocity, lr, momentum, l2, k)
        ok &= np.isfinite(_like(p[0], vk)) & np.isfinite(_like(p[0], pk))
    if not ok:
        return False
    for k in range(p.size):
        velocity[k], p[k] = _sgd_at(p, g, velocity, lr, momentum, l2, k)
    return True


@njit(**JIT)
def _adam_at(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, k):
    gk = _grad(p, g, l2, k)
    mk = beta1 * m[k] + (1.0 - beta1) * gk
    vk = beta2 * v[k] + (1.0 - beta2) * gk * gk
    pk = p[k] if keep == 1 else p[k] * keep
    return mk, vk, pk - lr * (mk / c1) / (np.sqrt(vk / c2) + eps)


@njit(**JIT)
def _adam_bounded(p, g, m, v, lr, beta1, beta2, eps, c1, l2, keep):
    """The check pass, in p's dtype: True if every new |p| has a finite bound,
    |p_new| ≤ |keep·p| + lr·|m_new|/(c1·ε), and every new v is finite, without the square
    root and the division (so it vectorises: a fifth of the update's time)."""
    x = p[0]
    b1, b2, a1, a2 = _like(x, beta1), _like(x, beta2), _like(x, 1.0 - beta1), _like(x, 1.0 - beta2)
    bound, lx, kx = _like(x, lr / (c1 * eps)), _like(x, l2), _like(x, abs(keep))
    s = _like(x, 0.0)
    for k in range(p.size):
        gk = _grad(p, g, lx, k)
        mk = b1 * m[k] + a1 * gk
        vk = b2 * v[k] + (a2 * gk) * gk
        wk = kx * abs(p[k]) + bound * abs(mk)
        s += (wk - wk) + (vk - vk)                  # NaN if a bound is NaN or ±Inf
    return s == 0


@njit(**JIT)
def _adam_exact(p, g, m, v, lr, beta1, beta2, eps, c1, c2, limit, l2, keep):
    """True if every new value, computed as the update computes it, is at most `limit`."""
    ok = True
    for k in range(p.size):
        mk, vk, pk = _adam_at(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, k)
        ok &= (abs(mk) <= limit) & (vk <= limit) & (abs(pk) <= limit)   # NaN compares False
    return ok


@njit(**JIT)
def _adam_write(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep):
    for k in range(p.size):
        m[k], v[k], p[k] = _adam_at(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, k)


@njit(**JIT)
def bias_corrections(beta1, beta2, t):
    """Adam's c1 = 1 - β1ᵗ and c2 = 1 - β2ᵗ, as the kernels compute them."""
    return 1.0 - beta1 ** t, 1.0 - beta2 ** t


@njit(**PARALLEL_JIT)
def adam_runs(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, ok, write):
    """adam_step's cheap bound (run q's verdict into ok[q]) or, with write, its writing pass,
    on the threads in runs of UPDATE_RUN entries: every value is computed alone, so the bits
    are those of one thread. One parallel loop for both passes, since each costs a second of
    compiling."""
    n = p.size
    for q in prange(ok.size):
        lo = np.int64(q) * UPDATE_RUN
        hi = min(n, lo + UPDATE_RUN)
        pq, gq, mq, vq = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
        if write:
            _adam_write(pq, gq, mq, vq, lr, beta1, beta2, eps, c1, c2, l2, keep)
        else:
            ok[q] = _adam_bounded(pq, gq, mq, vq, lr, beta1, beta2, eps, c1, l2, keep)


@njit(**JIT)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, limit, l2, keep):
    """adam_step on one thread (below UPDATE_RUN entries, where waking the others costs more)."""
    c1, c2 = bias_corrections(beta1, beta2, t)
    if not (_adam_bounded(p, g, m, v, lr, beta1, beta2, eps, c1, l2, keep) or
            _adam_exact(p, g, m, v, lr, beta1, beta2, eps, c1, c2, limit, l2, keep)):
        return False
    _adam_write(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep)
    return True


def adam_step(p, g, m, v, lr, beta1, beta2, eps, t, limit, l2, keep):
    """Adam (Kingma & Ba 2015) at step t ≥ 1, with bias correction, on g + λ p (l2 = λ:
    PyTorch's Adam weight_decay) and from p·keep (keep = 1 - lr·λ: AdamW's decoupled decay,
    Loshchilov & Hutter 2019, as PyTorch's AdamW); l2 = 0 and keep = 1 for neither:
    m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  p = p·keep - lr · m̂ / (√v̂ + ε).

    False, nothing written, if any new value would exceed `limit`, the largest finite value
    of p's dtype, in which the state is stored (the update's arithmetic runs in float64):
    a check pass bounds every value first (_adam_bounded); only when a bound is not finite
    does a second pass decide exactly (_adam_exact). From UPDATE_RUN entries the check pass
    and the writing pass run on the threads (adam_runs), the exact check on one."""
    if p.size < UPDATE_RUN:
        return adam_update(p, g, m, v, lr, beta1, beta2, eps, t, limit, l2, keep)
    c1, c2 = bias_corrections(beta1, beta2, t)
    ok = run_flags(p.size, UPDATE_RUN)
    adam_runs(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, ok, False)
    if not ok.all() and not _adam_exact(p, g, m, v, lr, beta1, beta2, eps, c1, c2, limit, l2, keep):
        return False
    adam_runs(p, g, m, v, lr, beta1, beta2, eps, c1, c2, l2, keep, ok, True)
    return True


def clip_by_global_norm(grads, max_norm):
    """Scale grads in place by max_norm / (‖grads‖₂ + 1e-6) where that is below 1, as
    PyTorch's clip_grad_norm_ does (Keras's global_clipnorm divides by ‖grads‖₂ alone: 1e-6
    relative apart, which a float64 run against PyTorch's would show); returns the norm
    before clipping (non-finite if any gradient is, and then grads are left alone)."""
    norm = float(np.sqrt(sum_squares(grads)))
    if max_norm is not None and np.isfinite(norm):
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            scale(grads, grads.dtype.type(coef))
    return norm


_RANGE = {}                   # dtype: (largest finite value, smallest non-zero one), as Python floats


def _range(dtype):
    """(largest finite value, smallest non-zero one) of dtype, as Python floats (a step asks)."""
    if dtype not in _RANGE:
        _RANGE[dtype] = float(np.finfo(dtype).max), float(np.finfo(dtype).smallest_subnormal)
    return _RANGE[dtype]


class Optimizer(v.Settings):
    """An update rule with hyperparameters and state arrays shaped like the parameters.

    An optimizer belongs to the one model it is bound to (its state is that model's
    moments); binding it to a second live model is refused, as is a step on arrays of
    another size."""
    name = None
    state_names = ()
    hyper_names = ()
    positive = ()             # the hyperparameters that must stay > 0 in the parameters' dtype
    fractions = ()            # those in [0, 1): a moment's decay
    _owner = None
    _array = None             # the address of the params an unbound optimizer's first step bound it to
    state, t = None, 0        # the moments and the steps taken, made by bind
    # t is checked (an integer: Adam's bias correction counts it); the rule's own names are
    # fixed (opt.name = "sgd" on an Adam saved a checkpoint load refused)
    CHECKED = dict(t=v.count)
    FIXED = dict.fromkeys(("name", "state_names", "hyper_names", "positive", "fractions"),
                          "for another update rule, make another optimizer (fastlstm.SGD, Adam or AdamW)")

    def __setattr__(self, name, value):
        """A hyperparameter set later (opt.lr = 0.01, as a schedule of one's own does) is
        checked as the constructor checks it, together with the others (_set), and left as it
        was when refused: lr=nan or lr=-1 would otherwise train silently wrong or fail at the
        next step for another reason. The rest are Settings'."""
        if name in self.hyper_names:
            self._set(**{name: value})
        else:
            super().__setattr__(name, value)

    def _set(self, **values):
        """Set hyperparameters, each a finite number, then check them together (_rules);
        nothing changes when one is refused."""
        h = {k: self.__dict__[k] for k in self.hyper_names if k in self.__dict__}
        h.update({k: v.finite_float(k, x, ge=0 if k == "weight_decay" else None) for k, x in values.items()})
        for k in values:                 # the one refused is named, with the rule
            if k in self.positive and h[k] <= 0 or k in self.fractions and not 0 <= h[k] < 1:
                raise ValueError(f"{type(self).__name__}'s {k} must be "
                                 f"{'> 0' if k in self.positive else 'in [0, 1)'}, got {h[k]!r}")
        self._rules(h)
        self.__dict__.update(h)

    def _rules(self, h):
        """Rules that tie hyperparameters together (AdamW's lr·weight_decay < 1)."""

    def hyper(self):
        return {k: self.__dict__[k] for k in self.hyper_names}

    def bind(self, n, dtype, owner=None):
        """Allocate zeroed state for n parameters of `owner`, the model that takes it
        (None: arrays of the caller's own, as in the tests of the update rules)."""
        self.hyper_in(dtype)
        if self._owner is not None and self._owner() not in (None, owner):
            raise ValueError(f"this {type(self).__name__} already belongs to another model; give each "
                             f"model an optimizer of its own (e.g. fastlstm.{type(self).__name__}(lr=...))")
        self.state = {k: zeros(n, dtype) for k in self.state_names}
        self.t, self._array = 0, None
        self._owner = None if owner is None else weakref.ref(owner)
        return self

    def config(self):
        return dict(name=self.name, t=self.t, **self.hyper())

    def __repr__(self):                # the call that makes a fresh one: Adam(lr=0.001, ...)
        return f"{type(self).__name__}({', '.join(f'{k}={x!r}' for k, x in self.hyper().items())})"

    def hyper_in(self, dtype):
        """The hyperparameters as the update uses them, in the parameters' dtype; ValueError
        for one that dtype cannot hold (lr=1e300 is inf in float32, eps=1e-50 is 0), which
        would otherwise surface as a refused update with a misleading reason."""
        dtype, out = np.dtype(dtype), {}
        big, tiny = _range(dtype)
        for name, x in self.hyper().items():     # compared as Python floats: a step makes this call
            if abs(x) > big or (name in self.positive and x <= tiny / 2):   # past the range, or 0 there
                with np.errstate(over="ignore", under="ignore"):
                    raise ValueError(f"{type(self).__name__}'s {name}={x!r} is {dtype.type(x)} in {dtype.name}, "
                                     f"the parameters' dtype; give a value from {tiny:.3g} to {big:.3g}")
            out[name] = dtype.type(x)
        return out

    def __getstate__(self):
        """pickle and copy.deepcopy: a copy belongs to no model (a Model copied whole brings
        its optimizer along, bound to the copy); given to a model, it starts afresh there.
        Nor does it keep the address of the params it stepped (the copy's are elsewhere)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_owner", "_array")}

    def step(self, params, grads):
        """One update of params from grads, in place, with t counted; False (and nothing
        changed) when the update would make a parameter or a state value non-finite.
        Outside a Model, params and grads are a layer stack's flat arrays (1-D, float32 or
        float64, C-contiguous, params writable), checked as any input; an optimizer not
        bound yet makes its state at its first step, for those params, and steps them alone."""
        v.room("t", self.t)
        if self._owner is None:
            params = v.array("params", params, (None,), _float_dtype(params), writable=True, finite=False)
            grads = v.array("grads", grads, params.shape, params.dtype, finite=False)
            if self.state is None:
                self.bind(params.size, params.dtype)
                self._array = address(params)
            elif self._array not in (None, address(params)):
                raise ValueError(f"this {type(self).__name__} holds the moments of the params its first step "
                                 f"updated, and these are another array: give each its own optimizer")
        for k, s in self.state.items():
            if s.shape != params.shape or s.dtype != params.dtype or grads.shape != params.shape:
                raise ValueError(f"optimizer state {k} has {s.size} entries for {params.size} parameters")
        with _config.SERIAL or contextlib.nullcontext():     # a step outside a Model's call (_config.SERIAL)
            if not self._update(params, grads, self.t + 1):
                return False
        self.t += 1
        return True

    def check_state(self, state):
        """Refuse state values {name: array} that no run of this rule can produce (a
        checkpoint's, at save and at load)."""


def _float_dtype(a):
    """a's dtype if it is one a model holds (float32, float64), else TypeError naming it."""
    dtype = getattr(a, "dtype", None)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"params must be a float32 or float64 numpy.ndarray (a layer stack's params), got "
                        f"{dtype if dtype is not None else type(a).__name__}")
    return dtype


class SGD(Optimizer):
    """SGD with optional momentum and weight decay, as PyTorch's SGD:
    velocity = momentum·velocity + (g + weight_decay·p); p -= lr·velocity."""
    name = "sgd"
    state_names = ("velocity",)
    hyper_names = ("lr", "momentum", "weight_decay")
    positive, fractions = ("lr",), ("momentum",)

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0):
        self._set(lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _update(self, params, grads, t):
        h = self.hyper_in(params.dtype)
        return sgd_update(params, grads, self.state["velocity"], h["lr"], h["momentum"], h["weight_decay"])


class Adam(Optimizer):
    """Adam with bias correction; weight_decay adds λ·p to the gradient (L2), as PyTorch's
    Adam does. AdamW decays the weights apart from the gradient instead."""
    name = "adam"
    state_names = ("m", "v")
    hyper_names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    positive, fractions = ("lr", "eps"), ("beta1", "beta2")
    decoupled = False

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, *, betas=None):
        if betas is not None:               # PyTorch's spelling: betas=(beta1, beta2)
            if (beta1, beta2) != (0.9, 0.999):
                raise TypeError("give betas=(beta1, beta2) or beta1 and beta2, not both")
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
            beta1, beta2 = betas
        self._set(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)

    def _rules(self, h):
        if self.decoupled and h["lr"] * h["weight_decay"] >= 1:
            raise ValueError(f"AdamW shrinks the weights by lr·weight_decay each step, which must be < 1, got "
                             f"lr={h['lr']}, weight_decay={h['weight_decay']}")

    def _update(self, params, grads, t):
        h, wd = self.hyper_in(params.dtype), self.weight_decay
        l2, keep = (0.0, 1.0 - self.lr * wd) if self.decoupled else (h["weight_decay"], 1.0)
        return adam_step(params, grads, self.state["m"], self.state["v"], h["lr"], h["beta1"], h["beta2"], h["eps"],
                         t, _range(params.dtype)[0], l2, keep)

    def check_state(self, state):
        """Refuse moments no Adam run can produce (v < 0: √v would be NaN)."""
        if (state["v"] < 0).any():
            raise ValueError("Adam's second moment v must be >= 0")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as PyTorch's AdamW:
    p ← p·(1 - lr·weight_decay), then Adam's step on g. PyTorch's default weight_decay 0.01."""
    name = "adamw"
    decoupled = True

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, *, betas=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, betas=betas)


OPTIMIZERS = dict(zip(choices.OPTIMIZERS, (Adam, SGD, AdamW)))


def from_config(cfg):
    """An optimizer from `Optimizer.config()` output (its step count t restored by the caller)."""
    cfg = dict(cfg)
    name, _ = cfg.pop("name"), cfg.pop("t", 0)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    v.unknown(f"{name} settings", cfg, OPTIMIZERS[name]().hyper())
    return OPTIMIZERS[name](**cfg)


def of(optimizer):
    """The optimizer a Model was given: an Optimizer, a name ("adam", "sgd", "adamw": defaults) or
    None (Adam(lr=1e-3))."""
    if optimizer is None:
        return Adam()
    if isinstance(optimizer, str) and optimizer in OPTIMIZERS:
        return OPTIMIZERS[optimizer]()
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastlstm optimizer (fastlstm.Adam(...), fastlstm.AdamW(...), "
                        f"fastlstm.SGD(...)) "
                        f"or one of {sorted(OPTIMIZERS)}, got {optimizer!r}{v.meant(optimizer, OPTIMIZERS)}")
    return optimizer
