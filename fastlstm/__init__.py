"""fastlstm: a compact, fast LSTM training engine on NumPy arrays (Numba kernels)."""
from . import _config  # noqa: F401  (sets Numba's environment before numba is imported)
from .lstm import LSTM

__version__ = "0.1.0"
__all__ = ["LSTM", "__version__"]
