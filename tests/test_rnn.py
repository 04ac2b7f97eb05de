"""The vanilla RNN, tanh and ReLU: the same kernels and checks as the LSTM, against a
reference, finite differences and torch.nn.RNN."""
import numpy as np
import pytest

import fastlstm


def _problem(T, B, D, H, L, seed=0, with_lengths=False, nonlinearity="tanh"):
    rng = np.random.default_rng(seed)
    m = fastlstm.RNN(D, H, L, dtype=np.float64, seed=seed, nonlinearity=nonlinearity)
    m.params[:] = rng.uniform(-0.6, 0.6, m.params.size)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((L, B, H)) * 0.5
    lengths = rng.integers(1, T + 1, B) if with_lengths else None
    return m, x, h0, lengths, rng.standard_normal((T, B, H)), rng.standard_normal((L, B, H))


def _reference(m, x, h0, lengths, dy, dhn):
    """h_t = tanh(W [x_t; h_{t-1}] + b) (or max(·, 0)), line by line; returns y, hn, dx, dh0, grads."""
    relu = m.nonlinearity == "relu"
    T, B, _ = x.shape
    lengths = np.full(B, T) if lengths is None else lengths
    grads = np.zeros_like(m.params)
    dWs = [dW for dW, _, _ in m._layer_views(grads)]
    dbs = [db for _, db, _ in m._layer_views(grads)]
    inp, tapes, hn = x, [], np.zeros_like(h0)
    for l, layer in enumerate(m.layers):
        y = np.zeros((T, B, m.hidden_size))
        tape = []
        for r in range(B):
            h = h0[l, r]
            for t in range(lengths[r]):
                I = np.concatenate([inp[t, r], h])
                z = layer.W @ I + layer.b
                h = np.maximum(z, 0) if relu else np.tanh(z)
                y[t, r] = h
                tape.append((r, t, I, h))
            hn[l, r] = h
        tapes.append((inp, tape))
        inp = y
    out, dh0, d_out = inp, np.zeros_like(h0), dy
    for l in range(m.num_layers - 1, -1, -1):
        layer, (inp, tape) = m.layers[l], tapes[l]
        dx = np.zeros_like(inp)
        for r in range(B):
            dh = dhn[l, r].copy()
            for (_, t, I, h) in [s for s in tape if s[0] == r][::-1]:
                dz = (dh + d_out[t, r]) * ((h > 0) if relu else (1 - h ** 2))
                dWs[l] += np.outer(dz, I)
                dbs[l] += dz
                dI = layer.W.T @ dz
                dx[t, r], dh = dI[:layer.D], dI[layer.D:]
            dh0[l, r] = dh
        d_out = dx
    return out, hn, d_out, dh0, grads


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("T,B,D,H,L,with_lengths", [(1, 1, 1, 1, 1, False), (6, 5, 3, 4, 1, True),
                                                    (5, 7, 2, 3, 2, True), (4, 9, 4, 5, 3, False)])
