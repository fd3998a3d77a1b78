"""The LSTM's two classic variants, alone or together: peephole connections and coupled gates.

Dimension letters: T time steps, B batch, H hidden size, G the gates side by side (4H, or 3H
with coupled gates).

Peepholes (Gers and Schmidhuber, 2000), in the diagonal form of Gers, Schraudolph and Schmidhuber
(2002) and Keras/TensorFlow: the gates also read the cell state, through (H,) vectors w_c*:
    i = sigmoid(a_i + w_ci * c_{t-1})     f = sigmoid(a_f + w_cf * c_{t-1})
    g = tanh(a_g)                         c_t = f * c_{t-1} + i * g
    o = sigmoid(a_o + w_co * c_t)         h_t = o * tanh(c_t)
Coupled gates drop the input gate and let the forget gate decide both what is kept and what is
written: c_t = f * c_{t-1} + (1 - f) * g, gates f, g, o (G = 3H; with peepholes, no w_ci).
Here a = x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh, in the gate order above (i, f, g, o or
f, g, o); as in lstm.py, the caller computes the input half for all T steps in one product.

`variant_forward(xproj, w_hh, peep, h0, c0)` returns `(hs, (h_T, c_T), cache)`, with `peep` the
peephole vectors (w_ci, w_cf, w_co) (w_ci None when coupled) or None; `variant_backward(dhs, cache)`
returns the gradients of xproj, W_hh, the peephole vectors and the initial state. The plain LSTM
stays in lstm.py, whose fused GPU kernels these lines do not have; they run on NumPy or CuPy alike.
"""

import functools

import numpy as np

from .backend import array_module
from .lstm import _recurrent_weight_grad


@functools.lru_cache(maxsize=32)
def _constants(G, coupled, dtype, xp=np):
    """As lstm.gate_constants, for this layout: gates = tanh(a * scale) * scale + shift activates
    every gate in one pass (sigmoid = 0.5 tanh(0.5 x) + 0.5), and each gate's derivative at its
    output y is (1 - y) * (y + dshift). (Cached: treat as read-only.)"""
    H = G // (3 if coupled else 4)
    tanh = np.zeros(G, bool)
    g = 1 if coupled else 2                        # the candidate's position among the gates
    tanh[g * H:(g + 1) * H] = True
    scale = np.where(tanh, 1.0, 0.5).astype(dtype)
    shift = np.where(tanh, 0.0, 0.5).astype(dtype)
    return xp.asarray(scale), xp.asarray(shift), xp.asarray(tanh.astype(dtype))


def _activate(a, scale, shift):
    """Activate the gates in place (any leading columns of a row, with their constants)."""
    xp = array_module(a)
    a *= scale
    xp.tanh(a, out=a)
    a *= scale
    a += shift


def cell_forward(a, rec, c_prev, c_out, h_out, scratch, peep, coupled):
    """One step. a + rec: (B, G) pre-activations without the peephole terms; a is overwritten with
    the activated gates. c_prev (B, H); writes c_out, h_out (B, H); scratch (B, H). Shared by the
    training forward and the sampler."""
    xp = array_module(a)
    H = c_prev.shape[1]
    G = a.shape[1]
    scale, shift, _ = _constants(G, coupled, a.dtype, xp)
    a += rec
    f0 = 0 if coupled else H                          # the forget gate's first column
    if peep is not None:                              # i and f read c_{t-1}; o waits for c_t
        w_ci, w_cf, _ = peep
        if not coupled:
            xp.multiply(c_prev, w_ci, out=scratch)
            a[:, :H] += scratch
        xp.multiply(c_prev, w_cf, out=scratch)
        a[:, f0:f0 + H] += scratch
        _activate(a[:, :G - H], scale[:G - H], shift[:G - H])
    else:
        _activate(a, scale, shift)
    f, g, o = a[:, f0:f0 + H], a[:, G - 2 * H:G - H], a[:, G - H:]
    if coupled:                                       # c = g + f * (c_prev - g)
        xp.subtract(c_prev, g, out=scratch)
        scratch *= f
        xp.add(g, scratch, out=c_out)
    else:                                             # c = f * c_prev + i * g
        xp.multiply(f, c_prev, out=c_out)
        xp.multiply(a[:, :H], g, out=scratch)
        c_out += scratch
    if peep is not None:                              # o = sigmoid(a_o + w_co * c_t)
        xp.multiply(c_out, peep[2], out=scratch)
        o += scratch
        _activate(o, scale[G - H:], shift[G - H:])
    xp.tanh(c_out, out=scratch)
    xp.multiply(o, scratch, out=h_out)


