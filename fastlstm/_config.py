"""Compile flags and threading choices for every Numba kernel, in one place.

Kernels are compiled lazily for float32 and float64 only; every array they take is
C-contiguous, so each kernel has exactly two specialisations.
"""
import os

# Numba's messages carry ANSI colour codes otherwise (unreadable in logs and in the C ABI).
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

# 'reassoc' lets LLVM vectorise the dot products' reductions and 'contract' fuse
# multiply-adds; both are fixed at compile time, so results never depend on the thread
# count. No 'nnan'/'ninf': the validation layer relies on NaN and Inf behaving as IEEE says.
FASTMATH = {"reassoc", "contract"}

JIT = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
PARALLEL_JIT = dict(JIT, parallel=True)

# Rows of the batch that one thread advances through all time steps together.
# Fixed (never derived from the thread count) so that results are bitwise identical
# whatever the number of threads.
ROW_BLOCK = 4
