"""The layers people build with: bidirectional stacks (against torch.nn.LSTM/RNN with
PackedSequence), dropout (masks, evaluation mode, finite differences, threads, resume) and
token embeddings (against nn.Embedding + nn.LSTM), with the errors each can raise."""
import itertools
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastlstm
from conftest import traced_peak
from test_gradcheck import _assert_close, _numeric

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

TOL = 1e-10


def _torch_grads(mod, cls, m):
    """torch's parameter gradients in fastlstm's flat layout (through a twin's state dict)."""
    twin = cls(m.input_size, m.hidden_size, m.num_layers, bidirectional=m.bidirectional, dtype=np.float64,
               **({"proj_size": m.proj_size} if m.proj_size else {}))
    grads = {k: p.grad.numpy().copy() for k, p in mod.named_parameters()}
    H = m.hidden_size
    for k, g in grads.items():        # a block of b in both biases has their (equal) gradient once
        for ih, hh in cls.TORCH_BIAS:
            if "bias_hh" in k and ih >= 0 and hh >= 0:
                g[hh * H:(hh + 1) * H] = 0
    twin.load_torch_state_dict(grads)
    return twin.params


@pytest.mark.parametrize("cell,layers,init,with_lengths",
                         list(itertools.product(["lstm", "rnn", "gru", "rnn_relu"], [1, 2, 3], [False, True],
                                                [False, True])))
def test_bidirectional_equals_torch_with_packed_sequences(cell, layers, init, with_lengths):
    T, B, D, H = 7, 5, 3, 4
    rng = np.random.default_rng(layers + 10 * init)
    cls, tcls = {"lstm": (fastlstm.LSTM, torch.nn.LSTM), "rnn": (fastlstm.RNN, torch.nn.RNN),
                 "gru": (fastlstm.GRU, torch.nn.GRU), "rnn_relu": (fastlstm.RNN, torch.nn.RNN)}[cell]
    relu = dict(nonlinearity="relu") if cell == "rnn_relu" else {}
    m = cls(D, H, layers, bidirectional=True, dtype=np.float64, seed=0, **relu)
    m.params[:] = rng.uniform(-0.5, 0.5, m.params.size)
    t = tcls(D, H, layers, bidirectional=True, **relu).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})   # ours -> torch
    x = rng.standard_normal((T, B, D))
    L = rng.integers(1, T + 1, B) if with_lengths else np.full(B, T)
    L[0] = T
    h0, c0 = (rng.standard_normal((2 * layers, B, H)) for _ in range(2)) if init else (None, None)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(a, requires_grad=True) for a in (h0, c0)] if init else None
    out, state = t(pack_padded_sequence(xt, torch.tensor(L), enforce_sorted=False),
                   (tuple(st) if cell == "lstm" else st[0]) if init else None)
    yt = pad_packed_sequence(out, total_length=T)[0]
    states_t = state if cell == "lstm" else (state,)
    cell = "rnn" if cell == "rnn_relu" else cell
    if cell == "lstm":
        y, states = m.forward(x, h0, c0, L)
    else:
        y, hn = m.forward(x, h0, L)
        states = (hn,)
    assert y.shape == (T, B, 2 * H) and states[0].shape == (2 * layers, B, H)
    assert np.abs(yt.detach().numpy() - y).max() <= TOL
    for a, b in zip(states_t, states):
        assert np.abs(a.detach().numpy() - b).max() <= TOL
    dy = rng.standard_normal(y.shape) * (np.arange(T)[:, None, None] < L[None, :, None])
    dstates = [rng.standard_normal(s.shape) for s in states]
    E = (yt * torch.tensor(dy)).sum() + sum((s * torch.tensor(d)).sum() for s, d in zip(states_t, dstates))
    E.backward()
    m.zero_grad()
    dx, dstate0 = m.backward(dy, *dstates)
    dstate0 = dstate0 if cell == "lstm" else (dstate0,)
    assert np.abs(xt.grad.numpy() - dx).max() <= TOL
    if init:
        for s, d in zip(st, dstate0):
            assert np.abs(s.grad.numpy() - d).max() <= TOL
    assert np.abs(_torch_grads(t, cls, m) - m.grads).max() <= TOL
    back = cls(D, H, layers, bidirectional=True, dtype=np.float64)                         # torch -> ours
    back.load_torch_state_dict(t.state_dict())
    assert np.abs(back.params - m.params).max() <= 1e-15


