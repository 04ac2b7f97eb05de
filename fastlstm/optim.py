"""Optimizers and gradient clipping on the flat parameter and gradient arrays.

Each update is one in-place Numba kernel over the flat arrays (no temporaries); the state
(velocity, moments) lives in arrays of the same layout, so checkpoints and MPI see one
array each.
"""
import numpy as np
from numba import njit

from . import _validate as v
from ._config import JIT
from .kernels import sum_squares


@njit(**JIT)
def scale(g, s):
    for k in range(g.size):
        g[k] *= s


@njit(**JIT)
def sgd_update(p, g, velocity, lr, momentum):
    """velocity = momentum·velocity + g;  p -= lr·velocity   (plain SGD when momentum = 0)."""
    for k in range(p.size):
        velocity[k] = momentum * velocity[k] + g[k]
        p[k] -= lr * velocity[k]


@njit(**JIT)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, t):
    """Adam (Kingma & Ba 2015) at step t ≥ 1, with bias correction:
    m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;  p -= lr · m̂ / (√v̂ + ε)."""
    c1 = 1.0 - beta1 ** t
    c2 = 1.0 - beta2 ** t
    for k in range(p.size):
        m[k] = beta1 * m[k] + (1.0 - beta1) * g[k]
        v[k] = beta2 * v[k] + (1.0 - beta2) * g[k] * g[k]
        p[k] -= lr * (m[k] / c1) / (np.sqrt(v[k] / c2) + eps)


def clip_by_global_norm(grads, max_norm):
    """Scale grads in place so that ‖grads‖₂ ≤ max_norm; returns the norm before clipping
    (non-finite if any gradient is, and then grads are left alone)."""
    norm = float(np.sqrt(sum_squares(grads)))
    if max_norm is not None and np.isfinite(norm) and norm > max_norm:
        scale(grads, grads.dtype.type(max_norm / norm))
    return norm


class Optimizer:
    """An update rule with hyperparameters and state arrays shaped like the parameters."""
    name = None
    _state_names = ()

    def bind(self, n, dtype):
        """Allocate zeroed state for n parameters (called by the model that owns it)."""
        self.state = {k: np.zeros(n, dtype) for k in self._state_names}
        self.t = 0
        return self

    def config(self):
        return dict(name=self.name, t=self.t, **self.hyper())


class SGD(Optimizer):
    """SGD with optional momentum: velocity = momentum·velocity + g; p -= lr·velocity."""
    name = "sgd"
    _state_names = ("velocity",)

    def __init__(self, lr=0.01, momentum=0.0):
        self.lr = v.finite_float("lr", lr)
        self.momentum = v.finite_float("momentum", momentum)
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"SGD needs lr > 0 and 0 <= momentum < 1, got lr={lr}, momentum={momentum}")

    def hyper(self):
        return dict(lr=self.lr, momentum=self.momentum)

    def step(self, params, grads):
        self.t += 1
        sgd_update(params, grads, self.state["velocity"], params.dtype.type(self.lr),
                   params.dtype.type(self.momentum))


class Adam(Optimizer):
    """Adam with bias correction."""
    name = "adam"
    _state_names = ("m", "v")

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = (
            v.finite_float(n, x) for n, x in (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps)))
        if self.lr <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1) or self.eps <= 0:
            raise ValueError(f"Adam needs lr > 0, 0 <= beta1, beta2 < 1 and eps > 0, got {self.hyper()}")

    def hyper(self):
        return dict(lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps)

    def step(self, params, grads):
        self.t += 1
        dt = params.dtype.type
        adam_update(params, grads, self.state["m"], self.state["v"], dt(self.lr), dt(self.beta1),
                    dt(self.beta2), dt(self.eps), self.t)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def from_config(cfg):
    """An optimizer from `Optimizer.config()` output (its step count t restored by the caller)."""
    cfg = dict(cfg)
    name, _ = cfg.pop("name"), cfg.pop("t", 0)
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](**cfg)
