"""A slow, obviously-correct LSTM written line by line from docs/design.md (NumPy, float64).

Gate order a, i, f, o; I_t = [x_t ; h_{t-1}]; lengths freeze a row's state past its end.
"""
import numpy as np


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def forward(Ws, bs, x, h0, c0, lengths):
    """Ws[l] (4H, D_l+H), bs[l] (4H); x (T,B,D); h0, c0 (L,B,H); lengths (B,).
    Returns y (T,B,H), hn, cn (L,B,H) and a tape for backward."""
    T, B, _ = x.shape
    H = h0.shape[2]
    tape, inp = [], x
    hn, cn = np.zeros_like(h0), np.zeros_like(c0)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        y = np.zeros((T, B, H))
        steps = []
        for r in range(B):
            h, c = h0[l, r].copy(), c0[l, r].copy()
            for t in range(lengths[r]):
                I = np.concatenate([inp[t, r], h])
                z = W @ I + b
                a, i, f, o = np.tanh(z[:H]), sigmoid(z[H:2*H]), sigmoid(z[2*H:3*H]), sigmoid(z[3*H:])
                c_prev = c
                c = i * a + f * c_prev
                h = o * np.tanh(c)
                y[t, r] = h
                steps.append((r, t, I, a, i, f, o, c_prev, c))
            hn[l, r], cn[l, r] = h, c
        tape.append((inp, steps))
        inp = y
    return inp, hn, cn, tape


def backward(Ws, tape, dy, dhn, dcn, lengths):
    """Gradients for E with δy = dy, δhn = dhn, δcn = dcn: (dx, dh0, dc0, dWs, dbs)."""
    L, B, H = dhn.shape
    dWs = [np.zeros_like(W) for W in Ws]
    dbs = [np.zeros(W.shape[0]) for W in Ws]
    dh0, dc0 = np.zeros_like(dhn), np.zeros_like(dcn)
    for l in range(L - 1, -1, -1):
        W, (inp, steps) = Ws[l], tape[l]
        D = inp.shape[2]
        dx = np.zeros_like(inp)
        by_row = {}
        for s in steps:
            by_row.setdefault(s[0], []).append(s)
        for r in range(B):
            dh, dc = dhn[l, r].copy(), dcn[l, r].copy()
            for (_, t, I, a, i, f, o, c_prev, c) in reversed(by_row[r]):
                dh = dh + dy[t, r]
                do = dh * np.tanh(c)
                dc = dc + dh * o * (1 - np.tanh(c) ** 2)
                da, di, df = dc * i, dc * a, dc * c_prev
                dz = np.concatenate([da * (1 - a**2), di * i * (1 - i), df * f * (1 - f), do * o * (1 - o)])
                dI = W.T @ dz
                dWs[l] += np.outer(dz, I)
                dbs[l] += dz
                dx[t, r] = dI[:D]
                dh = dI[D:]
                dc = dc * f
            dh0[l, r], dc0[l, r] = dh, dc
        dy = dx
    return dy, dh0, dc0, dWs, dbs
