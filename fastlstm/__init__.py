"""fastlstm: a compact, fast LSTM training engine on NumPy arrays (Numba kernels).

The public names load on first use (PEP 562), so that `fastlstm train` can install its
Ctrl-C handler before NumPy, Numba and the kernels load: an interrupt at any moment of
start-up then ends with a message, never a traceback."""
from importlib import import_module as _import_module

from . import _config  # noqa: F401  (sets Numba's environment before numba is imported)

__version__ = "0.9.0"
_PUBLIC = {"LSTM": "recurrent", "RNN": "recurrent", "GRU": "recurrent", "Model": "model", "NonFiniteError": "model",
           "load": "model", "SGD": "optim", "Adam": "optim", "AdamW": "optim", "CheckpointError": "checkpoint",
           "export_onnx": "export"}
__all__ = [*_PUBLIC, "optim", "__version__"]
_MODULES = ("optim", "recurrent", "model", "checkpoint", "kernels", "heads", "tasks", "carousel", "distributed", "capi",
            "export", "data", "training")


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(_import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name in _MODULES:
        value = _import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'fastlstm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
