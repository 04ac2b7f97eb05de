"""The big products (δW, δX, the forward's input half, the head) on a private OpenBLAS,
run single-threaded in fixed row blocks on Numba's thread pool.

fastlstm loads its own OpenBLAS (the scipy-openblas32 wheel, symbols prefixed `scipy_`)
with one thread, and `matmul` splits a product's output rows into blocks that Numba's
threads take, each block one single-threaded OpenBLAS call (the kernel calls the library's
C entry point by name, which llvmlite resolves). So one thread pool runs a whole step:
no second pool wakes up (100 µs a wake-up on the virtual machines measured), spins or
steals the cores from the kernels, whatever was imported first. The blocks depend on
the product's shape and on the machine's CPU count, never on the thread count, so the
bits are the same for any number of threads (docs/performance.md has the figures).
Without the wheel the products fall back to NumPy (and `_config.blas_turn`).
"""
import ctypes
import os

import numpy as np
from numba import get_num_threads, prange, types

from ._config import JIT, PARALLEL_JIT, njit

_ROW, _N, _T = 101, 111, 112        # CblasRowMajor, CblasNoTrans, CblasTrans
_NAMES = {np.dtype(np.float32): ("scipy_cblas_sgemm", types.float32),   # entry point, its real for Numba
          np.dtype(np.float64): ("scipy_cblas_dgemm", types.float64)}
_THREADS = ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads")
_gemm = None
# Blocks of a product: as many as the machine has CPUs (a power of two, at least 2, so that
# 1, 2, 4, ... threads share them evenly), each of at least MIN_ROWS output rows; a product
# under SMALL multiply-adds is one call on the calling thread (waking threads costs more).
# Each block packs the whole other operand again: on 2 CPUs two blocks made δW 3–5% faster
# than four at the small to DeepBench shapes (docs/performance.md, thirty-third run).
BLOCKS = max(2, 1 << ((os.cpu_count() or 1) - 1).bit_length())
MIN_ROWS, SMALL = 32, 1 << 19


def _load():
    """{dtype: cblas ?gemm} of the private OpenBLAS, set to one thread, its entry points (and
    its thread count's getter and setter) made known to the kernels (which alone call
    them; the dict keeps the library loaded); {} when the wheel is missing."""
    try:
        import llvmlite.binding as llvm
        import scipy_openblas32
    except ImportError:
        return {}
    lib = library(scipy_openblas32)
    lib.scipy_openblas_set_num_threads(1)       # the threads are Numba's (_gemm_tasks)
    for name in [name for name, _ in _NAMES.values()] + list(_THREADS):
        llvm.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
    return {dtype: getattr(lib, name) for dtype, (name, _) in _NAMES.items()}


def library(wheel):
    """The private OpenBLAS of the scipy-openblas32 module `wheel` (loaded once: a second
    call gives the same library)."""
    return ctypes.CDLL(os.path.join(wheel.get_lib_dir(), "libscipy_openblas.so"), mode=ctypes.RTLD_LOCAL)


def available():
    global _gemm
    if _gemm is None:
        _gemm = _load()
    return bool(_gemm)


_i, _p = types.intc, types.intp                 # C int, and an address
_sgemm, _dgemm = (types.ExternalFunction(name, types.void(_i, _i, _i, _i, _i, _i, real, _p, _i, _p, _i, real, _p, _i))
                  for name, real in _NAMES.values())
_get_threads = types.ExternalFunction(_THREADS[0], _i())
_set_threads = types.ExternalFunction(_THREADS[1], types.void(_i))


@njit(**JIT)
def _one_thread():
    """Put the private OpenBLAS back to one thread where something else raised it, before
    a product runs (on the calling thread): threadpoolctl's threadpool_limits(n,
    user_api="blas"), which people call to size NumPy's BLAS, sets every OpenBLAS in the
    process, this one too, and its threads inside each of Numba's made a small training
    step 1.6-2.5x slower (docs/performance.md). A read of one integer when nothing did."""
    if _get_threads() != 1:
        _set_threads(1)


@njit(**JIT)
def _gemm_block(es, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc, nblk, q):
    """Block q of nblk of C (M, N) = A B + beta C at addresses a, b, c (row-major, leading
    dimensions lda, ldb, ldc; ta, tb: CBLAS transpose flags), es the element size (4:
    sgemm, 8: dgemm): its rows of C, one single-threaded call. Each row of C is one block's
    work, so its bits do not depend on which thread took the block."""
    per = (M + nblk - 1) // nblk
    m0 = q * per
    m1 = min(M, m0 + per)
    if m1 > m0:
        ao = a + es * (m0 * lda if ta == _N else m0)     # A's rows m0.. (columns of Aᵀ with ta)
        co = c + es * m0 * ldc
        if es == 4:
            _sgemm(_ROW, ta, tb, m1 - m0, N, K, np.float32(1.0), ao, lda, b, ldb, np.float32(beta), co, ldc)
        else:
            _dgemm(_ROW, ta, tb, m1 - m0, N, K, 1.0, ao, lda, b, ldb, np.float64(beta), co, ldc)


@njit(**JIT)
def _gemm_alone(es, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc):
    """One product (`matmul`) in one block, on the calling thread."""
    _one_thread()
    _gemm_block(es, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc, np.int64(1), np.int64(0))   # typed: one compile


@njit(**PARALLEL_JIT)
def _gemm_blocks(es, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc, nblk):
    """One product (`matmul`), its nblk blocks taken by Numba's threads."""
    _one_thread()
    for q in prange(nblk):
        _gemm_block(es, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc, nblk, q)