@pytest.mark.parametrize("cell,bidirectional,proj", [("lstm", False, 0), ("lstm", True, 2), ("gru", True, 0),
                                                     ("rnn", False, 0)])
def test_batch_first_equals_torchs_batch_first(cell, bidirectional, proj):
    """batch_first=True (PyTorch's): x, y, dy and dx are (B, T, ·), the states (layers, B, ·)
    as ever. Against torch's batch_first modules with packed sequences, to 1e-10, and bit for
    bit the time-major stack's results with their first two axes swapped."""
    T, B, D, H, layers = 6, 4, 3, 5, 2
    rng = np.random.default_rng(7)
    cls, tcls = {"lstm": (fastlstm.LSTM, torch.nn.LSTM), "rnn": (fastlstm.RNN, torch.nn.RNN),
                 "gru": (fastlstm.GRU, torch.nn.GRU)}[cell]
    kw = dict(bidirectional=bidirectional, dtype=np.float64, seed=0, **({"proj_size": proj} if proj else {}))
    m, tm = cls(D, H, layers, batch_first=True, **kw), cls(D, H, layers, **kw)
    assert "batch_first=True" in repr(m) and "batch_first" not in repr(tm)
    m.params[:] = tm.params[:] = rng.uniform(-0.5, 0.5, m.params.size)
    t = tcls(D, H, layers, batch_first=True, bidirectional=bidirectional, **({"proj_size": proj} if proj else {}))
    t = t.double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})
    x = rng.standard_normal((B, T, D))
    L = np.array([T, 2, 5, 1])
    xt = torch.tensor(x, requires_grad=True)
    out, state = t(pack_padded_sequence(xt, torch.tensor(L), batch_first=True, enforce_sorted=False))
    yt = pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    y, state_m = m.forward(x, lengths=L)
    states_t, states_m = (state, state_m) if cell == "lstm" else ((state,), (state_m,))
    Hr = proj or H
    assert y.shape == (B, T, Hr * (1 + bidirectional)) and y.flags.c_contiguous
    assert states_m[0].shape == (layers * (1 + bidirectional), B, Hr)
    assert np.abs(yt.detach().numpy() - y).max() <= TOL
    for a, b in zip(states_t, states_m):
        assert np.abs(a.detach().numpy() - b).max() <= TOL
    dy = rng.standard_normal(y.shape) * (np.arange(T)[None, :, None] < L[:, None, None])
    (yt * torch.tensor(dy)).sum().backward()
    m.zero_grad()
    dx = m.backward(dy)[0]
    assert dx.shape == x.shape and dx.flags.c_contiguous
    assert np.abs(xt.grad.numpy() - dx).max() <= TOL
    assert np.abs(_torch_grads(t, cls, m) - m.grads).max() <= TOL
    swap = lambda a: np.ascontiguousarray(a.swapaxes(0, 1))      # noqa: E731
    y2, state2 = tm.forward(swap(x), lengths=L)
    tm.zero_grad()
    dx2 = tm.backward(swap(dy))[0]
    assert np.array_equal(swap(y2), y) and np.array_equal(swap(dx2), dx) and np.array_equal(tm.grads, m.grads)
    assert all(np.array_equal(a, b) for a, b in zip(state2 if cell == "lstm" else (state2,), states_m))


def test_a_torch_modules_batch_first_must_be_the_stacks():
    """The weights do not show batch_first: a time-major stack loaded from a batch-first
    module would take its callers' (B, T, D) as (T, B, D), without a word when B = T."""
    t = torch.nn.GRU(3, 4, batch_first=True)
    ours = fastlstm.GRU(3, 4, seed=0)
    before = ours.params.copy()
    with pytest.raises(ValueError, match="this GRU has batch_first=True and this fastlstm.GRU False: make it with "
                                         "batch_first=True"):
        ours.load_torch_state_dict(t)
    assert np.array_equal(ours.params, before)
    ours.load_torch_state_dict(t.state_dict())                  # the weights alone, as asked
    same = fastlstm.GRU(3, 4, batch_first=True)
    same.load_torch_state_dict(t)
    assert np.array_equal(same.params, ours.params)


