"""Model(batch_first=True): the Python calls take (B, T, ·) arrays, as PyTorch's batch_first
and Keras's arrays; everything else (the C ABI, the command line, the built-in tasks' and
data sets' batches) stays time-major."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm.distributed import DataParallel
from fastlstm.tasks import Adding

T, B, D = 7, 6, 3
LENGTHS = np.array([7, 3, 5, 7, 1, 2])


def _pair(output, loss, vocab, **kw):
    """A time-major model, the same one batch_first, and a batch (x, y) in time-major layout."""
    O = 2 if loss == "mse" else 3
    make = lambda bf: fastlstm.Model(D, 5, O, 2, loss=loss, output=output, vocab_size=vocab, seed=0,  # noqa: E731
                                     batch_first=bf, **kw)
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab, (T, B)) if vocab else rng.standard_normal((T, B, D)).astype(np.float32)
    if loss == "mse":
        y = rng.standard_normal((T, B, O) if output == "every" else (B, O)).astype(np.float32)
    else:
        y = rng.integers(0, O, (T, B) if output == "every" else (B,))
    return make(False), make(True), x, y


def _swap(a):
    return np.ascontiguousarray(np.swapaxes(a, 0, 1))


@pytest.mark.parametrize("output,loss,vocab", [("last", "mse", None), ("every", "mse", None), ("last", "xent", 11),
                                               ("every", "xent", None), ("every", "mse", 11)])
def test_a_batch_first_model_runs_bit_for_bit_as_the_time_major_one(tmp_path, output, loss, vocab):
    """train_step, predict, evaluate, fit (with validation) and step on (B, T, ·) arrays give
    the time-major model's losses, weights and predictions to the bit; a checkpoint and a copy
    keep the setting."""
    tm, bm, x, y = _pair(output, loss, vocab, dropout=0.25)
    xb, yb = _swap(x), (_swap(y) if output == "every" else y)
    for _ in range(3):
        assert tm.train_step(x, y, LENGTHS) == bm.train_step(xb, yb, LENGTHS)
    assert np.array_equal(tm.params, bm.params)
    p, pb = tm.predict(x, LENGTHS, batch_size=4), bm.predict(xb, LENGTHS, batch_size=4)
    assert np.array_equal(_swap(p) if output == "every" else p, pb)
    assert tm.evaluate(x, y, LENGTHS) == bm.evaluate(xb, yb, LENGTHS)
    h = tm.fit(x, y, LENGTHS, epochs=2, batch_size=2, seed=0, progress=False, validation=(x, y, LENGTHS))
    hb = bm.fit(xb, yb, LENGTHS, epochs=2, batch_size=2, seed=0, progress=False, validation=(xb, yb, LENGTHS))
    assert h == hb and np.array_equal(tm.params, bm.params)
    for t in range(T):                     # streaming takes one step of B streams in either layout
        assert np.array_equal(tm.step(x[t]), bm.step(x[t]))
    assert bm.step(x[0]).shape == (B, y.shape[-1] if loss == "mse" else 3)
    bm.save(tmp_path / "bf.ckpt")
    pb = bm.predict(xb, LENGTHS)
    for again in (fastlstm.load(tmp_path / "bf.ckpt"), copy.deepcopy(bm)):
        assert again.batch_first and "batch_first=True" in repr(again)
        assert np.array_equal(again.predict(xb, LENGTHS), pb)


def test_a_batch_first_model_checks_its_arrays_as_given_and_a_failed_call_changes_nothing():
    """Errors name the caller's axes and indices: lengths against x.shape[1], y's shape
    (B, T, O), a NaN's index in y as given (a padded step said so), and a time-major x met
    by a batch_first model points to np.swapaxes."""
    _, m, x, y = _pair("every", "mse", None)
    xb, yb = _swap(x), _swap(y)
    before = m.params.copy()
    with pytest.raises(ValueError, match=r"lengths must lie in 1\.\.7 \(T = x\.shape\[1\]\)"):
        m.train_step(xb, yb, [8, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"y must have shape \(6, 7, 2\) \(batch_first: a target per row and step\), "
                                         r"got \(7, 6, 2\)"):
        m.train_step(xb, y)
    bad = yb.copy()
    bad[4, 5, 1] = np.nan
    with pytest.raises(ValueError, match=r"y must be finite; found nan at index \(4, 5, 1\), a padded step "
                                         r"\(lengths\[4\] = 1\)"):
        m.train_step(xb, bad, LENGTHS)
    with pytest.raises(ValueError, match=r"x must be finite; found inf at index \(2, 6, 0\)"):
        m.train_step(np.where(np.arange(B * T * D).reshape(B, T, D) == 2 * T * D + 6 * D, np.inf, xb)
                     .astype(np.float32), yb)
    assert np.array_equal(m.params, before) and m.steps == 0
    last = fastlstm.Model(D, 5, 2, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=r"a row for each of x's T = 6 steps; this model is batch_first, so x is "
                                         r"\(B, T, D\): for x of shape \(T, B, D\) pass np\.swapaxes\(x, 0, 1\)"):
        last.train_step(x, np.zeros((B, 2), np.float32))                 # time-major x: B = 7, T = 6
    with pytest.raises(fastlstm.data.DataError, match=r"this model is batch_first, so x is \(N, T, D\)"):
        last.fit(x, np.zeros((B, 2), np.float32), epochs=1, progress=False)
    with pytest.raises(fastlstm.data.DataError, match=r"with output='every', y holds a target per step, laid out as "
                                                      r"x: .* \(N, T, O\)"):
        m.fit(xb, y, epochs=1, progress=False)
    assert m.train_step(xb, yb, LENGTHS) > 0                             # the next valid call works
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        fastlstm.Model(D, 5, 2, batch_first=1)


def test_time_major_takes_the_built_in_tasks_batches_and_their_metrics_agree():
    """`with model.time_major():` the calls take time-major arrays (the tasks' batches);
    the tasks' and data sets' metrics enter it themselves, so they read alike for both
    layouts."""
    task = Adding(T=10, test_size=50)
    tm, bm = (fastlstm.Model(2, 8, 1, seed=0, batch_first=bf) for bf in (False, True))
    rng = [np.random.default_rng(1), np.random.default_rng(1)]
    for _ in range(3):
        a = tm.train_step(*task.batch(rng[0], 8)[:2])
        with bm.time_major():
            b = bm.train_step(*task.batch(rng[1], 8)[:2])
        assert a == b
    assert bm._batch_major and task.metrics(tm) == task.metrics(bm)


def test_data_parallel_shards_a_batch_first_batch_along_its_first_axis():
    """DataParallel's shard takes rows along the batch axis of the model's layout (no MPI
    needed for the slicing)."""
    _, m, x, y = _pair("every", "mse", None)
    dp = DataParallel.__new__(DataParallel)
    dp.model, dp.rank, dp.size = m, 1, 2
    xs, ys, Ls, w = dp.shard(_swap(x), _swap(y), LENGTHS)
    assert np.array_equal(xs, _swap(x)[3:]) and np.array_equal(ys, _swap(y)[3:]) and np.array_equal(Ls, LENGTHS[3:])
    assert w == LENGTHS[3:].sum() / LENGTHS.sum()


def test_the_command_line_refuses_to_resume_a_batch_first_model(tmp_path):
    out = tmp_path / "run.ckpt"
    run = [sys.executable, "-m", "fastlstm", "train", "--task", "adding", "--T", "5", "--steps", "2", "--quiet",
           "--out", str(out)]
    assert subprocess.run(run, capture_output=True, timeout=600).returncode == 0
    m = fastlstm.load(out)
    bf = fastlstm.Model(**{**m.config(), "batch_first": True}, optimizer=m.optimizer.__class__())
    bf.params, bf.extra = m.params, m.extra
    bf.save(out, extra=m.extra)
    r = subprocess.run(run[:-2] + ["--steps", "4", "--resume", "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and "holds a batch_first model (made in Python)" in r.stderr, r.stderr
    assert os.path.exists(out)
