"""LSTM projections (LSTMP, PyTorch's proj_size): h_t = W_hr (o_t ⊙ tanh c_t) is P wide.
Against torch.nn.LSTM(proj_size=P) with packed sequences, finite differences, the
streaming step, the Model and its checkpoint, and the errors."""
import itertools

import numpy as np
import pytest

import fastlstm
from test_gradcheck import _assert_close, _numeric
from test_layers import _torch_grads

TOL = 1e-10


def _stack(D, H, P, L, bi=False, seed=0):
    m = fastlstm.LSTM(D, H, L, bidirectional=bi, proj_size=P, dtype=np.float64, seed=seed)
    m.params[:] = np.random.default_rng(seed).uniform(-0.5, 0.5, m.params.size)
    return m


@pytest.mark.parametrize("layers,bi,init,with_lengths",
                         list(itertools.product([1, 2, 3], [False, True], [False, True], [False, True])))
def test_projection_equals_torch_with_packed_sequences(layers, bi, init, with_lengths, forward_mode):
    """y, hn (P wide), cn (H wide) and every gradient (W_hr's included) ≤ 1e-10 in float64,
    D ≠ H ≠ P; the state dict both ways, with weight_hr_l{k} (and _reverse)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, B, D, H, P = 7, 5, 3, 6, 4
    S = layers * (1 + bi)
    rng = np.random.default_rng(layers + 10 * bi + 100 * init)
    m = _stack(D, H, P, layers, bi)
    t = torch.nn.LSTM(D, H, layers, bidirectional=bi, proj_size=P).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})
    x = rng.standard_normal((T, B, D))
    L = rng.integers(1, T + 1, B) if with_lengths else np.full(B, T)
    L[0] = T
    h0, c0 = (rng.standard_normal((S, B, P)), rng.standard_normal((S, B, H))) if init else (None, None)
    xt = torch.tensor(x, requires_grad=True)
    st = (torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True)) if init else None
    out, (hnt, cnt) = t(pack_padded_sequence(xt, torch.tensor(L), enforce_sorted=False), st)
    yt = pad_packed_sequence(out, total_length=T)[0]
    y, (hn, cn) = m.forward(x, h0, c0, L)
    assert y.shape == (T, B, P * (1 + bi)) and hn.shape == (S, B, P) and cn.shape == (S, B, H)
    for a, b in ((y, yt), (hn, hnt), (cn, cnt)):
        assert np.abs(a - b.detach().numpy()).max() <= TOL
    dy = rng.standard_normal(y.shape) * (np.arange(T)[:, None, None] < L[None, :, None])
    dhn, dcn = rng.standard_normal(hn.shape), rng.standard_normal(cn.shape)
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dhn)).sum() + (cnt * torch.tensor(dcn)).sum()).backward()
    m.zero_grad()
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    assert np.abs(xt.grad.numpy() - dx).max() <= TOL
    if init:
        assert np.abs(st[0].grad.numpy() - dh0).max() <= TOL and np.abs(st[1].grad.numpy() - dc0).max() <= TOL
    assert np.abs(_torch_grads(t, fastlstm.LSTM, m) - m.grads).max() <= TOL
    back = fastlstm.LSTM(D, H, layers, bidirectional=bi, proj_size=P, dtype=np.float64)
    back.load_torch_state_dict(t.state_dict())
    assert np.array_equal(back.params, m.params)


@pytest.mark.parametrize("layers,with_lengths", [(1, False), (2, True)])
def test_projection_finite_differences(layers, with_lengths, forward_mode):
    T, B, D, H, P = 4, 3, 2, 5, 3
    m = _stack(D, H, P, layers, seed=3)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, D))
    h0, c0 = rng.standard_normal((layers, B, P)), rng.standard_normal((layers, B, H))
    L = np.array([T, 2, 3]) if with_lengths else None
    dy, dhn, dcn = rng.standard_normal((T, B, P)), rng.standard_normal((layers, B, P)), rng.standard_normal((layers, B, H))

    def loss():
        y, (hn, cn) = m.forward(x, h0, c0, L)
        return float(np.sum(y * dy) + np.sum(hn * dhn) + np.sum(cn * dcn))
    m.forward(x, h0, c0, L)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    for name, a, g in (("dx", x, dx), ("dh0", h0, dh0), ("dc0", c0, dc0)):
        _assert_close(name, g, _numeric(loss, a))
    for l, layer in enumerate(m.layers):
        for name, w, g in (("dW", layer.W, layer.dW), ("db", layer.b, layer.db), ("dW_hr", layer.R, layer.dR)):
            _assert_close(f"{name}[{l}]", g, _numeric(loss, w))


@pytest.mark.parametrize("D,H,P,B", [(3, 10, 4, 3), (40, 200, 100, 2)])   # serial; the parallel step
def test_projection_step_matches_forward(D, H, P, B):
    m = _stack(D, H, P, 2)
    x = np.random.default_rng(1).standard_normal((5, B, D))
    y, (hn, cn) = m.forward(x)
    h, c = np.zeros((2, B, P)), np.zeros((2, B, H))
    for t in range(5):
        assert np.abs(m.step(np.ascontiguousarray(x[t]), h, c) - y[t]).max() <= 1e-12   # sums in another order
    assert np.abs(h - hn).max() <= 1e-12 and np.abs(c - cn).max() <= 1e-12
    with pytest.raises(ValueError, match=r"h must have shape \(2, 1, 4\)"):
        fastlstm.LSTM(3, 10, 2, proj_size=4).step(np.zeros((1, 3), np.float32), np.zeros((2, 1, 10), np.float32),
                                                   np.zeros((2, 1, 10), np.float32))


def test_a_projected_model_trains_saves_and_loads(tmp_path):
    """Model(proj_size=P): the head reads the P-wide h; it learns, the checkpoint keeps
    proj_size, and the loaded model predicts the same bits."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 64, 2)).astype(np.float32)
    y = x[:, :, :1].sum(axis=0) * 0.3
    m = fastlstm.Model(2, 16, 1, proj_size=4, seed=0, optimizer=fastlstm.Adam(lr=1e-2))
    assert m.V.shape == (1, 4) and m.config()["proj_size"] == 4
    first = m.evaluate(x, y)["loss"]
    for _ in range(150):
        m.train_step(x, y)
    assert m.evaluate(x, y)["loss"] < 0.2 * first
    m.save(tmp_path / "p.ckpt")
    back = fastlstm.load(tmp_path / "p.ckpt")
    assert back.core.proj_size == 4 and np.array_equal(back.predict(x), m.predict(x))
    assert np.array_equal(back.step(x[0]), m.step(x[0]))