def test_batch_first_shapes_are_checked_as_given():
    """A batch_first stack reads x as (B, T, D): its lengths run to x.shape[1], and dy must be
    (B, T, ·); each refusal names the shape the caller gave and changes nothing."""
    m = fastlstm.LSTM(3, 4, batch_first=True, seed=0)
    x = np.zeros((2, 5, 3), np.float32)                       # B = 2 rows of T = 5 steps
    with pytest.raises(ValueError, match=r"lengths must lie in 1..5 \(T = x.shape\[1\]\), got min 1, max 6"):
        m.forward(x, lengths=[1, 6])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        m.forward(x, lengths=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"x must have at least one step and one batch row, got shape \(0, 5, 3\)"):
        m.forward(np.zeros((0, 5, 3), np.float32))
    y, _ = m.forward(x, lengths=[5, 3])
    before = m.grads.copy()
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4\), got \(5, 2, 4\)"):
        m.backward(np.zeros((5, 2, 4), np.float32))
    assert np.array_equal(m.grads, before)
    assert m.backward(np.ones_like(y))[0].shape == (2, 5, 3)
    with pytest.raises(TypeError, match="batch_first must be True or False, got 1"):
        fastlstm.GRU(3, 4, batch_first=1)


def test_a_stacks_repr_shows_every_setting_that_differs_from_its_default():
    """As PyTorch's repr: the sizes, then each non-default setting (a bidirectional or dropout
    stack must not print as a plain one), then dtype and size."""
    assert repr(fastlstm.LSTM(3, 5)) == "LSTM(input_size=3, hidden_size=5, num_layers=1, dtype=float32, params=180)"
    m = fastlstm.LSTM(3, 5, 2, bidirectional=True, dropout=0.25, batch_first=True, forget_bias=0.0, proj_size=2)
    assert repr(m) == ("LSTM(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, dropout=0.25, "
                       f"batch_first=True, forget_bias=0.0, proj_size=2, dtype=float32, params={m.params.size})")
    assert "nonlinearity='relu'" in repr(fastlstm.RNN(3, 5, nonlinearity="relu"))
    assert "nonlinearity" not in repr(fastlstm.RNN(3, 5)) and "bidirectional" not in repr(fastlstm.GRU(3, 5))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_torch_weights_load_as_their_exact_values(half):
    """A bfloat16 module's state dict raised torch's "Got unsupported ScalarType BFloat16"
    (NumPy has no such dtype); it loads now, each weight widened exactly, as float16 ones do."""
    for cls, tcls in ((fastlstm.LSTM, torch.nn.LSTM), (fastlstm.GRU, torch.nn.GRU), (fastlstm.RNN, torch.nn.RNN)):
        t = tcls(3, 8, 2).to(half)
        m, ref = cls(3, 8, 2, dtype=np.float64), cls(3, 8, 2, dtype=np.float64)
        m.load_torch_state_dict(t.state_dict())
        ref.load_torch_state_dict({k: v.float().numpy() for k, v in t.state_dict().items()})
        assert np.array_equal(m.params, ref.params) and np.abs(m.params).max() > 0


def test_a_torch_tensor_given_for_an_array_is_told_how_to_convert():
    m = fastlstm.Model(3, 4, 1, seed=0)
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray, got Tensor \(pass x.detach\(\).numpy\(\)\)"):
        m.predict(torch.zeros(5, 2, 3))


