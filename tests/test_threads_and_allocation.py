"""Results do not depend on the thread count; a warm forward+backward allocates nothing."""
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlstm
from conftest import random_problem

_SCRIPT = textwrap.dedent("""
    import functools, hashlib, numpy as np, numba, sys
    import fastlstm.recurrent
    fastlstm.recurrent.STEP_AWAKE = float("inf")    # every step() on the threads, however long since the last
    sys.path.insert(0, {tests!r})
    from conftest import random_problem
    for cls, dtype, split_d in ((fastlstm.LSTM, np.float32, 512), (fastlstm.LSTM, np.float64, 512),
                                (fastlstm.LSTM, np.float32, 1), (fastlstm.LSTM, np.float64, 1),
                                (fastlstm.GRU, np.float32, 512), (fastlstm.GRU, np.float32, 1),
                                (functools.partial(fastlstm.LSTM, proj_size=19), np.float32, 1),
                                (functools.partial(fastlstm.RNN, nonlinearity="relu"), np.float32, 1)):
        fastlstm.recurrent.SPLIT_D = split_d        # 1: every layer's input half by BLAS first
        lstm = getattr(cls, "func", cls) is fastlstm.LSTM
        for T, B, H in ((9, 23, 37), (5, 3, 70)):   # many rows a thread; 1 or 2 (a small batch)
            m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, 6, H, 2, dtype, with_lengths=True, cls=cls)
            y, s = m.forward(x, h0, c0, lengths) if lstm else m.forward(x, h0, lengths)
            ds = m.backward(dy, dhn, dcn) if lstm else m.backward(dy, dhn)
            assert fastlstm.Adam(lr=1e-2).bind(m.params.size, dtype).step(m.params, m.grads)  # in runs from 8,192
            h = hashlib.sha256()
            for a in (y, *s, *ds[1], ds[0], m.grads, m.params) if lstm else (y, s, *ds, m.grads, m.params):
                h.update(a.tobytes())
            print(numba.get_num_threads(), h.hexdigest())
        m, x, h0, c0, *_ = random_problem(2, 8, 40, 100, 2, dtype, cls=cls)  # step(): serial and parallel
        for B in (1, 8):
            hs, cs = h0[:, :B].copy(), c0[:, :B].copy()
            for t in range(2):
                m.step(np.ascontiguousarray(x[t, :B]), hs, cs) if lstm else m.step(np.ascontiguousarray(x[t, :B]), hs)
            print(numba.get_num_threads(), hashlib.sha256(hs.tobytes() + cs.tobytes()).hexdigest())
""")


def test_bitwise_identical_whatever_the_thread_count():
    """Neither Numba's thread count (fastlstm's threads) nor OpenBLAS's changes a bit (an
    Adam step included): the big products are single-threaded OpenBLAS calls on row blocks
    fixed by the shape and the machine (fastlstm._blas), whichever thread takes them. (An
    OpenBLAS left to its own threads rounds float32 products differently for 1 and 2 of
    them.)"""
    out = {}
    for n, blas in (("1", "2"), ("2", "1"), ("2", None)):
        env = dict(NUMBA_NUM_THREADS=n) if blas is None else dict(NUMBA_NUM_THREADS=n, OPENBLAS_NUM_THREADS=blas,
                                                                   OMP_NUM_THREADS=blas)
        stdout = _digests(**env)
        assert all(line.startswith(n + " ") for line in stdout.split("\n") if line), stdout
        out[n, blas] = stdout.replace(n + " ", "")
    assert len(set(out.values())) == 1, f"results differ between thread counts:\n{out}"


def _digests(**env):
    """_SCRIPT's output (thread count and digest per line) in a process with `env` set."""
    r = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=os.path.dirname(__file__))],
                       env=dict(os.environ, **env), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


_ALLOC_SCRIPT = textwrap.dedent("""
    import sys, tracemalloc, numpy as np
    import fastlstm.recurrent
    from numba.core.runtime import rtsys
    sys.path.insert(0, {tests!r})
    from conftest import random_problem
    for split_d, T, B in ((512, 7, 6), (512, 21, 18), (1, 7, 6), (1, 21, 18)):
        fastlstm.recurrent.SPLIT_D = split_d        # 1: every layer's input half by BLAS first
        m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, 3, 5, 2, with_lengths=True)
        L = np.asarray(lengths, np.int64)
        dx, dh0, dc0 = np.empty_like(x), np.empty_like(h0), np.empty_like(c0)
        def step():
            m.run_forward(x, h0, c0, L)
            m.run_backward(dy, dhn, dcn, dx, dh0, dc0)
        step(); step()
        before = rtsys.get_allocation_stats()
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        after = rtsys.get_allocation_stats()
        for _ in range(2):      # the least of three steps: an object the interpreter makes now and
            tracemalloc.start() # then (a dict resized, a cache filled) is not the step's (CI read 528 B)
            step()
            peak = min(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(after.alloc - before.alloc, after.mi_alloc - before.mi_alloc, peak)
""")

# Numba wraps every NumPy array it unboxes at a Python -> @njit call in a meminfo, which its
# NRT counts as an allocation (no data is allocated). Per layer, forward passes 4 arrays to
# pack_unit (P, W, W_hr, the cell's blocks) and 2 x 7 + 2 to recurrent_forward (each
# direction's buffers, a one-direction layer passing its own twice; lengths; blocks),
# backward 4 to pack_unit, 2 x 13 + 3 to recurrent_backward, 1 to _blas._gemm_tasks (the
# plan of its products) and 3 to add_row_sums (δb, the blocks' sums and scratch); the first
# layer's forward 2 more to copy_rows (I, x): anything beyond that is a real allocation.
_BOUNDARY_WRAPPERS_PER_LAYER = (4 + 16) + (4 + 29 + 1 + 3)
_BOUNDARY_WRAPPERS_FIRST_LAYER = 2


