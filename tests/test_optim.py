"""Optimizer steps against hand-computed updates; clipping against its definition."""
import re

import numpy as np
import pytest

import fastlstm
from fastlstm import checkpoint, optim


def test_sgd_with_momentum_matches_hand_computation():
    p = np.array([1.0, -2.0, 3.0])
    o = fastlstm.SGD(lr=0.1, momentum=0.9).bind(3, np.float64)
    g1, g2 = np.array([0.5, 0.0, -1.0]), np.array([1.0, 2.0, 0.0])
    o.step(p, g1)
    assert np.array_equal(p, [1.0 - 0.05, -2.0, 3.0 + 0.1])           # v = g1
    o.step(p, g2)
    v2 = 0.9 * g1 + g2                                                 # v = 0.9 v + g2
    assert np.allclose(p, np.array([0.95, -2.0, 3.1]) - 0.1 * v2, rtol=0, atol=1e-15)
    assert o.t == 2


def test_an_optimizer_steps_a_layer_stacks_arrays_as_a_model_steps_its_own():
    """An optimizer no Model took raised AttributeError ('state') at its first step, and
    'no attribute t' from config(): steps on a layer stack's flat arrays were the Model's
    alone. Now the first step makes the state for those params, and the steps equal a
    Model's on the same stack; another array, or arrays a stack does not hold, are refused."""
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 4))
    model = fastlstm.Model(3, 4, 1, dtype=np.float64, optimizer=fastlstm.Adam(lr=0.05), seed=0)
    lstm, opt = fastlstm.LSTM(3, 4, dtype=np.float64, seed=0), fastlstm.Adam(lr=0.05)
    lstm.params = model.core.params
    assert opt.config()["t"] == 0 and opt.state is None
    for _ in range(3):
        for stack in (lstm, model.core):
            stack.zero_grad()
            stack.forward(x)
            stack.backward(dy)
        assert opt.step(lstm.params, lstm.grads) and model.optimizer.step(model.params, model.grads)
    n = lstm.params.size
    assert opt.t == 3 and np.array_equal(lstm.params, model.params[:n])
    assert np.array_equal(opt.state["m"], model.optimizer.state["m"][:n])
    other = fastlstm.LSTM(3, 4, dtype=np.float64, seed=1)
    before = other.params.copy(), opt.t
    for params, grads, err, said in (
            (other.params, other.grads, ValueError, "this Adam holds the moments of the params its first step updated"),
            (lstm.params.tolist(), lstm.grads, TypeError, "params must be a float32 or float64 numpy.ndarray"),
            (lstm.params, lstm.grads[:-1], ValueError, r"grads must have shape \(%d,\)" % n),
            (lstm.params, lstm.grads.astype(np.float32), TypeError, "grads must have dtype float64")):
        with pytest.raises(err, match=said):
            opt.step(params, grads)
    assert np.array_equal(other.params, before[0]) and opt.t == before[1]
    assert fastlstm.SGD(lr=0.5).step(other.params, np.ones(n))                  # a fresh one: p - lr g
    assert np.array_equal(other.params, before[0] - 0.5)


def test_plain_sgd_is_p_minus_lr_g():
    p = np.array([1.0, 2.0], np.float32)
    fastlstm.SGD(lr=0.5).bind(2, np.float32).step(p, np.array([2.0, -4.0], np.float32))
    assert np.array_equal(p, np.array([0.0, 4.0], np.float32))


