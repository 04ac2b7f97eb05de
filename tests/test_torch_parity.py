"""Parity with torch.nn.LSTM in float64 through the state-dict interchange."""
import re

import numpy as np
import pytest

import fastlstm
from conftest import random_problem

torch = pytest.importorskip("torch")
TOL = 1e-10


def _torch_lstm(m):
    t = torch.nn.LSTM(m.input_size, m.hidden_size, m.num_layers, dtype=torch.float64)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict().items()})
    return t


def _grads_in_our_layout(m, t):
    """torch's parameter gradients, converted to our flat layout via the interchange."""
    g = fastlstm.LSTM(m.input_size, m.hidden_size, m.num_layers, dtype=np.float64)
    sd = {k: p.grad for k, p in t.named_parameters()}
    for k in range(m.num_layers):
        sd[f"bias_hh_l{k}"] = torch.zeros_like(sd[f"bias_hh_l{k}"])  # both biases get δb; count it once
    g.load_torch_state_dict(sd)
    return g.params


@pytest.mark.parametrize("T,B,D,H,L,with_lengths", [
    (6, 4, 3, 5, 1, False), (8, 5, 4, 6, 2, False), (7, 6, 3, 4, 3, True), (1, 1, 2, 3, 2, True),
    (5, 7, 6, 37, 2, True)])
def test_outputs_states_and_gradients_match_torch(T, B, D, H, L, with_lengths, forward_mode):
    m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(T, B, D, H, L, with_lengths=with_lengths)
    t = _torch_lstm(m)
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if with_lengths:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
        out, (hnt, cnt) = t(packed, (h0t, c0t))
        yt, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        yt, (hnt, cnt) = t(xt, (h0t, c0t))
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dhn)).sum() + (cnt * torch.tensor(dcn)).sum()).backward()

    y, (hn, cn) = m.forward(x, h0, c0, lengths)
    dx, (dh0, dc0) = m.backward(dy, dhn, dcn)
    for name, ours, theirs in [("y", y, yt), ("hn", hn, hnt), ("cn", cn, cnt), ("dx", dx, xt.grad),
                               ("dh0", dh0, h0t.grad), ("dc0", dc0, c0t.grad)]:
        d = np.max(np.abs(ours - theirs.detach().numpy()))
        assert d <= TOL, f"{name}: max |ours - torch| = {d:.3g}"
    d = np.max(np.abs(m.grads - _grads_in_our_layout(m, t)))
    assert d <= TOL, f"parameter gradients: max |ours - torch| = {d:.3g}"


def test_state_dict_round_trip_and_gate_order():
    m = fastlstm.LSTM(3, 4, 2, dtype=np.float64, seed=5)
    sd = m.torch_state_dict()
    # PyTorch's first block is the input gate i, our second; its third is g = our a.
    assert np.array_equal(sd["weight_ih_l0"][:4], m.layers[0].W[4:8, :3])
    assert np.array_equal(sd["weight_hh_l1"][8:12], m.layers[1].W[:4, 4:])
    m2 = fastlstm.LSTM(3, 4, 2, dtype=np.float64)
    m2.load_torch_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    assert np.array_equal(m2.params, m.params)
    t = torch.nn.LSTM(3, 4, 2, dtype=torch.float64)
    m2.load_torch_state_dict(t.state_dict())
    back = m2.torch_state_dict()
    for k, p in t.state_dict().items():
        if k.startswith("weight"):
            assert np.array_equal(back[k], p.numpy()), k
    bias = {k: t.state_dict()[f"bias_ih_{k[-2:]}"].numpy() + t.state_dict()[k].numpy()
            for k in back if k.startswith("bias_hh")}
    for k, b in bias.items():
        assert np.allclose(back[f"bias_ih_{k[-2:]}"], b, rtol=0, atol=1e-15)


