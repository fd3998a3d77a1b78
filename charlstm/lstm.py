"""The LSTM layer as pure NumPy kernels: a forward pass over a window of time steps, and its backward.

Dimension letters used throughout:
    T  time steps in the window          B  batch (independent streams)
    H  hidden size                       G = 4H, the four gates side by side
    D  input size of the layer

The gates follow torch.nn.LSTM, in its order i, f, g, o along the last axis:
    i = sigmoid(a_i)   input gate        f = sigmoid(a_f)   forget gate
    g = tanh(a_g)      candidate         o = sigmoid(a_o)   output gate
    c_t = f * c_{t-1} + i * g            h_t = o * tanh(c_t)
where a = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh. The input half of that sum does not depend
on the recurrence, so the caller computes it for all T steps in one matrix product (`xproj`) and
the time loop only adds the recurrent product, one fused (B, H) @ (H, 4H) product per step.

`lstm_forward` returns `(hs, (h_T, c_T), cache)`; `lstm_backward(dhs, cache)` returns the gradient of
`xproj` (whose sum over T and B is the gradient of both biases), of `W_hh`, and of the initial state.
There is no hidden state between calls: everything backward needs travels in `cache`.
"""

import numpy as np


def sigmoid_(x):
    """In-place logistic sigmoid through tanh: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5.

    One transcendental instead of exp + divide, and no overflow warnings for large |x|.
    """
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
    return x


def cell_forward(a, c_prev, c_out, h_out, tanh_c):
    """One time step of the cell, given the full pre-activations.

    a: (B, 4H) pre-activations, overwritten in place with the activated gates i, f, g, o.
    c_prev: (B, H). Writes c_out (B, H), h_out (B, H); tanh_c (B, H) is scratch, left = tanh(c_t).
    Shared by the training forward and the sampler, so both compute exactly the same cell.
    """
    H = c_prev.shape[1]
    sigmoid_(a[:, :2 * H])                      # i and f are adjacent: one call for both
    np.tanh(a[:, 2 * H:3 * H], out=a[:, 2 * H:3 * H])
    sigmoid_(a[:, 3 * H:])
    i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    np.multiply(f, c_prev, out=c_out)
    np.multiply(i, g, out=tanh_c)               # tanh_c used as scratch for i*g
    c_out += tanh_c
    np.tanh(c_out, out=tanh_c)
    np.multiply(o, tanh_c, out=h_out)


def lstm_forward(xproj, w_hh, h0, c0, keep_cache=True):
    """Run one LSTM layer over a window.

    xproj: (T, B, 4H) input projections x_t @ W_ih.T + b_ih + b_hh. It is overwritten in place with
        the activated gates, which the cache keeps (the caller must not reuse it).
    w_hh: (4H, H) recurrent weights.  h0, c0: (B, H) initial state (not modified).
    keep_cache: False for evaluation: no cache is kept and c is not stored for every step.
    Returns hs (T, B, H), (h_T, c_T) as new (B, H) arrays, and the cache (None if not kept).
    """
    T, B, G = xproj.shape
    H = G // 4
    dt = xproj.dtype
    w_hh_t = w_hh.T                             # (H, 4H) view; BLAS reads it transposed, no copy
    hs = np.empty((T, B, H), dt)
    cs = np.empty((T, B, H), dt) if keep_cache else np.empty((2, B, H), dt)
    rec = np.empty((B, G), dt)                  # reused each step for h_{t-1} @ W_hh.T
    tanh_c = np.empty((B, H), dt)
    h_prev, c_prev = h0, c0
    for t in range(T):
        a = xproj[t]                                     # (B, 4H)
        np.matmul(h_prev, w_hh_t, out=rec)
        a += rec
        c_t = cs[t] if keep_cache else cs[t % 2]         # without a cache, two rotating c buffers
        cell_forward(a, c_prev, c_t, hs[t], tanh_c)
        h_prev, c_prev = hs[t], c_t
    final = (hs[-1].copy(), c_prev.copy()) if T else (h0.copy(), c0.copy())
    cache = (xproj, cs, hs, h0, c0, w_hh) if keep_cache else None
    return hs, final, cache


def lstm_backward(dhs, cache, dh_T=None, dc_T=None):
    """Backpropagate through one layer's window (BPTT).

    dhs: (T, B, H) gradient of the loss with respect to each step's output h_t.
    dh_T, dc_T: optional (B, H) gradients flowing into the final state from later windows.
    Returns dxproj (T, B, 4H), dw_hh (4H, H), dh0 (B, H), dc0 (B, H).
    The gate buffer in the cache is overwritten in place with dxproj (the gradient of the
    pre-activations), so a cache can be used for one backward only. tanh(c_t) is recomputed here
    rather than cached: it costs one tanh per step and saves T*B*H floats.
    """
    gates, cs, hs, h0, c0, w_hh = cache
    T, B, G = gates.shape
    H = G // 4
    dt = gates.dtype
    dh = np.empty((B, H), dt)
    dh_next = np.zeros((B, H), dt) if dh_T is None else dh_T.astype(dt, copy=True)
    dc = np.zeros((B, H), dt) if dc_T is None else dc_T.astype(dt, copy=True)
    tanh_c = np.empty((B, H), dt)
    s1 = np.empty((B, H), dt)
    s2 = np.empty((B, H), dt)
    for t in range(T - 1, -1, -1):
        a = gates[t]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_prev = cs[t - 1] if t > 0 else c0
        np.add(dhs[t], dh_next, out=dh)
        np.tanh(cs[t], out=tanh_c)               # recomputed, not cached
        # dc += dh * o * (1 - tanh(c)^2): the cell gradient from this step's output
        np.multiply(tanh_c, tanh_c, out=s2)
        np.subtract(1, s2, out=s2)
        np.multiply(dh, o, out=s1)
        s1 *= s2
        dc += s1
        # Each gate's pre-activation gradient overwrites that gate once the gate's value is used.
        # o: da_o = dh * tanh(c) * o * (1 - o)
        np.subtract(1, o, out=s2)
        s2 *= o
        np.multiply(dh, tanh_c, out=s1)
        np.multiply(s1, s2, out=o)
        # g: da_g = dc * i * (1 - g^2);  i: da_i = dc * g * i * (1 - i)
        np.multiply(g, g, out=s2)
        np.subtract(1, s2, out=s2)
        s2 *= i
        np.subtract(1, i, out=s1)
        s1 *= i
        s1 *= g
        np.multiply(s1, dc, out=i)
        np.multiply(s2, dc, out=g)
        # f: da_f = dc * c_prev * f * (1 - f); the cell gradient to step t-1 is dc * f
        np.subtract(1, f, out=s1)
        s1 *= f
        s1 *= c_prev
        s1 *= dc
        dc *= f                                  # dc becomes the gradient of c_{t-1}
        np.copyto(f, s1)
        np.matmul(a, w_hh, out=dh_next)          # (B, 4H) @ (4H, H): gradient of h_{t-1}
    dw_hh = _recurrent_weight_grad(gates, hs, h0)
    return gates, dw_hh, dh_next, dc


def _recurrent_weight_grad(da, hs, h0):
    """dW_hh = sum_t da_t.T @ h_{t-1}, as one large product over all steps after the loop."""
    T, B, G = da.shape
    H = hs.shape[2]
    dw = da[0].T @ h0
    if T > 1:
        dw += da[1:].reshape((T - 1) * B, G).T @ hs[:-1].reshape((T - 1) * B, H)
    return dw
