"""Bad input gets a clear error, and a failed call leaves the model exactly as it was."""
import re

import numpy as np
import pytest

import fastlstm
from conftest import random_problem


@pytest.fixture
def setup():
    m, x, h0, c0, lengths, dy, dhn, dcn = random_problem(5, 3, 2, 4, 2)
    return m, x, h0, c0, dy


def _snapshot(m):
    return m.params.copy(), m.grads.copy()


def _assert_unchanged(m, snap):
    assert np.array_equal(m.params, snap[0]) and np.array_equal(m.grads, snap[1])


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _with(a, idx, value):
    a = a.copy()
    a[idx] = value
    return a


BAD_FORWARD = [
    ("x as a list", lambda x, h0: dict(x=x.tolist()), TypeError,
     r"x must be a numpy.ndarray, got list \(pass np.asarray\(x, np.float64\)\)"),
    ("x 2-D", lambda x, h0: dict(x=x[0].copy()), ValueError, r"shape \(\*, \*, 2\)"),
    ("x wrong D", lambda x, h0: dict(x=np.zeros((5, 3, 3))), ValueError, r"got \(5, 3, 3\)"),
    ("x float32", lambda x, h0: dict(x=x.astype(np.float32)), TypeError, "dtype float64, got float32"),
    ("x int", lambda x, h0: dict(x=x.astype(np.int64)), TypeError, "dtype float64"),
    ("x non-contiguous", lambda x, h0: dict(x=np.asfortranarray(x)), ValueError, "C-contiguous"),
    ("x NaN", lambda x, h0: dict(x=_with(x, (1, 2, 0), np.nan)), ValueError, r"finite.*\(1, 2, 0\)"),
    ("x Inf", lambda x, h0: dict(x=_with(x, (0, 0, 1), -np.inf)), ValueError, "finite"),
    ("x empty T", lambda x, h0: dict(x=x[:0].copy()), ValueError, "at least one step"),
    ("x empty B", lambda x, h0: dict(x=x[:, :0].copy()), ValueError, "at least one step"),
    ("h0 wrong B", lambda x, h0: dict(x=x, h0=h0[:, :2].copy()), ValueError, r"h0 must have shape \(2, 3, 4\)"),
    ("h0 missing layer", lambda x, h0: dict(x=x, h0=h0[:1].copy()), ValueError, "h0 must have shape"),
    ("c0 NaN", lambda x, h0: dict(x=x, c0=_with(h0, (0, 0, 0), np.nan)), ValueError, "c0 must be finite"),
    ("lengths 0", lambda x, h0: dict(x=x, lengths=[0, 5, 5]), ValueError, r"lie in 1\.\.5"),
    ("lengths > T", lambda x, h0: dict(x=x, lengths=[6, 5, 5]), ValueError, r"lie in 1\.\.5"),
    ("lengths wrong shape", lambda x, h0: dict(x=x, lengths=[5, 5]), ValueError, r"shape \(3,\)"),
    ("lengths float", lambda x, h0: dict(x=x, lengths=[5.0, 5.0, 5.0]), TypeError, "integers"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BAD_FORWARD, ids=[b[0] for b in BAD_FORWARD])
def test_bad_forward_input_is_refused_and_changes_nothing(setup, name, kwargs, exc, match):
    m, x, h0, c0, dy = setup
    m.forward(x, h0, c0)
    snap = _snapshot(m)
    with pytest.raises(exc, match=match):
        m.forward(**kwargs(x, h0))
    _assert_unchanged(m, snap)
    # the earlier forward is still the one backward uses, as if the failed call never happened
    dx, _ = m.backward(dy)
    m2, *_ = random_problem(5, 3, 2, 4, 2)
    m2.forward(x, h0, c0)
    dx2, _ = m2.backward(dy)
    assert np.array_equal(dx, dx2) and np.array_equal(m.grads, m2.grads)


def test_readonly_inputs_are_accepted(setup):
    m, x, h0, c0, dy = setup
    y, _ = m.forward(_readonly(x), _readonly(h0), _readonly(c0))
    assert np.array_equal(y, m.forward(x, h0, c0)[0])


BAD_BACKWARD = [
    ("dy wrong T", lambda dy, h0: dict(dy=dy[:4].copy()), ValueError, r"dy must have shape \(5, 3, 4\)"),
    ("dy float32", lambda dy, h0: dict(dy=dy.astype(np.float32)), TypeError, "dtype float64"),
    ("dy NaN", lambda dy, h0: dict(dy=_with(dy, (4, 2, 3), np.nan)), ValueError, "dy must be finite"),
    ("dy strided", lambda dy, h0: dict(dy=np.repeat(dy, 2, axis=2)[:, :, ::2]), ValueError, "C-contiguous"),
    ("dhn wrong shape", lambda dy, h0: dict(dy=dy, dhn=h0[0].copy()), ValueError, "dhn must have shape"),
    ("dcn Inf", lambda dy, h0: dict(dy=dy, dcn=_with(h0, (1, 1, 1), np.inf)), ValueError, "dcn must be finite"),
]


@pytest.mark.parametrize("name,kwargs,exc,match", BAD_BACKWARD, ids=[b[0] for b in BAD_BACKWARD])
def test_bad_backward_input_is_refused_and_changes_nothing(setup, name, kwargs, exc, match):
    m, x, h0, c0, dy = setup
    m.forward(x, h0, c0)
    snap = _snapshot(m)
    with pytest.raises(exc, match=match):
        m.backward(**kwargs(dy, h0))
    _assert_unchanged(m, snap)
    m.backward(dy)  # the forward is still there to use
    assert m.grads.any()


def test_backward_needs_its_own_forward(setup, monkeypatch):
    """backward() refuses without a forward awaiting it, and says what let the last one go."""
    m, x, h0, c0, dy = setup
    with pytest.raises(RuntimeError, match="needs a forward.* first: none has run on this stack"):
        m.backward(dy)
    m.forward(x)
    m.backward(dy)
    snap = _snapshot(m)
    with pytest.raises(RuntimeError, match=r"the last forward\(\)'s backward\(\) has run, and each forward\(\) supports one$"):
        m.backward(dy)
    _assert_unchanged(m, snap)
    for change, why in ((lambda: m.reset_parameters(seed=1), r"reset_parameters\(\) replaced the parameters"),
                        (lambda: m.load_torch_state_dict(m.torch_state_dict()), r"load_torch_state_dict\(\) replaced"),
                        (lambda: m.reserve(x.shape[0] + 1, x.shape[1]), r"reserve\(\) regrew the workspace")):
        m.forward(x)
        change()
        with pytest.raises(RuntimeError, match=why):
            m.backward(dy)
    m.forward(x)
    with pytest.raises(ValueError, match="must be finite"):
        m.forward(x * np.nan)                     # refused before it starts: the last forward still awaits
    m.backward(dy)
    m.forward(x)
    with monkeypatch.context() as mp:
        mp.setattr(fastlstm.recurrent, "recurrent_forward", lambda *a: _raise(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            m.forward(x)                          # Ctrl-C inside the time loop: that forward is gone
    with pytest.raises(RuntimeError, match=r"the last forward\(\) did not finish"):
        m.backward(dy)


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU, fastlstm.RNN])
def test_backward_refuses_parameters_written_since_its_forward(cls):
    """An update between forward() and backward() (the optimizer's step before the backward,
    a write through a view) gave the gradient of neither weights, silently; PyTorch's
    version counters refuse it. The refusal changes nothing, and backward() runs once the
    parameters are back (the gradients then those of a backward with no write between);
    a write that leaves every bit as it was is no change."""
    rng = np.random.default_rng(0)
    m = cls(3, 4, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    y, *_ = m.forward(x)
    dy = rng.standard_normal(y.shape)
    m.backward(dy)
    expected, m.grads = m.grads.copy(), np.zeros_like(m.grads)
    kept = m.params.copy()
    writes = [lambda: m.params.__isub__(0.1 * expected),                   # an update before the backward
              lambda: m.layers[1].W.__setitem__((0, 0), m.layers[1].W[0, 0] + 1e-12),   # through a view
              lambda: m.layers[0].b.__setitem__(-1, 0.5),
              lambda: setattr(m, "params", kept[::-1].copy()),              # values trading places
              lambda: m.params.__setitem__(slice(0, 2), kept[1::-1])]
    for write in writes:
        m.forward(x)
        write()
        snap = _snapshot(m)
        with pytest.raises(RuntimeError, match=r"needs the parameters its forward\(\) ran with, and params have "
                                               r"changed since that forward\(\) .*update them after backward"):
            m.backward(dy)
        _assert_unchanged(m, snap)
        m.params = kept
        m.backward(dy)                            # the forward still awaits its backward
        assert np.array_equal(m.grads, expected)
        m.zero_grad()
    m.forward(x)
    m.params[:] = kept.copy()                     # the same bits: no change
    m.backward(dy)
    assert np.array_equal(m.grads, expected)


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU])
def test_buffers_that_overlap_what_a_call_writes_are_refused(cls):
    """backward() adds into grads while it reads dy, dhn and dcn, and step() writes h and c
    in place while it reads params: a view of the one passed as the other gave other
    gradients than its copy (0.066 apart at float64), or a state half-written weights
    made. Each is refused, changing nothing; the copy runs."""
    rng = np.random.default_rng(0)
    m = cls(3, 4, 2, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    y, *_ = m.forward(x)
    m.grads[:] = rng.standard_normal(m.grads.size)
    size, has_c = 2 * 2 * 4, cls is fastlstm.LSTM
    for name, kwargs in (("dy", lambda g: dict(dy=g[:y.size].reshape(y.shape))),
                         ("dhn", lambda g: dict(dy=np.zeros_like(y), dhn=g[-size:].reshape(2, 2, 4))),
                         ("dcn", lambda g: dict(dy=np.zeros_like(y), dcn=g[-size:].reshape(2, 2, 4))))[:2 + has_c]:
        snap = _snapshot(m)
        with pytest.raises(ValueError, match=rf"^{name} overlaps the stack's grads, which backward\(\) adds into"):
            m.backward(**kwargs(m.grads))
        _assert_unchanged(m, snap)
        m.backward(**kwargs(m.grads.copy()))                       # the forward awaited its backward still
        m.forward(x)
    state = np.zeros((2, 1, 4))
    views = {"h": lambda: (m.params[:size // 2].reshape(2, 1, 4), state),
             "c": lambda: (state, m.params[-size // 2:].reshape(2, 1, 4)),
             "h and c": lambda: (state, state)}
    for name, hc in list(views.items())[:1 + 2 * has_c]:
        snap, h, c = _snapshot(m), *hc()
        kept = h.copy(), c.copy()
        message = ("h and c must be separate arrays; they overlap in memory" if name == "h and c" else
                   rf"{name} overlaps the stack's params, and step\(\) writes the state in place")
        with pytest.raises(ValueError, match=message):
            m.step(x[0, :1], h, c) if has_c else m.step(x[0, :1], h)
        _assert_unchanged(m, snap)
        assert np.array_equal(h, kept[0]) and np.array_equal(c, kept[1])
    m.step(x[0, :1], state.copy(), state.copy()) if has_c else m.step(x[0, :1], state.copy())


def _raise(exc):
    raise exc


@pytest.mark.parametrize("cls", [fastlstm.GRU, fastlstm.RNN])
def test_an_lstm_state_pair_given_to_a_cell_without_c_is_named(cls):
    """An (h, c) pair, an LSTM's state, given to a GRU or an RNN: it said "h0 must be a
    numpy.ndarray, got tuple". A refused backward leaves its forward's record to use."""
    m = cls(3, 4, 2, seed=0)
    x, h = np.ones((5, 2, 3), np.float32), np.zeros((2, 2, 4), np.float32)
    for call, name in ((lambda: m.forward(x, (h, h)), "h0"), (lambda: m.step(x[0], (h, h.copy())), "h")):
        with pytest.raises(TypeError, match=re.escape(f"fastlstm.{cls.__name__}'s state is h alone (no cell state "
                                                      f"c): give {name} (num_layers, B, H), not a pair")):
            call()
    y, hn = m.forward(x, h)
    with pytest.raises(TypeError, match=re.escape("give dhn (num_layers, B, H), not a pair")):
        m.backward(y, (hn, hn))
    assert m.backward(y, hn)[0].shape == x.shape


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((0, 4), {}, ValueError, "input_size must be >= 1"),
    ((3, -1), {}, ValueError, "hidden_size must be >= 1"),
    ((3, 4, 0), {}, ValueError, "num_layers must be >= 1"),
    ((3.0, 4), {}, TypeError, "input_size must be an integer"),
    ((True, 4), {}, TypeError, "input_size must be an integer"),
    ((3, 4), dict(dtype=np.float16), TypeError, "float32 or float64"),
    ((3, 4), dict(dtype="int32"), TypeError, "float32 or float64"),
    ((3, 4), dict(forget_bias=np.nan), ValueError, "forget_bias must be a finite"),
    ((3, 4), dict(forget_bias=1e300), ValueError, r"forget_bias must fit in float32 \(\|b\| <= 3.403e\+38\)"),
])
def test_bad_constructor_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fastlstm.LSTM(*args, **kwargs)


@pytest.mark.parametrize("cls,kwargs,exc,match", [
    (fastlstm.GRU, dict(bias=False), ValueError, r"GRU\(\): bias=False is not supported: fastlstm's layers always"),
    (fastlstm.RNN, dict(nonlinearity="sigmoid"), ValueError, r"nonlinearity must be one of \('tanh', 'relu'\)"),
    (fastlstm.LSTM, dict(device="cuda"), ValueError, r"device='cuda' is not supported: fastlstm runs on the CPU"),
    (fastlstm.GRU, dict(nonlinearity="tanh"), TypeError, r"^GRU\(\) got an unexpected keyword argument 'nonlinearity'"),
    (fastlstm.RNN, dict(hiden_size=4), TypeError, r"^RNN\(\) got an unexpected keyword argument 'hiden_size'"),
])
def test_pytorchs_constructor_arguments_pass_at_fastlstms_way_and_are_refused_otherwise(cls, kwargs, exc, match):
    """bias=False raised Python's bare TypeError, and
    an RNN's or a GRU's named `_HiddenOnly.__init__()`."""
    with pytest.raises(exc, match=match):
        cls(3, 4, **kwargs)
    same = cls(3, 4, batch_first=False, bias=True, device="cpu", **({"nonlinearity": "tanh"} if cls is fastlstm.RNN
                                                                    else {}))
    assert same.params.size == cls(3, 4).params.size


def test_bad_state_dict_is_refused_and_changes_nothing():
    m = fastlstm.LSTM(2, 3, 2, dtype=np.float64, seed=0)
    good = m.torch_state_dict()
    snap = _snapshot(m)
    cases = [
        ({k: v for k, v in good.items() if k != "bias_hh_l1"}, KeyError, "missing.*bias_hh_l1"),
        (dict(good, weight_ih_l2=good["weight_ih_l1"]), KeyError, "unexpected.*weight_ih_l2"),
        (dict(good, weight_hh_l1=good["weight_hh_l1"][:, :2]), ValueError, r"weight_hh_l1 must have shape \(12, 3\)"),
        (dict(good, bias_ih_l1=_with(good["bias_ih_l1"], 3, np.nan)), ValueError, "bias_ih_l1 must hold finite"),
        (dict(good, weight_ih_l0=good["weight_ih_l0"].astype(int)), ValueError, "weight_ih_l0 must hold finite"),
        (dict(good, weight_ih_l0=np.float64(1.0)), ValueError, r"weight_ih_l0 must have shape \(12, 2\), got \(\)"),
        (dict(good, weight_hh_l0=[1.0]), ValueError, r"weight_hh_l0 must have shape \(12, 3\), got \(1,\)"),
        (dict(good, **{"1": good["bias_hh_l1"]}) | {2: None}, KeyError, r"unexpected \['1', 2\]"),   # mixed key types
    ]
    for sd, exc, match in cases:
        # a bad entry in layer 1 must not leave layer 0 half-loaded
        sd = dict(sd, weight_ih_l0=np.ones_like(good["weight_ih_l0"])) if "weight_ih_l0" not in match else sd
        with pytest.raises(exc, match=match):
            m.load_torch_state_dict(sd)
        _assert_unchanged(m, snap)
    for not_a_dict in (list(good), [1, 2], list(good.items()), None):
        with pytest.raises(TypeError, match="a state dict maps names to tensors"):
            m.load_torch_state_dict(not_a_dict)
    _assert_unchanged(m, snap)


def test_another_cells_state_dict_is_named_as_such():
    """An nn.GRU's weights given to fastlstm.LSTM of the same hidden size said only
    "weight_ih_l0 must have shape (32, 4), got (24, 4)"; now it names the cell they fit
    (the same for cell modules' names). Another hidden size is a shape mismatch, as before."""
    rng = np.random.default_rng(0)

    def sd(H, rows, prefix="_l0"):                       # a torch module's of `rows` blocks of H
        return {f"weight_ih{prefix}": rng.standard_normal((rows * H, 4)), f"weight_hh{prefix}": rng.standard_normal(
            (rows * H, H)), f"bias_ih{prefix}": np.zeros(rows * H), f"bias_hh{prefix}": np.zeros(rows * H)}
    for mine, rows, said in (
            (fastlstm.LSTM(4, 8), 3, "weight_ih has 24 rows, 3 × hidden_size 8: a GRU's weights, and this is an LSTM "
                                     "(32 rows); load them into fastlstm.GRU"),
            (fastlstm.GRU(4, 8), 4, "an LSTM's weights, and this is a GRU (24 rows); load them into fastlstm.LSTM"),
            (fastlstm.RNN(4, 8), 4, "an LSTM's weights, and this is an RNN (8 rows)"),
            (fastlstm.GRU(4, 8), 1, "an RNN's weights, and this is a GRU")):
        before = mine.params.copy()
        for prefix in ("_l0", ""):                                     # a stack's names, a cell module's
            with pytest.raises(ValueError, match=re.escape(said)):
                mine.load_torch_state_dict(sd(8, rows, prefix))
        assert np.array_equal(mine.params, before)
    with pytest.raises(ValueError, match=re.escape("weight_ih_l0 must have shape (32, 4), got (24, 4)")):
        fastlstm.LSTM(4, 8).load_torch_state_dict(sd(6, 4))    # an LSTM of 6 units: 24 rows too


def test_assigning_the_flat_arrays_copies_in_and_views_cannot_be_rebound():
    """`m.params = new` used to rebind the name and leave the layers' views (and the kernels)
    on the old buffer: the model silently kept its weights. Now it copies new in, checked as
    any input, and the views refuse to be rebound."""
    m = fastlstm.Model(3, 4, 2, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    other = fastlstm.Model(3, 4, 2, seed=1)
    buffer = m.params
    m.params = other.params
    assert m.params is buffer and np.array_equal(m.predict(x), other.predict(x))
    assert np.array_equal(m.core.layers[0].W, other.core.layers[0].W)
    m.core.params = np.zeros_like(m.core.params)               # the stack's share of the same buffer
    assert not m.params[:m.core.params.size].any() and np.array_equal(m.V, other.V)
    kept = m.params.copy()
    for bad, exc, match in ((m.params[:-1], ValueError, r"params must have shape \(\d+,\)"),
                            (m.params.astype(np.float64), TypeError, "params must have dtype float32"),
                            (np.full_like(m.params, np.nan), ValueError, "params must be finite"),
                            ([0.0] * m.params.size, TypeError, "params must be a numpy.ndarray")):
        with pytest.raises(exc, match=match):
            m.params = bad
    assert np.array_equal(m.params, kept)
    m.grads = np.ones_like(m.grads)
    assert m.dV.all() and m.core.layers[0].dW.all()
    m.dV += 1                                                   # in place, then set to itself: allowed
    m.params += 0
    assert (m.grads[m.core.params.size:m.core.params.size + m.dV.size] == 2).all() and m.params is buffer
    for view in ("V", "bias", "dV", "dbias", "E"):
        with pytest.raises(AttributeError, match=f"{view} is a view into the model's flat parameters"):
            setattr(m, view, np.zeros(1, np.float32))
    with pytest.raises(AttributeError, match="cannot assign to field 'W'"):
        m.core.layers[0].W = np.zeros((16, 7), np.float32)


def test_a_token_models_inputs_of_the_wrong_kind_or_shape_get_their_errors():
    """A model with an embedding takes integer ids (T, B), or (B,) a streaming step: floats,
    lists and other shapes are refused with the form it takes, and the model is unchanged."""
    m = fastlstm.Model(4, 8, 3, loss="xent", vocab_size=10, seed=0)
    bf = fastlstm.Model(4, 8, 3, loss="xent", vocab_size=10, seed=0, batch_first=True)
    before = m.params.copy()
    cases = [(TypeError, r"x must be an integer ndarray of ids \(T, B\), got float32",
              lambda: m.train_step(np.zeros((5, 2, 4), np.float32), np.zeros(2, np.int64))),
             (ValueError, r"x must be token ids of shape \(T, B\) with T, B >= 1, got \(0, 2\)",
              lambda: m.train_step(np.zeros((0, 2), np.int64), np.zeros(2, np.int64))),
             (ValueError, r"x must be token ids of shape \(B, T\) with T, B >= 1, got \(5,\)",
              lambda: bf.predict(np.zeros(5, np.int64))),
             (TypeError, r"x must be an integer ndarray of token ids \(B,\), one per stream, got float32",
              lambda: m.step(np.zeros((2, 4), np.float32))),
             (TypeError, r"one per stream, got list", lambda: m.step([1, 2])),
             (ValueError, r"x must be token ids of shape \(B,\) \(one per stream\), got \(2, 1\)",
              lambda: m.step(np.zeros((2, 1), np.int64))),
             (ValueError, r"got \(0,\)", lambda: m.step(np.zeros(0, np.int64)))]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()
    assert np.array_equal(m.params, before) and m.steps == 0
    assert m.step(np.array([1, 2])).shape == (2, 3) and bf.step(np.array([1, 2])).shape == (2, 3)
