"""Optimizer steps against hand-computed updates; clipping against its definition."""
import numpy as np
import pytest

import fastlstm
from fastlstm import optim


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


def test_clipping_by_global_norm():
    g = np.array([3.0, 4.0, 0.0])                                      # ‖g‖ = 5
    assert optim.clip_by_global_norm(g, 10.0) == 5.0 and np.array_equal(g, [3.0, 4.0, 0.0])
    assert optim.clip_by_global_norm(g, 1.0) == 5.0
    assert np.allclose(g, [0.6, 0.8, 0.0], rtol=0, atol=1e-15) and np.isclose(np.linalg.norm(g), 1.0)
    g = np.array([1.0, np.inf])
    assert not np.isfinite(optim.clip_by_global_norm(g, 1.0)) and g[0] == 1.0


@pytest.mark.parametrize("make,match", [
    (lambda: fastlstm.SGD(lr=0), "lr > 0"), (lambda: fastlstm.SGD(momentum=1.0), "momentum < 1"),
    (lambda: fastlstm.Adam(lr=-1), "lr > 0"), (lambda: fastlstm.Adam(beta2=1.0), "beta2"),
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
    for opt in (fastlstm.Adam(lr=0.01, beta2=0.99), fastlstm.SGD(lr=0.5, momentum=0.9)):
        again = eval(repr(opt), {"Adam": fastlstm.Adam, "SGD": fastlstm.SGD})
        assert type(again) is type(opt) and again.hyper() == opt.hyper()
    m = fastlstm.Model(2, 3, 1, optimizer=fastlstm.SGD(lr=0.5))
    assert "optimizer=SGD(lr=0.5, momentum=0.0)" in repr(m)