@pytest.mark.parametrize("output,layers", [("last", 1), ("last", 2), ("every", 2)])
def test_embedding_bidirectional_model_equals_torch(output, layers):
    """nn.Embedding + nn.LSTM(bidirectional=True) + nn.Linear: the loss, every gradient
    (E's included) and the predictions; "last" reads [hn[-2] ; hn[-1]]."""
    T, B, D, H, O, V = 7, 5, 4, 6, 3, 11
    rng = np.random.default_rng(layers)
    m = fastlstm.Model(D, H, O, layers, bidirectional=True, output=output, dtype=np.float64, vocab_size=V, seed=0)
    m.params[:] = rng.uniform(-0.5, 0.5, m.params.size)
    emb = torch.nn.Embedding(V, D).double()
    emb.weight.data = torch.tensor(m.E)
    lstm = torch.nn.LSTM(D, H, layers, bidirectional=True).double()
    lstm.load_state_dict({k: torch.from_numpy(v) for k, v in m.core.torch_state_dict().items()})
    lin = torch.nn.Linear(2 * H, O).double()
    lin.weight.data, lin.bias.data = torch.tensor(m.V), torch.tensor(m.bias)
    ids = rng.integers(0, V, (T, B))
    L = rng.integers(1, T + 1, B)
    L[0] = T
    y = rng.standard_normal((B, O) if output == "last" else (T, B, O))
    loss = m.compute_gradients(ids, y, L)
    out, (hn, _) = lstm(pack_padded_sequence(emb(torch.tensor(ids)), torch.tensor(L), enforce_sorted=False))
    if output == "last":
        P = lin(torch.cat([hn[-2], hn[-1]], 1))
        Et = ((P - torch.tensor(y)) ** 2).mean()
    else:
        P = lin(pad_packed_sequence(out, total_length=T)[0])
        mask = torch.tensor((np.arange(T)[:, None] < L[None, :])[:, :, None].astype(np.float64))
        P = P * mask
        Et = (((P - torch.tensor(y)) ** 2) * mask).sum() / (mask.sum() * O)
    Et.backward()
    assert abs(loss - Et.item()) <= TOL
    g = fastlstm.Model(D, H, O, layers, bidirectional=True, output=output, dtype=np.float64, vocab_size=V)
    g.params[:] = m.grads
    assert np.abs(g.E - emb.weight.grad.numpy()).max() <= TOL
    assert np.abs(g.V - lin.weight.grad.numpy()).max() <= TOL
    assert np.abs(_torch_grads(lstm, fastlstm.LSTM, g.core) - g.core.params).max() <= TOL
    assert np.abs(m.predict(ids, L) - P.detach().numpy()).max() <= TOL


def test_dropout_zero_is_bitwise_no_dropout_and_eval_drops_nothing():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 9, 3))
    plain = fastlstm.LSTM(3, 8, 3, dtype=np.float64, seed=1)
    zero = fastlstm.LSTM(3, 8, 3, dtype=np.float64, seed=1, dropout=0.0)
    assert np.array_equal(plain.forward(x)[0], zero.forward(x)[0])
    m = fastlstm.LSTM(3, 8, 3, dtype=np.float64, seed=1, dropout=0.5)
    a, b = m.forward(x)[0], m.forward(x)[0]
    assert not np.array_equal(a, b) and m.dropout_step == 2               # fresh masks each training forward
    m.eval()
    assert np.array_equal(m.forward(x)[0], plain.forward(x)[0]) and m.dropout_step == 2
    model = fastlstm.Model(3, 8, 2, 2, dropout=0.5, seed=1)
    p1 = model.predict(x.astype(np.float32))
    model.train_step(x.astype(np.float32), np.zeros((9, 2), np.float32))
    reference = fastlstm.Model(3, 8, 2, 2, seed=1)
    reference.params[:] = model.params
    assert np.array_equal(model.predict(x.astype(np.float32)), reference.predict(x.astype(np.float32)))
    assert not np.array_equal(p1, model.predict(x.astype(np.float32)))
    y = np.zeros((9, 2), np.float32)                          # evaluate and step never drop either
    assert model.evaluate(x.astype(np.float32), y) == reference.evaluate(x.astype(np.float32), y)
    assert np.array_equal(model.step(x[0].astype(np.float32)), reference.step(x[0].astype(np.float32)))


