"""The constant error carousel, tested with the gradient-flow probe of the backward kernels."""
import subprocess
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import carousel
from fastlstm.tasks import Adding


def _cell_path_only(forget_preact, T=101, B=3, D=2, H=5):
    """An LSTM whose only path back in time is the cell state: U = 0, and the forget gate's
    pre-activation fixed at `forget_preact` (its weights zero). Loss at the last step."""
    m = fastlstm.LSTM(D, H, dtype=np.float64, seed=0)
    W, b = m.layers[0].W, m.layers[0].b
    W[:, D:] = 0                                  # U = 0: no path through h_{t-1}
    W[2 * H:3 * H] = 0                            # f̂ = b_f exactly
    b[2 * H:3 * H] = forget_preact
    x = np.random.default_rng(0).standard_normal((T, B, D))
    m.forward(x)
    dy = np.zeros((T, B, H))
    dy[-1] = 1.0
    m.backward(dy, record=True)
    return m.flow


def test_saturated_open_forget_gate_keeps_the_cell_gradient_constant():
    flow = _cell_path_only(30.0)                  # f = σ(30) = 1 - 9e-14
    dc = flow["dc"][0]                            # dc[t] = ‖∂E/∂c_{t-1}‖, t = 0..100
    assert np.all(flow["dh"][0][:-1] == 0), "with U = 0 no gradient reaches h_{t-1}"
    assert dc[-1] > 0 and np.max(np.abs(dc / dc[-1] - 1)) < 0.01, \
        f"over 100 steps ‖∂E/∂c‖ moved by {np.max(np.abs(dc / dc[-1] - 1)):.2e}"
    assert np.allclose(flow["forget"][0], 1, atol=1e-12)


def test_half_open_forget_gate_halves_the_cell_gradient_every_step():
    flow = _cell_path_only(0.0)                   # f = σ(0) = 0.5
    dc = flow["dc"][0]
    ratios = dc[:-1] / dc[1:]                     # one step further from the loss
    assert np.allclose(ratios, 0.5, rtol=1e-12, atol=0), f"ratios in [{ratios.min()}, {ratios.max()}]"
    assert np.all(flow["forget"][0] == 0.5)


def test_rnn_gradient_decays_no_slower_than_its_bound():
    T, B, D, H = 60, 4, 3, 8
    m = fastlstm.RNN(D, H, dtype=np.float64, seed=1)
    U = m.layers[0].W[:, D:]
    U *= 0.5 / np.linalg.norm(U, 2)               # σ_max(U) = 0.5
    x = np.random.default_rng(1).standard_normal((T, B, D))
    y, _ = m.forward(x)
    dy = np.zeros_like(y)
    dy[-1] = 1.0
    m.backward(dy, record=True)
    dh = m.flow["dh"][0]                          # dh[t] = ‖∂E/∂h_{t-1}‖
    # ∂E/∂h_{t-1} = Uᵀ (∂E/∂h_t ⊙ (1 - h_t²)): each step back multiplies the norm by at most
    # σ_max(U) · max tanh'(at step t) ≤ 0.5
    tanh_max = (1 - y ** 2).max(axis=(1, 2))      # per step t
    for t in range(1, T):
        assert dh[t - 1] <= 0.5 * tanh_max[t - 1] * dh[t] * (1 + 1e-12) + 1e-300, f"step {t}"
    assert dh[0] <= 0.5 ** (T - 1) * dh[-1] * (1 + 1e-9)
    assert np.all(np.isnan(m.flow["forget"][0]))


def test_relu_rnn_gradient_decays_no_slower_than_its_bound_and_an_identity_u_carries_it():
    """The ReLU RNN: ∂E/∂h_{t-1} = Uᵀ (∂E/∂h_t ⊙ [h_t > 0]), so each step back multiplies the
    norm by at most σ_max(U) (0.5 here). With U = I and every unit active (b > 0, W_x = 0:
    Le et al.'s IRNN) the path is an identity and carries the norm unchanged, as the
    LSTM's cell state does with f = 1."""
    T, B, D, H = 60, 4, 3, 8
    x = np.random.default_rng(1).standard_normal((T, B, D))
    m = fastlstm.RNN(D, H, nonlinearity="relu", dtype=np.float64, seed=1)
    U = m.layers[0].W[:, D:]
    U *= 0.5 / np.linalg.norm(U, 2)
    y, _ = m.forward(x)
    dy = np.zeros_like(y)
    dy[-1] = 1.0
    m.backward(dy, record=True)
    dh = m.flow["dh"][0]
    assert np.all(dh[:-1] <= 0.5 * dh[1:] * (1 + 1e-12) + 1e-300) and dh[0] < 0.5 ** 20 * dh[-1]
    m.layers[0].W[:] = 0
    m.layers[0].W[:, D:] = np.eye(H)                # U = I, W_x = 0
    m.layers[0].b[:] = 0.1                          # every h_t = 0.1 t > 0
    y, _ = m.forward(x)
    assert np.all(y > 0)
    m.backward(dy, record=True)
    assert np.allclose(m.flow["dh"][0], m.flow["dh"][0][-1], rtol=1e-12, atol=0)
    assert np.all(np.isnan(m.flow["forget"][0]))