def test_warm_forward_backward_allocates_nothing():
    """Numba's NRT allocates nothing but the boundary wrappers, whatever T and B are, and
    NumPy allocates no array (tracemalloc sees only interpreter objects, far below any buffer)."""
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    r = subprocess.run([sys.executable, "-c", _ALLOC_SCRIPT.format(tests=os.path.dirname(__file__))],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    peaks = []
    for line in r.stdout.split("\n")[:4]:
        nrt, nrt_mi, peak = map(int, line.split())
        expected = 2 * _BOUNDARY_WRAPPERS_PER_LAYER + _BOUNDARY_WRAPPERS_FIRST_LAYER
        assert nrt == nrt_mi == expected, f"Numba allocated {nrt} times in a warm step, expected {expected}"
        peaks.append(peak)
    # Views and small objects only: the same few KiB for a 9x larger batch, below one (T,B,H)
    # buffer, in both forms of the forward (fused; input half by BLAS first).
    for small, big in (peaks[:2], peaks[2:]):
        assert big <= small + 512 and big < 21 * 18 * 5 * 8, f"traced peaks {peaks} bytes"


def test_workspace_grows_only_for_a_bigger_batch():
    m = fastlstm.LSTM(3, 4)
    x = np.zeros((5, 4, 3), np.float32)
    m.forward(x)
    bufs = [id(b) for b in m._ws.Z]
    m.forward(np.zeros((2, 3, 3), np.float32))
    assert [id(b) for b in m._ws.Z] == bufs
    m.forward(np.zeros((5, 8, 3), np.float32))
    assert [id(b) for b in m._ws.Z] != bufs


def test_reserve_makes_the_workspace_a_first_call_would_make():
    """reserve(T, B) grows the workspace as a forward of (T, B) would, so that call makes
    nothing; a reserve within it keeps a forward's saved state, one that grows it lets it go."""
    rng = np.random.default_rng(0)
    m, fresh = fastlstm.LSTM(3, 4, 2, seed=0), fastlstm.LSTM(3, 4, 2, seed=0)
    m.reserve(6, 5)
    bufs = [id(b) for b in m._ws.Z]
    x, dy = rng.standard_normal((6, 5, 3), np.float32), rng.standard_normal((6, 5, 4), np.float32)
    y = m.forward(x)[0]
    assert [id(b) for b in m._ws.Z] == bufs and np.array_equal(y, fresh.forward(x)[0])
    m.reserve(2, 5)                                # within: the forward stays for its backward
    assert np.array_equal(m.backward(dy)[0], fresh.backward(dy)[0])
    m.forward(x)
    m.reserve(6, 6)                                # grown: the saved forward is gone, and backward says so
    with pytest.raises(RuntimeError, match="needs a forward"):
        m.backward(dy)


@pytest.mark.parametrize("make", [lambda: fastlstm.LSTM(3, 5, 2, proj_size=2, seed=0),
                                  lambda: fastlstm.GRU(3, 5, 2, bidirectional=True, dropout=0.3, seed=0)])
def test_one_stack_through_shapes_that_grow_and_shrink_gives_a_fresh_stacks_bits(make):
    """The workspace keeps its views for the last (T, B) (_Workspace._cached): a forward and
    backward at each shape in turn, growing the buffers and going back, equal those of a
    fresh stack at that shape."""
    def flat(u):                                         # an array, or a tuple of them (dh0, dc0)
        return u if isinstance(u, np.ndarray) else np.concatenate([a.ravel() for a in u])
    m = make()
    rng = np.random.default_rng(0)
    for T, B in [(4, 2), (4, 2), (7, 5), (4, 2), (3, 6), (7, 5)]:
        x = rng.standard_normal((T, B, 3)).astype(np.float32)
        fresh = make()
        fresh.dropout_step = m.dropout_step              # the same dropout masks
        outs = []
        for s in (m, fresh):
            s.zero_grad()
            y = s.forward(x, lengths=np.arange(B) % T + 1)[0]
            outs.append((y, *s.backward(np.ones_like(y)), s.grads.copy()))
        for a, b in zip(*outs):
            assert np.array_equal(flat(a), flat(b)), (T, B)
    ws = m._ws                                           # grown for another shape, the same
    before = ws.layer(0, 4, 2)                           # (T, B) gets views of the new buffers
    ws.ensure(40, 50)
    after = ws.layer(0, 4, 2)
    assert np.shares_memory(after[0], ws.I[0]) and not np.shares_memory(before[0], ws.I[0])


@pytest.mark.parametrize("settings", [dict(cell="gru", bidirectional=True, loss="xent", output="last"),
                                      dict(vocab_size=11, proj_size=3, loss="mse", output="every"),
                                      dict(num_layers=2, dropout=0.3, loss="xent", output="every")])
def test_the_heads_buffers_grow_never_shrink_and_give_fresh_buffers_bits(settings):
    """Training steps and `evaluate` and `predict` in chunks of other shapes, in turn: once
    each shape has run, the head's flat buffers stay the same arrays (nothing allocated), and
    every result equals that of a model whose head buffers were made afresh for the call."""
    import copy
    rng = np.random.default_rng(0)
    tokens = "vocab_size" in settings
    every, xent = settings["output"] == "every", settings["loss"] == "xent"
    m = fastlstm.Model(3, 5, 4, seed=0, **settings)
    fresh = copy.deepcopy(m)

    def batch(T, B):
        x = rng.integers(0, 11, (T, B)) if tokens else rng.standard_normal((T, B, 3)).astype(np.float32)
        lead = (T, B) if every else (B,)
        y = rng.integers(0, 4, lead) if xent else rng.standard_normal(lead + (4,)).astype(np.float32)
        return x, y, rng.integers(1, T + 1, B)

    calls = [("train_step", batch(6, 4)), ("evaluate", batch(9, 7)), ("train_step", batch(6, 4)),
             ("predict", batch(3, 10)[::2]), ("train_step", batch(2, 9)), ("evaluate", batch(9, 7))]
    ids = None
    for cycle in range(2):
        for name, (x, y_or_lengths, *rest) in calls:
            args = (x, y_or_lengths, *rest) if name != "predict" else (x, y_or_lengths)
            kw = {} if name == "train_step" else dict(batch_size=3)
            fresh._bufs, fresh._flat = {}, {}                    # as a first call would find them
            a, b = getattr(m, name)(*args, **kw), getattr(fresh, name)(*args, **kw)
            for u, w in zip(*[[r] if not isinstance(r, dict) else list(r.values()) for r in (a, b)]):
                assert np.array_equal(u, w), (cycle, name)
            assert np.array_equal(m.params, fresh.params), (cycle, name)
        if cycle == 0:
            ids = {k: id(a) for k, a in m._flat.items()}
    assert {k: id(a) for k, a in m._flat.items()} == ids        # the second round made nothing


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_buffers_the_kernels_stream_start_on_a_cache_line(cell):
    """Parameters, gradients, optimizer state, every workspace buffer, the head's buffers
    and the streaming step's scratch start on a 64-byte boundary (NumPy's own often start 16
    bytes past one, and a vector load then straddles two cache lines), and so does a Model's
    streaming state. Empty ones are never read."""
    from fastlstm.kernels import ALIGN, zeros
    for shape in [(7,), (3, 5), (2, 3, 33)]:
        for dtype in (np.float32, np.float64, np.int64):
            a = zeros(shape, dtype)
            assert a.ctypes.data % ALIGN == 0 and a.shape == shape and a.dtype == dtype
            assert a.flags.c_contiguous and a.flags.writeable and not a.any()
    for _ in range(3):              # NumPy's alignment varies from one allocation to the next
        m = fastlstm.Model(5, 7, 2, num_layers=2, cell=cell, bidirectional=True, seed=0)
        x, y = np.zeros((4, 3, 5), np.float32), np.zeros((3, 2), np.float32)
        m.train_step(x, y)
        core = m.core
        stream = fastlstm.Model(5, 7, 2, num_layers=2, cell=cell, seed=0)
        stream.step(np.zeros((1, 5), np.float32))
        buffers = dict(params=m.params, grads=m.grads, **{f"optimizer.{k}": a for k, a in m.optimizer.state.items()},
                       **{f"head.{k}": a for bufs in m._bufs.values() for k, a in bufs.items()},
                       **{f"step scratch {i}": a for i, a in enumerate(stream.core._step_scratch)},
                       **{f"streaming state {i}": a for i, a in enumerate(stream._state)})
        for k, a in vars(core._ws).items():
            for i, b in enumerate(a if isinstance(a, list) else [a]):
                if isinstance(b, np.ndarray) and b.dtype == core.dtype:
                    buffers[f"workspace {k}[{i}]"] = b
        assert len(buffers) > 20
        misaligned = [k for k, a in buffers.items() if a.size and a.ctypes.data % ALIGN]   # empty: never read
        assert not misaligned, misaligned


def test_input_half_goes_to_blas_when_a_fused_panel_would_not_fit(monkeypatch, tmp_path):
    """The forward keeps [x ; h] in one tile sum while its packed panel ((D + H) rows of
    TILE bytes) is at most FUSED_PANEL bytes and D < SPLIT_D: L1 and 512 on most CPUs (the
    L1 size from sysfs), 256 KiB and no bound on D on AMD Zen 4."""
    R = fastlstm.recurrent
    assert R.fused_limits("skylake-avx512", 48 * 1024) == (48 * 1024, 512)
    assert R.fused_limits("znver3", 32 * 1024) == (32 * 1024, 512)
    monkeypatch.setattr(R, "TILE", 128)
    monkeypatch.setattr(R, "SPLIT_D", 512)
    monkeypatch.setattr(R, "FUSED_PANEL", 48 * 1024)
    assert R._tiles_from(32, 64) == 0 and R._tiles_from(128, 256) == 0      # 12 and 48 KiB: fused
    assert R._tiles_from(256, 256) == 256 and R._tiles_from(512, 16) == 512  # 64 KiB; D ≥ SPLIT_D
    monkeypatch.setattr(R, "TILE", 64)
    monkeypatch.setattr(R, "FUSED_PANEL", 32 * 1024)
    assert R._tiles_from(256, 256) == 0 and R._tiles_from(256, 257) == 256
    FUSED_PANEL, SPLIT_D = R.fused_limits("znver4", 32 * 1024)
    monkeypatch.setattr(R, "TILE", 128)
    monkeypatch.setattr(R, "FUSED_PANEL", FUSED_PANEL)
    monkeypatch.setattr(R, "SPLIT_D", SPLIT_D)
    assert R._tiles_from(1024, 1024) == 0 and R._tiles_from(1024, 1025) == 1024  # 256 KiB, whatever D
    for index, (level, kind, size) in enumerate((("1", "Instruction", "64K"), ("1", "Data", "48K"),
                                                 ("2", "Unified", "2048K"))):
        d = tmp_path / f"index{index}"
        d.mkdir()
        for key, value in (("level", level), ("type", kind), ("size", size)):
            (d / key).write_text(value + "\n")
    assert R.l1d_bytes(str(tmp_path)) == 48 * 1024
    assert R.l1d_bytes(str(tmp_path / "missing")) == 32 * 1024


def test_both_tile_widths_give_the_same_bits():
    """The recurrent products' tile is 64 bytes wide (two AVX2 vectors a row) or 128 (two
    AVX-512 vectors), chosen from the CPU (recurrent.tile_bytes); forcing each gives the same
    bits where both sum a layer's input half in the same place (the script's layers: all in
    the tiles, or all by BLAS first): every output is the same chain of FMAs over k. H = 37
    leaves partial panels in both."""
    out = {width: _digests(FASTLSTM_TILE_BYTES=width) for width in ("64", "128")}
    assert out["64"] == out["128"], out


def test_the_tile_width_follows_the_cpu_and_can_be_forced():
    from fastlstm.recurrent import tile_bytes
    assert tile_bytes({}, {"avx512f": True, "avx2": True}) == 128
    assert tile_bytes({}, {"avx512f": False, "avx2": True}) == 64
    assert tile_bytes({"FASTLSTM_TILE_BYTES": "64"}, {"avx512f": True}) == 64
    import pytest
    with pytest.raises(ValueError, match="FASTLSTM_TILE_BYTES must be one of"):
        tile_bytes({"FASTLSTM_TILE_BYTES": "96"}, {})


def test_the_products_run_on_the_private_openblas_and_fall_back_to_numpy(monkeypatch):
    """fastlstm._blas runs the big products on its own OpenBLAS (scipy-openblas32, a
    run-time dependency), one call per row block from Numba's threads, or one call for a
    small product; without it, NumPy's. Both give the products (transposed views, strided
    operands, accumulation) to rounding."""
    from fastlstm import _blas
    assert _blas.available()
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        W = rng.standard_normal((12, 9)).astype(dtype)
        Z = rng.standard_normal((7, 12)).astype(dtype)
        I = rng.standard_normal((5, 7, 9)).astype(dtype)[:, :, :4].reshape(35, 4)   # strided rows
        big = (rng.standard_normal((300, 130)) / 12).astype(dtype)   # row-block products, sums of O(1)
        cases = [(Z, W[:, :5]), (I[:7].T, Z), (Z[:, :9], W[:9, :].T), (big, big.T[:, :200]), (big.T, big[:, :70]),
                 (big[:, :120], big[:200, :120].T)]
        assert all(_blas.blocks(a.shape[0], b.shape[1], a.shape[1]) > 1 for a, b in cases[3:])
        for a, b in cases:
            out = np.zeros((a.shape[0], b.shape[1]), dtype)
            _blas.matmul(a, b, out)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)
            _blas.matmul(a, b, out, accumulate=True)
            np.testing.assert_allclose(out, 2 * (a.astype(np.float64) @ b), rtol=1e-5, atol=1e-5)
        for group in (cases[:3], cases):            # a plan: all on the calling thread; blocks in one region
            outs = [rng.standard_normal((a.shape[0], b.shape[1])).astype(dtype) for a, b in group]
            start = [o.copy() for o in outs]
            S = np.zeros((len(group), 14), np.int64)
            _blas.run(_blas.plan([(a, b, o, j % 2 == 1) for j, ((a, b), o) in enumerate(zip(group, outs))], S))
            for j, ((a, b), o, o0) in enumerate(zip(group, outs, start)):
                want = a.astype(np.float64) @ b + (o0 if j % 2 else 0)
                np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-5)
    m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(6, 5, 4, 3, 2, with_lengths=True)
    m.forward(x, h0, c0, lengths)
    m.backward(dy, dhn, dcn)
    private = m.grads.copy()
    monkeypatch.setattr(_blas, "_gemm", {})                          # as without the wheel
    m.zero_grad()
    m.forward(x, h0, c0, lengths)
    m.backward(dy, dhn, dcn)
    np.testing.assert_allclose(m.grads, private, rtol=1e-12, atol=1e-12)
    m.forward(x, h0, c0, lengths)                                      # gradients that add up
    m.backward(dy, dhn, dcn)
    np.testing.assert_allclose(m.grads, 2 * private, rtol=1e-12, atol=1e-12)