def test_dropout_set_on_a_built_stack_is_the_dropout_it_was_built_with():
    """As PyTorch's and Keras's layers take it: lstm.dropout = 0.5 (it was silently ignored,
    the layer inputs being no copy to drop out) and the same on a Model's stack, which its
    checkpoint then records; a forward awaiting its backward is let go, its masks being
    another rate's; one layer gets PyTorch's warning again."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((6, 9, 3)), rng.standard_normal((6, 9, 8))
    built = fastlstm.LSTM(3, 8, 3, dtype=np.float64, seed=1, dropout=0.5)
    later = fastlstm.LSTM(3, 8, 3, dtype=np.float64, seed=1)
    later.forward(x)                                  # buffers made without a copy of the layer inputs
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # three layers: no warning
        later.dropout = 0.5
    with pytest.raises(RuntimeError, match="dropout was set since the last forward"):
        later.backward(dy)
    for m in (built, later):
        m.dropout_step = 3
        m.forward(x)
    assert np.array_equal(built.backward(dy)[0], later.backward(dy)[0])
    assert np.array_equal(built.grads, later.grads) and not np.array_equal(later.forward(x)[0], later.forward(x)[0])
    with pytest.warns(UserWarning, match="with num_layers=1 it does nothing") as said:
        fastlstm.LSTM(3, 8).dropout = 0.25
    assert said[0].filename == __file__                # the line that set it
    model, reference = fastlstm.Model(3, 8, 2, 2, seed=1), fastlstm.Model(3, 8, 2, 2, seed=1, dropout=0.5)
    model.core.dropout = 0.5
    y = np.zeros((9, 2), np.float32)
    for m in (model, reference):
        m.train_step(x.astype(np.float32), y)
    assert np.array_equal(model.params, reference.params) and model.config() == reference.config()


def test_the_kept_fraction_is_one_minus_p_within_three_sigma():
    from fastlstm.kernels import apply_dropout
    for p in (0.1, 0.5, 0.9):
        X = np.ones((50, 300, 64))
        apply_dropout(X, 7, 3, 1, p, 0)
        kept, n = (X != 0).mean(), X.size
        assert abs(kept - (1 - p)) <= 3 * np.sqrt(p * (1 - p) / n), (p, kept)
        assert np.allclose(X[X != 0], 1 / (1 - p))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_gradients_pass_finite_differences_with_the_masks_held(bidirectional):
    rng = np.random.default_rng(4)
    T, B, D, H = 4, 3, 2, 3
    m = fastlstm.LSTM(D, H, 3, bidirectional=bidirectional, dropout=0.4, dtype=np.float64, seed=2)
    m.params[:] = rng.uniform(-0.5, 0.5, m.params.size)
    x = rng.standard_normal((T, B, D))
    L = np.array([4, 2, 3])
    dy = rng.standard_normal((T, B, m.output_size))

    def f():
        m.dropout_step = 5                                  # the same masks at every evaluation
        return float(np.sum(m.forward(x, lengths=L)[0] * dy))
    f()
    m.dropout_step = 5
    m.forward(x, lengths=L)
    m.zero_grad()
    dx, _ = m.backward(dy)
    _assert_close("dx", dx, _numeric(f, x))
    for k, layer in enumerate(m.layers):
        _assert_close(f"dW[{k}]", layer.dW, _numeric(f, layer.W))
        _assert_close(f"db[{k}]", layer.db, _numeric(f, layer.b))


_THREADS = textwrap.dedent("""
    import hashlib, numpy as np, numba, fastlstm
    rng = np.random.default_rng(0)
    m = fastlstm.Model(3, 16, 2, 3, bidirectional=True, dropout=0.3, seed=0)
    x = rng.standard_normal((9, 23, 3)).astype(np.float32)
    for _ in range(3):
        m.train_step(x, rng.standard_normal((23, 2)).astype(np.float32), rng.integers(1, 10, 23))
    print(numba.get_num_threads(), hashlib.sha256(m.params.tobytes()).hexdigest())
