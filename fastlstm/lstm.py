"""The LSTM layer stack: flat parameters, a reusable workspace, validated forward/backward.

Big products run once per layer outside the time loop (NumPy's BLAS):
    before:  Z = X W_xᵀ                     (T·B, G)   the input half of z_t for all steps
    after:   δW += δZᵀ I,  δb += Σ δZ       (G, D+H)   δW = Σ_t δz_t I_tᵀ
             δX  = δZ W_x                   (T·B, D)   first D entries of δI_t = Wᵀ δz_t
The recurrent part (U h_{t-1}, Uᵀ δz_t) and the gate math run in kernels.py.
"""
from dataclasses import dataclass

import numba
import numpy as np

from . import _validate as v
from ._config import blas_turn
from .kernels import copy_hidden, lstm_backward, lstm_forward, lstm_step

# Our gate blocks are a, i, f, o; PyTorch's are i, f, g(=a), o. Our block q is PyTorch's
# block _TORCH_BLOCK[q].
_TORCH_BLOCK = np.array([2, 0, 1, 3])


@dataclass
class Layer:
    """Views of one layer into the model's flat arrays.

    W, dW (4H, D+H): rows in gate order a, i, f, o; columns [x | h] (W_x then U).
    b, db (4H,).
    """
    D: int
    H: int
    W: np.ndarray
    b: np.ndarray
    dW: np.ndarray
    db: np.ndarray


class _Workspace:
    """What backward needs from forward, for a (T, B) capacity; grows, never shrinks.

    Buffers are flat; views of the exact (T, B) are C-contiguous, so the kernels see one
    array layout and the big products can reshape (T, B, ·) to (T·B, ·) without copies.
    """

    def __init__(self, dims, H, dtype):
        self.dims, self.H, self.dtype = dims, H, dtype
        self.cap_tb = self.cap_b = 0

    def ensure(self, T, B):
        if T * B <= self.cap_tb and B <= self.cap_b:
            return
        tb, b, H, e = max(T * B, self.cap_tb), max(B, self.cap_b), self.H, self.dtype
        self.cap_tb, self.cap_b = tb, b
        self.I = [np.zeros((tb + b) * (D + H), e) for D in self.dims]
        self.Z = [np.zeros(tb * 4 * H, e) for _ in self.dims]
        self.C = [np.zeros((tb + b) * H, e) for _ in self.dims]
        self.TC = [np.zeros(tb * H, e) for _ in self.dims]
        self.dh = np.zeros(b * H, e)
        self.dc = np.zeros(b * H, e)
        self.dX = np.zeros(tb * H * (len(self.dims) > 1), e)   # δX of layer l = δY of layer l-1
        self.UT = np.zeros(H * 4 * H, e)           # Uᵀ, contiguous, for the recurrent δI
        self.dWs = np.zeros(_DW_ROWS * max(D + H for D in self.dims), e)
        self.dbs = np.zeros(4 * H, e)

    def layer(self, l, T, B):
        """(I, Z, C, TC) of layer l as (T+1,B,D+H), (T,B,4H), (T+1,B,H), (T,B,H)."""
        D, H = self.dims[l], self.H
        return (_view(self.I[l], T + 1, B, D + H), _view(self.Z[l], T, B, 4 * H),
                _view(self.C[l], T + 1, B, H), _view(self.TC[l], T, B, H))


# δW is computed in blocks of this many rows, so that its scratch stays far smaller than W.
_DW_ROWS = 256