def test_the_private_openblas_goes_back_to_one_thread_when_threadpoolctl_raised_it():
    """threadpool_limits(n, user_api="blas"), what people call to size NumPy's BLAS (and
    DataParallel calls for each rank), sets every OpenBLAS in the process, fastlstm's too
    (threadpoolctl 3.5 and later know the wheel's scipy_ prefix): its threads then ran inside
    each of Numba's, and a small step took 1.6-2.5x as long. Every product (one block,
    blocks, a plan) now sets it back to one thread first. The count is read and raised
    through the library itself, as threadpoolctl does, so that the test holds with the
    threadpoolctl 3.1 that pyproject.toml allows, which does not see the wheel."""
    import scipy_openblas32
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastlstm import _blas

    lib = _blas.library(scipy_openblas32)                                # the one the products run on
    m = fastlstm.Model(4, 8, 2, loss="mse", seed=0)
    x, y = np.ones((3, 2, 4), np.float32), np.zeros((2, 2), np.float32)
    m.train_step(x, y)
    assert lib.scipy_openblas_get_num_threads() == 1
    seen = [i for i in threadpool_info() if "scipy_openblas32" in i["filepath"]]
    assert [i["num_threads"] for i in seen] in ([], [1])
    with threadpool_limits(limits=2, user_api="blas"):
        assert lib.scipy_openblas_get_num_threads() == (2 if seen else 1)
        for run in (lambda: m.train_step(x, y),                                       # one-block products
                    lambda: _blas.matmul(np.ones((512, 512), np.float32), np.ones((512, 64), np.float32),
                                         np.empty((512, 64), np.float32)),            # blocks on the threads
                    lambda: _blas.run(_blas.plan([(np.ones((512, 512)), np.ones((512, 64)), np.empty((512, 64)),
                                                   False)], np.zeros((1, 14), np.int64)))):   # a plan
            lib.scipy_openblas_set_num_threads(2)
            run()
            assert lib.scipy_openblas_get_num_threads() == 1