""")


@pytest.mark.parametrize("output", ["last", "every"])
def test_parts_of_a_batch_with_first_row_give_the_whole_batchs_gradients(output):
    """The masks are keyed by the row: a part of the batch with first_row = its first row
    draws the whole batch's masks, so the parts' gradients, weighted by their share of the
    predictions, sum to the whole batch's (a data-parallel step). Counted from row 0, the
    second part drew the first part's masks. A bad first_row is refused and changes nothing."""
    rng = np.random.default_rng(4)
    m = fastlstm.Model(3, 6, 2, 3, dropout=0.5, dtype=np.float64, seed=2, output=output)
    x, L = rng.standard_normal((7, 6, 3)), np.array([7, 3, 5, 7, 1, 6])
    y = rng.standard_normal((6, 2) if output == "last" else (7, 6, 2))
    m.compute_gradients(x, y, L)
    whole = m.grads.copy()
    summed = {}
    for first in (0, 3):            # the second part's first_row: counted from 0, or its row in the batch
        total = 0
        for r0, fr in ((0, 0), (3, first)):
            rows = slice(r0, r0 + 3)
            ys = y[rows] if output == "last" else y[:, rows]
            share = 0.5 if output == "last" else L[rows].sum() / L.sum()
            m.compute_gradients(x[:, rows].copy(), ys.copy(), L[rows], first_row=fr)
            total = total + share * m.grads
        summed[first] = total
    assert np.max(np.abs(summed[3] - whole)) <= 1e-12 * np.max(np.abs(whole))
    assert np.max(np.abs(summed[0] - whole)) > 1e-3 * np.max(np.abs(whole))
    before = m.params.copy(), m.grads.copy(), m.steps
    for bad, exc in ((-1, ValueError), (1.5, TypeError), ("3", TypeError), (1 << 62, ValueError), (1 << 70, ValueError)):
        with pytest.raises(exc, match="first_row"):
            m.compute_gradients(x, y, L, first_row=bad)
    assert np.array_equal(m.params, before[0]) and np.array_equal(m.grads, before[1]) and m.steps == before[2]


def test_dropout_and_bidirectional_steps_are_bitwise_the_same_at_1_and_2_threads():
    out = {}
    for n in (1, 2):
        r = subprocess.run([sys.executable, "-c", _THREADS], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, NUMBA_NUM_THREADS=str(n)))
        assert r.returncode == 0, r.stderr
        threads, digest = r.stdout.split()
        assert threads == str(n)
        out[n] = digest
    assert out[1] == out[2]


def test_checkpoints_keep_the_settings_and_old_ones_load(tmp_path):
    m = fastlstm.Model(3, 5, 4, 2, bidirectional=True, dropout=0.2, vocab_size=9, loss="xent", seed=0)
    m.save(tmp_path / "m.ckpt")
    back = fastlstm.load(tmp_path / "m.ckpt")
    assert back.config() == m.config() and np.array_equal(back.params, m.params)
    ids = np.random.default_rng(0).integers(0, 9, (5, 2))
    assert np.array_equal(back.predict(ids), m.predict(ids))
    old = fastlstm.Model(3, 5, 4, seed=0)
    header = {k: v for k, v in old.config().items() if k not in ("bidirectional", "dropout", "dropout_seed",
                                                                  "vocab_size")}
    from fastlstm import checkpoint
    checkpoint.write(tmp_path / "old.ckpt", dict(model=header, optimizer=old.optimizer.config(), steps=0,
                                                 skipped_steps=0, extra={}),
                     {"params": old.params, **{f"optimizer.{k}": a for k, a in old.optimizer.state.items()}})
    loaded = fastlstm.load(tmp_path / "old.ckpt")
    assert not loaded.core.bidirectional and loaded.core.dropout == 0 and loaded.vocab_size is None


def test_the_text_task_trains_on_token_ids(tmp_path):
    from test_cli import _run
    out = tmp_path / "t.ckpt"
    r = _run("train", "--task", "text", "--steps", "30", "--T", "16", "--hidden", "32", "--batch", "8",
             "--eval-every", "30", "--quiet", "--out", str(out))
    assert r.returncode == 0, r.stderr
    m = fastlstm.load(out)
    assert m.vocab_size == m.output_size and m.core.input_size == 32
    r = _run("sample", str(out), "--length", "20", "--prime", "def ")
    assert r.returncode == 0 and r.stdout.startswith("def ")


