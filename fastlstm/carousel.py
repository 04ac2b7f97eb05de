"""The constant error carousel, measured: how far back a loss at the last step reaches.

For each model the backward kernels record (backward(record=True)) the norm of the gradient
with respect to the state each step receives, ‖∂E/∂h_{t-1}‖ and ‖∂E/∂c_{t-1}‖; here they are
listed against the distance from the loss, k = T - t steps back. Along the cell state the
only factor per step is f (δc_{t-1} = δc_t ⊙ f_t); the RNN multiplies by Uᵀ diag(1 - h²),
the ReLU RNN by Uᵀ diag([h > 0]).
The GRU's carousel is its z-gated identity path, δh_{t-1} = z_t ⊙ δh_t + Uᵀ δz_t: its rows
give ‖∂E/∂h‖ and the mean update gate z.
"""
import numpy as np

from .model import Model
from .tasks import Adding
from .training import pyplot, save_figure

MODELS = (("RNN", "rnn", None), ("ReLU RNN", "rnn_relu", None), ("LSTM f-bias 0", "lstm", 0.0),
          ("LSTM f-bias 1", "lstm", 1.0), ("GRU", "gru", None))


def _columns(name):
    """The table's columns for one model: (label, value at step t relative to distance 1)."""
    h = [("‖∂E/∂h‖", lambda f, t, T: f["dh"][t] / f["dh"][T - 1])]
    if "LSTM" in name:
        return h + [("‖∂E/∂c‖", lambda f, t, T: f["dc"][t] / f["dc"][T - 1]), ("mean f", lambda f, t, T: f["forget"][t])]
    if "GRU" in name:
        return h + [("mean z", lambda f, t, T: f["forget"][t])]
    return h


def make_models(hidden, seed):
    """name -> Model for the models compared, with a head for the adding problem."""
    return {name: Model(2, hidden, 1, cell=cell, seed=seed, clip=1.0,
                        **({} if fb is None else dict(forget_bias=fb)))
            for name, cell, fb in MODELS}


def probe(model, x, y):
    """Gradient flow of the adding loss through model.core on the batch (x, y): the flow
    dict of the top layer, {"dh", "dc", "forget"} each (T,), index t ↔ the state entering
    step t (distance T - t from the loss)."""
    model.compute_gradients(x, y, record=True)
    return {k: a[-1] for k, a in model.core.flow.items()}


def train(model, task, steps, batch, seed, lr=1e-2):
    """Train on the adding problem for `steps` (stop early once solved); returns the test MSE."""
    model.optimizer.lr = lr
    rng = np.random.default_rng(seed)
    for s in range(1, steps + 1):
        model.train_step(*task.batch(rng, batch)[:2])
        if s % 100 == 0 and task.solved(task.metrics(model)):
            break
    return task.metrics(model)["test_mse"]


def run(T=200, hidden=64, batch=32, seed=0, train_steps=0):
    """{name: (flow, test_mse or None)} for the models at sequence length T."""
    task = Adding(T=T, test_size=500, seed=seed + 1)
    x, y, _ = task.batch(np.random.default_rng(seed), batch)
    out = {}
    for name, model in make_models(hidden, seed).items():
        mse = train(model, task, train_steps, batch, seed) if train_steps else None
        out[name] = (probe(model, x, y), mse)
    return out


def table(results, T):
    """Rows of gradient norm against distance from the loss, normalised at distance 1."""
    ks = [k for k in (1, 2, 5, 10, 20, 50, 100, 150, 200, 500, 1000) if k <= T]
    head = "| distance k | " + " | ".join(f"{n} {label}" for n in results for label, _ in _columns(n)) + " |"
    lines = [head, "|" + " ---: |" * (head.count("|") - 1)]
    for k in ks:
        cells = [f"{value(flow, T - k, T):.3g}" for name, (flow, _) in results.items() for _, value in _columns(name)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    mses = {n: m for n, (_, m) in results.items() if m is not None}
    if mses:
        lines.append("")
        lines.append("test MSE on the adding problem (baseline 0.167): " +
                     ", ".join(f"{n} {m:.4f}" for n, m in mses.items()))
    return "\n".join(lines)


def plot(results, T, path):
    """Gradient norms against distance (log scale) as a PNG; needs matplotlib."""
    plt = pyplot()
    k = np.arange(1, T + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (flow, _) in results.items():
        t = T - k
        ax.semilogy(k, np.maximum(flow["dh"][t] / flow["dh"][T - 1], 1e-300), label=f"{name} ‖∂E/∂h‖")
        if "LSTM" in name:
            ax.semilogy(k, np.maximum(flow["dc"][t] / flow["dc"][T - 1], 1e-300), "--", label=f"{name} ‖∂E/∂c‖")
    ax.set_xlabel("distance from the loss (steps)")
    ax.set_ylabel("gradient norm / norm at distance 1")
    ax.set_ylim(1e-30, 1e3)
    ax.set_title(f"Gradient flow over T = {T} steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, 120)
    plt.close(fig)