@pytest.mark.parametrize("with_lengths", [False, True])
def test_probe_equals_the_gradients_the_ordinary_backward_returns(with_lengths):
    """‖∂E/∂h_{t-1}‖, ‖∂E/∂c_{t-1}‖ from the probe equal the norms of dh0, dc0 that plain
    backward returns for the suffix x[t:], started from the state after x[:t]."""
    T, B, D, H, L = 9, 5, 3, 4, 2
    rng = np.random.default_rng(2)
    m = fastlstm.LSTM(D, H, L, dtype=np.float64, seed=2)
    x = rng.standard_normal((T, B, D))
    lengths = np.full(B, T)
    if with_lengths:
        lengths[1:] = [T - 1, T, T - 2, T]        # the probe keeps padded rows' carries too
    dy = np.zeros((T, B, H))
    dy[-1] = rng.standard_normal((B, H))
    dhn = rng.standard_normal((L, B, H))
    m.forward(x, lengths=lengths if with_lengths else None)
    m.backward(dy, dhn, record=True)
    flow = m.flow
    for t in range(1, T):
        _, (h, c) = m.forward(np.ascontiguousarray(x[:t]), lengths=np.minimum(lengths, t))
        suffix_len = np.maximum(lengths - t, 0)
        if with_lengths and suffix_len.min() == 0:
            continue                              # a row already ended: no suffix to run
        m.forward(np.ascontiguousarray(x[t:]), h, c, lengths=suffix_len if with_lengths else None)
        _, (dh0, dc0) = m.backward(np.ascontiguousarray(dy[t:]), dhn)
        for l in range(L):
            assert np.isclose(flow["dh"][l, t], np.linalg.norm(dh0[l]), rtol=1e-12), (t, l)
            assert np.isclose(flow["dc"][l, t], np.linalg.norm(dc0[l]), rtol=1e-12), (t, l)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_probes_mean_gate_at_a_step_is_over_the_rows_still_inside_their_length(cell):
    """flow["forget"][l, t], the mean forget gate (the GRU's z) at step t, averages the rows
    with t < lengths: each row's own gate, recorded with the row alone, weighs in while
    the row runs and not from its first padded step on."""
    T, B, D, H, L = 6, 4, 3, 5, 2
    rng = np.random.default_rng(4)
    m = {"lstm": fastlstm.LSTM, "gru": fastlstm.GRU}[cell](D, H, L, dtype=np.float64, seed=4)
    x, lengths = rng.standard_normal((T, B, D)), np.array([6, 3, 5, 1])

    def forget(x, lengths):
        y = m.forward(x, lengths=lengths)[0]
        m.backward(np.ones_like(y), record=True)
        return m.flow["forget"]
    alone = [forget(np.ascontiguousarray(x[:n, b:b + 1]), None) for b, n in enumerate(lengths)]    # (L, n) each
    want = np.array([[np.mean([a[l, t] for a, n in zip(alone, lengths) if t < n]) for t in range(T)] for l in range(L)])
    assert np.allclose(forget(x, lengths), want, rtol=1e-12, atol=0)


def test_probe_costs_nothing_when_not_asked_and_changes_no_result():
    m = fastlstm.LSTM(3, 4, 2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 5, 3))
    dy = np.ones((6, 5, 4))
    m.forward(x)
    a = m.backward(dy)[0]
    g = m.grads.copy()
    assert m.flow is None
    m.zero_grad()
    m.forward(x)
    b = m.backward(dy, record=True)[0]
    assert np.array_equal(a, b) and np.array_equal(g, m.grads)
    assert m.flow["dh"].shape == (2, 6)