def test_bad_inputs_are_clear_errors_and_change_nothing(tmp_path):
    m = fastlstm.Model(3, 5, 2, 2, bidirectional=True, seed=0)
    before = m.params.copy()
    with pytest.raises(ValueError, match="cannot stream"):
        m.step(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="cannot stream"):
        m.core.step(np.zeros((1, 3), np.float32), np.zeros((4, 1, 5), np.float32), np.zeros((4, 1, 5), np.float32))
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
            fastlstm.LSTM(3, 5, 2, dropout=p)
    with pytest.raises(ValueError, match="dropout must be a finite number"):
        fastlstm.Model(3, 5, 2, dropout=float("nan"))
    for make in (lambda: fastlstm.GRU(3, 5, dropout=0.2), lambda: fastlstm.Model(3, 5, 2, dropout=0.2),
                 lambda: fastlstm.RNN(3, 5, dropout=0.2), lambda: fastlstm.Model(3, 5, 2, cell="rnn", dropout=0.2),
                 lambda: fastlstm.LSTM(3, 5, dropout=0.2)):
        with pytest.warns(UserWarning, match=r"with num_layers=1 it does nothing \(dropout=0.2\)") as seen:
            make()                                           # PyTorch's warning: one layer drops nothing
        assert seen[0].filename == __file__                  # pointing at the caller's line
    with pytest.warns(UserWarning, match="it does nothing"):
        fastlstm.Model(3, 5, 2, dropout=0.2).save(tmp_path / "one.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlstm.Model(3, 5, 2, 2, dropout=0.2)
        fastlstm.load(tmp_path / "one.ckpt")                 # said when it was made, not again at each load
    with pytest.raises(TypeError, match="bidirectional must be True or False"):
        fastlstm.Model(3, 5, 2, bidirectional="yes")
    e = fastlstm.Model(4, 5, 3, vocab_size=6, loss="xent", output="every", seed=0)
    kept = e.params.copy()
    ids = np.zeros((3, 2), np.int64)
    with pytest.raises(ValueError, match=r"token ids must lie in 0\.\.5, got min 0, max 6"):
        e.train_step(ids + np.array([[0, 6]]), ids)
    with pytest.raises(ValueError, match=r"token ids must lie in 0\.\.5, got min -1"):
        e.predict(ids - 1)
    with pytest.raises(TypeError, match="integer ndarray of ids"):
        e.train_step(np.zeros((3, 2, 4), np.float32), ids)
    with pytest.raises(TypeError, match=r"integer ndarray of token ids \(B,\), one per stream, got float32"):
        e.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match=r"token ids of shape \(B,\) \(one per stream\), got \(0,\)"):
        e.step(np.zeros(0, np.int64))
    e.reset_state(2)
    state = [s.copy() for s in e._state]
    with pytest.raises(ValueError, match=r"token ids of shape \(B,\) \(one per stream\), got \(2, 2\)"):
        e.step(np.zeros((2, 2), np.int64))                   # not four streams
    assert all(np.array_equal(a, b) for a, b in zip(state, e._state))
    assert np.array_equal(e.params, kept) and np.array_equal(m.params, before) and e.steps == 0
    e.train_step(ids, ids)                                   # the next valid call works
    assert e.steps == 1
    from test_cli import _run
    r = _run("train", "--task", "text", "--bidirectional", "--steps", "1")
    assert r.returncode == 2 and "sees the next character" in r.stderr, r.stderr


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["ids, a label per step", "ids, a label per sequence", "values per step",
                                  "labels per sequence"])
def test_a_warm_bidirectional_dropout_step_allocates_nothing_that_grows_with_the_batch(kind, batch_first):
    """tracemalloc sees only interpreter objects in a warm Model.train_step: the same few KiB
    for a 250 times larger batch. Labels, ids and lengths of any integer dtype are read in
    place or copied into buffers the model keeps, and so are a batch_first model's inputs
    and per-step targets, time-major (it copied the labels and the lengths at every step)."""
    T, H, peaks = 20, 32, {}
    ids, every, xent = kind.startswith("ids"), "per step" in kind, "label" in kind
    for dtype in (np.int64, np.int32):
        for B in (4, 1000):
            m = fastlstm.Model(8, H, 3, 2, bidirectional=True, dropout=0.3, vocab_size=50 if ids else None,
                               loss="xent" if xent else "mse", output="every" if every else "last", seed=0,
                               batch_first=batch_first)
            rng = np.random.default_rng(0)
            lead = (B, T) if batch_first else (T, B)
            x = rng.integers(0, 50, lead).astype(dtype) if ids else rng.standard_normal(lead + (8,), np.float32)
            y = (rng.integers(0, 3, lead if every else B).astype(dtype) if xent else
                 rng.standard_normal((lead if every else (B,)) + (3,), np.float32))
            lengths = rng.integers(1, T + 1, B).astype(dtype)
            m.train_step(x, y, lengths)
            m.train_step(x, y, lengths)
            peak = []
            for _ in range(3):      # the least of three: an object the interpreter makes now and then
                with traced_peak() as one:
                    m.train_step(x, y, lengths)
                peak.append(one())
            peaks[dtype.__name__, B] = min(peak)
        assert peaks[dtype.__name__, 1000] <= peaks[dtype.__name__, 4] + 2048, peaks   # 1000 int32s: 4 KB


