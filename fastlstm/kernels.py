"""Numba kernels of the LSTM derivation (docs/design.md), and of the GRU and the LSTM with
projections (docs/derivation.md), in place on preallocated buffers.

Outputs first, then inputs, then sizes; nothing is validated here (recurrent.py does that once).
Shapes use T steps, B batch rows, D inputs, H hidden units, G = 4H gate columns (the LSTM's
[a; i; f; o], the GRU's [n̂_x; r̂; ẑ; ĥn]; H for the RNN), Hr = h's width (H, or P with a
projection).

Per layer the workspace holds, for one forward:
    I  (T+1, B, D+Hr) I[t] = [x_t ; h_{t-1}] for t < T, and I[t+1, :, D:] = h_t
    Z  (T, B, G)      after forward the gate activations; after backward δz_t (in place)
    C  (T+1, B, H)    c_{-1} = c0 at C[0], c_t at C[t+1] (the LSTM's)
    TC (T, B, H)      tanh(c_t)
    M  (T, B, H)      m_t = o_t ⊙ tanh(c_t), with a projection h_t = W_hr m_t

    P                 W's or U's rows (per block of BLOCKS) and W_hr packed into contiguous panels

The time loop is serial, the batch is parallel: each thread takes a range of rows and
walks them through all T steps, so threads never synchronise inside the loop and never
write to the same memory. The recurrent products run as tiles of 4 or 8 rows of a panel,
or 1 to 3 rows of several (_tile), that keep their outputs in vector registers while
streaming the weight panels.

Calls between kernels pass typed values (np.int64(0), np.bool_(True), np.int64(i) for a
prange index), never literals: Numba compiles a callee again for each literal argument and
for prange's unsigned index (_pack_range was compiled six times), a third of a cold start
(docs/performance.md). Array copies are element loops (_assign), for the same reason.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import JIT, OVERLOAD_JIT, PARALLEL_JIT, njit, start_runtimes

start_runtimes()  # Numba's threads on its own OpenMP runtime, whatever the process loaded first,
                  # and the private OpenBLAS

ALIGN = 64        # bytes: a cache line, one AVX-512 vector


def zeros(shape, dtype):
    """np.zeros whose data starts on an ALIGN-byte boundary, for every buffer the kernels
    stream (parameters, gradients, workspace, optimizer state, the head's buffers, the
    streaming step's scratch and a Model's streaming state). NumPy's own start 16 bytes
    past one as often as not, and then every other 32-byte load straddles two cache lines:
    the streaming step's matrix-vector loop ran 1.4x slower (docs/performance.md)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)

# -- exp, σ and tanh that LLVM can vectorise ------------------------------------------
# libm's expf/tanhf are opaque calls that keep the gate loops scalar (3x slower here).
# These are Cody-Waite range reduction, e^x = 2^n e^r with |r| ≤ ln2/2, plus a Taylor
# polynomial in Estrin's scheme (a chain of 3-4 dependent steps instead of 7-12, so that the
# gates' transcendentals overlap in the pipeline), with 2^n built from its bits: in float64
# degree 12, in float32 degree 7 evaluated in float32. σ and tanh come within 2 eps absolute
# and 5 eps relative (away from 0) of exact (tests/test_activations.py). σ and tanh are
# specialised per dtype: no float64 constant promotes float32, so float32 gates run at the
# full vector width.


def _bitcast(src, dst):
    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], context.get_value_type(dst))
        return dst(src), codegen
    return cast


_f64_from_bits, _bits_of_f64 = _bitcast(types.int64, types.float64), _bitcast(types.float64, types.int64)
_f32_from_bits, _bits_of_f32 = _bitcast(types.int32, types.float32), _bitcast(types.float32, types.int32)
_ROUND64 = 6755399441055744.0        # 1.5·2^52: adding it rounds to an integer in the low bits
_ROUND32 = np.float32(12582912.0)    # 1.5·2^23


@njit(**JIT)
def _exp64(x):
    """e^x in float64 for any real x (clamped to [-708, 709], where e^x stays finite)."""
    x = min(max(x, -708.0), 709.0)
    t = x * 1.4426950408889634 + _ROUND64                   # n = round(x / ln 2)
    n = t - _ROUND64
    r = (x - n * 0.6931471803691238) - n * 1.9082149292705877e-10   # x - n ln 2
    r2 = r * r                                               # Estrin: depth 4, not 12
    r4 = r2 * r2
    p = ((1.0 + r) + r2 * (1 / 2 + r * (1 / 6))) + r4 * (
        ((1 / 24 + r * (1 / 120)) + r2 * (1 / 720 + r * (1 / 5040))) + r4 * (
            ((1 / 40320 + r * (1 / 362880)) + r2 * (1 / 3628800 + r * (1 / 39916800))) + r4 * (1 / 479001600)))
    return p * _f64_from_bits((_bits_of_f64(t) - _bits_of_f64(_ROUND64) + 1023) << 52)  # · 2^n


_E32 = tuple(np.float32(c) for c in (-87.0, 88.0, 1.4426950408889634, 0.693145751953125,
                                     1.4286068203094173e-06, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120,
                                     1 / 720, 1 / 5040, 2.0))


@njit(**JIT)
def _exp32(x):
    """e^x in float32, all arithmetic in float32 (clamped to [-87, 88])."""
    lo, hi, log2e, ln2hi, ln2lo, one, c2, c3, c4, c5, c6, c7, _ = _E32
    x = min(max(x, lo), hi)
    t = x * log2e + _ROUND32
    n = t - _ROUND32
    r = (x - n * ln2hi) - n * ln2lo
    r2 = r * r                                               # Estrin: depth 3, not 7
    p = ((one + r) + r2 * (c2 + r * c3)) + (r2 * r2) * ((c4 + r * c5) + r2 * (c6 + r * c7))
    return p * _f32_from_bits((_bits_of_f32(t) - _bits_of_f32(_ROUND32) + np.int32(127)) << np.int32(23))


def sigmoid(x):
    """σ(x) = 1 / (1 + e^-x), in x's precision (a Numba overload per dtype)."""
    raise NotImplementedError("used inside @njit kernels only")


def tanh(x):
    """tanh(x) = 2 / (1 + e^-2x) - 1, in x's precision (a Numba overload per dtype)."""
    raise NotImplementedError("used inside @njit kernels only")


@overload(sigmoid, jit_options=OVERLOAD_JIT)
def _sigmoid(x):
    if x == types.float32:
        one = _E32[5]
        return lambda x: one / (one + _exp32(-x))
    return lambda x: 1.0 / (1.0 + _exp64(x * -1.0))


@overload(tanh, jit_options=OVERLOAD_JIT)
def _tanh(x):
    if x == types.float32:
        one, two = _E32[5], _E32[12]
        return lambda x: two / (one + _exp32(-two * x)) - one
    return lambda x: 2.0 / (1.0 + _exp64(-2.0 * x)) - 1.0


def _like(x, v):
    """The constant v in x's float type (an int literal would promote float32 to float64)."""
    raise NotImplementedError("used inside @njit kernels only")


@overload(_like, jit_options=OVERLOAD_JIT)
def _like_impl(x, v):
    cast = np.float32 if x == types.float32 else np.float64
    return lambda x, v: cast(v)


@njit(**JIT)
def sum_squares(g):
    """Σ g² accumulated in float64, serially (the same bits whatever the thread count)."""
    s = 0.0
    for k in range(g.size):
        s += np.float64(g[k]) * np.float64(g[k])
    return s


@njit(**JIT)
def add_row_sums(db, Z, s):
    """db (G,) += Σ_i Z[i, :] for Z (N, G): δb from the backward's per-row sums, and the
    head's δbias = Σ δP. s (G,) scratch. Rows in order, vectorised along them: the bits of
    NumPy's sum over axis 0 for G ≥ 2 (a single column NumPy sums pairwise), with no
    temporary (NumPy 1.x buffers 8192 entries)."""
    s[:] = 0
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            s[j] += Z[i, j]
    for j in range(Z.shape[1]):
        db[j] += s[j]