def test_the_state_passes_as_a_pair_as_torch_takes_it_and_carries_across_chunks():
    """forward(x, (h0, c0)) as torch.nn.LSTM takes it, and as forward returns the state: a
    sequence run in two chunks, the state carried, equals torch's whole run and our own."""
    m, x, h0, c0, _, dy, dhn, dcn = random_problem(8, 3, 4, 5, 2)
    t = _torch_lstm(m)
    yt, (hnt, cnt) = t(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    y1, state = m.forward(x[:5], (h0, c0))
    y2, (hn, cn) = m.forward(x[5:], state)
    assert np.abs(np.concatenate([y1, y2]) - yt.detach().numpy()).max() <= TOL
    assert np.abs(hn - hnt.detach().numpy()).max() <= TOL and np.abs(cn - cnt.detach().numpy()).max() <= TOL
    m.forward(x, h0, c0)
    separate = m.backward(dy, dhn, dcn)
    m.forward(x, (h0, c0))
    paired = m.backward(dy, (dhn, dcn))
    assert all(np.array_equal(a, b) for a, b in zip((separate[0], *separate[1]), (paired[0], *paired[1])))
    h, c, h2, c2 = h0.copy(), c0.copy(), h0.copy(), c0.copy()
    for t in range(8):                                                # the streaming step too
        assert np.array_equal(m.step(x[t], (h, c)), m.step(x[t], h2, c2))
    assert np.abs(h - hnt.detach().numpy()).max() <= TOL and np.array_equal(c, c2)
    lengths = np.full(3, 8)
    for bad, said in (((x, (h0, c0), lengths), "got a pair and c0 too (lengths goes by keyword"),
                      ((x, (h0,)), "a tuple of 1"), ((x, (h0, c0, c0)), "a tuple of 3")):
        with pytest.raises(TypeError, match=re.escape(said)):
            m.forward(*bad)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "rnn_relu"])
def test_torchs_cell_modules_interchange_with_a_one_layer_stack(cell):
    """torch.nn.LSTMCell / GRUCell / RNNCell, PyTorch's one-step modules, hold the weights of
    a one-layer unidirectional stack under keys without _l0: loaded either way, the stack's
    step runs as the cell, state for state. A stack of another shape refuses them."""
    cls, tcls = {"lstm": (fastlstm.LSTM, torch.nn.LSTMCell), "gru": (fastlstm.GRU, torch.nn.GRUCell),
                 "rnn": (fastlstm.RNN, torch.nn.RNNCell), "rnn_relu": (fastlstm.RNN, torch.nn.RNNCell)}[cell]
    kw = dict(nonlinearity="relu") if cell == "rnn_relu" else {}
    rng = np.random.default_rng(3)
    m = cls(3, 5, dtype=np.float64, seed=0, **kw)
    m.params[:] = rng.uniform(-0.5, 0.5, m.params.size)
    c = tcls(3, 5, dtype=torch.float64, **kw)
    c.load_state_dict({k: torch.from_numpy(v) for k, v in m.torch_state_dict(cell=True).items()})
    back = cls(3, 5, dtype=np.float64, batch_first=True, **kw)         # a cell has no time axis to disagree on
    back.load_torch_state_dict(c)
    assert np.array_equal(back.params, m.params)
    lstm = cell == "lstm"
    state = [np.zeros((1, 2, 5)) for _ in range(1 + lstm)]
    st = tuple(torch.zeros(2, 5, dtype=torch.float64) for _ in range(1 + lstm))
    for _ in range(4):
        x = rng.standard_normal((2, 3))
        h = m.step(x, *state)
        st = c(torch.tensor(x), st if lstm else st[0])
        st = st if lstm else (st,)
        assert np.abs(h - st[0].detach().numpy()).max() <= 1e-12
    with pytest.raises(ValueError, match=r"torch's cell modules hold one layer of one direction without projection"):
        cls(3, 5, 2, **kw).torch_state_dict(cell=True)
    with pytest.raises(KeyError, match=r"missing \['bias_hh_l0', .*unexpected \['bias_hh', .*; torch's cell "
                                       r"modules' names \(without _l0\) fit only a one-layer unidirectional stack"):
        cls(3, 5, bidirectional=True, **kw).load_torch_state_dict(c.state_dict())
    weights = {k: t for k, t in c.state_dict().items() if k.startswith("weight_")}       # as bias=False gives
    with pytest.raises(KeyError, match=r"\(torch cell module names\): missing \['bias_hh', 'bias_ih'\], "
                                       r"unexpected \[\]; fastlstm's layers always have their biases"):
        back.load_torch_state_dict(weights)
    with pytest.raises(KeyError, match=r'\(torch cell module names\): missing \[\], unexpected \[.extra.\]"$'):
        back.load_torch_state_dict(dict(c.state_dict(), extra=c.bias_ih))               # no hint about biases
    weights["weight_ih"] = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^weight_ih must have shape"):                # the key as given
        back.load_torch_state_dict(dict(weights, bias_ih=c.bias_ih, bias_hh=c.bias_hh))
    assert np.array_equal(back.params, m.params)