def test_adam_matches_hand_computation():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p = np.array([0.5, -1.0])
    o = fastlstm.Adam(lr=lr, beta1=b1, beta2=b2, eps=eps).bind(2, np.float64)
    want, m, v = p.copy(), np.zeros(2), np.zeros(2)
    for t, g in enumerate([np.array([0.1, -0.3]), np.array([-0.2, 0.4]), np.array([0.05, 0.0])], 1):
        o.step(p, g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        want -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        assert np.allclose(p, want, rtol=0, atol=1e-15), (t, p, want)
    # the first Adam step moves every coordinate with a non-zero gradient by about lr
    q = np.zeros(3)
    fastlstm.Adam(lr=lr).bind(3, np.float64).step(q, np.array([1e-3, -5.0, 0.0]))
    assert np.allclose(np.abs(q), [lr, lr, 0], rtol=1e-4)


@pytest.mark.parametrize("make,huge", [(lambda: fastlstm.Adam(lr=1e-2, eps=1e-30), True),
                                       (lambda: fastlstm.AdamW(lr=1e-2, eps=1e-30), True),
                                       (lambda: fastlstm.Adam(lr=1e-2, weight_decay=0.1), False)])
def test_a_long_update_on_the_threads_has_the_bits_of_short_ones_and_refuses_whole(make, huge):
    """From UPDATE_RUN parameters Adam's passes split among the threads in runs: the bits of
    the same update made on pieces below that size (one thread each), the exact check
    taking over in the run whose cheap bound overflows, and a value that would overflow in
    the last run refusing the whole update, with nothing written."""
    n, piece = 3 * optim.UPDATE_RUN + 5, optim.UPDATE_RUN // 2
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    if huge:      # |p| + lr|m|/(c1 ε) = 3e38 + 1e38 overflows in float32; p - lr·m̂/√v̂ does not
        p[optim.UPDATE_RUN + 7], g[optim.UPDATE_RUN + 7] = 3e38, 1e10
    whole, pieces = make().bind(n, np.float32), [make().bind(len(p[k:k + piece]), np.float32)
                                                for k in range(0, n, piece)]
    q = p.copy()
    for step in range(3):
        assert whole.step(p, g)
        for o, k in zip(pieces, range(0, n, piece)):
            assert o.step(q[k:k + piece], g[k:k + piece])
    assert np.isfinite(p).all() and np.array_equal(p, q)
    assert all(np.array_equal(whole.state[name][k:k + piece], o.state[name])
               for name in whole.state for o, k in zip(pieces, range(0, n, piece)))
    g[-1] = 1e30                                  # v = (1 - β2)·g² = 1e57 would overflow float32
    before = [a.copy() for a in (p, *whole.state.values())]
    assert not whole.step(p, g) and whole.t == 3
    assert all(np.array_equal(a, b) for a, b in zip(before, (p, *whole.state.values())))


def test_clipping_by_global_norm_is_pytorchs_clip_grad_norm():
    """grads·max_norm/(‖grads‖ + 1e-6) where that is below 1 (clip_grad_norm_'s formula: a
    float64 run beside PyTorch's drifted 1e-7 apart with max_norm/‖grads‖)."""
    g = np.array([3.0, 4.0, 0.0])                                      # ‖g‖ = 5
    assert optim.clip_by_global_norm(g, 10.0) == 5.0 and np.array_equal(g, [3.0, 4.0, 0.0])
    assert optim.clip_by_global_norm(g, 5.0 + 1e-6) == 5.0 and np.array_equal(g, [3.0, 4.0, 0.0])
    assert optim.clip_by_global_norm(g, 1.0) == 5.0
    assert np.array_equal(g, np.array([3.0, 4.0, 0.0]) * (1.0 / (5.0 + 1e-6)))
    torch = pytest.importorskip("torch")
    n = np.linalg.norm(np.random.default_rng(0).standard_normal(9) * 2)
    for max_norm in (0.1, n - 1e-3, n + 5e-7, n + 2e-6, 2 * n):        # n + 5e-7: clipped, by PyTorch too
        g = np.random.default_rng(0).standard_normal(9) * 2
        t = torch.tensor(g.copy(), requires_grad=True)
        t.grad = torch.tensor(g.copy())
        assert optim.clip_by_global_norm(g, max_norm) == torch.nn.utils.clip_grad_norm_([t], max_norm).item()
        assert np.array_equal(g, t.grad.numpy())
    g = np.array([1.0, np.inf])
    assert not np.isfinite(optim.clip_by_global_norm(g, 1.0)) and g[0] == 1.0


@pytest.mark.parametrize("make,match", [
    (lambda: fastlstm.SGD(lr=0), "lr must be > 0"), (lambda: fastlstm.SGD(momentum=1.0), "momentum must be in"),
    (lambda: fastlstm.Adam(lr=-1), "lr must be > 0"), (lambda: fastlstm.Adam(beta2=1.0), "beta2"),
    (lambda: fastlstm.Adam(lr=float("nan")), "finite")])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make,name,becomes", [
    (lambda: fastlstm.Adam(lr=1e300), "lr", "inf"), (lambda: fastlstm.Adam(eps=1e-50), "eps", "0.0"),
    (lambda: fastlstm.SGD(lr=1e-60), "lr", "0.0"), (lambda: fastlstm.SGD(lr=1e39), "lr", "inf")])