@pytest.mark.parametrize("make", [
    lambda dt: fastlstm.LSTM(3, 6, 2, proj_size=4, bidirectional=True, dropout=0.4, dtype=dt, seed=1),
    lambda dt: fastlstm.GRU(3, 6, 2, dropout=0.4, batch_first=True, dtype=dt, seed=1),
    lambda dt: fastlstm.RNN(3, 6, nonlinearity="relu", dtype=dt, seed=1)])
def test_astype_copies_a_stack_into_the_other_dtype(make):
    """stack.astype(np.float32) (PyTorch's .float()): the settings, training mode and dropout
    step kept (the same masks next), the parameters cast, the gradients zero; it runs as the
    original to float32's rounding, and back to float64 exactly. A value beyond float32's
    range is refused, and the stack is left as it was."""
    m = make(np.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    m.backward(np.ones_like(m.forward(x)[0]))
    c = m.astype(np.float32)
    assert repr(c) == repr(m).replace("float64", "float32") and c.dtype == np.float32
    assert (c.training, c.dropout_step, c.dropout_seed) == (m.training, m.dropout_step, m.dropout_seed)
    assert np.array_equal(c.params, m.params.astype(np.float32)) and not c.grads.any() and m.grads.any()
    assert np.abs(c.forward(x.astype(np.float32))[0] - m.forward(x)[0]).max() < 1e-5   # the same masks
    c.backward(np.ones_like(c.forward(x.astype(np.float32))[0]))
    assert c.grads.any() and np.isfinite(c.grads).all()
    back = c.eval().astype("float64")
    assert back.dtype == np.float64 and not back.training and np.array_equal(back.params, c.params)
    m.params[3] = -1e300
    before = m.params.copy()
    with pytest.raises(ValueError, match=r"params holds 1e\+300, beyond float32's range"):
        m.astype(np.float32)
    assert np.array_equal(m.params, before)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got float16"):
        m.astype(np.float16)


@pytest.mark.parametrize("make", [lambda: fastlstm.LSTM(3, 6, 2, proj_size=4, bidirectional=True, dropout=0.4, seed=1),
                                  lambda: fastlstm.GRU(3, 6, 2, dropout=0.4, dtype=np.float64, seed=1),
                                  lambda: fastlstm.RNN(3, 6, batch_first=True, seed=1)])
def test_a_copy_of_a_stack_runs_as_the_original_and_owns_its_buffers(make):
    """copy.deepcopy and pickle of LSTM, GRU and RNN (batch_first): the same settings, parameters, gradients
    and dropout step (so the next training forward draws the same masks); a forward awaiting
    its backward stays behind."""
    import copy
    import pickle
    for copier in (copy.deepcopy, lambda a: pickle.loads(pickle.dumps(a))):
        m = make()
        x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(m.dtype)
        y = m.forward(x)[0]
        m.backward(np.ones_like(y))
        m.forward(x)                              # awaiting its backward
        c = copier(m)
        assert repr(c) == repr(m) and (c.dropout, c.dropout_seed) == (m.dropout, m.dropout_seed)
        assert c.dropout_step == m.dropout_step == 2 * (m.dropout > 0)
        assert np.array_equal(c.params, m.params) and np.array_equal(c.grads, m.grads)
        assert not np.shares_memory(c.params, m.params)
        with pytest.raises(RuntimeError, match="needs a forward.*a copy .* does not carry the original's forward"):
            c.backward(np.ones_like(y))
        assert np.array_equal(c.forward(x)[0], m.forward(x)[0])   # the same masks
    model = fastlstm.Model(3, 6, 1, cell="gru", seed=0)
    alone = copy.deepcopy(model.core)             # a Model's stack, copied alone, owns its buffers
    assert np.array_equal(alone.params, model.core.params) and not np.shares_memory(alone.params, model.params)
