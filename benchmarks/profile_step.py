"""Where one LSTM training step spends its time, phase by phase (no PyTorch needed).

    python benchmarks/profile_step.py [small medium large xlarge deepbench]

Medians of warm calls (compare.py's alternate, in blocks of 0.1 s): the whole step
(zero_grad, forward, backward), the forward (packing W, tiles, cell; for wide layers the
input half X W_xᵀ by BLAS first, and only U packed under "pack W"), packing W and U
alone, δW = δZᵀ I and δX = δZ W_x (BLAS) alone; the backward is step - forward, and its
kernel (cell backward, δh = Uᵀδz) what remains of it.
GFLOP/s: 2·4H·(D+H)·B·T per product (the kernel's and δX's shares: H or D of D+H).
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy (see fastlstm/_config.py)

import sys  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import _blas  # noqa: E402
from fastlstm import kernels as K  # noqa: E402
from fastlstm import recurrent as R  # noqa: E402

from compare import SHAPES, alternate, local  # noqa: E402


def median_ms(f):
    """Median ms per warm call of f: compare.py's timing, one library, no settling."""
    return alternate([local(f)], 5, budget=0.1, settle=0)[0] * 1e3


def profile(D, H, B, T):
    """Print each phase's median time (ms) and rate at shape (D, H, B, T), float32."""
    m = fastlstm.LSTM(D, H, seed=0)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, D), np.float32), rng.standard_normal((T, B, H), np.float32)
    L = np.full(B, T, np.int64)
    G, layer, ws, a0 = 4 * H, m.layers[0], m._ws, R._tiles_from(D, H)
    blocks, TW = K.BLOCKS[m.CELL], R._tile_width(np.float32)
    dx, d0 = np.empty((T, B, D), np.float32), np.empty((1, B, H), np.float32)

    def step():
        m.zero_grad()
        m.run_forward(x, None, None, L)
        m.run_backward(dy, None, None, dx, d0, d0)
    step()
    I, Z = ws.layer(0, T, B)[:2]
    Z2, I2, dX = Z.reshape(T * B, G), I[:T].reshape(T * B, D + H), np.empty((T * B, D), np.float32)
    t = {"step": median_ms(step), "forward": median_ms(lambda: m.run_forward(x, None, None, L)),
         "pack W": median_ms(lambda: K.pack_unit(ws.panels(), layer.W, layer.W[:0], blocks, D, H, H, a0, True, TW)),
         "pack U": median_ms(lambda: K.pack_unit(ws.panels(), layer.W, layer.W[:0], blocks, D, H, H, 0, False, TW)),
         "δW": median_ms(lambda: (layer.dW.fill(0), _blas.matmul(Z2.T, I2, layer.dW, accumulate=True))),
         "δX": median_ms(lambda: _blas.matmul(Z2, layer.W[:, :D], dX))}     # as the step: on fastlstm's pool
    t["backward"] = t["step"] - t["forward"]
    t["backward kernel"] = t["backward"] - t["pack U"] - t["δW"] - t["δX"]      # by difference
    flops = 2 * G * (D + H) * B * T / 1e9
    share = {"step": 3, "forward": 1, "backward": 2, "backward kernel": H / (D + H), "δW": 1, "δX": D / (D + H)}
    for name in ("step", "forward", "pack W", "backward", "pack U", "backward kernel", "δW", "δX"):
        rate = f"{flops * share[name] / t[name] * 1e3:6.1f} GFLOP/s" if name in share else ""
        print(f"  {name:16s} {t[name]:9.3f} ms  {rate}", flush=True)


if __name__ == "__main__":
    for name in sys.argv[1:] or SHAPES:
        if name not in SHAPES:
            sys.exit(__doc__.split("\n\n")[1] + f"\nshapes: {' '.join(SHAPES)}")
        print(f"{name} (D, H, B, T) = {SHAPES[name]}, {numba.get_num_threads()} threads")
        profile(*SHAPES[name])
