"""Model: loss heads against finite differences, learning that converges, non-finite steps,
checkpoints that round-trip exactly, and clear errors."""
import os
import pickle
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import heads, kernels, optim, tasks
from fastlstm.checkpoint import CheckpointError

from test_cli import _disk_full_at


def _data(loss, output, T=5, B=4, D=3, O=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    lengths = np.array([T, 2, 4, 1][:B])
    shape = (B,) if output == "last" else (T, B)
    y = rng.integers(0, O, shape) if loss == "xent" else rng.standard_normal(shape + (O,)).astype(dtype)
    return x, y, lengths


@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("output", ["last", "every"])
def test_each_head_passes_a_finite_difference_check(loss, output):
    x, y, lengths = _data(loss, output)
    m = fastlstm.Model(3, 4, 3, 2, loss=loss, output=output, dtype=np.float64, seed=1)
    m.params[:] = np.random.default_rng(2).uniform(-0.6, 0.6, m.params.size)
    m.compute_gradients(x, y, lengths)
    g = m.grads.copy()
    eps, worst = 1e-6, 0.0
    for k in range(m.params.size):
        old = m.params[k]
        m.params[k] = old + eps
        up = m.evaluate(x, y, lengths)["loss"]
        m.params[k] = old - eps
        down = m.evaluate(x, y, lengths)["loss"]
        m.params[k] = old
        num = (up - down) / (2 * eps)
        worst = max(worst, abs(num - g[k]) / max(1.0, abs(num)))
    rel = worst
    assert rel <= 1e-6, f"{loss}/{output}: worst relative error {rel:.2e}"


def test_head_gradient_ignores_padded_steps():
    """A padded step counts for nothing, its label whatever it is: fit took PyTorch's
    ignore_index -100 or a label past the classes there, while train_step, evaluate and
    compute_gradients refused them ("class labels must lie in 0..2"). At a real step such
    a label is refused, saying where (the row and step, whatever the layout)."""
    x, y, lengths = _data("xent", "every")
    m = fastlstm.Model(3, 4, 3, loss="xent", output="every", dtype=np.float64, seed=1)
    m.compute_gradients(x, y, lengths)
    g, score = m.grads.copy(), m.evaluate(x, y, lengths)
    x2 = x.copy()
    x2[2:, 1] = 7.0                         # row 1 has length 2: its later steps are padding
    for pad in ((y[2:, 1] + 1) % 3, -100, 3, np.iinfo(np.int64).max):
        y2 = y.copy()
        y2[2:, 1] = pad
        for labels in (y2, y2.astype(np.int32) if np.max(np.abs(y2)) < 1 << 31 else y2):     # (C ABI's labels)
            m.compute_gradients(x2, labels, lengths)
            assert np.array_equal(g, m.grads) and m.evaluate(x2, labels, lengths) == score
    bm = fastlstm.Model(3, 4, 3, loss="xent", output="every", dtype=np.float64, seed=1, batch_first=True)
    bm.compute_gradients(np.ascontiguousarray(x2.swapaxes(0, 1)), np.ascontiguousarray(y2.T), lengths)
    assert np.array_equal(g, bm.grads)
    before = m.params.copy()
    for model, first in ((m, lambda a: a), (bm, lambda a: np.ascontiguousarray(a.swapaxes(0, 1)))):
        for bad, said in ((-100, r"-100 at step 1 \(fastlstm has no ignore_index: the steps past a row's length count "
                                 r"for nothing, whatever their labels\)$"), (3, r"3 at step 1$")):
            y3 = y2.copy()
            y3[1, 1] = bad                      # row 1's last real step
            with pytest.raises(ValueError, match=r"^class labels must lie in 0\.\.2, got min .*: row 1 has " + said):
                model.train_step(first(x), first(y3), lengths)
    assert np.array_equal(m.params, before) and m.steps == 0


def test_adding_problem_beats_the_baseline_widely():
    task = tasks.Adding(T=20, test_size=500)
    m = fastlstm.Model(2, 32, 1, optimizer=fastlstm.Adam(lr=1e-2), clip=1.0, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(600):
        m.train_step(*task.batch(rng, 32))
    mse = task.metrics(m)["test_mse"]
    assert mse < 0.2 * task.baseline, f"test MSE {mse:.4f} vs baseline {task.baseline:.4f}"


def test_text_loss_falls():
    task = tasks.Text(T=32, test_chars=3000)
    m = fastlstm.Model(task.input_size, 64, task.output_size, loss="xent", output="every",
                       optimizer=fastlstm.Adam(lr=1e-2), clip=1.0, seed=0)
    before = task.metrics(m)["test_bpc"]
    rng = np.random.default_rng(0)
    for _ in range(300):
        m.train_step(*task.batch(rng, 16))
    after = task.metrics(m)["test_bpc"]
    # log2(103) = 6.7 bits for a uniform guess; single-character frequencies give about 4.2:
    # below 3.6 the model uses context.
    assert before > 6.0 and after < 3.6, f"bits per character {before:.2f} -> {after:.2f}"


def test_digits_accuracy_rises():
    pytest.importorskip("sklearn")
    task = tasks.Digits()
    m = fastlstm.Model(8, 32, 10, loss="xent", optimizer=fastlstm.Adam(lr=1e-2), clip=1.0, seed=0)
    before = task.metrics(m)["test_accuracy"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        m.train_step(*task.batch(rng, 64))
    after = task.metrics(m)["test_accuracy"]
    assert before < 0.3 and after > 0.85, f"accuracy {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_predict_and_step_agree(loss):
    m = fastlstm.Model(3, 5, 4, loss=loss, output="every", seed=0)
    m.bias[:] = [0.5, -1, 2, 0]                                    # the head's bias counts too
    x = np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32)
    P = m.predict(x)
    assert P.shape == (6, 2, 4) and (loss == "mse" or np.allclose(P.sum(-1), 1, atol=1e-6))
    m.reset_state(2)
    for t in range(6):
        assert np.allclose(m.step(x[t]), P[t], rtol=0, atol=1e-6)
    last = fastlstm.Model(3, 5, 2, seed=0)
    assert last.predict(x).shape == (2, 2)


@pytest.mark.parametrize("loss,output,settings", [("xent", "last", {}), ("mse", "every", {"num_layers": 2}),
                                                   ("mse", "last", {"cell": "gru", "bidirectional": True}),
                                                   ("xent", "every", {"vocab_size": 7})])
def test_predict_in_batches_bounds_the_workspace_and_agrees_with_one_forward(loss, output, settings):
    """predict(x, batch_size=S) runs S rows a forward, as evaluate does, so a large B does not
    leave the model holding a workspace of T·B rows; the rows come out in place."""
    m = fastlstm.Model(5 if "vocab_size" not in settings else 4, 16, 3, loss=loss, output=output, seed=0, **settings)
    rng = np.random.default_rng(0)
    T, B = 9, 1000
    x = rng.integers(0, 7, (T, B)) if "vocab_size" in settings else rng.standard_normal((T, B, 5)).astype(np.float32)
    L = rng.integers(1, T + 1, B)
    batched = m.predict(x, L, batch_size=64)
    assert m.core._ws.cap_b == 64 and m.core._ws.cap_tb == T * 64
    each = [m.predict(np.ascontiguousarray(x[:, b:b + 64]), L[b:b + 64]) for b in range(0, B, 64)]
    assert np.array_equal(batched, np.concatenate(each, axis=0 if output == "last" else 1))
    assert np.allclose(batched, m.predict(x, L), rtol=0, atol=1e-6)
    if output == "every":                     # a step past a row's length has no prediction: 0, not the bias
        m.bias[:] = 0.5
        padded = np.arange(T)[:, None] >= L[None, :]
        p = m.predict(x, L)
        assert np.all(p[padded] == 0) and np.all(p[~padded] != 0)
    for bad, err in ((0, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="batch_size"):
            m.predict(x, L, batch_size=bad)


def test_failed_step_keeps_the_streams():
    m = fastlstm.Model(3, 5, 1, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    m.step(x[0])
    m.step(x[1])
    h, c = (s.copy() for s in m._state)
    bad = x[2].copy()
    bad[1, 1] = np.nan
    for wrong in (bad, x[2, :1].astype(np.float64), np.ones((4, 2), np.float32)):   # NaN, dtype, shape
        with pytest.raises((ValueError, TypeError)):
            m.step(wrong)
        assert np.array_equal(m._state[0], h) and np.array_equal(m._state[1], c)
    fresh = fastlstm.Model(3, 5, 1, seed=0)
    fresh.step(x[0])
    fresh.step(x[1])
    assert np.array_equal(m.step(x[2]), fresh.step(x[2]))
    three = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    assert np.array_equal(m.step(three), fastlstm.Model(3, 5, 1, seed=0).step(three))   # another B: fresh streams


@pytest.mark.parametrize("layers", [1, 2])
def test_a_step_that_would_overflow_the_state_is_refused_and_keeps_it(layers):
    """A ReLU RNN's h grows without bound: the step that took it past float32's range wrote
    ±Inf into the streaming state, and every later step then failed with "h must be finite",
    an array the caller never passed. Now that step raises NonFiniteError and the state (of
    every layer) is as it was; a stack's step keeps the caller's h so too."""
    m = fastlstm.Model(2, 4, 1, layers, cell="rnn_relu", seed=0)
    m.params[:] = 10.0
    x = np.ones((3, 2), np.float32)
    with pytest.raises(fastlstm.NonFiniteError, match="new state would not be finite in float32"):
        for _ in range(100):
            before = [s.copy() for s in m._state] if m._state is not None else None
            m.step(x)
    assert before is not None and all(np.array_equal(a, b) for a, b in zip(before, m._state))
    assert np.isfinite(m._state[0]).all() and 1e30 < m._state[0].max()
    m.reset_state(3)
    assert np.isfinite(m.step(x)).all()                     # the next call works
    r = fastlstm.RNN(2, 4, layers, nonlinearity="relu")
    r.params[:] = 10.0
    h = np.full((layers, 1, 4), 1e37, np.float32)             # 10 · 4 · 1e37 > float32 max
    kept = h.copy()
    with pytest.raises(fastlstm.NonFiniteError):
        r.step(np.ones((1, 2), np.float32), h)
    assert np.array_equal(h, kept)
    # A bounded cell's state turns NaN only through inf - inf in z = W [x ; h] + b. With weights
    # near float32's range, whether the sum meets both signs' overflows depends on its order
    # (the CPU's vector width and FMAs; a Zen 4 saturates the gates where a Zen 3 made NaN):
    # the step is refused with the state as it was, or the state is finite. Infinite weights
    # meet both signs in any order: always refused.
    for cls in (fastlstm.LSTM, fastlstm.GRU, fastlstm.RNN):
        for w in (3e38, np.inf):
            m = cls(2, 4, layers)
            m.params[:] = w
            state = [np.full((layers, 1, 4), 0.5, np.float32) for _ in range(1 + (cls is fastlstm.LSTM))]
            try:
                m.step(np.array([[2, -2]], np.float32), *state)
            except fastlstm.NonFiniteError as e:
                assert "would not be finite" in str(e) and all(np.all(s == 0.5) for s in state)
            else:
                assert w < np.inf and all(np.isfinite(s).all() for s in state), (cls, w, state)


@pytest.mark.parametrize("opt", [lambda: fastlstm.Adam(lr=1e-2), lambda: fastlstm.SGD(lr=0.1, momentum=0.9)])
def test_save_load_continue_is_bitwise_the_same_trajectory(tmp_path, opt):
    task = tasks.Adding(T=10, test_size=10)
    make = lambda: fastlstm.Model(2, 8, 1, 2, optimizer=opt(), clip=0.5, seed=3)  # noqa: E731
    batches = [task.batch(np.random.default_rng(s), 8) for s in range(10)]
    a = make()
    for b in batches:
        a.train_step(*b)
    b_ = make()
    for b in batches[:4]:
        b_.train_step(*b)
    path = tmp_path / "mid.ckpt"
    b_.save(path, extra={"note": "halfway"})
    c = fastlstm.load(path)
    assert c.extra == {"note": "halfway"} and c.steps == 4 and c.config() == b_.config()
    for b in batches[4:]:
        c.train_step(*b)
    assert np.array_equal(a.params, c.params)
    for k in a.optimizer.state:
        assert np.array_equal(a.optimizer.state[k], c.optimizer.state[k])


@pytest.mark.parametrize("settings", [dict(cell="lstm", num_layers=2, dropout=0.3, proj_size=3),
                                      dict(cell="gru", bidirectional=True, loss="xent", output="every"),
                                      dict(cell="rnn_relu", vocab_size=7, optimizer=fastlstm.SGD(lr=0.1, momentum=0.9))])
def test_a_copy_of_a_model_is_whole_and_its_own(settings):
    """copy.deepcopy and pickle carry everything a model holds, the copy trains bit for bit
    as the original would, and neither sees the other's changes afterwards."""
    import copy
    import pickle
    rng = np.random.default_rng(0)
    if settings.get("vocab_size"):
        x, every = rng.integers(0, 7, (6, 4)), False
    else:
        x, every = rng.standard_normal((6, 4, 3)).astype(np.float32), settings.get("output") == "every"
    y = (rng.integers(0, 4, (6, 4) if every else (4,)) if settings.get("loss") == "xent"
         else rng.standard_normal((4, 4)).astype(np.float32))
    for copier in (copy.deepcopy, lambda a: pickle.loads(pickle.dumps(a))):
        m = fastlstm.Model(3, 5, 4, seed=2, clip=1.0, **copy.deepcopy(settings))
        m.train_step(x, y)
        if not m.core.bidirectional:
            m.step(x[0])                          # a streaming state to carry
        m.compute_gradients(x, y)                # gradients not yet applied
        m.extra = {"note": "mid-run"}
        c = copier(m.eval())
        assert c.config() == m.config() and (c.seed, c.steps, c.extra, c.training) == (m.seed, 1, m.extra, False)
        assert c.forget_bias == m.forget_bias == c.config()["forget_bias"]   # a GRU's or RNN's 0, as config says
        for name in ("params", "grads"):
            assert np.array_equal(getattr(c, name), getattr(m, name))
            assert not np.shares_memory(getattr(c, name), getattr(m, name))
        assert c.optimizer.config() == m.optimizer.config()
        for k, s in m.optimizer.state.items():
            assert np.array_equal(c.optimizer.state[k], s)
        for k in range(len(m.core.layers)):       # the copy's layer views are into its own params
            assert np.shares_memory(c.core.layers[k].W, c.params)
        if not m.core.bidirectional:
            assert np.array_equal(c.step(x[1]), m.step(x[1]))
        c.train(), m.train()
        for _ in range(2):                        # dropout masks, the optimizer's moments, clipping
            c.train_step(x, y)
            m.train_step(x, y)
        assert np.array_equal(c.params, m.params) and c.optimizer.t == m.optimizer.t
        c.params = c.params + 1                   # and each is its own afterwards
        assert not np.array_equal(c.params, m.params)
    opt = copier(m.optimizer)                     # an optimizer copied alone belongs to no model
    assert opt.config() == m.optimizer.config()
    assert fastlstm.Model(3, 5, 4, optimizer=opt, **{k: v for k, v in settings.items() if k != "optimizer"}).optimizer is opt


@pytest.mark.parametrize("settings", [dict(cell="lstm", num_layers=2, proj_size=3, bidirectional=True),
                                      dict(cell="gru", loss="xent", output="every", vocab_size=7)])
def test_astype_is_a_copy_in_the_other_dtype_that_trains_on(settings):
    """model.astype(np.float32) of a float64 model (PyTorch's model.float()): the parameters
    and optimizer state cast, the settings, counts and extra kept; it predicts as the
    original to float32's rounding and trains on. A value beyond float32's range is refused,
    and the original is left as it was."""
    rng = np.random.default_rng(0)
    tokens = "vocab_size" in settings
    x = rng.integers(0, 7, (6, 4)) if tokens else rng.standard_normal((6, 4, 3))
    y = rng.integers(0, 4, (6, 4)) if settings.get("loss") == "xent" else rng.standard_normal((4, 4))
    m = fastlstm.Model(3, 5, 4, seed=2, dtype=np.float64, optimizer=fastlstm.Adam(lr=1e-2), **settings)
    for _ in range(3):
        m.train_step(x, y)
    m.extra = {"note": ["mid-run"]}
    c = m.eval().astype(np.float32)
    assert c.dtype == np.float32 and c.config() == dict(m.config(), dtype="float32")
    assert (c.steps, c.optimizer.t, c.seed, c.training, c.extra) == (3, 3, 2, False, m.extra)
    assert np.array_equal(c.params, m.params.astype(np.float32))
    for k, a in m.optimizer.state.items():
        assert c.optimizer.state[k].dtype == np.float32 and np.array_equal(c.optimizer.state[k], a.astype(np.float32))
    x32 = x if tokens else x.astype(np.float32)
    assert np.abs(c.predict(x32) - m.predict(x)).max() < 1e-5
    c.extra["note"].append("the copy's")                     # each its own
    assert m.extra == {"note": ["mid-run"]}
    c.train(), c.train_step(x32, y if y.dtype.kind == "i" else y.astype(np.float32))
    back = c.astype("float64")
    assert back.dtype == np.float64 and np.array_equal(back.params, c.params.astype(np.float64))
    before = m.params.copy()
    m.params[0] = 1e300
    with pytest.raises(ValueError, match=r"params holds 1e\+300, beyond float32's range"):
        m.astype(np.float32)
    assert m.params[0] == 1e300 and np.array_equal(m.params[1:], before[1:])
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got int32"):
        m.astype(np.int32)


def test_a_streaming_step_names_a_nan_written_into_the_weights_and_keeps_the_state():
    """A NaN or Inf written into params (or E) from outside: the step's refusal names the
    entry (it blamed inputs or weights too large, or for E an x the caller never gave)."""
    outside = r"params\[{}\] is {}, written from outside the updates: load a checkpoint or call reset_parameters"
    for cell in ("lstm", "gru", "rnn"):
        m = fastlstm.Model(3, 8, 2, cell=cell, seed=0)
        x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
        m.step(x)
        state = [a.copy() for a in m._state]
        m.params[3] = np.nan
        with pytest.raises(fastlstm.NonFiniteError, match="new state would not be finite in float32: "
                           + outside.format(3, "nan") + "; the state was left as it was"):
            m.step(x)
        assert all(np.array_equal(a, b) for a, b in zip(state, m._state))
    m = fastlstm.Model(4, 8, 5, vocab_size=20, loss="xent", seed=0)
    m.step(np.array([1, 2, 3]))
    state = [a.copy() for a in m._state]
    m.E[2, 1] = np.inf
    k = int(np.flatnonzero(np.isinf(m.params))[0])
    with pytest.raises(fastlstm.NonFiniteError, match="this step's input would not be finite: "
                       + outside.format(k, "inf") + "; the state was left as it was"):
        m.step(np.array([1, 2, 3]))
    assert all(np.array_equal(a, b) for a, b in zip(state, m._state))
    assert np.isfinite(m.step(np.array([1, 1, 3]))).all()         # a token whose embedding is finite streams on


def test_nonfinite_step_is_refused_and_changes_nothing():
    m = fastlstm.Model(2, 4, 1, seed=0)
    x, y, _ = tasks.Adding(T=6, test_size=4).batch(np.random.default_rng(0), 4)
    m.train_step(x, y)
    good = m.params.copy()
    m.V[:] = 3e38                           # finite weights whose products overflow to inf
    params, state = m.params.copy(), {k: s.copy() for k, s in m.optimizer.state.items()}
    with pytest.raises(fastlstm.NonFiniteError,
                       match=r"non-finite gradient .*: lower the learning rate or set clip\); the model was not updated"):
        m.train_step(x, y)
    assert np.array_equal(m.params, params) and m.steps == 1 and m.skipped_steps == 1
    assert not np.isfinite(m.grads).all()         # grads keeps the refused step's, to look at
    assert all(np.array_equal(state[k], m.optimizer.state[k]) for k in state)
    m.on_nonfinite = "skip"
    m.train_step(x, y)
    assert np.array_equal(m.params, params) and m.skipped_steps == 2
    m.params[:] = good
    m.train_step(x, y)
    assert m.steps == 2 and np.isfinite(m.params).all()
    m.on_nonfinite, params = "raise", m.params.copy()
    m.params[5] = np.nan                    # written by the user: no learning rate would help (it said so)
    with pytest.raises(fastlstm.NonFiniteError, match=r"non-finite loss \(loss nan, gradient norm nan: params\[5\] is "
                       r"nan, written from outside the updates: load a checkpoint or call reset_parameters\)"):
        m.train_step(x, y)
    assert m.steps == 2 and np.array_equal(m.params, np.where(np.arange(m.params.size) == 5, np.nan, params),
                                           equal_nan=True)


def test_bad_inputs_and_labels_get_clear_errors():
    m = fastlstm.Model(3, 4, 5, loss="xent", seed=0)
    x = np.zeros((4, 2, 3), np.float32)
    before = m.params.copy()
    for y, exc, match in [(np.array([0, 5]), ValueError, r"0\.\.4"), (np.array([-1, 0]), ValueError, r"0\.\.4"),
                          (np.array([0.0, 1.0]), TypeError, "integer"), (np.array([0, 1, 2]), ValueError, r"\(2,\)")]:
        with pytest.raises(exc, match=match):
            m.train_step(x, y)
    with pytest.raises(ValueError, match="finite"):
        m.train_step(np.full((4, 2, 3), np.nan, np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="lengths"):
        m.train_step(x, np.array([0, 1]), lengths=[5, 1])
    r = fastlstm.Model(3, 4, 2, loss="mse", output="every", seed=0)
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2, 2\)"):
        r.train_step(x, np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="float32"):
        r.train_step(x, np.zeros((4, 2, 2)))
    # x given batch-major, as Keras takes it: y has a row for each step, and the error says why
    keras = np.zeros((2, 4, 3), np.float32)                       # (B, T, D) for B = 2, T = 4
    for model, y in ((m, np.array([0, 1])), (fastlstm.Model(3, 4, 1, seed=0), np.zeros((2, 1), np.float32))):
        for call in (model.train_step, model.evaluate):
            with pytest.raises(ValueError, match=r"a row for each of x's T = 2 steps; x is time-major \(T, B, D\), "
                                                 r"so for x of shape \(B, T, D\) pass np.swapaxes\(x, 0, 1\)"):
                call(keras, y)
    with pytest.raises(ValueError, match=r"for x of shape \(N, T, D\) pass np.swapaxes\(x, 0, 1\)"):
        m.fit(keras, np.array([0, 1]), epochs=1, progress=False)
    assert np.array_equal(m.params, before) and m.steps == 0
    for setting in ("cell", "loss", "output", "on_nonfinite"):
        for bad in ("hinge", ["mse"], None):
            with pytest.raises(ValueError, match=f"^{setting} must be one of .*, got {re.escape(repr(bad))}$"):
                fastlstm.Model(3, 4, 2, **{setting: bad})
    # a name in capitals, or Keras's or PyTorch's, is said back with fastlstm's
    for setting, bad, meant in (("cell", "LSTM", "lstm"), ("cell", "SimpleRNN", "rnn"), ("output", "all", "every"),
                                ("loss", "sparse_categorical_crossentropy", "xent"), ("loss", "MSELoss", "mse")):
        with pytest.raises(ValueError, match=f"got {bad!r} \\(fastlstm's name for it: {meant!r}\\)$"):
            fastlstm.Model(3, 4, 2, **{setting: bad})
    with pytest.raises(TypeError, match=r"got 'Adam' \(fastlstm's name for it: 'adam'\)$"):
        fastlstm.Model(3, 4, 2, optimizer="Adam")
    for seed, err in (("a", TypeError), (1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(err, match="seed must be"):                  # None, an int >= 0 or a Generator
            fastlstm.Model(3, 4, 2, seed=seed)
        with pytest.raises(err, match="seed must be"):
            fastlstm.GRU(3, 4, seed=seed)


def test_corrupt_truncated_and_foreign_checkpoints(tmp_path):
    m = fastlstm.Model(2, 4, 1, seed=0)
    good = tmp_path / "good.ckpt"
    m.save(good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "flipped": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "text": b"hello, I am not a checkpoint\n" * 10,
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.ckpt"
        p.write_bytes(blob)
        with pytest.raises(CheckpointError):
            fastlstm.load(p)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="bare .npy"):
        fastlstm.load(tmp_path / "plain.npy")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a fastlstm checkpoint"):
        fastlstm.load(tmp_path / "foreign.npz")
    from fastlstm import checkpoint
    header, arrays = checkpoint.read(good)
    import json
    v2 = json.dumps(dict(header, version=2)).encode()
    np.savez(tmp_path / "v2.npz", __fastlstm__=np.frombuffer(v2, np.uint8), **arrays)
    with pytest.raises(CheckpointError, match="version 1"):
        fastlstm.load(tmp_path / "v2.npz")
    checkpoint.write(tmp_path / "short.ckpt", header, dict(arrays, params=arrays["params"][:-1]))
    with pytest.raises(CheckpointError, match="params has shape"):
        fastlstm.load(tmp_path / "short.ckpt")
    with pytest.raises(FileNotFoundError):
        fastlstm.load(tmp_path / "missing.ckpt")
    missing = tmp_path / "no" / "m.ckpt"                  # the error names the file asked for, not a temporary
    with pytest.raises(FileNotFoundError, match=re.escape(f"cannot write a checkpoint in {missing.parent}: ")
                       + ".*" + re.escape(f"'{missing}'")):
        m.save(missing)
    with pytest.raises(FileNotFoundError, match="a checkpoint needs a file name"):
        m.save("")                                        # it made a temporary beside the working folder
    long = tmp_path / ("m" * 300)                         # renaming the temporary fails: the file is named
    with pytest.raises(OSError, match=re.escape("cannot write a checkpoint: File name too long: ") + f"'{long}'"):
        m.save(long)
    assert np.array_equal(fastlstm.load(good).params, m.params)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    m = fastlstm.Model(2, 4, 1, seed=0)
    path = tmp_path / "m.ckpt"
    m.save(path)
    before = path.read_bytes()
    m.params += 1

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", crash)                # dies after writing, before renaming
    with pytest.raises(KeyboardInterrupt):
        m.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.ckpt"], "the temporary file must be cleaned up"


def test_numba_cache_goes_somewhere_writable_when_the_install_is_read_only(tmp_path):
    from fastlstm._config import numba_cache_dir
    pkg, home = str(tmp_path / "site-packages"), str(tmp_path / "home")
    read_only = lambda d: not d.startswith(pkg)  # noqa: E731  (root ignores chmod: pretend)
    assert numba_cache_dir(pkg, {}, writable=lambda d: True) is None
    assert numba_cache_dir(pkg, {"NUMBA_CACHE_DIR": "/x"}, writable=read_only) is None
    assert numba_cache_dir(pkg, {"HOME": home}, writable=read_only) == os.path.join(home, ".cache", "fastlstm")
    assert numba_cache_dir(pkg, {"XDG_CACHE_HOME": home, "HOME": "/nonexistent"}, writable=read_only) == \
        os.path.join(home, "fastlstm")
    assert numba_cache_dir(pkg, {}, writable=read_only).startswith("/tmp/fastlstm-cache-")


STEP = ("import fastlstm, numpy as np; m = fastlstm.Model(3, 8, 1, seed=0)\n"
        "print(m.train_step(np.ones((5, 2, 3), np.float32), np.ones((2, 1), np.float32)))")
# a few kernels that STEP loads: the MSE head's, two of a step's whole-array passes, Adam's update
STEP_KERNELS = (heads.mse, kernels.fill_zero, kernels.all_finite, optim.adam_update)


def _package_with_its_cache(tmp_path):
    """A copy of the package in tmp_path, with this session's compiled kernels beside it as
    Numba keeps them in a package's own folder (copy2 keeps the sources' mtimes, so they are
    fresh), every one STEP loads among them; the folder of those kernels."""
    from numba.core.caching import FunctionCache
    exec(STEP)
    pkg = tmp_path / "fastlstm"
    shutil.copytree(os.path.dirname(fastlstm.__file__), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(FunctionCache(kernels.zeros)._cache_path, pkg / "__pycache__",
                    ignore=lambda d, names: [n for n in names if not n.endswith((".nbi", ".nbc"))])
    return pkg / "__pycache__"


def _files(cache, kernel, ext):
    """The cache's files of `kernel` as its source stands: Numba names them module.name-line
    (an older source's may lie beside them), .nbi the index, .nbc a compiled signature."""
    f, py = kernel.py_func, f"py{sys.version_info[0]}{sys.version_info[1]}"      # this Python's: others' may lie there
    return sorted(cache.glob(f"{f.__module__.rsplit('.', 1)[1]}.{f.__name__}-{f.__code__.co_firstlineno}.{py}*{ext}"))


def _run_step(tmp_path, **popen):
    """STEP in a new process on the copy of _package_with_its_cache: (the loss, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    r = subprocess.run([sys.executable, "-c", STEP + "\nprint(fastlstm.__file__)"], capture_output=True, text=True,
                       cwd=tmp_path, env=dict(env, PYTHONPATH=str(tmp_path)), timeout=300, **popen)
    assert r.returncode == 0, r.stderr[-2000:]
    loss, where = r.stdout.split()
    assert where == str(tmp_path / "fastlstm" / "__init__.py")
    return float(loss), r.stderr


def _whole(cache, kernel):
    """The kernel's index unpickles, and so does each compiled signature it names (a damaged
    one the step did not load lies unnamed, to be written over by a later compilation)."""
    index, = _files(cache, kernel, ".nbi")
    with open(index, "rb") as f:
        pickle.load(f)                                    # Numba's version, then (source stamp, overloads)
        _, overloads = pickle.loads(f.read())
    return overloads and all(pickle.loads((cache / name).read_bytes()) is not None for name in overloads.values())


def test_a_damaged_kernel_cache_file_is_compiled_again_not_raised(tmp_path):
    """A cache file cut short or zeroed (a crash mid-write, a power cut) made every later
    start raise Numba's EOFError or UnpicklingError (numba issue 10434) until the user found
    and deleted the folder. Now the kernel compiles again, its files are written afresh, and
    one warning says so."""
    cache = _package_with_its_cache(tmp_path)
    cuts = (lambda b: b[:len(b) // 2], lambda b: b"", lambda b: bytes(len(b)), lambda b: b[:-100])  # in half, emptied,
    for kernel, ext, cut in zip(STEP_KERNELS, (".nbi", ".nbc", ".nbc", ".nbc"), cuts):              # zeroed, cut short
        assert _files(cache, kernel, ext), kernel
        for f in _files(cache, kernel, ext):
            f.write_bytes(cut(f.read_bytes()))
    loss, stderr = _run_step(tmp_path)
    assert loss > 0 and stderr.count("a file there could not be read, so its kernel compiles again") == 1, stderr
    assert all(_whole(cache, kernel) for kernel in STEP_KERNELS)


def test_a_cache_that_cannot_be_written_costs_compiling_not_the_call(tmp_path):
    """On a full disk or quota Numba raised OSError from the call that had compiled a kernel
    (`fastlstm train` said "error: [Errno 28] No space left on device" and stopped), though
    the kernel was ready. Now the call runs, and one warning says what is not kept.
    Here the kernels' files are gone and no file may grow past 4 KB (RLIMIT_FSIZE)."""
    cache = _package_with_its_cache(tmp_path)
    for kernel in STEP_KERNELS:
        for f in _files(cache, kernel, ".nb?"):
            f.unlink()
    loss, stderr = _run_step(tmp_path, preexec_fn=_disk_full_at(4096))
    assert loss > 0
    assert stderr.count("fastlstm's compiled kernels in") == 1, stderr
    assert "they cannot be written there (File too large), so those not written compile again" in stderr, stderr
    assert not [f for kernel in STEP_KERNELS for f in _files(cache, kernel, ".nbc")]