def test_projection_errors():
    for bad, err in ((10, "proj_size must be < hidden_size = 10"), (12, "proj_size must be < hidden_size"),
                     (-1, "proj_size must be >= 0")):
        with pytest.raises(ValueError, match=err):
            fastlstm.LSTM(3, 10, proj_size=bad)
        with pytest.raises(ValueError, match=err):
            fastlstm.Model(3, 10, 1, proj_size=bad)
    with pytest.raises(TypeError, match="proj_size must be an integer"):
        fastlstm.LSTM(3, 10, proj_size=2.5)
    for cell in ("gru", "rnn", "rnn_relu"):
        with pytest.raises(ValueError, match="proj_size applies to the LSTM only"):
            fastlstm.Model(3, 10, 1, cell=cell, proj_size=4)
    for cls in (fastlstm.GRU, fastlstm.RNN):                    # PyTorch's nn.GRU and nn.RNN: 0 alone
        article = "an" if cls is fastlstm.RNN else "a"
        with pytest.raises(ValueError, match=f"proj_size applies to the LSTM only.* {article} {cls.__name__} has no"):
            cls(3, 10, proj_size=4)
        assert cls(3, 10, proj_size=0).output_size == 10
    m = fastlstm.LSTM(3, 10, proj_size=4)
    with pytest.raises(KeyError, match="with proj_size=4"):
        m.load_torch_state_dict(fastlstm.LSTM(3, 10).torch_state_dict())