@njit(**JIT)
def _gemm_task(S, t):
    """Task t of _gemm_tasks: the block of the product (a row of S) that holds it."""
    i = 0
    while t >= S[i, 13]:
        t -= S[i, 13]
        i += 1
    r = S[i]
    _gemm_block(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], t)


@njit(**JIT)
def _gemm_share(S, s, threads, tasks):
    """Thread s's share of a plan's `tasks` (_gemm_tasks): tasks s, s + threads, s + 2·threads, ..."""
    for t in range(s, tasks, threads):
        _gemm_task(S, t)


@njit(**PARALLEL_JIT)
def _gemm_tasks(S, n, serial, threads):
    """The products of a `plan`, rows 0..n-1 of S (·, 14) int64, each _gemm_block's first 14
    arguments (beta 0 or 1): every block of every product a task of one parallel region
    (serial: on the calling thread). Thread s of `threads` (Numba's count) takes the share
    _gemm_share deals it: every threads-th task, so an equal share of each product's blocks.
    prange deals out contiguous ranges, which gave one thread all of δW's blocks and the
    other δX's (half as much work), and the step waited for the first (docs/performance.md)."""
    _one_thread()
    tasks = np.int64(0)                 # typed, not a literal: _gemm_share compiles once
    for i in range(n):
        tasks += S[i, 13]
    if serial:
        _gemm_share(S, np.int64(0), np.int64(1), tasks)
    else:
        threads = min(threads, tasks)
        for s in prange(threads):
            _gemm_share(S, np.int64(s), threads, tasks)     # prange's index is unsigned (kernels' docstring)


def _operand(a):
    """(transpose flag, leading dimension) of a 2-D view whose rows or columns are contiguous."""
    e = a.itemsize
    rows, cols = a.shape
    if a.strides[1] == e or cols == 1:
        return _N, max(a.strides[0] // e if rows > 1 else cols, cols, 1)
    if a.strides[0] == e or rows == 1:
        return _T, max(a.strides[1] // e if cols > 1 else rows, rows, 1)
    raise ValueError("a product operand needs contiguous rows or columns")


def blocks(M, N, K):
    """The row blocks of an (M, K) × (K, N) product: a function of the shape and BLOCKS only."""
    return 1 if M * N * K < SMALL else max(1, min(BLOCKS, M // MIN_ROWS))


def _spec(a, b, out, accumulate):
    """_gemm_block's first 14 arguments for out = a @ b (+ out with accumulate): element
    size, transpose flags, M, N, K, addresses and leading dimensions, beta (0 or 1), and
    the blocks (0 when out is empty)."""
    M, K = a.shape
    N = b.shape[1]
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    return (out.itemsize, ta, tb, M, N, K, address(a), lda, address(b), ldb, int(accumulate), address(out),
            _operand(out)[1], blocks(M, N, K) if M and N else 0)


def address(a):
    """a's data address. Not `a.ctypes.data`: each call of it left 56-byte blocks behind
    that outlived the step (some KB over thousands of steps before it levelled), which
    moved a step's traced peak by up to 728 bytes on Python 3.10 (the allocation test)."""
    return a.__array_interface__["data"][0]


def plan(products, S):
    """The products [(a, b, out, accumulate)] made ready to run together (`run`), each
    out (M, N) = a (M, K) @ b (K, N), or out += a @ b with accumulate, as `matmul`; S an
    int64 scratch of at least (len(products), 14) that the plan fills (a caller's own, so
    that a step allocates nothing and two models never share one). The outputs must not
    overlap: all blocks of all products run at once. Made before a kernel and run right
    after it, the products start while its threads still spin: a sleeping thread costs a
    wake-up (about 100 µs on the machines measured). The plan holds the arrays."""
    if not available():
        return None, products, 0, True
    for i, product in enumerate(products):
        S[i] = _spec(*product)
    macs = sum(int(S[i, 3] * S[i, 4] * S[i, 5]) for i in range(len(products)))
    return S, products, len(products), macs < SMALL


def run(p):
    """Run a `plan`: on the private OpenBLAS one parallel region for every block of every
    product (the calling thread alone under SMALL multiply-adds in all); else NumPy."""
    S, products, n, serial = p
    if S is None:
        for a, b, out, accumulate in products:
            _numpy_product(a, b, out, accumulate)
    elif n:
        _gemm_tasks(S, n, serial, get_num_threads())


def _numpy_product(a, b, out, accumulate):
    """out = a @ b (or +=) by NumPy, without the private OpenBLAS. Adding into an out that is
    not all zeros goes in blocks of 256 rows through a scratch far smaller than out, made
    per call (this fallback only; a training step zeroes its gradients, so its δW is one
    product straight into them)."""
    if not accumulate or not out.any():
        np.matmul(a, b, out=out)
        return
    s = np.empty((min(256, out.shape[0]), out.shape[1]), out.dtype)
    for j in range(0, out.shape[0], len(s)):
        n = min(len(s), out.shape[0] - j)
        np.matmul(a[j:j + n], b, out=s[:n])
        out[j:j + n] += s[:n]


def matmul(a, b, out, accumulate=False):
    """out (M, N) = a (M, K) @ b (K, N), or out += a @ b with accumulate; a and b may be
    transposed views (.T) of row-major arrays; out has contiguous rows. The private
    OpenBLAS when it is there (one call on the calling thread under SMALL multiply-adds,
    else blocks on Numba's threads), else NumPy."""
    if not available():
        _numpy_product(a, b, out, accumulate)
        return out
    spec = _spec(a, b, out, accumulate)
    if spec[-1] == 1:                   # the whole product, on the calling thread
        _gemm_alone(*spec[:-1])
    elif spec[-1] > 1:
        _gemm_blocks(*spec)
    return out
