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

The kernels run on NumPy or CuPy arrays alike (`xp` is the arrays' module, see backend.py). On a
GPU, the elementwise lines of one step become one fused kernel each way (fused.py), which tests
hold equal to the NumPy lines here.
"""

import functools

import numpy as np

from . import fused
from .backend import array_module


# From this hidden size on, the CPU computes each step's recurrent products transposed (W_hh @ h^T
# and W_hh^T @ da^T): OpenBLAS's small-batch products run faster that way round for wide layers
# (B 32: 1 x 640 0.75 against 1.14 ms forward, 0.75 against 0.88 backward; 1 x 352 0.22 against
# 0.26), while at 2 x 128 the transposed read costs more than it saves (bench: 0.92-0.99x).
TRANSPOSED_FROM = 256


@functools.lru_cache(maxsize=16)
def gate_constants(H, dtype, xp=np):
    """Per-column constants that let all four gates be activated by a few calls over (B, 4H).

    sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5, so with `scale` = 0.5 on the i, f, o columns and 1 on
    g, and `shift` = 0.5 on i, f, o and 0 on g:  gates = tanh(a * scale) * scale + shift.
    `dshift` = 1 on g, 0 elsewhere, gives every gate's derivative as (1 - y) * (y + dshift):
    y (1 - y) for a sigmoid, (1 - y)(1 + y) = 1 - y^2 for tanh. (Cached: treat as read-only.)
    """
    sig = np.ones(4 * H, bool)
    sig[2 * H:3 * H] = False
    scale = np.where(sig, 0.5, 1.0).astype(dtype)
    shift = np.where(sig, 0.5, 0.0).astype(dtype)
    return xp.asarray(scale), xp.asarray(shift), xp.asarray((~sig).astype(dtype))


def activate_gates(a):
    """(B, 4H) pre-activations -> activated gates i, f, g, o, in place: three calls over 4H."""
    xp = array_module(a)
    scale, shift, _ = gate_constants(a.shape[1] // 4, a.dtype, xp)
    a *= scale
    xp.tanh(a, out=a)
    a *= scale
    a += shift
    return a


def cell_forward(a, rec, c_prev, c_out, h_out, tanh_c):
    """One time step of the cell, given the pre-activations as two parts.

    a + rec: (B, 4H) pre-activations (input part a, recurrent part rec); a is overwritten in place
    with the activated gates i, f, g, o. c_prev: (B, H). Writes c_out (B, H), h_out (B, H); tanh_c
    (B, H) is scratch. Shared by the training forward and the sampler, so both compute exactly the
    same cell. On CuPy arrays all of it is one fused kernel (fused.cell_forward).
    """
    xp = array_module(a)
    if xp is not np:
        fused.cell_forward(a, rec, c_prev, c_out, h_out)
        return
    H = c_prev.shape[1]
    a += rec
    activate_gates(a)
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
    xp = array_module(xproj)
    hs = xp.empty((T, B, H), dt)
    cs = xp.empty((T, B, H), dt) if keep_cache else xp.empty((2, B, H), dt)
    tanh_c = xp.empty((B, H), dt)
    if xp is np and H >= TRANSPOSED_FROM:
        # The recurrent part as W_hh @ h^T, (4H, H) @ (H, B): OpenBLAS computes it faster than
        # h @ W_hh^T for a wide layer and a small batch, and the cell reads it back transposed,
        # in the pass that adds it.
        rec_t = np.empty((G, B), dt)
        recurrent = lambda h: np.matmul(w_hh, h.T, out=rec_t).T   # noqa: E731
    else:
        w_hh_t = xp.ascontiguousarray(w_hh.T)            # (H, 4H): one copy, a faster product
        rec = xp.empty((B, G), dt)
        recurrent = lambda h: xp.matmul(h, w_hh_t, out=rec)     # noqa: E731
    h_prev, c_prev = h0, c0
    for t in range(T):
        a = xproj[t]                                     # (B, 4H)
        rec = recurrent(h_prev)                          # h_{t-1} @ W_hh.T, (B, 4H)
        c_t = cs[t] if keep_cache else cs[t % 2]         # without a cache, two rotating c buffers
        cell_forward(a, rec, c_prev, c_t, hs[t], tanh_c)
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

    Each step works on whole (B, 4H) rows where it can: the gradient reaching each gate's output
    (`up` = [dc*g, dc*c_prev, dc*i, dh*tanh(c)] for i, f, g, o) times each gate's derivative
    (`local`, see gate_constants) is the pre-activation gradient, written over the gates.
    """
    gates, cs, hs, h0, c0, w_hh = cache
    T, B, G = gates.shape
    H = G // 4
    dt = gates.dtype
    xp = array_module(gates)
    _, _, dshift = gate_constants(H, dt, xp)
    dh_next = xp.zeros((B, H), dt) if dh_T is None else dh_T.astype(dt, copy=True)
    dc = xp.zeros((B, H), dt) if dc_T is None else dc_T.astype(dt, copy=True)
    if xp is np:                                         # scratch of the NumPy lines below
        dh, tanh_c, s = np.empty((B, H), dt), np.empty((B, H), dt), np.empty((B, H), dt)
        dh_next_t = np.empty((H, B), dt)
        up, local = np.empty((B, G), dt), np.empty((B, G), dt)
    for t in range(T - 1, -1, -1):
        a = gates[t]
        c_prev = cs[t - 1] if t > 0 else c0
        if xp is not np:                                 # the lines below, as one GPU kernel
            fused.cell_backward(a, cs[t], c_prev, dhs[t], dh_next, dc)
            xp.matmul(a, w_hh, out=dh_next)
            continue
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        np.add(dhs[t], dh_next, out=dh)
        np.tanh(cs[t], out=tanh_c)               # recomputed, not cached
        # dc += dh * o * (1 - tanh(c)^2): the cell's gradient through this step's output
        np.multiply(tanh_c, tanh_c, out=s)
        np.subtract(1, s, out=s)
        s *= o
        s *= dh
        dc += s
        # the gradient reaching each gate's output
        np.multiply(dc, g, out=up[:, :H])                # i
        np.multiply(dc, c_prev, out=up[:, H:2 * H])      # f
        np.multiply(dc, i, out=up[:, 2 * H:3 * H])       # g
        np.multiply(dh, tanh_c, out=up[:, 3 * H:])       # o
        dc *= f                                          # now the gradient of c_{t-1}
        # each gate's derivative at its output y: (1 - y) * (y + dshift)
        np.add(a, dshift, out=local)
        np.subtract(1, a, out=a)
        a *= local
        a *= up                                          # the gates become their gradient
        # the gradient of h_{t-1}: a @ W_hh, (B, 4H) @ (4H, H); for a wide layer as
        # (W_hh^T @ a^T)^T, faster there (see TRANSPOSED_FROM)
        if H >= TRANSPOSED_FROM:
            dh_next = np.matmul(w_hh.T, a.T, out=dh_next_t).T
        else:
            np.matmul(a, w_hh, out=dh_next)
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