@pytest.mark.parametrize("update_preact,ratio", [(30.0, 1.0), (0.0, 0.5)])
def test_the_grus_identity_path_carries_the_gradient_by_z(update_preact, ratio):
    """With U = 0 the only path back in time is the GRU's identity path, δh_{t-1} = z ⊙ δh_t:
    an update gate fixed open (z = σ(30)) keeps ‖∂E/∂h‖ constant over 100 steps, z = 1/2
    halves it every step; flow["dc"] (the identity path's share) is then all of it."""
    T, B, D, H = 101, 3, 2, 5
    m = fastlstm.GRU(D, H, dtype=np.float64, seed=0)
    W, b = m.layers[0].W, m.layers[0].b
    W[:, D:] = 0                                  # U = 0: no path through the gates
    W[2 * H:3 * H] = 0                            # ẑ = b_z exactly
    b[2 * H:3 * H] = update_preact
    y, _ = m.forward(np.random.default_rng(0).standard_normal((T, B, D)))
    dy = np.zeros_like(y)
    dy[-1] = 1.0
    m.backward(dy, record=True)
    dh, dc = m.flow["dh"][0], m.flow["dc"][0]
    assert np.allclose(dh[:-1] / dh[1:], ratio, rtol=1e-9, atol=0)
    assert np.allclose(dc, dh, rtol=1e-12)        # dc[t] = ‖z_t ⊙ δh_t‖ = ‖δh_{t-1}‖ = dh[t] here
    assert np.allclose(m.flow["forget"][0], 1 / (1 + np.exp(-update_preact)), rtol=1e-12)


def test_trained_lstm_and_gru_solve_adding_at_T100_and_the_rnn_does_not():
    task = Adding(T=100, test_size=500, seed=7)
    models = carousel.make_models(hidden=64, seed=3)
    lstm = carousel.train(models["LSTM f-bias 1"], task, steps=2000, batch=64, seed=3)
    gru = carousel.train(models["GRU"], task, steps=2000, batch=64, seed=3)
    rnn = carousel.train(models["RNN"], task, steps=2000, batch=64, seed=3)
    assert lstm < 0.01, f"LSTM test MSE {lstm:.4f}"
    assert gru < 0.01, f"GRU test MSE {gru:.4f}"
    assert rnn > 0.1, f"RNN test MSE {rnn:.4f} (baseline 0.167)"


def test_carousel_command_prints_the_table_and_plots(tmp_path):
    png = tmp_path / "flow.png"
    args = [sys.executable, "-m", "fastlstm", "carousel", "--T", "30", "--hidden", "8", "--batch", "4"]
    try:
        import matplotlib  # noqa: F401
        args += ["--plot", str(png)]
    except ImportError:
        png = None
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| 20 |" in r.stdout and "LSTM f-bias 1 ‖∂E/∂c‖" in r.stdout and "RNN ‖∂E/∂h‖" in r.stdout
    assert "GRU mean z" in r.stdout and "ReLU RNN ‖∂E/∂h‖" in r.stdout
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_carousel_train_probes_the_trained_models_and_gives_their_test_mse(capsys):
    """`carousel --train STEPS` trains each model on the adding problem first: the table is
    the trained models' (as carousel.run gives it), and a last line gives each test MSE."""
    from fastlstm import cli
    assert cli.main(["carousel", "--T", "20", "--hidden", "8", "--batch", "8", "--train", "30", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    want = carousel.run(T=20, hidden=8, batch=8, seed=0, train_steps=30)
    assert "(T = 20, H = 8, after training)" in out and out.rstrip().endswith(carousel.table(want, 20)), out
    assert out.rstrip().splitlines()[-1] == ("test MSE on the adding problem (baseline 0.167): " + ", ".join(
        f"{name} {mse:.4f}" for name, (_, mse) in want.items())) and len(want) == 5


def test_a_plot_that_cannot_be_written_is_refused_before_the_measurement(tmp_path, capsys):
    """--plot onto a folder, an empty name or a pseudo file system failed only after the
    table was computed (minutes at a large T), and an empty name was silently ignored."""
    from fastlstm import cli
    try:                                   # which formats matplotlib writes, only it can say
        import matplotlib  # noqa: F401
        unknown = "a plot is written as PNG, PDF, SVG or another format"
    except ImportError:
        unknown = "plot needs matplotlib: pip install 'matplotlib>=3.6'"
    for plot, said in ((str(tmp_path), "is a folder; give a PNG file name"), ("", "--plot '' is empty"),
                       ("/proc/flow.png", "cannot write the plot in /proc (--plot /proc/flow.png)"),
                       (str(tmp_path / "flow.txt"), unknown)):
        assert cli.main(["carousel", "--T", "30", "--hidden", "8", "--plot", plot]) == 2
        out, err = capsys.readouterr()
        assert out == "" and said in err, err
