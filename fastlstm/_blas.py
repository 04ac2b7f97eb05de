"""The big products (δW, δX, the forward's input half, the head) on a private OpenBLAS.

fastlstm loads its own OpenBLAS (the scipy-openblas32 wheel, symbols prefixed `scipy_`)
after `_config` has set OPENBLAS_THREAD_TIMEOUT, so its threads sleep as soon as a product
ends, whatever was imported first. NumPy's OpenBLAS, which spins for a long while after
each product unless that variable was set before NumPy loaded, never runs inside a step,
so it cannot take the cores from the Numba kernels that follow (docs/performance.md has
the figures). Without the wheel the products fall back to NumPy (and `_config.blas_turn`).
"""
import ctypes
import os

import numpy as np

_ROW, _N, _T = 101, 111, 112        # CblasRowMajor, CblasNoTrans, CblasTrans
_gemm = None


def _load():
    """{dtype: cblas ?gemm} of the private OpenBLAS, or {} when the wheel is missing."""
    try:
        import scipy_openblas32
    except ImportError:
        return {}
    lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so"), mode=ctypes.RTLD_LOCAL)
    out = {}
    for dtype, name, real in ((np.float32, "scipy_cblas_sgemm", ctypes.c_float),
                              (np.float64, "scipy_cblas_dgemm", ctypes.c_double)):
        f = getattr(lib, name)
        i, p = ctypes.c_int, ctypes.c_void_p
        f.argtypes = [i, i, i, i, i, i, real, p, i, p, i, real, p, i]
        f.restype = None
        out[np.dtype(dtype)] = f
    return out


def available():
    global _gemm
    if _gemm is None:
        _gemm = _load()
    return bool(_gemm)


def _operand(a):
    """(transpose flag, leading dimension) of a 2-D view whose rows or columns are contiguous."""
    e = a.itemsize
    rows, cols = a.shape
    if a.strides[1] == e or cols == 1:
        return _N, max(a.strides[0] // e if rows > 1 else cols, cols, 1)
    if a.strides[0] == e or rows == 1:
        return _T, max(a.strides[1] // e if cols > 1 else rows, rows, 1)
    raise ValueError("a product operand needs contiguous rows or columns")


def matmul(a, b, out, accumulate=False):
    """out (M, N) = a (M, K) @ b (K, N), or out += a @ b with accumulate; a and b may be
    transposed views (.T) of row-major arrays; out has contiguous rows. The private
    OpenBLAS when it is there, else NumPy."""
    if not available():
        if accumulate:
            out += a @ b
        else:
            np.matmul(a, b, out=out)
        return out
    M, K = a.shape
    N = b.shape[1]
    if M == 0 or N == 0:
        return out
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    _, ldc = _operand(out)
    base = lambda x: x.ctypes.data               # noqa: E731
    _gemm[out.dtype](_ROW, ta, tb, M, N, K, 1.0, base(a), lda, base(b), ldb, 1.0 if accumulate else 0.0,
                     base(out), ldc)
    return out