def test_each_thread_takes_a_share_of_every_product_of_a_plan():
    """A backward's products run as one region (_blas.run); thread s of n takes tasks s,
    s + n, ... (_gemm_share), so each thread gets blocks of every product. Dealt out in
    contiguous ranges, one thread took all of δW and the other all of δX."""
    from fastlstm import _blas
    rng = np.random.default_rng(0)
    Z, I, W = (rng.standard_normal(s).astype(np.float32) for s in ((400, 256), (400, 160), (256, 160)))
    products = [(Z.T, I, np.zeros((256, 160), np.float32), False), (Z, W[:, :32], np.zeros((400, 32), np.float32), False)]
    S, _, n, serial = _blas.plan(products, np.zeros((2, 14), np.int64))
    assert not serial and all(S[i, 13] >= 2 for i in range(n))
    tasks, threads = int(S[:n, 13].sum()), 2
    _blas._gemm_share(S, 0, threads, tasks)                  # thread 0's share alone
    t = 0
    for i, (a, b, out, _) in enumerate(products):
        M, nblk = out.shape[0], S[i, 13]
        per = -(-M // nblk)
        done = []
        for q in range(nblk):
            rows = slice(q * per, min(M, (q + 1) * per))
            if t % threads == 0:
                np.testing.assert_allclose(out[rows], a[rows].astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
                done.append(q)
            else:
                assert not out[rows].any()
            t += 1
        assert 0 < len(done) < nblk                            # a share of this product, not all of it or none


def test_the_kernels_run_on_numbas_own_openmp_even_when_torch_loaded_its_first(tmp_path):
    """`import torch` before fastlstm puts PyTorch's GNU OpenMP in the global symbol scope;
    Numba's thread pool must still bind to the OpenMP runtime it was built against (whose
    wait policy fastlstm sets), not run its kernels on PyTorch's. The dynamic linker's own
    record of the binding (LD_DEBUG) says which library GOMP_parallel came from."""
    pytest.importorskip("torch")
    script = ("import numpy, torch, fastlstm, numpy as np\n"
              "fastlstm.LSTM(3, 4).forward(np.zeros((2, 1, 3), np.float32))\n")
    out = tmp_path / "ld"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(out)))
    assert r.returncode == 0, r.stderr
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("ld.*"))
    pool = [line for line in log.splitlines() if "omppool" in line and "`GOMP_parallel'" in line]
    assert pool, "Numba's OpenMP pool never bound GOMP_parallel (threading layer not omp?)"
    assert all("torch" not in line.split(" to ", 1)[1] for line in pool), pool