@njit(**JIT)
def all_finite(a):
    """True if no entry of the 1-D array a is NaN or ±Inf (no temporary, unlike NumPy's).
    a - a is 0 for finite entries and NaN otherwise; the sum vectorises (no early exit)."""
    s = a[0] - a[0]
    for k in range(a.size):
        s += a[k] - a[k]
    return s == 0


@njit(**JIT)
def fingerprint(a):
    """(Σ w_k, Σ (2k+1) w_k) modulo 2⁶⁴ over the 1-D array a's 8-byte words w_k (a last
    4-byte word apart): a write that changes any bit of a changes the first sum, unless other
    writes cancel it, and values that trade places change the second (each odd multiplier
    is invertible modulo 2⁶⁴). One pass at memory speed, no temporary: backward() compares
    its forward()'s with the parameters it finds."""
    n = a.size * a.itemsize // 8
    w = a[:n * 8 // a.itemsize].view(np.uint64)
    s1 = s2 = np.uint64(0)
    for k in range(n):
        s1 += w[k]
        s2 += w[k] * np.uint64(2 * k + 1)
    if n * 8 < a.size * a.itemsize:                     # an odd count of 4-byte entries
        last = np.uint64(a[a.size - 1:].view(np.uint32)[0])
        s1 += last
        s2 += last * np.uint64(2 * n + 1)
    return s1, s2


@njit(**JIT)
def int_bounds(a):
    """(min, max) of the non-empty 1-D integer array a, in one pass and no temporary: NumPy
    1.x's min and max each buffer up to 64 KB for an integer array."""
    lo = hi = a[0]
    for k in range(a.size):
        lo, hi = min(lo, a[k]), max(hi, a[k])
    return lo, hi


@njit(**JIT)
def int_bounds_within(y, lengths):
    """(min, max) of the int64 labels y (T, B) over each row's real steps, t < lengths[b]
    (each row has one at least): a label past a row's length counts for nothing, whatever
    it is, as PyTorch's ignore_index (-100) pads one."""
    lo = hi = y[0, 0]
    for t in range(y.shape[0]):
        for b in range(y.shape[1]):
            if t < lengths[b]:
                lo, hi = min(lo, y[t, b]), max(hi, y[t, b])
    return lo, hi


# -- the recurrent products -------------------------------------------------------------
# z_t += U h_{t-1} and δh_{t-1} = Uᵀ δz_t are, per step, a (B, K) × (K, N) product. Each runs
# as tiles of 4 batch rows × TW output columns (TW = 64 bytes, two AVX2 vectors, or 128 bytes,
# two AVX-512 vectors, as the CPU has: recurrent.tile_bytes): eight vector accumulators stay
# in registers over the whole K loop, and each k costs two vector loads of the packed weight
# panel, four broadcasts and eight FMAs (the register-blocked outer product BLAS kernels use;
# no horizontal sums). With AVX-512's 32 vector registers the tile takes 8 rows and 16
# accumulators: half the panel loads per FMA, and twice the FMAs in flight to cover their
# latency (docs/performance.md has the figures). AVX2's 16 registers hold only the 4-row
# tile. The 1 to 3 rows a thread's range leaves (all of a small batch) spread the
# accumulators across panels instead, 1 row of 8 panels, 2 of 4, 3 of 2 (AVX2: 1 of 4,
# 2 of 2; 3 rows a 4-row tile), rather than sum one row up to four times over. Each output
# is the same chain of FMAs over k whatever the tile, so every tile gives the same bits.
# Numba cannot keep vectors in registers by itself, so the tile is written in LLVM IR
# below. A panel (K rows of TW) is mostly larger than L1 and comes from L2 for every tile;
# the hardware prefetcher alone leaves the FMAs waiting on it, so the tile prefetches the
# panel PREFETCH bytes (16 rows of k) ahead into L1.


PREFETCH = 2048        # bytes of panel ahead that the tile prefetches (docs/performance.md)
FROM_C, FROM_BIAS = 1, 2   # what a tile's sum starts from: flags of its `start` (0: from zero)
TILE_BYTES = (64, 128)  # the tile widths compiled: two 256-bit vectors a row (AVX2), or two 512-bit (AVX-512)


def _make_tile(panel_bytes, masked=False):
    """The tile for panels of `panel_bytes` of columns: two vectors of panel_bytes/2 a row;
    masked: for the last, partial panel, its C and bias read and written in the first
    `cols` columns only (an argument after `start`)."""
    if masked:
        @intrinsic
        def tile(typingctx, C, rows, c0, A, a0, P, pans, K, bias, start, cols):
            return _tile_impl(panel_bytes, C, rows, c0, A, a0, P, pans, K, bias, start, cols)
    else:
        @intrinsic
        def tile(typingctx, C, rows, c0, A, a0, P, pans, K, bias, start):
            return _tile_impl(panel_bytes, C, rows, c0, A, a0, P, pans, K, bias, start)
    return tile


def _tile_impl(panel_bytes, C, rows, c0, A, a0, P, pans, K, bias, start, cols=None):
    """C[r_q, c_j:c_j+TW] = s + Σ_{k<K} A[r_q, a0+k] P[p_j, k, :] for the rows r_q of the
    tuple `rows` and the panels p_j of the tuple `pans`, at C's columns c_j = c0 + p_j·TW
    (4 or 8 rows of one panel; 1 to 3 rows of several, what a thread's range leaves: rows ×
    panels × 2 vector accumulators. Repeated rows are allowed: all loads come before the
    stores), where the sum starts from s = 0, C[r_q, c_j:c_j+TW] (start & FROM_C),
    C[...] + bias[c_j:c_j+TW] (FROM_C | FROM_BIAS) or bias[c_j:c_j+TW] (FROM_BIAS): the bias
    added here, not in a pass of its own, and bias unread without FROM_BIAS.

    C, A: 2-D C-contiguous; P (panels, ≥K, TW) C-contiguous, packed weight panels; bias 1-D
    C-contiguous. For each row and column the sum runs k = 0, 1, … in order with fused
    multiply-adds: its bits depend on nothing but that row's inputs, whatever the tile. With
    `cols` (the masked tile) only the first `cols` columns of each panel's C and bias are
    read and written (masked loads and stores; P's padding columns are zeros): the last
    panel of a width that TW does not divide, at the tile's speed and bits.
    """
    if not (all(isinstance(a, types.Array) and a.ndim == n and a.layout == "C" and a.dtype == C.dtype
                for a, n in ((C, 2), (A, 2), (P, 3), (bias, 1)))
            and isinstance(rows, types.UniTuple) and isinstance(pans, types.UniTuple)):
        return None
    nr, npn = rows.count, pans.count

    def codegen(context, builder, sig, args):
        cv, rows_v, c0, av, a0, pv, pans_v, K, bv, start = args[:10]
        i64, i32 = ir.IntType(64), ir.IntType(32)
        elem = context.get_data_type(C.dtype)
        es = context.get_abi_sizeof(elem)
        w = panel_bytes // 2 // es                              # lanes of one vector
        vec = ir.VectorType(elem, w)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fma.v{w}f{8 * es}")
        i8p = ir.IntType(8).as_pointer()
        prefetch = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                  "llvm.prefetch.p0i8")
        vp, align = vec.as_pointer(), ir.Constant(i32, es)
        if cols is not None:                                    # lane l of vector v: column v·w + l < cols
            mty = ir.VectorType(ir.IntType(1), w)
            mload = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vp, i32, mty, vec]),
                                                   f"llvm.masked.load.v{w}f{8 * es}.p0v{w}f{8 * es}")
            mstore = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [vec, vp, i32, mty]),
                                                    f"llvm.masked.store.v{w}f{8 * es}.p0v{w}f{8 * es}")
            n = builder.insert_element(ir.Constant(ir.VectorType(i64, w), ir.Undefined), args[10], ir.Constant(i32, 0))
            n = builder.shuffle_vector(n, ir.Constant(ir.VectorType(i64, w), ir.Undefined),
                                       ir.Constant(ir.VectorType(i32, w), [0] * w))
            masks = [builder.icmp_unsigned("<", ir.Constant(ir.VectorType(i64, w), [v * w + lane for lane in range(w)]), n)
                     for v in range(2)]

        def load(ptr, v):                                       # C's or bias's vector v
            if cols is None:
                return builder.load(ptr, align=es)
            return builder.call(mload, [ptr, align, masks[v], ir.Constant(vec, None)])

        def store(value, ptr, v):
            if cols is None:
                builder.store(value, ptr, align=es)
            else:
                builder.call(mstore, [value, ptr, align, masks[v]])

        def rows_of(aty, val):                                  # (address of [0,…], strides)
            a = context.make_array(aty)(context, builder, val)
            return builder.ptrtoint(a.data, i64), cgutils.unpack_tuple(builder, a.strides, aty.ndim)

        def at(array, ty, *index):                              # pointer to array[index…] (the last in elements)
            base, strides = array
            off = builder.mul(index[-1], ir.Constant(i64, es))
            for i, s in zip(index[:-1], strides):
                off = builder.add(off, builder.mul(i, s))
            return builder.inttoptr(builder.add(base, off), ty.as_pointer())

        Ca, Aa, Pa = (rows_of(t, v) for t, v in zip((C, A, P), (cv, av, pv)))
        rows = cgutils.unpack_tuple(builder, rows_v, nr)
        pans = cgutils.unpack_tuple(builder, pans_v, npn)
        tw = ir.Constant(i64, w * 2)
        cj = [builder.add(c0, builder.mul(p, tw)) for p in pans]   # each panel's first column of C
        zero, undef = ir.Constant(vec, None), ir.Constant(vec, ir.Undefined)
        has = [builder.icmp_unsigned("!=", builder.and_(start, ir.Constant(start.type, flag)),
                                     ir.Constant(start.type, 0)) for flag in (FROM_C, FROM_BIAS)]
        out = [[[builder.gep(at(Ca, vec, r, c), [ir.Constant(i64, v)]) for v in range(2)] for c in cj] for r in rows]
        acc = [[[cgutils.alloca_once(builder, vec) for _ in range(2)] for _ in pans] for _ in rows]  # in registers
        b0 = context.make_array(bias)(context, builder, bv).data
        with builder.if_else(has[1]) as (with_bias, without):
            with with_bias:                                     # C + b (one rounding, as z += b) or b
                for j, c in enumerate(cj):
                    bk = [load(builder.gep(builder.bitcast(builder.gep(b0, [c]), vp), [ir.Constant(i64, v)]), v)
                          for v in range(2)]
                    for q in range(nr):
                        for v in range(2):
                            x = load(out[q][j][v], v)
                            builder.store(builder.select(has[0], builder.fadd(x, bk[v]), bk[v]), acc[q][j][v])
            with without:
                for q in range(nr):
                    for j in range(npn):
                        for v in range(2):
                            builder.store(builder.select(has[0], load(out[q][j][v], v), zero), acc[q][j][v])
        a_row = [at(Aa, elem, r, a0) for r in rows]
        splat = ir.Constant(ir.VectorType(i32, w), [0] * w)
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            s = [builder.shuffle_vector(builder.insert_element(undef, builder.load(builder.gep(a, [k])),
                                                               ir.Constant(i32, 0)), undef, splat) for a in a_row]
            for j, p in enumerate(pans):
                pk = at(Pa, vec, p, k, ir.Constant(i64, 0))
                for line in range(0, panel_bytes, 64):            # the panel PREFETCH bytes ahead, into L1
                    ahead = builder.add(builder.ptrtoint(pk, i64), ir.Constant(i64, PREFETCH + line))
                    builder.call(prefetch, [builder.inttoptr(ahead, i8p)] + [ir.Constant(i32, n) for n in (0, 3, 1)])
                pkv = [builder.load(builder.gep(pk, [ir.Constant(i64, v)]), align=es) for v in range(2)]
                for q in range(nr):
                    for v in range(2):
                        slot = acc[q][j][v]
                        builder.store(builder.call(fma, [s[q], pkv[v], builder.load(slot)]), slot)
        for q in range(nr):
            for j in range(npn):
                for v in range(2):
                    store(builder.load(acc[q][j][v]), out[q][j][v], v)
        return context.get_dummy_value()

    extra = () if cols is None else (cols,)
    return types.void(C, rows, c0, A, a0, P, pans, K, bias, start, *extra), codegen


