import os
import sys

# Before NumPy loads OpenBLAS, and torch before fastlstm: see compare.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
sys.path.insert(0, os.path.dirname(__file__))

try:
    import torch  # noqa: E402,F401
except ImportError:        # test_bench.py skips, saying how to install it
    pass

import fastlstm  # noqa: E402,F401