def variant_forward(xproj, w_hh, peep, h0, c0, coupled, keep_cache=True):
    """Run one layer over a window.

    xproj: (T, B, G) input projections x_t @ W_ih.T + b_ih + b_hh; overwritten with the gates, which
        the cache keeps. w_hh: (G, H). peep: (w_ci, w_cf, w_co), each (H,) (w_ci None when
        coupled), or None. h0, c0: (B, H) initial state (not modified).
    Returns hs (T, B, H), (h_T, c_T) as new arrays, and the cache (None unless keep_cache).
    """
    T, B, G = xproj.shape
    H = h0.shape[1]
    dt = xproj.dtype
    xp = array_module(xproj)
    w_hh_t = xp.ascontiguousarray(w_hh.T)
    hs = xp.empty((T, B, H), dt)
    cs = xp.empty((T, B, H), dt) if keep_cache else xp.empty((2, B, H), dt)
    rec, scratch = xp.empty((B, G), dt), xp.empty((B, H), dt)
    h_prev, c_prev = h0, c0
    for t in range(T):
        xp.matmul(h_prev, w_hh_t, out=rec)
        c_t = cs[t] if keep_cache else cs[t % 2]          # without a cache, two rotating buffers
        cell_forward(xproj[t], rec, c_prev, c_t, hs[t], scratch, peep, coupled)
        h_prev, c_prev = hs[t], c_t
    final = (h_prev.copy(), c_prev.copy())
    cache = (xproj, cs, hs, h0, c0, w_hh, peep, coupled) if keep_cache else None
    return hs, final, cache


def variant_backward(dhs, cache, dh_T=None, dc_T=None):
    """Backpropagate through one layer's window.

    dhs: (T, B, H) gradient of the loss with respect to each h_t; dh_T, dc_T: optional (B, H)
    gradients of the final state. Returns dxproj (T, B, G), dw_hh (G, H), dpeep (the gradients of
    w_ci, w_cf, w_co, None where there is no such vector) or None, dh0, dc0 (B, H).
    The cached gates become dxproj in place, so a cache serves one backward only; tanh(c_t) is
    recomputed rather than cached. Each step first finds o's pre-activation gradient, since with
    peepholes it reaches c_t, then the other gates' (the gradient reaching each gate's output,
    `up`, times its derivative, `local`).
    """
    gates, cs, hs, h0, c0, w_hh, peep, coupled = cache
    T, B, G = gates.shape
    H = h0.shape[1]
    dt = gates.dtype
    xp = array_module(gates)
    _, _, dshift = _constants(G, coupled, dt, xp)
    dh_next = xp.zeros((B, H), dt) if dh_T is None else dh_T.astype(dt, copy=True)
    dc = xp.zeros((B, H), dt) if dc_T is None else dc_T.astype(dt, copy=True)
    dh, tanh_c, s = xp.empty((B, H), dt), xp.empty((B, H), dt), xp.empty((B, H), dt)
    up, local = xp.empty((B, G), dt), xp.empty((B, G), dt)
    f0 = 0 if coupled else H
    for t in range(T - 1, -1, -1):
        a = gates[t]
        c_prev = cs[t - 1] if t > 0 else c0
        f, g, o = a[:, f0:f0 + H], a[:, G - 2 * H:G - H], a[:, G - H:]
        xp.add(dhs[t], dh_next, out=dh)
        xp.add(a, dshift, out=local)                  # each gate's derivative (1 - y)(y + dshift)
        xp.subtract(1, a, out=up)
        local *= up
        xp.tanh(cs[t], out=tanh_c)
        # dc += dh * o * (1 - tanh(c)^2), then o's slot becomes its pre-activation gradient
        xp.multiply(tanh_c, tanh_c, out=s)
        xp.subtract(1, s, out=s)
        s *= o
        s *= dh
        dc += s
        xp.multiply(dh, tanh_c, out=o)
        o *= local[:, G - H:]
        if peep is not None:                          # o read c_t through w_co
            xp.multiply(o, peep[2], out=s)
            dc += s
        # the gradient reaching the outputs of i (if any), f and g
        if coupled:                                   # c = g + f * (c_prev - g)
            xp.subtract(c_prev, g, out=up[:, :H])
            up[:, :H] *= dc                           # f
            xp.subtract(1, f, out=up[:, H:2 * H])
            up[:, H:2 * H] *= dc                      # g
        else:                                         # c = f * c_prev + i * g
            xp.multiply(dc, g, out=up[:, :H])                   # i
            xp.multiply(dc, c_prev, out=up[:, H:2 * H])         # f
            xp.multiply(dc, a[:, :H], out=up[:, 2 * H:3 * H])   # g
        dc *= f                                       # now the gradient of c_{t-1} through f
        head = a[:, :G - H]                           # every gate but o
        xp.multiply(up[:, :G - H], local[:, :G - H], out=head)
        if peep is not None:                          # i and f read c_{t-1}
            if not coupled:
                xp.multiply(a[:, :H], peep[0], out=s)
                dc += s
            xp.multiply(f, peep[1], out=s)
            dc += s
        xp.matmul(a, w_hh, out=dh_next)               # (B, G) @ (G, H): gradient of h_{t-1}
    dw_hh = _recurrent_weight_grad(gates, hs, h0)
    dpeep = None
    if peep is not None:                              # sum over steps and rows of da * c
        dpeep = (None if coupled else _peephole_grad(gates[:, :, :H], cs, c0),
                 _peephole_grad(gates[:, :, f0:f0 + H], cs, c0),
                 _peephole_grad(gates[:, :, G - H:], cs, None))
    return gates, dw_hh, dpeep, dh_next, dc


def _peephole_grad(da, cs, c0):
    """sum over t and b of da_t * c_{t-1} (with c_{-1} = c0), or of da_t * c_t when c0 is None."""
    xp = array_module(da)
    if c0 is None:
        return xp.einsum("tbh,tbh->h", da, cs)
    grad = xp.einsum("bh,bh->h", da[0], c0)
    if len(da) > 1:
        grad += xp.einsum("tbh,tbh->h", da[1:], cs[:-1])
    return grad