def test_a_hyperparameter_the_dtype_cannot_hold_is_refused_not_a_misleading_nonfinite_step(tmp_path, make, name,
                                                                                          becomes):
    """lr=1e300 is inf in float32 and eps=1e-50 is 0: refused when the optimizer meets a
    float32 model, when such a value is set later (at the step, which changes nothing), and
    in a checkpoint; float64 holds them."""
    message = f"{name}=.* is {becomes} in float32"
    with pytest.raises(ValueError, match=message):
        fastlstm.Model(2, 3, 1, optimizer=make())
    fastlstm.Model(2, 3, 1, dtype=np.float64, optimizer=make())
    m = fastlstm.Model(2, 3, 1, optimizer=type(make())(), seed=0)
    x, y = np.ones((3, 2, 2), np.float32), np.ones((2, 1), np.float32)
    m.train_step(x, y)
    m.save(tmp_path / "good.ckpt")
    setattr(m.optimizer, name, getattr(make(), name))
    before = (m.params.copy(), [s.copy() for s in m.optimizer.state.values()], m.optimizer.t, m.steps)
    with pytest.raises(ValueError, match=message):
        m.train_step(x, y)
    after = (m.params, list(m.optimizer.state.values()), m.optimizer.t, m.steps)
    assert np.array_equal(before[0], after[0]) and all(map(np.array_equal, before[1], after[1]))
    assert before[2:] == after[2:] and m.skipped_steps == 0
    with pytest.raises(fastlstm.CheckpointError, match=message):
        m.save(tmp_path / "bad.ckpt") or fastlstm.load(tmp_path / "bad.ckpt")
    setattr(m.optimizer, name, getattr(fastlstm.load(tmp_path / "good.ckpt").optimizer, name))
    m.train_step(x, y)
    assert m.steps == 2


def test_an_optimizer_reads_as_the_call_that_makes_it_and_a_model_shows_its_optimizer():
    for opt in (fastlstm.Adam(lr=0.01, beta2=0.99), fastlstm.SGD(lr=0.5, momentum=0.9),
                fastlstm.AdamW(lr=0.01, weight_decay=0.1)):
        again = eval(repr(opt), {"Adam": fastlstm.Adam, "SGD": fastlstm.SGD, "AdamW": fastlstm.AdamW})
        assert type(again) is type(opt) and again.hyper() == opt.hyper()
    m = fastlstm.Model(2, 3, 1, optimizer=fastlstm.SGD(lr=0.5))
    assert "optimizer=SGD(lr=0.5, momentum=0.0, weight_decay=0.0)" in repr(m)


