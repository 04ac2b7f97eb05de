"""Truncated BPTT: T chunks of one step, carrying (h, c) forward and (δh, δc) backward,
equal one call over all T steps."""
import numpy as np
import pytest

import fastlstm
from conftest import random_problem
from fastlstm import kernels as K


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_step_by_step_equals_one_call(dtype, tol):
    T, B, D, H, L = 6, 5, 3, 4, 2
    m, x, h0, c0, _, dy, dhn, dcn = random_problem(T, B, D, H, L, dtype=dtype)
    y, (hn, cn) = m.forward(x, h0, c0)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    full_grads = m.grads.copy()

    m.zero_grad()
    states, h, c, ys = [], h0, c0, []
    for t in range(T):
        states.append((h, c))
        yt, (h, c) = m.forward(x[t:t + 1], h, c)
        ys.append(yt)
    assert np.max(np.abs(np.concatenate(ys) - y)) <= tol
    assert np.max(np.abs(h - hn)) <= tol and np.max(np.abs(c - cn)) <= tol
    dh, dc, dxs = dhn, dcn, []
    for t in range(T - 1, -1, -1):
        m.forward(x[t:t + 1], *states[t])
        dxt, (dh, dc) = m.backward(dy[t:t + 1], dh, dc)
        dxs.append(dxt)
    assert np.max(np.abs(np.concatenate(dxs[::-1]) - dx)) <= tol
    assert np.max(np.abs(dh - dh0)) <= tol and np.max(np.abs(dc - dc0)) <= tol
    assert np.max(np.abs(m.grads - full_grads)) <= tol * 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("stack,Hr", [(fastlstm.LSTM, 37), (fastlstm.GRU, 37), (fastlstm.LSTM, 19)])
def test_recurrent_kernels_treat_each_row_alone(dtype, split, stack, Hr):
    """The recurrent kernels give each batch row the same bits alone as in any batch (B = 11
    in 2 chunks: 5 and 6 rows, tiles of 4 rows and of the 1 or 2 left). H = 37 exercises
    full and partial weight panels in both directions. (The BLAS products around them may
    take size-dependent paths, so this is asserted of the kernels, where the time loop's
    arithmetic lives.)
    split: the forward's tiles sum U h_{t-1} onto a given input half (a0 = D). Hr < H: an
    LSTM with a projection (h_t = W_hr m_t, 19 wide)."""
    from fastlstm.recurrent import _panels_size, _runs, _tile_width
    T, B, D, H = 6, 11, 5, 37
    R, G = stack._counts(H)
    Hc, Hm = H * stack.HAS_C, H * (Hr < H)
    blocks = K.BLOCKS[stack.CELL]
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((R, D + Hr)) / 6).astype(dtype)
    Wr = (rng.standard_normal((Hr, H)) / 6).astype(dtype) if Hm else W[:0]
    b = rng.standard_normal(G).astype(dtype)
    I0 = np.zeros((T + 1, B, D + Hr), dtype)
    I0[:T, :, :D] = rng.standard_normal((T, B, D))                # x_t
    I0[0, :, D:] = rng.standard_normal((B, Hr))                   # h0
    C0 = np.zeros((T + 1, B, Hc), dtype)
    C0[0] = rng.standard_normal((B, Hc))
    dY = rng.standard_normal((T, B, Hr)).astype(dtype)
    lengths = rng.integers(1, T + 1, B).astype(np.int64)
    TW = _tile_width(dtype)
    a0 = D if split else 0
    Pf = np.zeros(_panels_size(blocks, D, H, Hr, a0, True, dtype), dtype)
    Pb = np.zeros(_panels_size(blocks, D, H, Hr, 0, False, dtype), dtype)
    K.pack_unit(Pf, W, Wr, blocks, D, H, Hr, a0, True, TW)
    K.pack_unit(Pb, W, Wr, blocks, D, H, Hr, 0, False, TW)
    Z0 = np.zeros((T, B, G), dtype)
    if split:
        for zc, n, wr, *_ in _runs(blocks, H, "x"):
            Z0[:, :, zc:zc + n] = I0[:T, :, :D] @ W[wr:wr + n, :D].T

    def run(rows):
        I, C = (np.ascontiguousarray(a[:, rows]) for a in (I0, C0))
        n = len(rows)
        Z = np.ascontiguousarray(Z0[:, rows])
        TC, M = np.zeros((T, n, Hc), dtype), np.zeros((T, n, Hm), dtype)
        fwd = (Z, C, TC, I, M, Pf, b)
        K.recurrent_forward(*fwd, *fwd, lengths[rows], D, H, a0, 2, 1, stack.CELL, blocks, TW)
        out = [Z.copy(), I.copy(), C, TC]
        dh, dc = np.zeros((n, Hr), dtype), np.zeros((n, H), dtype)
        bwd = (Z, dh, dc, np.zeros((n, Hr), dtype), np.zeros((0, 0, 2)), np.ascontiguousarray(dY[:, rows]), C, TC,
               I, Pb, np.zeros((T, n, Hr * (Hm > 0)), dtype), np.zeros((n, Hm), dtype),
               np.zeros((n, G), dtype))
        K.recurrent_backward(*bwd, *bwd, np.zeros(Hm, dtype), lengths[rows], 2, 1, stack.CELL, blocks, TW)
        dbp = bwd[-1]                      # each row's Σ_t δz_t: together, δb
        assert np.allclose(dbp.sum(axis=0), Z.sum(axis=(0, 1), dtype=np.float64), rtol=1e-5, atol=1e-5)
        return out + [Z, dh, dc, bwd[-3]]

    full = run(list(range(B)))
    for r in (0, 5, 10):
        alone = run([r])
        for name, a, f in zip(("gates", "h", "c", "tanh c", "dz", "dh0", "dc0", "dh_t"), alone, full):
            assert np.array_equal(a[..., 0, :] if a.ndim == 3 else a[0], f[..., r, :] if f.ndim == 3 else f[r]), \
                f"row {r}: {name} differs alone"