def _nchunks(B):
    """Threads to split the (B+3)//4 row blocks over: any value gives the same bits."""
    return max(1, min(numba.get_num_threads(), (B + 3) // 4))


def _view(buf, *shape):
    return buf[:np.prod(shape)].reshape(shape)


class LSTM:
    """A stack of LSTM layers, time-major like torch.nn.LSTM: x (T, B, D) → y (T, B, H).

    Parameters live in one flat array `params`, gradients in `grads` (same layout); per
    layer, `layers[k].W` (4H, D_k+H) and `layers[k].b` (4H) are views into them.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, *, dtype=np.float32,
                 forget_bias=1.0, seed=None, buffers=None):
        """buffers: optional (params, grads) flat arrays of size `param_count(...)` for the
        stack to live in (a Model puts the LSTM and its head in one flat array)."""
        D = v.positive_int("input_size", input_size)
        H = v.positive_int("hidden_size", hidden_size)
        L = v.positive_int("num_layers", num_layers)
        self.dtype = v.dtype_of(dtype)
        self.forget_bias = v.finite_float("forget_bias", forget_bias)
        self.input_size, self.hidden_size, self.num_layers = D, H, L
        dims = [D] + [H] * (L - 1)
        self._dims = dims
        n = self.param_count(D, H, L)
        self.params, self.grads = buffers or (np.zeros(n, self.dtype), np.zeros(n, self.dtype))
        assert self.params.shape == self.grads.shape == (n,) and self.params.dtype == self.dtype
        self.layers = [Layer(d, H, W, b, dW, db) for d, (W, b), (dW, db)
                       in zip(dims, self._split(self.params), self._split(self.grads))]
        self.reset_parameters(seed)
        self._ws = _Workspace(dims, H, self.dtype)
        self._saved = None          # (T, B, lengths) of the forward that backward may use
        self._step_scratch = None   # step()'s buffers for one batch size

    @staticmethod
    def param_count(input_size, hidden_size, num_layers=1):
        """Σ_k 4H (D_k + H + 1): every layer's W and b."""
        D, H = input_size, hidden_size
        return 4 * H * (D + H + 1) + (num_layers - 1) * 4 * H * (2 * H + 1)

    def _split(self, flat):
        """[(W (4H, D_k+H), b (4H,)) for each layer k]: views into a flat parameter array."""
        H, out, o = self.hidden_size, [], 0
        for d in self._dims:
            nw = 4 * H * (d + H)
            out.append((flat[o:o + nw].reshape(4 * H, d + H), flat[o + nw:o + nw + 4 * H]))
            o += nw + 4 * H
        return out

    def reset_parameters(self, seed=None):
        """W ~ U(-1/√H, 1/√H) (as torch.nn.LSTM), b = 0 except the forget gate's forget_bias.
        seed: an int, None, or a numpy Generator to draw from."""
        rng = np.random.default_rng(seed)
        H, k = self.hidden_size, 1 / np.sqrt(self.hidden_size)
        for layer in self.layers:
            layer.W[:] = rng.uniform(-k, k, layer.W.shape)
            layer.b[:] = 0
            layer.b[2 * H:3 * H] = self.forget_bias
        self._saved = None

    def __repr__(self):
        return (f"LSTM(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers}, dtype={self.dtype}, params={self.params.size})")

    def zero_grad(self):
        self.grads[:] = 0

    # -- forward ---------------------------------------------------------------------

    def _check_state(self, name, s, B):
        if s is None:
            return None
        return v.array(name, s, (self.num_layers, B, self.hidden_size), self.dtype)

    def forward(self, x, h0=None, c0=None, lengths=None):
        """Run the stack over a sequence batch.

        x (T, B, D); h0, c0 (num_layers, B, H) or None for zeros; lengths (B,) integers in
        1..T or None (all T). Past its length a row's outputs are zero and its state is
        frozen, so hn, cn are the states at its last real step (PyTorch's packed sequences).
        Returns y (T, B, H), (hn, cn) each (num_layers, B, H), as new arrays.
        """
        x = v.array("x", x, (None, None, self.input_size), self.dtype)
        T, B = x.shape[:2]
        if T < 1 or B < 1:
            raise ValueError(f"x must have at least one step and one batch row, got shape {x.shape}")
        h0 = self._check_state("h0", h0, B)
        c0 = self._check_state("c0", c0, B)
        L = v.lengths(lengths, B, T)
        self._forward(x, h0, c0, L)
        y = np.empty((T, B, self.hidden_size), self.dtype)
        hn = np.empty((self.num_layers, B, self.hidden_size), self.dtype)
        cn = np.empty_like(hn)
        self._outputs(y, hn, cn)
        return y, (hn, cn)

    def _forward(self, x, h0, c0, L):
        """Forward on validated inputs, leaving everything backward needs in the workspace."""
        T, B = x.shape[:2]
        ws, H = self._ws, self.hidden_size
        self._saved = None
        ws.ensure(T, B)
        prev = None
        with blas_turn():
            for l, layer in enumerate(self.layers):
                self._forward_layer(l, layer, x if prev is None else prev[1:, :, -H:], h0, c0, L, T, B)
                prev = ws.layer(l, T, B)[0]
        self._saved = (T, B, L)

    def _forward_layer(self, l, layer, x, h0, c0, L, T, B):
        """Layer l over x (T,B,D_l) (a view of the layer below's h when l > 0)."""
        D, H = layer.D, self.hidden_size
        I, Z, C, TC = self._ws.layer(l, T, B)
        I[:T, :, :D] = x
        I[0, :, D:] = 0 if h0 is None else h0[l]
        C[0] = 0 if c0 is None else c0[l]
        I2 = I[:T].reshape(T * B, D + H)
        np.matmul(I2[:, :D], layer.W[:, :D].T, out=Z.reshape(T * B, 4 * H))    # W_x x_t, all t
        lstm_forward(Z, C, TC, I, layer.W, layer.b, L, D, H, _nchunks(B))

    def _outputs(self, y, hn, cn):
        """Copy the last forward's y (T,B,H), hn, cn (num_layers,B,H) into the given arrays."""
        T, B, L = self._saved
        for l in range(self.num_layers):
            I, _, C, _ = self._ws.layer(l, T, B)
            hn[l] = I[T, :, self.layers[l].D:]
            cn[l] = C[T]
        copy_hidden(y, I, L, self.layers[-1].D)

    def step(self, x, h, c):
        """Streaming inference: advance the state (h, c) by one time step x (B, D), in place.

        h, c (num_layers, B, H) writable; returns h[-1], the top layer's output (B, H), a view.
        One serial kernel call for all layers (no thread start-up, no workspace): the fast
        path for online inference. Does not touch what backward() would use.
        """
        x = v.array("x", x, (None, self.input_size), self.dtype)
        B = x.shape[0]
        if B < 1:
            raise ValueError("x must have at least one batch row")
        for name, s in (("h", h), ("c", c)):
            v.array(name, s, (self.num_layers, B, self.hidden_size), self.dtype, writable=True)
        H = self.hidden_size
        if self._step_scratch is None or self._step_scratch[0].shape[0] != B:
            self._step_scratch = (np.zeros((B, max(self.input_size, H) + H), self.dtype),
                                  np.zeros((B, 4 * H), self.dtype), np.zeros(H, self.dtype))
        lstm_step(h, c, x, *self._step_scratch, self.params, self.input_size, H)
        return h[-1]

    # -- backward --------------------------------------------------------------------

    def backward(self, dy, dhn=None, dcn=None):
        """Gradients of the last forward; parameter gradients accumulate into `grads`.

        dy (T, B, H) the loss's gradient w.r.t. y; dhn, dcn (num_layers, B, H) or None.
        Returns dx (T, B, D), (dh0, dc0) each (num_layers, B, H), as new arrays.
        Each forward supports one backward (backward overwrites the saved gates with δz).
        """
        if self._saved is None:
            raise RuntimeError("backward() needs a forward() first; each forward() supports one backward()")
        T, B, _ = self._saved
        dy = v.array("dy", dy, (T, B, self.hidden_size), self.dtype)
        dhn = self._check_state("dhn", dhn, B)
        dcn = self._check_state("dcn", dcn, B)
        dx = np.empty((T, B, self.input_size), self.dtype)
        dh0 = np.empty((self.num_layers, B, self.hidden_size), self.dtype)
        dc0 = np.empty_like(dh0)
        self._backward(dy, dhn, dcn, dx, dh0, dc0)
        return dx, (dh0, dc0)

    def _backward(self, dy, dhn, dcn, dx, dh0, dc0):
        """Backward on validated inputs into the given outputs (dx may be None)."""
        T, B, L = self._saved
        self._saved = None
        ws, H = self._ws, self.hidden_size
        dh, dc = _view(ws.dh, B, H), _view(ws.dc, B, H)
        UT = _view(ws.UT, H, 4 * H)
        dY = dy
        with blas_turn():
            for l in range(self.num_layers - 1, -1, -1):
                layer, D = self.layers[l], self.layers[l].D
                I, Z, C, TC = ws.layer(l, T, B)
                dh[:] = 0 if dhn is None else dhn[l]
                dc[:] = 0 if dcn is None else dcn[l]
                UT[:] = layer.W[:, D:].T
                lstm_backward(Z, dh, dc, dY, I, C, TC, UT, L, D, H, _nchunks(B))
                Z2, I2 = Z.reshape(T * B, 4 * H), I[:T].reshape(T * B, D + H)
                for j in range(0, 4 * H, _DW_ROWS):                        # δW = Σ_t δz_t I_tᵀ
                    dWs = _view(ws.dWs, min(_DW_ROWS, 4 * H - j), D + H)
                    np.matmul(Z2[:, j:j + _DW_ROWS].T, I2, out=dWs)
                    layer.dW[j:j + _DW_ROWS] += dWs
                layer.db += np.sum(Z2, axis=0, out=ws.dbs)                  # δb = Σ_t δz_t
                dX = _view(ws.dX, T, B, D) if l > 0 else dx                  # δx_t: first D of Wᵀδz_t
                if dX is not None:
                    np.matmul(Z2, layer.W[:, :D], out=dX.reshape(T * B, D))
                dY = dX
                dh0[l] = dh
                dc0[l] = dc

    # -- PyTorch interchange ---------------------------------------------------------

    def torch_state_dict(self):
        """Parameters under torch.nn.LSTM's names (NumPy arrays, gate order i, f, g, o).

        bias_ih_l{k} carries b and bias_hh_l{k} is zero (PyTorch adds the two).
        Load into torch with {k: torch.from_numpy(v) for k, v in sd.items()}.
        """
        H, sd = self.hidden_size, {}
        inv = np.argsort(_TORCH_BLOCK)
        for k, layer in enumerate(self.layers):
            W = layer.W.reshape(4, H, layer.D + H)[inv].reshape(4 * H, layer.D + H)
            sd[f"weight_ih_l{k}"] = W[:, :layer.D].copy()
            sd[f"weight_hh_l{k}"] = W[:, layer.D:].copy()
            sd[f"bias_ih_l{k}"] = layer.b.reshape(4, H)[inv].reshape(4 * H).copy()
            sd[f"bias_hh_l{k}"] = np.zeros(4 * H, self.dtype)
        return sd

    def load_torch_state_dict(self, state_dict):
        """Take parameters from a torch.nn.LSTM state dict (tensors or arrays).

        Every key, shape and value is checked before anything is written.
        """
        H = self.hidden_size
        want = {f"{n}_l{k}" for k in range(self.num_layers)
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        got = set(state_dict)
        if got != want:
            raise KeyError(f"state dict keys do not match a {self.num_layers}-layer LSTM without "
                           f"projections: missing {sorted(want - got)}, unexpected {sorted(got - want)}")
        new = self.params.copy()
        for k, (Wk, bk) in enumerate(self._split(new)):
            D = self.layers[k].D
            a = {n: _as_array(state_dict, f"{n}_l{k}", shape)
                 for n, shape in (("weight_ih", (4 * H, D)), ("weight_hh", (4 * H, H)),
                                  ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,)))}
            W = np.concatenate([a["weight_ih"], a["weight_hh"]], axis=1)
            Wk[:] = W.reshape(4, H, D + H)[_TORCH_BLOCK].reshape(4 * H, D + H)
            bk[:] = (a["bias_ih"] + a["bias_hh"]).reshape(4, H)[_TORCH_BLOCK].reshape(4 * H)
        self.params[:] = new
        self._saved = None


def _as_array(sd, key, shape):
    t = sd[key]
    if hasattr(t, "detach"):                      # a torch tensor, without importing torch
        t = t.detach().cpu().numpy()
    a = np.asarray(t)
    if a.shape != shape:
        raise ValueError(f"{key} must have shape {shape}, got {a.shape}")
    if a.dtype.kind != "f" or not np.isfinite(a).all():
        raise ValueError(f"{key} must hold finite floating-point values")
    return a.astype(np.float64)