@pytest.mark.parametrize("ours,theirs", [
    (lambda: fastlstm.SGD(lr=0.1, momentum=0.9, weight_decay=0.05), lambda p: ("SGD", dict(lr=0.1, momentum=0.9,
                                                                                          weight_decay=0.05))),
    (lambda: fastlstm.SGD(lr=0.1, weight_decay=0.05), lambda p: ("SGD", dict(lr=0.1, weight_decay=0.05))),
    (lambda: fastlstm.Adam(lr=0.01, weight_decay=0.1), lambda p: ("Adam", dict(lr=0.01, weight_decay=0.1))),
    (lambda: fastlstm.AdamW(lr=0.01, weight_decay=0.1), lambda p: ("AdamW", dict(lr=0.01, weight_decay=0.1))),
    (lambda: fastlstm.AdamW(lr=0.01), lambda p: ("AdamW", dict(lr=0.01))),           # both default to 0.01
    (lambda: fastlstm.Adam(lr=0.01, betas=(0.8, 0.99)), lambda p: ("Adam", dict(lr=0.01, betas=(0.8, 0.99)))),
    (lambda: fastlstm.AdamW(lr=0.01, betas=[0.5, 0.9]), lambda p: ("AdamW", dict(lr=0.01, betas=(0.5, 0.9))))],
    ids=["sgd_momentum", "sgd", "adam_l2", "adamw", "adamw_default", "adam_betas", "adamw_betas"])
