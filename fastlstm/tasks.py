"""Built-in tasks, generated or shipped offline, each with its literature's figure of merit.

A task gives the model's shape (input_size, output_size, loss, output), training batches
drawn from a numpy Generator (`batch(rng, B, dtype)`), a fixed held-out set, its metrics and
`monitor`, the metric early stopping and the best checkpoint follow: the protocol that the
datasets of `fastlstm.data` share.
"""
import numpy as np

from . import _validate as v
from .data import _time_major, char_windows


def _drawn(rng, B, dtype):
    """batch's arguments checked: rng a numpy Generator (a seed would draw the same batch at
    every call), B >= 1 rows, a model's dtype. Returns (B, dtype)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed), made once), got "
                        f"{type(rng).__name__}")
    return v.positive_int("B", B), v.dtype_of(dtype)


class Adding:
    """The adding problem (Hochreiter & Schmidhuber 1997; as in Arjovsky et al. 2016).

    x (T, B, 2): channel 0 values ~ U[0, 1]; channel 1 marks one step in the first half and
    one in the second. Target (B, 1): the sum of the two marked values; MSE at the last step.
    Predicting 1 always scores E[(u1 + u2 - 1)²] = 1/6 ≈ 0.167: the baseline to beat.
    """
    name, loss, output, input_size, output_size = "adding", "mse", "last", 2, 1
    monitor = ("test_mse", "min")      # what early stopping and the best checkpoint follow
    baseline = 1 / 6
    target = 0.01                       # test MSE that counts as solved

    def __init__(self, T=100, test_size=1000, seed=1234):
        if v.integer("T", T) < 2:
            raise ValueError(f"the adding problem needs T >= 2, got {T}")
        self.T = T
        self.test = self.batch(v.rng(seed), v.positive_int("test_size", test_size))

    def batch(self, rng, B, dtype=np.float32):
        B, dtype = _drawn(rng, B, dtype)
        T, rows = self.T, np.arange(B)
        v.fits_in_memory(f"a batch of the adding problem (T = {T}, B = {B})",      # x, and rng.random's
                         T * B * (2 * np.dtype(dtype).itemsize + 8))              # float64 values for it
        x = np.zeros((T, B, 2), dtype)
        x[:, :, 0] = rng.random((T, B))
        first, second = rng.integers(0, T // 2, B), rng.integers(T // 2, T, B)
        x[first, rows, 1] = 1
        x[second, rows, 1] = 1
        y = (x[first, rows, 0] + x[second, rows, 0])[:, None].astype(dtype)
        return x, y, None

    @_time_major                                          # the task's batches are time-major
    def metrics(self, model):
        x, y, _ = self.test
        mse = model.evaluate(x.astype(model.dtype), y.astype(model.dtype))["loss"]
        return {"test_mse": mse, "baseline": self.baseline}

    def solved(self, metrics):
        return metrics["test_mse"] < self.target


class Text:
    """Character-level language modelling on CPython's pydoc_data.topics (English prose
    about Python, ~465k characters, shipped with every CPython).

    x (T, B, V) one-hot characters, or (T, B) their ids with tokens=True (for a model with an
    embedding, as `fastlstm train --task text` makes); y (T, B) the next character; softmax
    cross-entropy at every step. Figure of merit: bits per character on the held-out last 10% of the text.
    """
    name, loss, output, monitor = "text", "xent", "every", ("test_bpc", "min")

    def __init__(self, T=64, test_chars=20000, seed=1234, tokens=False):
        T, test_chars = v.positive_int("T", T), v.positive_int("test_chars", test_chars)
        tokens = v.boolean("tokens", tokens)
        from pydoc_data.topics import topics
        text = "\n\n".join(topics[k] for k in sorted(topics))
        self.vocab = sorted(set(text))
        self.index = {ch: i for i, ch in enumerate(self.vocab)}
        ids = np.array([self.index[ch] for ch in text], np.int64)
        split = int(len(ids) * 0.9)
        self.train_ids, self.test_ids = ids[:split], ids[split:]
        self.T, self.tokens = T, tokens
        self.input_size = self.output_size = self.vocab_size = len(self.vocab)
        scored = min(test_chars, len(self.test_ids) - 1)
        if scored < T:
            raise ValueError(f"the text task scores {scored} held-out characters (test_chars, of "
                             f"{len(self.test_ids) - 1}), fewer than a window of T = {T}: give a shorter T")
        n = scored // T
        self.test_starts = np.arange(n) * T

    def _windows(self, ids, starts, dtype=np.float32):
        x, y, _ = char_windows(ids, starts, self.T, len(self.vocab), dtype, self.tokens)
        return x, y, None

    def batch(self, rng, B, dtype=np.float32):
        B, dtype = _drawn(rng, B, dtype)
        starts = rng.integers(0, len(self.train_ids) - self.T - 1, B)
        return self._windows(self.train_ids, starts, dtype)

    @_time_major
    def metrics(self, model):
        x, y, _ = self._windows(self.test_ids, self.test_starts, model.dtype)
        loss = model.evaluate(x, y)["loss"]
        return {"test_bpc": loss / np.log(2)}

    def solved(self, metrics):
        return metrics["test_bpc"] < 3.0


class Digits:
    """scikit-learn's load_digits(): 1797 8x8 images read row by row as 8 steps of 8
    features (scaled to [0, 1]); 10 classes at the last step. Figure of merit: test
    accuracy on a fixed 20% split. Needs scikit-learn (the `digits` extra)."""
    name, loss, output, input_size, output_size, T = "digits", "xent", "last", 8, 10, 8
    monitor = ("test_accuracy", "max")

    def __init__(self, seed=1234):
        d = v.optional("sklearn.datasets", "the digits task", "digits", "scikit-learn").load_digits()
        x = (d.images / 16.0).transpose(1, 0, 2)                    # (8 steps, N, 8)
        order = np.random.default_rng(seed).permutation(len(d.target))
        n_test = len(order) // 5
        test, train = order[:n_test], order[n_test:]
        self.train_x, self.train_y = np.ascontiguousarray(x[:, train]), d.target[train]
        self.test = (np.ascontiguousarray(x[:, test], np.float32), d.target[test], None)

    def batch(self, rng, B, dtype=np.float32):
        B, dtype = _drawn(rng, B, dtype)
        pick = rng.integers(0, len(self.train_y), B)
        return np.ascontiguousarray(self.train_x[:, pick], dtype), self.train_y[pick], None

    @_time_major
    def metrics(self, model):
        x, y, _ = self.test
        r = model.evaluate(x.astype(model.dtype), y)
        return {"test_accuracy": r["accuracy"], "test_loss": r["loss"]}

    def solved(self, metrics):
        return metrics["test_accuracy"] > 0.9


TASKS = {"adding": Adding, "text": Text, "digits": Digits}