_LAYER_SCRIPT = ("import sys\n"
                 "if sys.argv[1] == 'no-openmp':\n"
                 "    sys.modules['numba.np.ufunc.omppool'] = None      # as if libgomp were missing\n"
                 "import numba\n"
                 "if sys.argv[1] == 'config':\n"
                 "    numba.config.THREADING_LAYER = 'tbb'              # Numba's other way to name one\n"
                 "import numpy as np, fastlstm\n"
                 "y = fastlstm.LSTM(3, 4, seed=0).forward(np.ones((2, 1, 3), np.float32))[0]\n"
                 "print(numba.threading_layer(), float(y.sum()))\n")


def test_the_kernels_run_on_openmp_even_where_tbb_loads():
    """Numba's 'threadsafe' and 'default' layers pick TBB first where it loads (the tbb
    wheel's libraries on the library path, as in a conda environment). fastlstm asks for
    OpenMP, whose waits it tunes; it falls back to TBB only where OpenMP does not load, and
    a layer the user names wins. Each way gives the same numbers."""
    lib = os.path.join(sys.prefix, "lib")
    if not os.path.exists(os.path.join(lib, "libtbb.so.12")):
        pytest.skip("needs the tbb wheel (the test extra installs it on Linux x86-64)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [lib, env.get("LD_LIBRARY_PATH")]))

    def layer(how, **extra):
        r = subprocess.run([sys.executable, "-c", _LAYER_SCRIPT, how], capture_output=True, text=True,
                           timeout=300, env=dict(env, **extra))
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    probe = subprocess.run([sys.executable, "-c", "import numba\nfrom numba.np.ufunc import parallel\n"
                            "parallel._launch_threads()\nprint(numba.threading_layer())"],
                           capture_output=True, text=True, timeout=300, env=dict(env, NUMBA_THREADING_LAYER="threadsafe"))
    assert probe.stdout.split() == ["tbb"], probe.stderr       # TBB loads here: Numba alone would pick it
    ours, fallback = layer("-"), layer("no-openmp")
    named, configured = layer("-", NUMBA_THREADING_LAYER="tbb"), layer("config")
    assert (ours[0], fallback[0], named[0], configured[0]) == ("omp", "tbb", "tbb", "tbb")
    assert ours[1] == fallback[1] == named[1] == configured[1]


_WORKQUEUE_SCRIPT = ("import sys, threading, warnings, zlib\n"
                     "if sys.argv[1] == 'neither':             # as where libgomp1 is missing and TBB too\n"
                     "    sys.modules['numba.np.ufunc.omppool'] = sys.modules['numba.np.ufunc.tbbpool'] = None\n"
                     "warnings.simplefilter('always')\n"
                     "import numba, numpy as np, fastlstm\n"
                     "x = np.random.default_rng(0).standard_normal((20, 8, 3)).astype(np.float32)\n"
                     "y, out = np.zeros((8, 2), np.float32), {}\n"
                     "def train(k):\n"
                     "    m, o = fastlstm.Model(3, 16, 2, seed=k), fastlstm.LSTM(3, 4, seed=k)\n"
                     "    opt = fastlstm.SGD(lr=0.1)\n"
                     "    for _ in range(30):\n"
                     "        m.train_step(x, y)\n"
                     "        o.forward(x); o.backward(np.ones((20, 8, 4), np.float32)); opt.step(o.params, o.grads)\n"
                     "    out[k] = zlib.crc32(m.params.tobytes() + o.params.tobytes())\n"
                     "ts = [threading.Thread(target=train, args=(k,)) for k in range(4)]\n"
                     "[t.start() for t in ts]; [t.join() for t in ts]\n"
                     "print(numba.threading_layer(), *[out[k] for k in range(4)])\n")


def test_without_openmp_or_tbb_the_kernels_run_on_workqueue_and_threads_take_turns():
    """Numba's OpenMP pool needs GNU OpenMP (libgomp1, which a slim Docker image lacks) and
    TBB is no dependency: with neither, the first kernel raised Numba's "No threading layer
    could be loaded" and fastlstm could not run at all. It now runs on Numba's workqueue
    layer, with a warning that names libgomp1; as that layer ends the process when two
    threads run parallel kernels at once, every public call (and an optimizer's step) then
    takes a process-wide turn, as it does on workqueue named by the user, which used to
    end the process ("Concurrent access has been detected") for two models in two threads.
    Each way gives the bits OpenMP gives."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}

    def run(how, **extra):
        r = subprocess.run([sys.executable, "-c", _WORKQUEUE_SCRIPT, how], capture_output=True, text=True,
                           timeout=600, env=dict(env, **extra))
        assert r.returncode == 0, r.stderr
        return r.stdout.split(), r.stderr
    (ours, quiet), (fallback, said) = run("-"), run("neither")
    named, quiet_too = run("-", NUMBA_THREADING_LAYER="workqueue")
    assert (ours[0], fallback[0], named[0]) == ("omp", "workqueue", "workqueue")
    assert ours[1:] == fallback[1:] == named[1:] and len(set(ours[1:])) == 4
    assert "neither GNU OpenMP nor TBB loads" in said and "apt-get install libgomp1" in said, said
    assert "RuntimeWarning" not in quiet + quiet_too, quiet + quiet_too


_RUNTIME_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_the_runtime_settings_reach_fastlstms_runtimes_then_leave_the_environment(user):
    """fastlstm's wait policy, spin count and OpenBLAS thread timeout are meant for the
    runtimes it loads (Numba's GNU OpenMP, the private OpenBLAS). Left in os.environ they
    also bound a runtime loaded later (PyTorch's GNU OpenMP after fastlstm) and every
    program the process started. Numba's runtime says what it read (omp_display_env); the
    environment no longer holds them after the first kernel; a policy the user set stays."""
    script = ("import ctypes, os, sys, numba, numpy as np, fastlstm\n"
              "fastlstm.LSTM(3, 4).forward(np.zeros((2, 1, 3), np.float32))\n"
              f"print([os.environ.get(k) for k in {_RUNTIME_SETTINGS!r}], numba.threading_layer(), flush=True)\n"
              "ctypes.CDLL('libgomp.so.1').omp_display_env(1)\n")
    env = {k: v for k, v in os.environ.items() if k not in _RUNTIME_SETTINGS}
    if user:
        env["OMP_WAIT_POLICY"] = user
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{[user, None, None]} omp\n"
    assert f"OMP_WAIT_POLICY = '{user or 'PASSIVE'}'" in r.stderr and "GOMP_SPINCOUNT = '2000'" in r.stderr, r.stderr


_FIRST_RUN_SCRIPT = textwrap.dedent("""
    import json, numba, numpy as np
    from numba.core import event
    compiling = []
    class Listener(event.Listener):
        def on_start(self, ev):
            compiling.append(ev.data["dispatcher"].py_func.__qualname__)
        def on_end(self, ev):
            pass
    event.register("numba:compile", Listener())
    import fastlstm
    from fastlstm import _blas, heads, kernels, optim
    m = fastlstm.LSTM(3, 8, seed=0, bidirectional=True, num_layers=2, dropout=0.2)
    y, _ = m.forward(np.ones((4, 2, 3), np.float32))
    m.backward(np.ones_like(y))
    fastlstm.LSTM(3, 8, seed=0).step(np.ones((1, 3), np.float32), np.zeros((1, 1, 8), np.float32),
                                     np.zeros((1, 1, 8), np.float32))
    fastlstm.Model(3, 8, 2, loss="xent", seed=0).train_step(np.ones((4, 2, 3), np.float32), np.zeros(2, np.int64))
    compiled = {f"{mod.__name__}.{name}": [[str(a) for a in sig] for sig in f.signatures]
                for mod in (kernels, _blas, heads, optim) for name, f in vars(mod).items()
                if isinstance(f, numba.core.registry.CPUDispatcher) and f.__module__ == mod.__name__}
    print("COMPILED", json.dumps(compiled))
    print("COMPILING", json.dumps(compiling))
""")


def _run_script(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_PARALLEL_DIAGNOSTICS="1")
    r = subprocess.run([sys.executable, "-c", _FIRST_RUN_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _printed(stdout, key):
    return json.loads(stdout.split(key + " ", 1)[1].splitlines()[0])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cold_compile(cache):
    """A first forward, backward, streaming step and Model step from an empty Numba cache,
    with Numba's parallel diagnostics: its stdout."""
    return _run_script(cache)


def test_a_second_process_compiles_nothing(cold_compile, cache):
    """The README's promise: the first run compiles the kernels, and Numba's cache gives them
    to every later process (none of them compiles again)."""
    assert "recurrent_forward" in _printed(cold_compile, "COMPILING")
    assert _printed(_run_script(cache), "COMPILING") == []


def test_each_kernel_is_compiled_once_for_its_array_types(cold_compile):
    """A first run compiles each kernel once per set of array types: a literal argument in a
    call between kernels (0, True) or prange's unsigned index compiled the callee again
    (_pack_range six times), a third of a cold start (docs/performance.md)."""
    compiled = _printed(cold_compile, "COMPILED")
    assert compiled["fastlstm.kernels._pack_range"] and compiled["fastlstm._blas._gemm_block"], compiled
    for name, sigs in compiled.items():
        arrays = {tuple(a for a in sig if a.startswith("array")) for sig in sigs}
        assert len(sigs) == len(arrays), f"{name} compiled for scalar types apart: {sigs}"


def test_every_parallel_region_is_a_prange(cold_compile):
    """In a parallel=True kernel Numba makes a slice copy or array expression outside the
    prange a parallel region of its own, which wakes the threads on every call (the
    streaming step did that for each layer and row). Numba's parallel diagnostics list the
    source lines that became regions: each must be a prange, or sit inside one (deeper
    indented than the prange before it), where it runs serially."""
    kernels = {}
    for listing in cold_compile.split("Parallel loop listing for")[1:]:
        name = listing.split("Function", 1)[1].split(",", 1)[0].strip()
        lines = [line.rsplit("|", 1)[0].rstrip("-") for line in listing.split("After Optimisation", 1)[0].splitlines()
                 if re.search(r"\|\s*#\d+\s*$", line)]
        prange_indent = None
        for line in lines:
            indent = len(line) - len(line.lstrip())
            if "prange(" in line:
                prange_indent = indent
            else:
                assert prange_indent is not None and indent > prange_indent, \
                    f"{name}: a parallel region outside any prange: {line.strip()}"
        kernels[name] = [line.strip() for line in lines]
    assert {"recurrent_step", "recurrent_forward", "recurrent_backward", "copy_steps"} <= set(kernels), kernels
    assert kernels["recurrent_step"] == ["for u in prange((H + U - 1) // U):"], kernels["recurrent_step"]


@pytest.mark.parametrize("B, K", [(5, 7), (40, 1700)])       # below and above kernels.COPY_PARALLEL
def test_the_copies_of_steps_are_exact_serial_or_parallel(B, K):
    """copy_steps (and copy_hidden, which it runs) works on one thread below COPY_PARALLEL
    elements, on all of them above: both give each row its own steps (reversed within its
    length for the reverse direction), zeros past the length, or the sum when adding."""
    from fastlstm.kernels import COPY_PARALLEL, copy_hidden, copy_steps
    T, D = 11, 3
    assert (T * B * K < COPY_PARALLEL) == (B == 5)
    rng = np.random.default_rng(1)
    L = rng.integers(1, T + 1, B)
    I = rng.standard_normal((T + 1, B, D + K))
    src, base = rng.standard_normal((T, B, K)), rng.standard_normal((T, B, K))
    want_h, want_r, want_s, want_rs = (np.zeros((T, B, K)) for _ in range(4))
    for r, n in enumerate(L):
        want_h[:n, r] = I[1:n + 1, r, D:]
        want_r[:n, r] = I[n:0:-1, r, D:]
        want_s[:n, r] = src[:n, r]
        want_rs[:n, r] = src[n - 1::-1, r]
    for reverse, want in ((False, want_h), (True, want_r)):
        y = np.full((T, B, K), np.nan)
        copy_hidden(y, I, L, D, reverse)
        np.testing.assert_array_equal(y, want)
    for reverse, want in ((False, want_s), (True, want_rs)):
        dst = np.full((T, B, K), np.nan)
        copy_steps(dst, src, L, reverse, False, 0, 0)
        np.testing.assert_array_equal(dst, want)
        dst = base.copy()
        copy_steps(dst, src, L, reverse, True, 0, 0)
        np.testing.assert_array_equal(dst, base + want)


def _in_threads(work, n=2):
    """Run work(i) in n threads at once; re-raise the first exception any of them met."""
    import threading
    errors, start = [], threading.Barrier(n)

    def run(i):
        try:
            start.wait()
            work(i)
        except BaseException as e:      # noqa: BLE001  (reported below)
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_calls_on_one_model_from_several_threads_take_turns():
    """The kernels release the GIL and a model's calls share its workspace: two threads
    training, predicting or streaming with one model must give what the same calls give one
    after another (before the model's lock, one of two threads training together raised a
    TypeError and the weights were neither run's)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 16, 4)).astype(np.float32), rng.standard_normal((16, 1)).astype(np.float32)
    shared, serial = (fastlstm.Model(4, 32, 1, seed=0, optimizer=fastlstm.SGD(lr=0.01)) for _ in range(2))
    _in_threads(lambda i: [shared.train_step(x, y) for _ in range(15)])
    for _ in range(30):
        serial.train_step(x, y)                                  # every step the same batch: order-free
    assert shared.steps == 30 and np.array_equal(shared.params, serial.params)
    xs = [rng.standard_normal((30, 16, 4)).astype(np.float32) for _ in range(2)]
    want = [serial.predict(xi) for xi in xs]
    got = [[], []]
    _in_threads(lambda i: got[i].extend(serial.predict(xs[i]) for _ in range(15)))
    assert all(np.array_equal(p, want[i]) for i in range(2) for p in got[i])
    lstm = fastlstm.LSTM(4, 32, 2, seed=0)
    states = [[np.zeros((2, 16, 32), np.float32) for _ in range(2)] for _ in range(3)]
    _in_threads(lambda i: [lstm.step(xs[i][t], *states[i]) for t in range(30)])
    for t in range(30):
        lstm.step(xs[1][t], *states[2])
    assert np.array_equal(states[1][0], states[2][0]) and np.array_equal(states[1][1], states[2][1])


def test_different_models_train_in_threads_at_once_to_the_bits_they_reach_one_after_another():
    """The README's "different models run in parallel": an LSTM with Adam, a bidirectional
    GRU on classes and an LSTMP, each trained by its own thread at once, end bitwise where
    each ends trained alone. Their parallel regions, private OpenBLAS calls and whole-array
    checks (x of the first is past COPY_PARALLEL, so its NaN scan runs on the threads with
    its thread's run_flags) overlap."""
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((40, 48, 40)).astype(np.float32), rng.standard_normal((48, 3)).astype(np.float32)),
            (rng.standard_normal((30, 16, 20)).astype(np.float32), rng.integers(0, 5, (30, 16))),
            (rng.standard_normal((50, 8, 6)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32))]

    def models():
        return [fastlstm.Model(40, 48, 3, 2, seed=1, optimizer=fastlstm.Adam(1e-3)),
                fastlstm.Model(20, 32, 5, cell="gru", loss="xent", output="every", bidirectional=True, seed=2),
                fastlstm.Model(6, 40, 1, proj_size=12, seed=3)]
    alone, together = models(), models()
    for m, (x, y) in zip(alone, data):
        for _ in range(12):
            m.train_step(x, y)
    _in_threads(lambda i: [together[i].train_step(*data[i]) for _ in range(12)], n=3)
    assert all(np.array_equal(a.params, b.params) for a, b in zip(alone, together))


def test_every_call_that_changes_a_stack_waits_for_the_one_under_way():
    """Each public call that reads or writes a stack's workspace, parameters or saved forward
    takes the stack's lock (one_call_at_a_time): from a second thread it waits while another
    call holds it. A call left without it (reserve lost its decorator once, in an edit that
    put a method between the two) would run beside the other's kernels."""
    import threading
    m = fastlstm.LSTM(3, 4, seed=0)
    x, h, c = np.zeros((5, 2, 3), np.float32), np.zeros((1, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32)
    calls = {"forward": lambda: m.forward(x), "backward": lambda: (m.forward(x), m.backward(np.ones((5, 2, 4),
                                                                                             np.float32))),
             "step": lambda: m.step(x[0], h, c), "reserve": lambda: m.reserve(1, 1), "zero_grad": m.zero_grad,
             "reset_parameters": m.reset_parameters, "astype": lambda: m.astype("float64"),
             "load_torch_state_dict": lambda: m.load_torch_state_dict(m.torch_state_dict())}
    for name, call in calls.items():
        done = threading.Event()
        with m._lock:
            t = threading.Thread(target=lambda: (call(), done.set()))
            t.start()
            assert not done.wait(0.2), f"{name} ran while another call held the stack"
        t.join(60)
        assert done.is_set(), name


_PARENT = {}


def _predict_in_child(q):
    """The parent's model (a forked child has it), or one made here (a spawned child)."""
    m = _PARENT.get("model") or fastlstm.Model(3, 4, 1, seed=0)
    try:
        m.predict(np.zeros((5, 2, 3), np.float32))
        q.put("ran")
    except RuntimeError as e:
        q.put(str(e))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")   # 3.12 on
def test_a_forked_child_gets_an_error_it_can_act_on_not_a_kill():
    """GNU OpenMP's threads do not survive fork(): Numba killed a forked child (SIGTERM, exit
    -15) at its first parallel kernel. The child's calls now raise RuntimeError saying what
    to do; a spawned child runs as usual (the C ABI's header covers fork() for C)."""
    import multiprocessing as mp
    _PARENT["model"] = fastlstm.Model(3, 4, 1, seed=0)
    _PARENT["model"].predict(np.zeros((5, 2, 3), np.float32))          # the parent's pool has run
    try:
        for method, want in (("fork", "multiprocessing.get_context('spawn')"), ("spawn", "ran")):
            ctx = mp.get_context(method)
            q = ctx.Queue()
            p = ctx.Process(target=_predict_in_child, args=(q,))
            p.start()
            p.join(120)
            assert p.exitcode == 0, (method, p.exitcode)
            assert want in q.get(timeout=10), method
    finally:
        _PARENT.clear()


def test_long_arrays_on_the_threads_give_the_same_results():
    """From COPY_PARALLEL entries the finiteness checks, x's copy into the workspace and
    zero_grad run on the threads: the same y, bit for bit, as the two halves of the batch
    below that size (each row's bits in the recurrent kernels depend on that row alone; δx,
    a BLAS product blocked by the shape, need not be), every NaN or Inf found wherever it
    lies, and every gradient zeroed."""
    from fastlstm.kernels import COPY_PARALLEL
    T, B, D, H = 16, 64, 80, 8            # x: 81,920 entries, each half 40,960
    assert T * B * D >= COPY_PARALLEL > T * B * D // 2
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D)).astype(np.float32), rng.standard_normal((T, B, H)).astype(np.float32)
    m = fastlstm.LSTM(D, H, seed=1)
    y, _ = m.forward(x)
    for half in (slice(0, B // 2), slice(B // 2, B)):
        assert np.array_equal(m.forward(np.ascontiguousarray(x[:, half]))[0], y[:, half])
    for where, value in (((0, 0, 0), np.nan), ((15, 63, 7), np.inf), ((12, 51, 6), -np.inf)):
        bad = x.copy()
        bad[where] = value
        with pytest.raises(ValueError, match=re.escape(f"found {value} at index {where}")):
            m.forward(bad)
        m.forward(x)
        bad = dy.copy()
        bad[where] = value
        with pytest.raises(ValueError, match=re.escape(f"found {value} at index {where}")):
            m.backward(bad)
        m.backward(dy)                    # the forward still waits for its backward
    big = fastlstm.LSTM(100, 100)         # 80,400 gradients
    assert big.grads.size >= COPY_PARALLEL
    big.grads[:] = 1.5
    big.zero_grad()
    assert not big.grads.any()


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU])
def test_a_streaming_step_takes_the_threads_only_while_they_are_awake(cls, monkeypatch):
    """A streaming step within STEP_AWAKE of the last one runs its tasks on the threads,
    which still spin; a later one (a stream fed in real time: they sleep, and waking them
    took longer than the serial step) on the calling thread, up to STEP_PARALLEL_ASLEEP
    multiply-adds a layer. Both give the same bits."""
    from fastlstm import recurrent
    from fastlstm.kernels import STEP_PARALLEL, STEP_PARALLEL_ASLEEP
    awake, kernel = [], recurrent.recurrent_step
    monkeypatch.setattr(recurrent, "recurrent_step", lambda *a: (awake.append(a[-1]), kernel(*a))[1])
    rng = np.random.default_rng(0)
    m = cls(40, 100, 2, seed=0)
    B = 8
    assert STEP_PARALLEL <= B * 300 * 140 < B * 400 * 140 < STEP_PARALLEL_ASLEEP   # a layer's multiply-adds
    xs = rng.standard_normal((3, B, 40)).astype(np.float32)
    finals = []
    for window in (0.0, np.inf):         # never awake (serial), always awake (parallel)
        monkeypatch.setattr(recurrent, "STEP_AWAKE", window)
        h, c = np.zeros((2, B, 100), np.float32), np.zeros((2, B, 100), np.float32)
        for x in xs:
            m.step(x, h, c) if cls is fastlstm.LSTM else m.step(x, h)
        finals.append(h.tobytes() + c.tobytes())
    assert awake == [False] * 3 + [True] * 3
    assert finals[0] == finals[1]
    monkeypatch.setattr(recurrent, "STEP_AWAKE", 20e-6)
    monkeypatch.setattr(recurrent, "_last_step", [-np.inf])   # no step yet: the threads are not spinning for one
    m.step(xs[0], h, c) if cls is fastlstm.LSTM else m.step(xs[0], h)
    assert awake[-1] is False


def test_an_inference_forward_of_one_task_runs_in_a_team_of_one(monkeypatch):
    """Model.predict and evaluate of a small model on up to 4 rows (one direction) run each
    layer's forward as one task in a team of one thread: a region of the pool would wake a
    sleeping thread for less work than the wake-up costs. Training, more rows, two
    directions, or a layer whose W was packed on the threads keep the pool. The bits and
    Numba's thread count stay as they were."""
    import numba
    from fastlstm import recurrent
    teams, alone = [], recurrent._alone
    monkeypatch.setattr(recurrent, "_alone", lambda kernel, *a: alone(
        lambda *b: (teams.append(numba.get_num_threads()), kernel(*b))[1], *a))
    rng = np.random.default_rng(0)
    small = fastlstm.Model(8, 32, 3, num_layers=2, loss="xent", seed=0)
    x = rng.standard_normal((20, 6, 8)).astype(np.float32)
    x1, x4, y4 = np.ascontiguousarray(x[:, :1]), np.ascontiguousarray(x[:, :4]), np.zeros(4, np.int64)
    threads = numba.get_num_threads()
    calls = [(lambda: small.predict(x1), 2), (lambda: small.evaluate(x4, y4), 2), (lambda: small.train_step(x4, y4), 0),
             (lambda: small.predict(x), 0),
             (lambda: fastlstm.Model(8, 32, 3, bidirectional=True, seed=0).predict(x1), 0),
             (lambda: fastlstm.Model(64, 256, 3, seed=0).predict(np.tile(x1, 8)), 0)]      # W: 327,680 packed
    for call, layers in calls:
        teams.clear()
        call()
        assert teams == [1] * layers
        assert numba.get_num_threads() == threads
    p = small.predict(x1)
    monkeypatch.setattr(recurrent, "_alone", lambda kernel, *a: kernel(*a))
    assert np.array_equal(small.predict(x1), p)


_IN_BOUNDS = textwrap.dedent("""
    import numpy as np, fastlstm
    rng = np.random.default_rng(5)
    L = np.array([7, 3, 5, 1, 6, 7, 2, 4, 7])
    for cell, kw in [("lstm", {}), ("gru", {}), ("rnn_relu", {}), ("lstm", dict(proj_size=4)),
                     ("lstm", dict(bidirectional=True, dropout=0.3)), ("gru", dict(bidirectional=True)),
                     ("lstm", dict(vocab_size=11))]:
        for output in ("last", "every"):
            layers = 2 if kw.get("dropout") else 1
            m = fastlstm.Model(3, 8, 2, layers, cell=cell, loss="xent", output=output, seed=1, **kw)
            x = rng.integers(0, 11, (7, 9)) if "vocab_size" in kw else rng.standard_normal((7, 9, 3)).astype(np.float32)
            y = rng.integers(0, 2, (9,) if output == "last" else (7, 9))
            for _ in range(2):
                m.train_step(x, y, L)
            m.predict(x, L)
            if not kw.get("bidirectional"):
                m.step(x[0])
    big = fastlstm.LSTM(16, 32, seed=0)                  # the copies' and packing's parallel paths
    x = rng.standard_normal((64, 80, 16)).astype(np.float32)
    y, _ = big.forward(x)
    big.backward(np.ones_like(y), record=True)           # and the gradient-flow probe's norms
    print("in bounds")
""")


def test_the_kernels_stay_in_bounds(tmp_path):
    """Every Numba kernel (all but the tiles' LLVM IR) indexes within its arrays: a training
    step, predict and a streaming step of each cell kind, with lengths, projections, both
    directions, dropout, token ids and the probe, compiled with Numba's bounds checks (into
    a cache of their own), which raise on any index past an array's end. A kernel that read
    past one (a 0-wide buffer of zeros read as H wide) trained on whatever lay there, only
    sometimes."""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _IN_BOUNDS], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0 and "in bounds" in r.stdout, r.stdout + r.stderr