@pytest.mark.parametrize("dtype,TW", [(np.float32, 16), (np.float32, 32), (np.float64, 8), (np.float64, 16)])
@pytest.mark.parametrize("rows,cols,k0", [(148, 42, 5), (40, 3, 0), (520, 300, 44)])   # the last: threads
def test_packed_panels_hold_the_weights_in_their_layout(dtype, TW, rows, cols, k0):
    """pack_panels against its definition: transpose, P[p, k, n] = W[p·TW + n, k0 + k];
    else P[p, j, n] = W[j, k0 + p·TW + n]; zero past W's edge (partial panels, and a panel
    of 8 columns wholly past it: 148 = 9·16 + 4 rows). The last shape is big enough
    (COPY_PARALLEL) to split the panels or rows between threads."""
    W = np.random.default_rng(0).standard_normal((rows, cols)).astype(dtype)
    for transpose, N, K_ in ((True, rows, cols - k0), (False, cols - k0, rows)):
        npanel = -(-N // TW)
        padded = np.zeros((npanel * TW, K_), dtype)
        padded[:N] = W[:, k0:] if transpose else W[:, k0:].T
        want = padded.reshape(npanel, TW, K_).transpose(0, 2, 1)      # (panels, K, TW)
        P = np.full((npanel, K_, TW), np.nan, dtype)
        K.pack_panels(P, W, k0, transpose)
        assert np.array_equal(P, want), f"transpose={transpose}"


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("T,B,D,H,L", [(7, 3, 4, 6, 2),        # serial: below kernels.STEP_PARALLEL
                                       (3, 8, 40, 100, 2)])    # parallel; H = 64 + 36 units
def test_streaming_step_matches_forward(dtype, tol, T, B, D, H, L):
    m, x, h0, c0, *_ = random_problem(T, B, D, H, L, dtype=dtype)
    y, (hn, cn) = m.forward(x, h0, c0)
    h, c = h0.copy(), c0.copy()
    for t in range(T):
        top = m.step(np.ascontiguousarray(x[t]), h, c)
        assert np.max(np.abs(top - y[t])) <= tol, f"step {t}"
    assert np.max(np.abs(h - hn)) <= tol and np.max(np.abs(c - cn)) <= tol
    m.backward(np.zeros_like(y))             # step() left the forward's saved state alone
    h1, c1 = h0[:, -1:].copy(), c0[:, -1:].copy()       # the last row alone (B = 1: serial)
    for t in range(T):
        m.step(np.ascontiguousarray(x[t, -1:]), h1, c1)
    assert np.array_equal(h1[:, 0], h[:, -1]) and np.array_equal(c1[:, 0], c[:, -1])


def test_streaming_step_refuses_bad_state():
    m = fastlstm.LSTM(2, 3, 2)
    x = np.zeros((1, 2), np.float32)
    h = np.zeros((2, 1, 3), np.float32)
    ro = h.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m.step(x, ro, h.copy())
    with pytest.raises(ValueError, match=r"c must have shape \(2, 1, 3\)"):
        m.step(x, h, np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="x must be finite"):
        m.step(np.full((1, 2), np.inf, np.float32), h, h.copy())
    assert not h.any()
    x[0, 1] = 0.5
    for name, bad in (("h", np.nan), ("c", -np.inf)):
        state = {"h": np.full((2, 1, 3), 0.25, np.float32), "c": np.full((2, 1, 3), -0.5, np.float32)}
        state[name][1, 0, 2] = bad
        before = {k: s.copy() for k, s in state.items()}
        with pytest.raises(ValueError, match=f"{name} must be finite; found {bad} at index \\(1, 0, 2\\)"):
            m.step(x, state["h"], state["c"])
        assert all(np.array_equal(state[k], before[k], equal_nan=True) for k in state)   # untouched
    r = fastlstm.RNN(2, 3)
    hr = np.array([[[0.1, np.nan, 0.2]]], np.float32)
    with pytest.raises(ValueError, match="h must be finite"):
        r.step(x, hr)
    assert hr[0, 0, 0] == np.float32(0.1) and hr[0, 0, 2] == np.float32(0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU, fastlstm.RNN], ids=["lstm", "gru", "rnn"])
