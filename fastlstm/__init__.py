"""fastlstm: a compact, fast LSTM training engine on NumPy arrays (Numba kernels)."""
from . import _config  # noqa: F401  (sets Numba's environment before numba is imported)
from . import optim
from .checkpoint import CheckpointError
from .recurrent import LSTM, RNN
from .model import Model, NonFiniteError, load
from .optim import SGD, Adam

__version__ = "0.1.0"
__all__ = ["LSTM", "RNN", "Model", "SGD", "Adam", "load", "optim", "CheckpointError", "NonFiniteError",
           "__version__"]