_tile, _tile_wide = (_make_tile(n) for n in TILE_BYTES)
_tile_part, _tile_wide_part = (_make_tile(n, masked=True) for n in TILE_BYTES)


COPY_PARALLEL = 1 << 16     # elements from which a copy (packing too) pays for waking the threads (docs/performance.md)


# A step's passes over whole arrays (checking x and δy, copying x into I, zeroing the
# gradients) are memory-bound: one core's bandwidth made them a fixed 4.5 ms of a large
# step at 1 and at 16 threads alike (docs/performance.md). From COPY_PARALLEL elements the
# threads split them in runs of COPY_PARALLEL; below, one thread does it.

@njit(**PARALLEL_JIT)
def all_finite_runs(a, ok):
    """all_finite for a 1-D array a of at least COPY_PARALLEL entries, on the threads: run q
    of COPY_PARALLEL entries writes ok[q] (ok: bool, at least that many runs; scratch, so
    that no reduction array is allocated)."""
    n = a.size
    runs = (n + COPY_PARALLEL - 1) // COPY_PARALLEL
    for q in prange(runs):
        lo = np.int64(q) * COPY_PARALLEL
        ok[q] = all_finite(a[lo:min(n, lo + COPY_PARALLEL)])      # a view: its loop vectorises
    for q in range(runs):
        if not ok[q]:
            return False
    return True