@pytest.mark.parametrize("cell,loss,optimizer,clip", [
    ("lstm", "mse", ("Adam", dict(lr=1e-2, weight_decay=1e-3)), 0.5),
    ("lstm", "xent", ("SGD", dict(lr=0.1, momentum=0.9)), None),
    ("gru", "mse", ("AdamW", dict(lr=1e-2)), 0.05)])
def test_a_training_run_is_pytorchs_with_its_bias_hh_kept_at_zero(cell, loss, optimizer, clip):
    """Thirty steps of Model.train_step against nn.LSTM/GRU + nn.Linear, torch.optim and
    clip_grad_norm_ in float64. fastlstm keeps one bias per gate where PyTorch trains two,
    b_ih and b_hh, that always sum: each gets the whole gradient, so the sum moves twice (the
    losses stood 0.13 apart after 30 Adam steps). With bias_hh held at zero the two runs are
    one (the GRU's b_hn, inside r ⊙ (·), is its own bias in both and trains in both)."""
    T, B, D, H, O, L = 9, 6, 3, 7, 3, 2
    name, kw = optimizer
    m = fastlstm.Model(D, H, O, L, cell=cell, loss=loss, dtype=np.float64, seed=0, clip=clip,
                       optimizer=getattr(fastlstm, name)(**kw))
    rnn = getattr(torch.nn, cell.upper())(D, H, L, dtype=torch.float64)
    rnn.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in m.core.torch_state_dict().items()})
    for k, p in rnn.named_parameters():
        if k.startswith("bias_hh"):
            if cell == "lstm":
                p.requires_grad_(False)
            else:                                 # the GRU's b_hr and b_hz (zero) stay zero; b_hn trains
                p.register_hook(lambda g: torch.cat([torch.zeros_like(g[:2 * H]), g[2 * H:]]))
    head = torch.nn.Linear(H, O, dtype=torch.float64)
    head.weight.data, head.bias.data = torch.tensor(m.V), torch.tensor(m.bias)
    params = [p for p in rnn.parameters() if p.requires_grad] + list(head.parameters())
    opt = getattr(torch.optim, name)(params, **kw)
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = rng.standard_normal((T, B, D))
        y = rng.integers(0, O, B) if loss == "xent" else 3 * rng.standard_normal((B, O))
        ours = m.train_step(x, y)
        opt.zero_grad()
        P = head(rnn(torch.tensor(x))[1][-1] if cell == "gru" else rnn(torch.tensor(x))[1][0][-1])
        E = (torch.nn.functional.cross_entropy(P, torch.tensor(y)) if loss == "xent" else
             ((P - torch.tensor(y)) ** 2).mean())
        E.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        assert abs(ours - E.item()) <= TOL
    theirs = {k: v.detach().numpy() for k, v in rnn.state_dict().items()}
    for k, v in m.core.torch_state_dict().items():
        assert np.abs(v - theirs[k]).max() <= TOL, k
    assert np.abs(m.V - head.weight.detach().numpy()).max() <= TOL