def test_weight_decay_and_adamw_match_torch_optim_in_float64(ours, theirs):
    """PyTorch's semantics: SGD and Adam add weight_decay·p to the gradient (L2), AdamW
    shrinks p by lr·weight_decay before Adam's step (decoupled)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(50)
    pt = torch.tensor(p.copy(), requires_grad=True)
    name, kw = theirs(pt)
    o, ot = ours().bind(50, np.float64), getattr(torch.optim, name)([pt], **kw)
    for _ in range(20):
        g = rng.standard_normal(50)
        assert o.step(p, g)
        pt.grad = torch.tensor(g)
        ot.step()
    assert np.abs(p - pt.detach().numpy()).max() <= 1e-13


def test_betas_are_pytorchs_spelling_of_beta1_and_beta2():
    assert fastlstm.Adam(betas=(0.8, 0.99)).hyper() == fastlstm.Adam(beta1=0.8, beta2=0.99).hyper()
    for kw, err in ((dict(betas=(0.8, 0.99), beta2=0.9), "not both"), (dict(betas=0.9), "must be a pair"),
                    (dict(betas=(0.9, 0.99, 0.999)), "must be a pair")):
        with pytest.raises(TypeError, match=err):
            fastlstm.Adam(**kw)
    with pytest.raises(ValueError, match=r"Adam's beta2 must be in \[0, 1\), got 1.0"):
        fastlstm.Adam(betas=(0.9, 1.0))


def test_zero_weight_decay_is_bitwise_the_plain_update():
    rng = np.random.default_rng(1)
    for plain, decayed in ((fastlstm.Adam(lr=0.01), fastlstm.Adam(lr=0.01, weight_decay=0.0)),
                           (fastlstm.Adam(lr=0.01), fastlstm.AdamW(lr=0.01, weight_decay=0.0)),
                           (fastlstm.SGD(lr=0.1, momentum=0.5), fastlstm.SGD(lr=0.1, momentum=0.5, weight_decay=0))):
        p, q = (rng.standard_normal(40).astype(np.float32) for _ in range(2))
        q[:] = p
        a, b = plain.bind(40, np.float32), decayed.bind(40, np.float32)
        for _ in range(5):
            g = rng.standard_normal(40).astype(np.float32)
            a.step(p, g)
            b.step(q, g)
        assert np.array_equal(p, q) and all(np.array_equal(a.state[k], b.state[k]) for k in a.state)


def test_weight_decay_pulls_unused_weights_towards_zero_and_survives_a_checkpoint(tmp_path):
    m = fastlstm.Model(2, 6, 1, optimizer=fastlstm.AdamW(lr=0.05, weight_decay=0.5), seed=0)
    x = np.zeros((4, 3, 2), np.float32)                   # x = 0: W_x's gradient is 0, decay alone moves it
    before = np.abs(m.core.layers[0].W[:, :2]).sum()
    for _ in range(10):
        m.train_step(x, np.ones((3, 1), np.float32))
    assert np.abs(m.core.layers[0].W[:, :2]).sum() == pytest.approx(before * (1 - 0.05 * 0.5) ** 10, rel=1e-5)
    m.save(tmp_path / "m.ckpt")
    c = fastlstm.load(tmp_path / "m.ckpt")
    assert type(c.optimizer) is fastlstm.AdamW and c.optimizer.weight_decay == 0.5
    m.train_step(x, np.ones((3, 1), np.float32))
    c.train_step(x, np.ones((3, 1), np.float32))
    assert np.array_equal(c.params, m.params)
    header, arrays = checkpoint.read(tmp_path / "m.ckpt")     # a checkpoint from before 0.6: no weight_decay
    header["optimizer"] = {k: x for k, x in header["optimizer"].items() if k != "weight_decay"}
    header["optimizer"]["name"] = "adam"
    checkpoint.write(tmp_path / "old.ckpt", {k: x for k, x in header.items() if k not in ("format", "version")},
                     arrays)
    old = fastlstm.load(tmp_path / "old.ckpt")
    assert type(old.optimizer) is fastlstm.Adam and old.optimizer.weight_decay == 0.0


@pytest.mark.parametrize("make,match", [
    (lambda: fastlstm.SGD(weight_decay=-0.1), "weight_decay must be >= 0"),
    (lambda: fastlstm.Adam(weight_decay=float("inf")), "weight_decay must be a finite number"),
    (lambda: fastlstm.AdamW(lr=0.1, weight_decay=10), "lr·weight_decay each step, which must be < 1")])
def test_bad_weight_decay_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
    assert fastlstm.Model(2, 4, 1, optimizer="adamw").optimizer.weight_decay == 0.01    # PyTorch's default


@pytest.mark.parametrize("kind, name, value, error, match", [
    (fastlstm.Adam, "lr", float("nan"), ValueError, "lr must be a finite number, got nan"),
    (fastlstm.Adam, "lr", -1.0, ValueError, "Adam's lr must be > 0, got -1.0"),           # it trained uphill, silently
    (fastlstm.Adam, "lr", "0.1", TypeError, "lr must be a finite number, got '0.1'"),
    (fastlstm.Adam, "beta2", 1.0, ValueError, "Adam's beta2 must be in [0, 1), got 1.0"),
    (fastlstm.AdamW, "lr", 200.0, ValueError, "lr·weight_decay each step, which must be < 1"),
    (fastlstm.SGD, "momentum", 1.5, ValueError, "SGD's momentum must be in [0, 1), got 1.5"),   # it said all the
    (fastlstm.AdamW, "eps", 0.0, ValueError, "AdamW's eps must be > 0, got 0.0"),     # rules and every value
    (fastlstm.SGD, "weight_decay", -1.0, ValueError, "weight_decay must be >= 0, got -1.0")])
def test_a_hyperparameter_set_later_is_checked_as_the_constructor_checks_it(kind, name, value, error, match):
    """opt.lr = nan was taken, and the next step failed saying the update overflowed
    ("lower the learning rate"); opt.lr = -1 trained uphill without a word."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 4, 3)).astype(np.float32), rng.standard_normal((4, 1)).astype(np.float32)
    m = fastlstm.Model(3, 4, 1, optimizer=kind(lr=1e-3), seed=0)
    m.train_step(x, y)
    before = repr(m.optimizer)
    with pytest.raises(error, match=re.escape(match)):
        setattr(m.optimizer, name, value)
    assert repr(m.optimizer) == before                   # as it was
    m.optimizer.lr = 0.02                                # and a good value is taken
    assert m.optimizer.lr == 0.02 and np.isfinite(m.train_step(x, y))