@njit(**PARALLEL_JIT)
def fill_zero(a):
    """a[:] = 0 for a 1-D array, on the threads from COPY_PARALLEL entries."""
    n = a.size
    if n < COPY_PARALLEL:
        for k in range(n):              # a loop: outside a prange, `a[:] = 0` is a parallel region
            a[k] = 0
        return
    for q in prange((n + COPY_PARALLEL - 1) // COPY_PARALLEL):
        lo = np.int64(q) * COPY_PARALLEL
        a[lo:min(n, lo + COPY_PARALLEL)] = 0


@njit(**PARALLEL_JIT)
def copy_rows(dst, src):
    """dst[t, r, :K] = src[t, r] for dst (T, B, ≥K) C-contiguous and src (T, B, K), on the
    threads from COPY_PARALLEL elements. (dst whole, not its slice: on a contiguous row the
    copy vectorises.)"""
    T, B, K = src.shape
    if src.size < COPY_PARALLEL:
        for t in range(T):               # two loops: a division per row made narrow rows (D = 2) 3.5x slower
            for r in range(B):
                _assign(dst[t, r, :K], src[t, r])
    else:
        for i in prange(T * B):
            _assign(dst[i // B, i % B, :K], src[i // B, i % B])


@njit(**JIT)
def _pack_range(P, W, k0, transpose, lo, hi):
    """pack_panels' work for panels lo..hi-1 (transpose) or W's rows lo..hi-1 (else). TW is
    a multiple of 8 (TILE_BYTES over the itemsize)."""
    npanel, K, TW = P.shape
    N = W.shape[0] if transpose else W.shape[1] - k0
    if transpose:                       # 8 rows of W read side by side into 8 columns of a panel
        for p in range(lo, hi):
            for m0 in range(0, TW, 8):
                r = p * TW + m0
                if r + 8 <= N:          # 8 explicit stores: up to 3x faster than a loop over TW rows
                    w0, w1, w2, w3 = W[r, k0:k0 + K], W[r + 1, k0:k0 + K], W[r + 2, k0:k0 + K], W[r + 3, k0:k0 + K]
                    w4, w5, w6, w7 = W[r + 4, k0:k0 + K], W[r + 5, k0:k0 + K], W[r + 6, k0:k0 + K], W[r + 7, k0:k0 + K]
                    for k in range(K):
                        q = P[p, k, m0:m0 + 8]
                        q[0], q[1], q[2], q[3] = w0[k], w1[k], w2[k], w3[k]
                        q[4], q[5], q[6], q[7] = w4[k], w5[k], w6[k], w7[k]
                else:                   # the last rows, zero-padded past W's last row
                    for k in range(K):
                        for m in range(8):
                            P[p, k, m0 + m] = W[r + m, k0 + k] if r + m < N else 0
    else:                               # W row by row, in order, a panel's TW columns at a time
        full = min(N // TW, npanel)
        for k in range(lo, hi):
            w = W[k, k0:]
            for p in range(full):
                _assign(P[p, k], w[p * TW:(p + 1) * TW])
            for p in range(full, npanel):
                for m in range(TW):
                    c = p * TW + m
                    P[p, k, m] = w[c] if c < N else 0


@njit(**PARALLEL_JIT)
def pack_panels(P, W, k0, transpose):
    """Pack columns k0.. of W (G, ·) into panels of TW output columns, zero-padded.

    transpose: P (ceil(G/TW), K, TW), P[p, k, n] = W[p·TW + n, k0 + k]: the forward's
               z_t = W I_t with k0 = 0, K = D+H (the input half and U h_{t-1} in one sum);
    else       P (ceil(H/TW), G, TW), P[p, j, n] = W[j, k0 + p·TW + n]: the backward's
               δh_{t-1} = Uᵀ δz_t with k0 = D.
    Each panel is contiguous, so a tile streams it without cache-set conflicts (W's rows
    are (D+H)·itemsize bytes apart: 2-8 KiB at the benchmark shapes). transpose: 8 rows of
    W read side by side fill 8 columns of a panel, a panel row at a time; else each row of
    W is copied in order, TW contiguous values into each panel. W is never read down all
    its rows, a column at a time, which costs a TLB miss per element at large shapes
    (docs/performance.md has the variants measured). From
    COPY_PARALLEL elements threads split the panels (forward) or W's rows (backward);
    below, one thread packs them, faster than waking the others. A copy: the same whatever
    the thread count.
    """
    n = P.shape[0] if transpose else P.shape[1]
    if P.size < COPY_PARALLEL:
        _pack_range(P, W, k0, transpose, np.int64(0), n)
    else:
        for i in prange(n):
            _pack_range(P, W, k0, transpose, np.int64(i), np.int64(i) + 1)


@njit(**JIT)
def _panel_product(C, c0, N, r0, r1, A, a0, P, K, bias, start):
    """C[r, c0:c0+N] = s + A[r, a0:a0+K] · panels for rows r0 ≤ r < r1, the sum starting from
    s as `start` says (_tile: 0, C, C + bias or bias, with bias indexed as C's columns): full
    panels by _tile, 4 rows at a time (8 with the wide tile); the 1 to 3 rows left by tiles
    of those rows over several panels, whose accumulators would otherwise sum the same row
    up to four times over (AVX2: 3 rows in a 4-row tile); the last partial panel by the
    masked tile. The same sums and bits whichever tile."""
    TW = P.shape[2]
    wide = TW * C.itemsize == TILE_BYTES[1]      # the panels' width picks the tile (recurrent.tile_bytes)
    full = N // TW
    few = (r1 - r0) % 4                          # rows left after the groups of 4
    if few == 3 and not wide:                    # AVX2's 16 registers: a 4-row tile, one row repeated
        few = 0
    rb = r1 - few                                # rows r0..rb-1 for the 4- and 8-row tiles
    for p in range(full):
        r = r0
        while r < rb:
            if not wide:
                _tile(C, _rows4(r, rb), c0, A, a0, P, (p,), K, bias, start)
                r += 4
            elif r + 4 < rb:                     # AVX-512: 8 rows, 16 of its 32 vector registers
                _tile_wide(C, _rows4(r, rb) + _rows4(r + 4, rb), c0, A, a0, P, (p,), K, bias, start)
                r += 8
            else:
                _tile_wide(C, _rows4(r, rb), c0, A, a0, P, (p,), K, bias, start)
                r += 4
    p = 0                                        # 1 to 3 rows over several panels: 8 (AVX2) or 16 accumulators
    if few and wide:
        n = 8 // few
        while p + n <= full:
            if few == 1:
                _tile_wide(C, (rb,), c0, A, a0, P, (p, p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7), K, bias, start)
            elif few == 2:
                _tile_wide(C, (rb, rb + 1), c0, A, a0, P, (p, p + 1, p + 2, p + 3), K, bias, start)
            else:                                # 12 accumulators
                _tile_wide(C, (rb, rb + 1, rb + 2), c0, A, a0, P, (p, p + 1), K, bias, start)
            p += n
    elif few:
        n = 4 // few
        while p + n <= full:
            if few == 1:
                _tile(C, (rb,), c0, A, a0, P, (p, p + 1, p + 2, p + 3), K, bias, start)
            else:
                _tile(C, (rb, rb + 1), c0, A, a0, P, (p, p + 1), K, bias, start)
            p += n
    if few:
        for p in range(p, full):                 # the panels left over: a 4-row tile, rows repeated
            if wide:
                _tile_wide(C, _rows4(rb, r1), c0, A, a0, P, (p,), K, bias, start)
            else:
                _tile(C, _rows4(rb, r1), c0, A, a0, P, (p,), K, bias, start)
    cols = np.int64(N - full * TW)
    if cols == 0:
        return
    r = r0                                       # the last, partial panel: the masked tiles
    while r < r1:
        if not wide:
            _tile_part(C, _rows4(r, r1), c0, A, a0, P, (full,), K, bias, start, cols)
            r += 4
        elif r + 4 < r1:
            _tile_wide_part(C, _rows4(r, r1) + _rows4(r + 4, r1), c0, A, a0, P, (full,), K, bias, start, cols)
            r += 8
        else:
            _tile_wide_part(C, _rows4(r, r1), c0, A, a0, P, (full,), K, bias, start, cols)
            r += 4


@njit(**JIT)
def block_span(blk, D, H, Hr, a0, forward):
    """What a block of a cell's products covers (see BLOCKS): (first column of Z, its width,
    first row of W, first column k of [x ; h] summed, number summed), with H the cell's
    units and Hr h's width (H, or P with a projection). forward: the tiles' sum
    z_t += W[rows, k] [x ; h]_k over k ≥ a0 (a0 = D when BLAS gave the input half); else
    the backward's δh_{t-1} += U[rows]ᵀ δz_t[cols] (the h part only)."""
    zc, n, wr, xp, hp = blk[0] * H, blk[1] * H, blk[2] * H, blk[3], blk[4]
    if forward:
        lo = a0 if xp else D
        hi = D + Hr if hp else D
    else:
        lo, hi = D, D + Hr * hp
    return zc, n, wr, lo, max(hi - lo, 0)


@njit(**JIT)
def panel_extent(q, blocks, D, H, Hr, a0, forward, TW):
    """(panels, K) of the packed weights of block q: its output columns (the block's, or
    δh's Hr in the backward) in panels of TW, each summing over K (0: no part). q = the
    number of blocks: the projection W_hr (Hr, H), when Hr < H: h_t = W_hr m_t forward
    (Hr columns, sums over H), δm_t = W_hrᵀ δh_t backward (H columns, sums over Hr)."""
    if q == blocks.shape[0]:
        if Hr == H:
            return 0, 0
        return ((Hr if forward else H) + TW - 1) // TW, H if forward else Hr
    zc, n, wr, lo, K = block_span(blocks[q], D, H, Hr, a0, forward)
    if not forward:                  # δh_{t-1} (Hr columns) sums over the block's δz columns
        n, K = Hr, n if K > 0 else 0
    return (n + TW - 1) // TW, K


@njit(**JIT)
def _panels(P, blocks, D, H, Hr, a0, forward, TW, q):
    """The packed panels of block q (or the projection's, q = number of blocks) inside the
    flat buffer P, (panels, K, TW), as pack_unit wrote them: one after another."""
    o = 0
    for j in range(q):
        npanel, K = panel_extent(j, blocks, D, H, Hr, a0, forward, TW)
        o += npanel * K * TW
    npanel, K = panel_extent(q, blocks, D, H, Hr, a0, forward, TW)
    return P[o:o + npanel * K * TW].reshape((npanel, K, TW))


@njit(**JIT)
def pack_unit(P, W, R, blocks, D, H, Hr, a0, forward, TW):
    """Pack a unit's weights W (rows, D+Hr) and projection R = W_hr (Hr, H) (of size 0
    without one) into the flat P, one block after another (_panels' layout): forward, W's
    rows of each block over its columns k ≥ a0, then R transposed (for recurrent_forward);
    else U's rows of each block with an h part, then R (for recurrent_backward)."""
    nb = blocks.shape[0]
    for q in range(nb):
        zc, n, wr, lo, K = block_span(blocks[q], D, H, Hr, a0, forward)
        if K > 0:
            pack_panels(_panels(P, blocks, D, H, Hr, a0, forward, TW, q), W[wr:wr + n], lo if forward else D,
                        forward)
    if Hr < H:
        pack_panels(_panels(P, blocks, D, H, Hr, a0, forward, TW, nb), R, np.int64(0), forward)


@njit(**JIT)
def _dot8(W, j, x, lo, hi):
    """W[j+q, lo:hi] · x[lo:hi] for q = 0..7: eight rows of W against one input row (the
    streaming step, where a block of batch rows would repeat one row). Each k-step is one
    load of x and eight fused multiply-adds into eight sums, which LLVM vectorises along k
    (reassoc): eight vector accumulators, one load of W per multiply-add, the load ports'
    limit. The rows are sliced first: a loop from a run-time `lo` stays scalar (4x slower)."""
    xs = x[lo:hi]
    a0, a1, a2, a3 = W[j][lo:hi], W[j + 1][lo:hi], W[j + 2][lo:hi], W[j + 3][lo:hi]
    a4, a5, a6, a7 = W[j + 4][lo:hi], W[j + 5][lo:hi], W[j + 6][lo:hi], W[j + 7][lo:hi]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = _like(x[0], 0.0)
    for k in range(hi - lo):
        xk = xs[k]
        s0 += a0[k] * xk
        s1 += a1[k] * xk
        s2 += a2[k] * xk
        s3 += a3[k] * xk
        s4 += a4[k] * xk
        s5 += a5[k] * xk
        s6 += a6[k] * xk
        s7 += a7[k] * xk
    return s0, s1, s2, s3, s4, s5, s6, s7


@njit(**JIT)
def _dot1(w, x, lo, hi):
    """w[lo:hi] · x[lo:hi] (the rows of W past the last block of eight)."""
    ws, xs = w[lo:hi], x[lo:hi]
    s = _like(x[0], 0.0)
    for k in range(hi - lo):
        s += ws[k] * xs[k]
    return s


@njit(**JIT)
def _rows4(r, r1):
    """Rows r..r+3 for a 4-row tile; past the last row (r1-1) they repeat it, so a short
    group runs the same code (and gives the same bits) as a full one."""
    return r, min(r + 1, r1 - 1), min(r + 2, r1 - 1), min(r + 3, r1 - 1)


# Cell kinds: the recurrence and its products are shared; only the cell differs (the two
# RNNs only in their nonlinearity, tanh or ReLU).
LSTM_CELL, RNN_CELL, GRU_CELL, RNN_RELU_CELL = 0, 1, 2, 3

# What each cell's products are made of, in blocks of H: rows (zc, n, wr, x, h) say that
# Z's columns zc..zc+n receive W's rows wr..wr+n times x (if x) and h_{t-1} (if h). The
# LSTM's and RNN's pre-activations are one product z = b + W [x ; h]. The GRU's W has rows
# [n ; r ; z] (3H) and Z four blocks [n̂_x ; r̂ ; ẑ ; ĥn]: its candidate n needs W_in x and
# W_hn h apart (r multiplies the second only), so the n rows appear twice, once against x
# and once against h. The blocks order the columns so that the input half [n̂_x ; r̂ ; ẑ]
# and the recurrent half [r̂ ; ẑ ; ĥn] are each contiguous in Z.
BLOCKS = (np.array([[0, 4, 0, 1, 1]]), np.array([[0, 1, 0, 1, 1]]),
          np.array([[0, 1, 0, 1, 0], [1, 2, 1, 1, 1], [3, 1, 0, 0, 1]]), np.array([[0, 1, 0, 1, 1]]))


@njit(**JIT)
def cell_forward(z, c, tc, h, c_prev, H):
    """LSTM, one row of one step: z (4H) pre-activations in, gate activations out (in place).

    a = tanh(â), i = σ(î), f = σ(f̂), o = σ(ô); c = i⊙a + f⊙c_prev; h = o⊙tanh(c).
    """
    for k in range(H):
        a = tanh(z[k])
        i = sigmoid(z[H + k])
        f = sigmoid(z[2 * H + k])
        o = sigmoid(z[3 * H + k])
        z[k] = a
        z[H + k] = i
        z[2 * H + k] = f
        z[3 * H + k] = o
        c[k] = i * a + f * c_prev[k]
    for k in range(H):                  # a second pass: the four gates' chains above run
        tck = tanh(c[k])                # side by side, not in series with tanh(c)
        tc[k] = tck
        h[k] = z[3 * H + k] * tck


@njit(**JIT)
def cell_backward(z, dc, dh, dy, tc, c_prev, H):
    """LSTM, one row of one step backward: gate activations in z become δz (in place).

    dh holds δh_t carried from step t+1 (dy adds the output's gradient); dc holds
    δc_{t+1} ⊙ f_{t+1} on entry and δc_t ⊙ f_t (the carousel's carry to t-1) on exit.
    """
    for k in range(H):
        a = z[k]
        i = z[H + k]
        f = z[2 * H + k]
        o = z[3 * H + k]
        t = tc[k]
        one = _like(t, 1.0)
        dht = dy[k] + dh[k]
        do = dht * t                                   # δo = δh ⊙ tanh(c)
        dct = dht * o * (one - t * t) + dc[k]            # δc = δh⊙o⊙(1-tanh²c) + δc_{t+1}⊙f_{t+1}
        z[k] = dct * i * (one - a * a)                   # δâ = δc⊙i ⊙ (1-a²)
        z[H + k] = dct * a * i * (one - i)               # δî = δc⊙a ⊙ i(1-i)
        z[2 * H + k] = dct * c_prev[k] * f * (one - f)   # δf̂ = δc⊙c_{t-1} ⊙ f(1-f)
        z[3 * H + k] = do * o * (one - o)                # δô = δo ⊙ o(1-o)
        dc[k] = dct * f


@njit(**JIT)
def gru_cell_forward(z, h, h_prev, H):
    """GRU (PyTorch's), one row of one step: z (4H) = [n̂_x ; r̂ ; ẑ ; ĥn] in, with
    n̂_x = W_in x + b_in and ĥn = W_hn h_prev + b_hn apart; out, in place, [n ; r ; z ; ĥn]:
    r = σ(r̂), z = σ(ẑ), n = tanh(n̂_x + r⊙ĥn), h = (1-z)⊙n + z⊙h_prev."""
    for k in range(H):
        r = sigmoid(z[H + k])
        u = sigmoid(z[2 * H + k])
        n = tanh(z[k] + r * z[3 * H + k])
        z[k] = n
        z[H + k] = r
        z[2 * H + k] = u
        h[k] = (_like(n, 1.0) - u) * n + u * h_prev[k]


@njit(**JIT)
def gru_cell_backward(z, dc, dh, dy, h_prev, H):
    """GRU backward, one row of one step: [n ; r ; z ; ĥn] in z become
    δz = [δn̂ ; δr̂ ; δẑ ; δĥn] (in place), with δh = dy + dh carried from step t+1:
    δn̂ = δh⊙(1-z)⊙(1-n²) (δ of n̂_x, and of ĥn through r: δĥn = δn̂⊙r, δr̂ = δn̂⊙ĥn⊙r(1-r)),
    δẑ = δh⊙(h_prev - n)⊙z(1-z). dc receives z⊙δh, the share of δh_{t-1} that passes the
    z-gated identity path untouched (the GRU's carousel); Uᵀδz adds the rest."""
    for k in range(H):
        n = z[k]
        r = z[H + k]
        u = z[2 * H + k]
        one = _like(n, 1.0)
        dht = dy[k] + dh[k]
        dn = dht * (one - u) * (one - n * n)
        z[H + k] = dn * z[3 * H + k] * r * (one - r)
        z[2 * H + k] = dht * (h_prev[k] - n) * u * (one - u)
        z[3 * H + k] = dn * r
        z[k] = dn
        dc[k] = dht * u


@njit(**JIT)
def rnn_cell_forward(z, h, H, relu):
    """Vanilla RNN, one row of one step: h = tanh(z), or max(z, 0) with relu, kept in z too
    (backward needs it). relu(NaN) stays NaN, as PyTorch's."""
    for k in range(H):
        a = (_like(z[k], 0.0) if z[k] <= 0 else z[k]) if relu else tanh(z[k])
        z[k] = a
        h[k] = a


@njit(**JIT)
def rnn_cell_backward(z, dh, dy, H, relu):
    """Vanilla RNN backward: δz = (δy + δh carried) ⊙ (1 - h²), or ⊙ [h > 0] with relu (where
    PyTorch's ReLU passes its gradient), in place of h in z."""
    for k in range(H):
        a = z[k]
        if relu:
            z[k] = dy[k] + dh[k] if a > 0 else _like(a, 0.0)
        else:
            z[k] = (dy[k] + dh[k]) * (_like(a, 1.0) - a * a)


@njit(**JIT)
def _assign(dst, src):
    """dst[:] = src for 1-D arrays of one length, element by element: a slice assignment
    from an array compiles a shape check whose formatted message took 2 s of a cold start."""
    for k in range(dst.shape[0]):
        dst[k] = src[k]


@njit(**JIT)
def _chunk(c, nchunks, n):
    """Rows [r0, r1) of chunk c when n rows are split into nchunks near-equal chunks."""
    return c * n // nchunks, (c + 1) * n // nchunks


@njit(**JIT)
def _forward_rows(Z, C, TC, I, M, P, b, lengths, D, H, a0, r0, r1, cell, blocks, TW):
    """Rows r0..r1-1 of one unit through every step: one task of recurrent_forward."""
    T = Z.shape[0]
    Hr = I.shape[2] - D
    proj = Hr < H
    nb = blocks.shape[0]
    i0, forward = np.int64(0), np.bool_(True)               # typed, not literals (see the module's docstring)
    # One call site each for _panel_product and the cells (q = nb below; `h` picks the cell's
    # output): LLVM inlines every call site, and each copy of the tiles costs about a second
    # of compile (docs/performance.md).
    for t in range(T):
        Zt = Z[t]
        for q in range(nb + 1):                  # z = b (+ the input half, when BLAS made it) + the tiles' sum
            if q < nb:
                zc, n, _, lo, K = block_span(blocks[q], D, H, Hr, a0, forward)
                fresh = a0 == 0 or blocks[q, 3] == 0 # no input half in these columns yet
                if K == 0:                       # nothing to sum: the bias alone
                    for r in range(r0, r1):
                        for j in range(zc, zc + n):  # a loop: outside a parfor, `+=` on slices makes a temporary
                            Zt[r, j] = b[j] if fresh else Zt[r, j] + b[j]
                    continue
                out, c0, N, A, start = Zt, zc, n, I[t], FROM_BIAS if fresh else FROM_C | FROM_BIAS  # b, or Z + b
            else:                                # the blocks done: the cells, then a projection's product
                for r in range(r0, r1):
                    h = M[t, r] if proj else I[t + 1, r, D:]    # m_t = o ⊙ tanh(c_t), projected below
                    if t >= lengths[r]:
                        _assign(C[t + 1, r], C[t, r])
                        if proj:
                            h[:] = 0
                        else:
                            _assign(h, I[t, r, D:])
                    elif cell == LSTM_CELL:
                        cell_forward(Zt[r], C[t + 1, r], TC[t, r], h, C[t, r], H)
                    elif cell == GRU_CELL:
                        gru_cell_forward(Zt[r], h, I[t, r, D:], H)
                    else:
                        rnn_cell_forward(Zt[r], h, H, cell == RNN_RELU_CELL)
                if not proj:
                    break
                out, c0, N, A, lo, K, start = I[t + 1], D, Hr, M[t], i0, H, i0     # h_t = W_hr m_t
            _panel_product(out, c0, N, r0, r1, A, lo, _panels(P, blocks, D, H, Hr, a0, forward, TW, q), K, b, start)
        if proj:                                 # a row past its length keeps h
            for r in range(r0, r1):
                if t >= lengths[r]:
                    _assign(I[t + 1, r, D:], I[t, r, D:])


@njit(**PARALLEL_JIT)
def recurrent_forward(Z, C, TC, I, M, P, b, Zr, Cr, TCr, Ir, Mr, Pr, br, lengths, D, H, a0, nchunks, dirs, cell,
                      blocks, TW):
    """Recurrent part of the forward pass over all steps, for an LSTM, RNN or GRU `cell`.

    Z (T,B,G) receives the gate activations (G = 4H for the LSTM and GRU, H for the RNN);
    I (T+1,B,D+Hr) holds x_t and h_{-1} = h0 at I[0,:,D:] on entry and receives h_t at
    I[t+1,:,D:], so that I[t] = [x_t ; h_{t-1}] (Hr = H, or P for an LSTM with a
    projection); C (T+1,B,H) holds c0 at C[0]; TC (T,B,H) receives tanh(c_t) (both of width
    0 for the RNN and GRU). M (T,B,H) receives m_t = o ⊙ tanh(c_t) with a projection (then
    h_t = W_hr m_t), else is of width 0. P: flat, the packed weights of each of the cell's
    `blocks` (BLOCKS[cell]) over the columns k ≥ a0 (TW columns a panel), then W_hr's, as
    pack_unit packs them; b (G). lengths (B,) int64: past its length a row's h and c are
    carried unchanged (its gates are left unspecified).
    a0 = 0: z_t = b + W I_t, one sum over all D+Hr columns, inputs and recurrence together.
    a0 = D: Z holds the input half W_x x_t on entry (a BLAS product over all steps), and
    z_t = Z[t] + b + U h_{t-1} (the GRU's ĥn columns get b + W_hn h_{t-1} alone).

    Each of `nchunks` threads walks its near-equal range of rows through every step, with
    no synchronisation; a weight panel is read once per step and reused from L1 by all of
    the thread's rows. Each row's bits depend on that row alone, whatever tile sums it: any
    nchunks gives the same bits.
    dirs = 2: the reverse unit of a bidirectional layer (the buffers ending in r, as the
    first set) runs side by side, its own nchunks tasks beside the forward unit's: independent
    work, and each thread streams one unit's panels for more rows. dirs = 1: the first
    set alone (pass it twice).
    """
    for task in prange(dirs * nchunks):
        r0, r1 = _chunk(task % nchunks, nchunks, Z.shape[1])
        u = (Z, C, TC, I, M, P, b) if task < nchunks else (Zr, Cr, TCr, Ir, Mr, Pr, br)   # one call site:
        _forward_rows(*u, lengths, D, H, a0, r0, r1, cell, blocks, TW)       # one copy of it to compile


@njit(**JIT)
def _backward_rows(Z, dh, dc, dhs, probe, dY, C, TC, I, P, dH, dm, dbp, zero, lengths, r0, r1, cell, blocks, TW):
    """Rows r0..r1-1 of one unit back through every step: one task of recurrent_backward."""
    T, _, G = Z.shape
    Hr = dh.shape[1]
    H = max(C.shape[2], Hr)
    D = I.shape[2] - Hr
    proj = Hr < H
    nb = blocks.shape[0]
    record = probe.shape[0] > 0
    has_dy = dY.shape[0] > 0                     # else δy_t = 0, read from `zero` (recurrent_backward)
    i0, forward = np.int64(0), np.bool_(False)              # typed, not literals (see the module's docstring)
    for r in range(r0, r1):
        dbp[r, :] = 0
    # One call site each for _panel_product and the cells, as in _forward_rows (q = -1: a
    # projection's product, before the cells; `g` picks the cell's δh; pq: whose panels).
    for t in range(T - 1, -1, -1):
        Zt = Z[t]
        first = True
        for q in range(-1, nb):
            if q == -1:
                if not proj:
                    continue
                for r in range(r0, r1):           # δh_t, kept for δW_hr; δm_t = W_hrᵀ δh_t
                    if t < lengths[r]:
                        dy = dY[t, r] if has_dy else zero
                        for k in range(Hr):
                            dH[t, r, k] = dy[k] + dh[r, k]
                    else:
                        dH[t, r, :] = 0
                out, c0, N, A, a0, K, bias, start, pq = dm, i0, H, dH[t], i0, Hr, dm[0], i0, nb  # (dm[0]: no bias)
            else:
                if q == 0:                       # the cells, between the projection and the blocks
                    for r in range(r0, r1):
                        dy = dY[t, r] if has_dy and not proj else zero
                        g = dm[r] if proj else dh[r]
                        if t >= lengths[r]:
                            Zt[r, :] = 0
                        elif cell == LSTM_CELL:
                            cell_backward(Zt[r], dc[r], g, dy, TC[t, r], C[t, r], H)
                        elif cell == GRU_CELL:
                            gru_cell_backward(Zt[r], dc[r], g, dy, I[t, r, D:], H)
                        else:
                            rnn_cell_backward(Zt[r], g, dy, H, cell == RNN_RELU_CELL)
                        if t < lengths[r]:       # the row's δb sum, while δz_t is in L1
                            for j in range(G):
                                dbp[r, j] += Zt[r, j]
                zc, n, _, _, K = block_span(blocks[q], D, H, Hr, i0, forward)
                if K == 0:                       # δh_{t-1} = Σ_q U[rows of q]ᵀ δz_t[columns of q]
                    continue
                out, c0, N, A, a0, K, bias, start, pq = dhs, i0, Hr, Zt, zc, n, dhs[0], i0 if first else FROM_C, q
                first = False
            _panel_product(out, c0, N, r0, r1, A, a0, _panels(P, blocks, D, H, Hr, i0, forward, TW, pq), K, bias,
                           start)
        for r in range(r0, r1):
            if t < lengths[r]:
                if cell == GRU_CELL:                  # + z⊙δh_t, the identity path
                    for k in range(H):
                        dh[r, k] = dhs[r, k] + dc[r, k]
                else:
                    _assign(dh[r], dhs[r])
            if record:
                probe[t, r, 0] = sum_squares(dh[r])
                probe[t, r, 1] = sum_squares(dc[r])


@njit(**PARALLEL_JIT)
def recurrent_backward(Z, dh, dc, dhs, probe, dY, C, TC, I, P, dH, dm, dbp, Zr, dhr, dcr, dhsr, prober, dYr, Cr,
                       TCr, Ir, Pr, dHr, dmr, dbpr, zero, lengths, nchunks, dirs, cell, blocks, TW):
    """Recurrent part of the backward pass, walking t = T-1 .. 0.

    Z (T,B,G): gate activations in, δz_t out. dh (B,Hr): δh_{T-1} from the final state in,
    δh_{-1} = δh0 out. dc (B,H): δc_{T-1} in, δc_{-1} = δc0 out (width 0 for the RNN; for
    the GRU, scratch receiving z⊙δh_t). dhs (B,Hr) scratch. dY (T,B,Hr) the output's
    gradient, or (0,B,Hr): none, δy_t = 0 (a head on the last step alone, whose gradient
    enters through dh), read from `zero` instead of a buffer of zeros. I: the forward's
    (the GRU reads h_{t-1}). P: flat, U's panels for each block with an h part, then
    W_hr's, as pack_unit packs them. δh_{t-1} = Uᵀ δz_t: for the LSTM
    all four gates add up; for the GRU the blocks [r̂ ; ẑ] and ĥn, plus z⊙δh_t.
    With a projection (Hr < H): dH (T,B,Hr) receives δh_t (zero past a row's length), for
    δW_hr = Σ_t δh_t m_tᵀ after the loop; dm (B,H) scratch for δm_t = W_hrᵀ δh_t, which
    enters the cell as its δh, with `zero` (H,) zeros as its δy. Without one dH, dm are of
    width 0.
    dbp (B, G) receives each row's Σ_t δz_t (δb = Σ_rows dbp, added in order after the
    kernel by add_row_sums): summed while δz_t is in L1, not from Z after the loop, which
    read all of Z back from memory (docs/performance.md).
    probe (T,B,2) float64, or of length 0 for none: receives, after step t, the squared
    norms ‖∂E/∂h_{t-1}‖², ‖∂E/∂c_{t-1}‖² of the state that step t received. Chunks as in
    forward; dirs = 2 runs the reverse unit (the arguments ending in r) side by side, as there.
    """
    for task in prange(dirs * nchunks):
        r0, r1 = _chunk(task % nchunks, nchunks, Z.shape[1])
        u = ((Z, dh, dc, dhs, probe, dY, C, TC, I, P, dH, dm, dbp) if task < nchunks else
             (Zr, dhr, dcr, dhsr, prober, dYr, Cr, TCr, Ir, Pr, dHr, dmr, dbpr))
        _backward_rows(*u, zero, lengths, r0, r1, cell, blocks, TW)


@njit(**JIT)
def _copy_steps_rows(dst, src, lengths, reverse, add, t0, k0, r0, r1):
    """copy_steps' work for rows r0..r1-1."""
    T, B, K = dst.shape
    for r in range(r0, r1):              # element loops: a slice assignment costs more than its 64-256 copies
        n = lengths[r]
        for t in range(T):
            d = dst[t, r]                # on 1-D views the loops vectorise: 2x faster than on dst[t, r, j]
            if t < n:
                x = src[t0 + (n - 1 - t if reverse else t), r, k0:k0 + K]
                if add:
                    for j in range(K):
                        d[j] += x[j]
                else:
                    _assign(d, x)
            elif not add:
                for j in range(K):
                    d[j] = 0


@njit(**PARALLEL_JIT)
def copy_steps(dst, src, lengths, reverse, add, t0, k0):
    """dst[t, r] = src[t0 + t, r, k0:k0+K] (or src[t0 + L_r-1-t, r, k0:k0+K] with reverse:
    each row's own steps in the reverse order, as the reverse direction of a bidirectional
    layer sees them) for t < L_r; add=True adds instead. Past a row's length dst is zeroed
    (or, adding, left). dst (T, B, K), src (≥t0+T, B, ≥k0+K). One thread below
    COPY_PARALLEL elements, as pack_panels."""
    B = dst.shape[1]
    if dst.size < COPY_PARALLEL:
        _copy_steps_rows(dst, src, lengths, reverse, add, t0, k0, np.int64(0), B)
    else:
        for r in prange(B):
            _copy_steps_rows(dst, src, lengths, reverse, add, t0, k0, np.int64(r), np.int64(r) + 1)


def copy_hidden(y, I, lengths, D, reverse):
    """y (T,B,H) = h_t taken from I[t+1,:,D:], zero past each row's length. reverse: I holds
    a reverse direction, whose step t saw the row's step L-1-t, so y[t] = h of step L-1-t."""
    copy_steps(y, I, lengths, reverse, False, 1, D)


@njit(**JIT)
def scatter_rows(dE, ids, dx):
    """dE[ids[t, r]] += dx[t, r] for every (t, r), serially (the same bits whatever the
    thread count): an embedding's gradient without a one-hot matrix."""
    T, B = ids.shape
    for t in range(T):
        for r in range(B):
            dE[ids[t, r]] += dx[t, r]


_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


@njit(**JIT)
def _mix(z):
    """splitmix64's finaliser: a bijection of uint64 whose outputs pass as independent uniform
    bits for distinct inputs (the counter-based generator of the dropout masks)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**PARALLEL_JIT)
def apply_dropout(X, seed, step, layer, p, row0):
    """X (T,B,K) *= m/(1-p) in place, with m = 0 where u < p and 1 elsewhere, and u uniform in
    [0, 1) from a counter-based generator keyed by (seed, step, layer, t, row0 + r, j): the
    same mask for the forward and the backward of a step, whatever the thread count, and
    for a batch's row whichever part of the batch (row0: the part's first row) it comes in."""
    T, B, K = X.shape
    keep = 1.0 / (1.0 - p)
    key = _mix(_mix(_mix(np.uint64(seed)) ^ np.uint64(step)) ^ np.uint64(layer))
    for r in prange(B):
        for t in range(T):
            base = _mix(_mix(key ^ np.uint64(t)) ^ np.uint64(row0 + r))
            for j in range(K):
                u = np.float64(_mix(base + np.uint64(j) * _GOLDEN) >> _S11) * 2.0 ** -53
                X[t, r, j] = X[t, r, j] * keep if u >= p else 0


STEP_UNITS = 64            # hidden units per task of the streaming step
STEP_PARALLEL = 1 << 17    # B·R·(D+H) multiply-adds per layer from which threads pay off (docs/performance.md)
STEP_PARALLEL_ASLEEP = 1 << 22   # the same when the step must wake them first (recurrent_step's `awake`)
STEP_AWAKE = 20e-6         # seconds after a step within which the threads still spin


@njit(**JIT)
def block_counts(blocks):
    """(blocks of H rows in W, blocks of H columns in Z) of a cell's BLOCKS."""
    rows = cols = 0
    for q in range(blocks.shape[0]):
        rows = max(rows, blocks[q, 2] + blocks[q, 1])
        cols = max(cols, blocks[q, 0] + blocks[q, 1])
    return rows, cols


@njit(**JIT)
def _step_units(k0, w, h, c, xh, z, tc, W, b, Dl, n, cell, blocks):
    """Units k0..k0+w of one layer, every batch row: the rows of z = W [x ; h] + b that feed
    them (one _dot8 per gate and 8 units, over the block's part of [x ; h]), into
    z[r, G·k0:] gate-major, then their cell. h (B,H) receives the cell's output (h, or m
    with a projection), c (B,H) this layer's cell state; xh (B, ≥n) holds [x ; h_{t-1}],
    n = Dl + h's width."""
    B, H = h.shape
    gates = block_counts(blocks)[1]
    for r in range(B):
        zu = z[r, gates * k0:gates * (k0 + w)]
        for q in range(blocks.shape[0]):
            lo = 0 if blocks[q, 3] else Dl
            hi = n if blocks[q, 4] else Dl
            for g in range(blocks[q, 1]):
                j = (blocks[q, 2] + g) * H + k0              # W's row for this gate, unit k0
                zg = blocks[q, 0] + g                         # its block of z
                for q0 in range(0, w - 7, 8):
                    s0, s1, s2, s3, s4, s5, s6, s7 = _dot8(W, j + q0, xh[r], lo, hi)
                    for i, si in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):   # unrolled
                        zu[zg * w + q0 + i] = b[zg * H + k0 + q0 + i] + si
                for i in range(w - w % 8, w):
                    zu[zg * w + i] = b[zg * H + k0 + i] + _dot1(W[j + i], xh[r], lo, hi)
        if cell == LSTM_CELL:
            _assign(tc[1, k0:k0 + w], c[r, k0:k0 + w])      # c_{t-1} apart from c_t: the cell
            cell_forward(zu, c[r, k0:k0 + w], tc[0, k0:k0 + w], h[r, k0:k0 + w], tc[1, k0:k0 + w], w)
        elif cell == GRU_CELL:                              # then vectorises
            gru_cell_forward(zu, h[r, k0:k0 + w], xh[r, Dl + k0:Dl + k0 + w], w)
        else:
            rnn_cell_forward(zu, h[r, k0:k0 + w], w, cell == RNN_RELU_CELL)


@njit(**JIT)
def _project(h, R, m):
    """h (B,Hr) = m (B,H) R (Hr,H)ᵀ: a projection's h_t = W_hr m_t, eight rows of R at a time."""
    B, Hr = h.shape
    H = m.shape[1]
    for r in range(B):
        for j in range(0, Hr - 7, 8):
            s0, s1, s2, s3, s4, s5, s6, s7 = _dot8(R, j, m[r], np.int64(0), H)
            for i, si in enumerate((s0, s1, s2, s3, s4, s5, s6, s7)):
                h[r, j + i] = si
        for j in range(Hr - Hr % 8, Hr):
            h[r, j] = _dot1(R[j], m[r], np.int64(0), H)


STEP_DONE, STEP_BAD_INPUT, STEP_OVERFLOW, STEP_OVERLAP = 0, 1, 2, 3      # recurrent_step's verdicts


@njit(**JIT)
def _overlap(a, b):
    """True if the C-contiguous arrays a and b share a byte (their address ranges meet)."""
    a0, b0 = a.ctypes.data, b.ctypes.data
    return a.size > 0 and b.size > 0 and a0 < b0 + b.size * b.itemsize and b0 < a0 + a.size * a.itemsize


@njit(**PARALLEL_JIT)
def recurrent_step(h, c, x, xh, z, tc, m, kept, params, D, H, cell, blocks, awake):
    """One time step of every layer, for streaming inference (small B).

    h (L,B,Hr), c (L,B,H): the state, updated in place (c of width 0 for the RNN and GRU;
    Hr = H, or P with a projection); x (B,D) the input; xh (B, max(D,Hr)+Hr), z (B,G),
    tc (2,H) scratch, m (B,H) scratch for m_t with a projection, kept (h.size + c.size,)
    scratch for the state as it was; params the flat array
    (per layer W (R, D_l+Hr) then b (G), with R, G from the cell's blocks, then W_hr
    (Hr, H) with a projection). W is read once per batch row (meant for small B).
    Each layer runs as tasks of STEP_UNITS hidden units (_step_units), which share nothing,
    in parallel from STEP_PARALLEL multiply-adds while the threads are `awake`, still
    spinning after the previous step (the caller knows: the last step ended less than
    STEP_AWAKE seconds ago), and from STEP_PARALLEL_ASLEEP when they sleep (a stream fed
    in real time: waking them costs 20-110 µs, more than they save below it). The tasks,
    not the threads, fix the arithmetic: the same bits serial or parallel, whatever the
    thread count. Agrees with recurrent_forward to rounding.
    Returns STEP_OVERLAP, having written nothing, if h, c and params are not apart in memory
    (the step writes the state in place), and STEP_BAD_INPUT if x, h or c holds NaN or ±Inf
    (the caller's argument checks, done here where they cost no extra call); STEP_OVERFLOW if the
    new state would (inputs or weights large enough: a ReLU RNN's h grows without bound),
    having put the state back as it was; STEP_DONE otherwise.
    """
    if _overlap(h, c) or _overlap(h, params) or _overlap(c, params):
        return STEP_OVERLAP
    hf, cf = h.reshape(h.size), c.reshape(c.size) if c.size else kept[:0]       # (c of width 0: not contiguous)
    if not (all_finite(x.reshape(x.size)) and all_finite(hf) and (c.size == 0 or all_finite(cf))):
        return STEP_BAD_INPUT
    kept_h, kept_c = kept[:h.size], kept[h.size:h.size + c.size]
    _assign(kept_h, hf)
    _assign(kept_c, cf)
    L, B, Hr = h.shape
    proj = Hr < H
    R, G = block_counts(blocks)
    R, G = R * H, G * H
    U = STEP_UNITS
    o = 0
    for l in range(L):
        Dl = D if l == 0 else Hr
        n = Dl + Hr
        W = params[o:o + R * n].reshape((R, n))
        b = params[o + R * n:o + R * n + G]
        o += R * n + G
        for r in range(B):       # loops, not slices: here a slice copy would be a parallel region
            for k in range(Dl):
                xh[r, k] = x[r, k] if l == 0 else h[l - 1, r, k]
            for k in range(Hr):
                xh[r, Dl + k] = h[l, r, k]
        out = m if proj else h[l]
        if B * R * n >= (STEP_PARALLEL if awake else STEP_PARALLEL_ASLEEP):
            for u in prange((H + U - 1) // U):
                _step_units(u * U, min(U, H - u * U), out, c[l], xh, z, tc, W, b, Dl, n, cell, blocks)
        else:
            for u in range((H + U - 1) // U):
                _step_units(u * U, min(U, H - u * U), out, c[l], xh, z, tc, W, b, Dl, n, cell, blocks)
        if proj:
            _project(h[l], params[o:o + Hr * H].reshape((Hr, H)), m)
            o += Hr * H
    if all_finite(hf) and (c.size == 0 or all_finite(cf)):
        return STEP_DONE
    _assign(hf, kept_h)
    _assign(cf, kept_c)
    return STEP_OVERFLOW