def test_rnn_matches_reference(T, B, D, H, L, with_lengths, nonlinearity):
    m, x, h0, lengths, dy, dhn = _problem(T, B, D, H, L, with_lengths=with_lengths, nonlinearity=nonlinearity)
    y_r, hn_r, dx_r, dh0_r, g_r = _reference(m, x, h0, lengths, dy, dhn)
    y, hn = m.forward(x, h0, lengths)
    dx, dh0 = m.backward(dy, dhn)
    for name, a, b in [("y", y, y_r), ("hn", hn, hn_r), ("dx", dx, dx_r), ("dh0", dh0, dh0_r), ("grads", m.grads, g_r)]:
        assert np.max(np.abs(a - b)) <= 1e-12, f"{name}: {np.max(np.abs(a - b)):.3g}"


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_finite_differences(nonlinearity):
    m, x, h0, lengths, dy, dhn = _problem(4, 3, 2, 3, 2, seed=4, with_lengths=True, nonlinearity=nonlinearity)
    if nonlinearity == "relu":         # some units off: the test would pass for a ReLU that never cuts
        assert 0 < (m.step(np.ascontiguousarray(x[0]), h0.copy()) > 0).mean() < 1

    def loss():
        y, hn = m.forward(x, h0, lengths)
        return float(np.sum(y * dy) + np.sum(hn * dhn))
    m.forward(x, h0, lengths)
    dx, dh0 = m.backward(dy, dhn)
    for name, a, g in [("x", x, dx), ("h0", h0, dh0), ("params", m.params, m.grads.copy())]:
        num = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + 1e-6
            up = loss()
            a[idx] = old - 1e-6
            num[idx] = (up - loss()) / 2e-6
            a[idx] = old
        rel = np.linalg.norm(num - g) / (np.linalg.norm(num) + np.linalg.norm(g))
        assert rel <= 1e-6, f"d{name}: relative error {rel:.2e}"


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_rnn_matches_torch(with_lengths, forward_mode, nonlinearity):
    torch = pytest.importorskip("torch")
    T, B, D, H, L = 7, 5, 3, 4, 2
    m, x, h0, lengths, dy, dhn = _problem(T, B, D, H, L, with_lengths=with_lengths, nonlinearity=nonlinearity)
    t = torch.nn.RNN(D, H, L, dtype=torch.float64, nonlinearity=nonlinearity)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    if with_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
        out, hnt = t(packed, h0t)
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        yt, hnt = t(xt, h0t)
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dhn)).sum()).backward()
    y, hn = m.forward(x, h0, lengths)
    dx, dh0 = m.backward(dy, dhn)
    g = fastlstm.RNN(D, H, L, dtype=np.float64, nonlinearity=nonlinearity)
    sd = {k: p.grad for k, p in t.named_parameters()}
    sd.update({f"bias_hh_l{k}": torch.zeros(H, dtype=torch.float64) for k in range(L)})
    g.load_torch_state_dict(sd)
    for name, a, b in [("y", y, yt), ("hn", hn, hnt), ("dx", dx, xt.grad), ("dh0", dh0, h0t.grad),
                       ("grads", m.grads, torch.from_numpy(g.params))]:
        d = np.max(np.abs(a - b.detach().numpy()))
        assert d <= 1e-10, f"{name}: max |ours - torch| = {d:.3g}"


def test_a_torch_module_loads_and_another_nonlinearity_is_refused():
    """A relu nn.RNN's state dict has a tanh RNN's keys and shapes, so it loaded unnoticed;
    given the module itself, its nonlinearity is checked both ways (and nothing changes when
    refused)."""
    torch = pytest.importorskip("torch")
    for mine, theirs in (("tanh", "relu"), ("relu", "tanh")):
        ours = fastlstm.RNN(3, 4, 2, dtype=np.float64, seed=0, nonlinearity=mine)
        before = ours.params.copy()
        with pytest.raises(ValueError, match=f"this RNN has nonlinearity='{theirs}' and this fastlstm.RNN '{mine}': "
                                             f"make it with nonlinearity='{theirs}'"):
            ours.load_torch_state_dict(torch.nn.RNN(3, 4, 2, nonlinearity=theirs))
        assert np.array_equal(ours.params, before)
        same = torch.nn.RNN(3, 4, 2, dtype=torch.float64, nonlinearity=mine)
        ours.load_torch_state_dict(same)
        assert np.array_equal(ours.torch_state_dict()["weight_hh_l1"], same.weight_hh_l1.detach().numpy())
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \('tanh', 'relu'\), got 'sigmoid'"):
        fastlstm.RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_step_matches_forward_and_odd_sizes_work(nonlinearity):
    m, x, h0, _, dy, _ = _problem(5, 3, 3, 5, 2, nonlinearity=nonlinearity)          # H = 5: odd G
    y, hn = m.forward(x, h0)
    h = h0.copy()
    for t in range(5):
        assert np.max(np.abs(m.step(np.ascontiguousarray(x[t]), h) - y[t])) <= 1e-13
    assert np.max(np.abs(h - hn)) <= 1e-13
    m, x, h0, _, dy, _ = _problem(2, 3, 100, 300, 1, nonlinearity=nonlinearity)   # the parallel step: 300 = 4·64 + 44
    y, hn = m.forward(x, h0)
    h = h0.copy()
    for t in range(2):
        assert np.max(np.abs(m.step(np.ascontiguousarray(x[t]), h) - y[t])) <= 1e-13
    m, x, h0, _, dy, _ = _problem(5, 3, 3, 5, 2)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 3, 5\)"):
        m.forward(x, h0[:, :2].copy())
