"""The GRU (PyTorch's formulation): against torch.nn.GRU with packed sequences, in both
forms of the forward, finite differences, the streaming step, and its errors."""
import numpy as np
import pytest

import fastlstm
from conftest import random_problem
from test_gradcheck import _assert_close, _numeric


def _problem(T, B, D, H, L, seed=0, with_lengths=False):
    m, x, h0, _, lengths, dy, dhn, _ = random_problem(T, B, D, H, L, seed=seed, with_lengths=with_lengths,
                                                      cls=fastlstm.GRU)
    return m, x, h0, lengths, dy, dhn


@pytest.mark.parametrize("L,with_lengths", [(1, False), (1, True), (2, True), (3, False)])
def test_gru_matches_torch(L, with_lengths, forward_mode):
    """Outputs, states and every gradient ≤ 1e-10 in float64 (D ≠ H), and the state dict both
    ways; b_hn stays its own bias (it sits inside r ⊙ (·))."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    from test_layers import _torch_grads
    T, B, D, H = 7, 5, 3, 4
    m, x, h0, lengths, dy, dhn = _problem(T, B, D, H, L, with_lengths=with_lengths)
    t = torch.nn.GRU(D, H, L, dtype=torch.float64)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    if with_lengths:
        out, hnt = t(pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False), h0t)
        yt = pad_packed_sequence(out, total_length=T)[0]
        dy = dy * (np.arange(T)[:, None, None] < lengths[None, :, None])
    else:
        yt, hnt = t(xt, h0t)
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dhn)).sum()).backward()
    y, hn = m.forward(x, h0, lengths)
    dx, dh0 = m.backward(dy, dhn)
    for name, a, b in [("y", y, yt), ("hn", hn, hnt), ("dx", dx, xt.grad), ("dh0", dh0, h0t.grad)]:
        d = np.max(np.abs(a - b.detach().numpy()))
        assert d <= 1e-10, f"{name}: max |ours - torch| = {d:.3g}"
    assert np.max(np.abs(_torch_grads(t, fastlstm.GRU, m) - m.grads)) <= 1e-10
    back = fastlstm.GRU(D, H, L, dtype=np.float64)
    back.load_torch_state_dict(t.state_dict())
    assert np.array_equal(back.params, m.params)
    sd = m.torch_state_dict()
    assert sd["bias_hh_l0"][:2 * H].any() == False and np.array_equal(sd["bias_hh_l0"][2 * H:], m.layers[0].b[3 * H:])  # noqa: E712


@pytest.mark.parametrize("T,B,D,H,L,with_lengths", [(5, 3, 3, 4, 1, False), (4, 5, 2, 3, 2, True)])
def test_gru_finite_differences(T, B, D, H, L, with_lengths, forward_mode):
    m, x, h0, lengths, dy, dhn = _problem(T, B, D, H, L, seed=3, with_lengths=with_lengths)
    def f():
        y, hn = m.forward(x, h0, lengths)
        return float(np.sum(y * dy) + np.sum(hn * dhn))
    m.forward(x, h0, lengths)
    dx, dh0 = m.backward(dy, dhn)
    _assert_close("dx", dx, _numeric(f, x))
    _assert_close("dh0", dh0, _numeric(f, h0))
    for l, layer in enumerate(m.layers):
        _assert_close(f"dW[{l}]", layer.dW, _numeric(f, layer.W))
        _assert_close(f"db[{l}]", layer.db, _numeric(f, layer.b))


@pytest.mark.parametrize("T,B,D,H,L", [(5, 3, 3, 5, 2),        # serial; H = 5: partial panels
                                       (2, 3, 100, 300, 1)])   # the parallel step: 300 = 4·64 + 44
def test_gru_step_matches_forward(T, B, D, H, L):
    m, x, h0, _, _, _ = _problem(T, B, D, H, L)
    y, hn = m.forward(x, h0)
    h = h0.copy()
    for t in range(T):
        assert np.max(np.abs(m.step(np.ascontiguousarray(x[t]), h) - y[t])) <= 1e-13
    assert np.max(np.abs(h - hn)) <= 1e-13
    h1 = h0[:, -1:].copy()                                     # the last row alone: the same bits
    for t in range(T):
        m.step(np.ascontiguousarray(x[t, -1:]), h1)
    assert np.array_equal(h1[:, 0], h[:, -1])


def test_gru_flow_probe_reads_the_identity_path():
    """backward(record=True): flow["forget"] is the mean update gate z and flow["dc"] the
    norm of z ⊙ δh, the share of ∂E/∂h_{t-1} that the identity path carries, never more
    than the whole."""
    m, x, h0, _, _, _ = _problem(6, 4, 3, 5, 1)
    y, hn = m.forward(x, h0)
    dy = np.zeros_like(y)
    dy[-1] = 1
    m.backward(dy, record=True)
    f = m.flow
    assert np.all((0 < f["forget"]) & (f["forget"] < 1))
    assert np.all(f["dc"][0, 1:] > 0) and np.all(f["dh"][0] > 0)


def test_gru_errors():
    with pytest.raises(TypeError):
        fastlstm.GRU(3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="forget_bias applies to the LSTM only; a GRU has no forget gate, got 2.0"):
        fastlstm.Model(3, 4, 1, cell="gru", forget_bias=2.0)          # it was ignored
    g = fastlstm.Model(3, 4, 1, cell="gru")
    assert fastlstm.Model(**g.config()).config() == g.config()       # its config (forget_bias 0) rebuilds it
    m = fastlstm.GRU(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional stack cannot stream"):
        m.step(np.zeros((1, 3), np.float32), np.zeros((2, 1, 4), np.float32))
    with pytest.raises(ValueError, match="dropout must lie in"):
        fastlstm.GRU(3, 4, dropout=1.0)
    g = fastlstm.GRU(3, 4)
    before = g.params.copy()
    with pytest.raises(ValueError, match=r"weight_ih has 16 rows, 4 × hidden_size 4: an LSTM's weights, and this "
                                         r"is a GRU \(12 rows\); load them into fastlstm.LSTM"):
        g.load_torch_state_dict(fastlstm.LSTM(3, 4).torch_state_dict())     # an LSTM's: 4 gates
    with pytest.raises(KeyError, match="2-layer GRU: missing"):           # no projection to speak of
        fastlstm.GRU(3, 4, 2).load_torch_state_dict(g.torch_state_dict())
    assert np.array_equal(g.params, before)