def test_each_row_of_a_batch_gets_the_bits_it_gets_alone(monkeypatch, cls, dtype):
    """Through a model, at many batch sizes: a batch's rows meet the recurrent products in
    different tiles (8 or 4 rows a panel, the 1 to 3 rows a thread's range leaves over
    several panels at once, a masked tile for a last partial panel), yet each output is the
    same chain of FMAs: a row's outputs, final state and δ of its initial state are, to the
    bit, what the row gives run alone (B = 1), where it takes a 1-row tile. H = 70 leaves
    8 full panels of 128 bytes and a partial one in float32 (the LSTM's 4H columns), 17 and
    a partial in float64; a projection gives the LSTM a third product in the loop."""
    import fastlstm.recurrent as R
    monkeypatch.setattr(R, "FUSED_PANEL", 1 << 30)          # [x ; h] in the tiles: no BLAS in y or δh0
    T, D, H = 5, 3, 70
    make = (lambda *a, **k: cls(*a, proj_size=33, **k)) if cls is fastlstm.LSTM else cls
    for B in (2, 3, 5, 7, 8, 9, 11, 14):
        m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, D, H, 1, dtype, seed=B, with_lengths=True,
                                                            cls=make)
        lstm = cls is fastlstm.LSTM

        def run(rows):                              # (y, then the final state and δ of the initial one)
            pick = (lambda a: np.ascontiguousarray(a[:, rows]))
            y, s = m.forward(pick(x), (pick(h0), pick(c0)) if lstm else pick(h0), lengths=lengths[rows])
            _, ds = m.backward(pick(dy), (pick(dhn), pick(dcn)) if lstm else pick(dhn))
            return (y, *s, *ds) if lstm else (y, s, ds)
        whole = run(slice(None))
        for r in range(B):
            for name, a, a1 in zip(("y", "hn", "cn", "dh0", "dc0"), whole, run(slice(r, r + 1))):
                assert np.array_equal(a1[:, 0], a[:, r]), f"B = {B}, row {r}: {name}"
