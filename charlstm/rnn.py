"""The vanilla (Elman) RNN layer with tanh, as torch.nn.RNN computes it: pure forward and backward.

Dimension letters: T time steps, B batch, H hidden size (G = H: one "gate").

    h_t = tanh(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)

The caller sums the input half and both biases for all T steps in one product before the loop
(`xproj`, as for the LSTM); each step adds one (B, H) @ (H, H) product. There is no cell state:
`c` passes through unchanged, so every cell shares the LSTM's (h, c) state layout.

`rnn_forward` returns `(hs, (h_T, c_T), cache)`; `rnn_backward(dhs, cache)` returns the gradient of
`xproj` (whose sum over T and B is the gradient of both biases), of `W_hh` and of the initial state.
The kernels run on NumPy or CuPy arrays alike (`xp`, see backend.py).
"""

from .backend import array_module
from .lstm import _recurrent_weight_grad


def cell_forward(a, rec, h_out):
    """One step: h_out = tanh(a + rec), for (B, H) input part a (overwritten) and recurrent part
    rec. Shared by the training forward and the sampler."""
    xp = array_module(a)
    a += rec
    xp.tanh(a, out=h_out)


def rnn_forward(xproj, w_hh, h0, c0, keep_cache=True):
    """Run one layer over a window.

    xproj: (T, B, H) input projections x_t @ W_ih.T + b_ih + b_hh (overwritten; kept by the cache).
    w_hh: (H, H).  h0: (B, H) initial state; c0 (B, H) is passed through.
    Returns hs (T, B, H), (h_T, c_T) as new arrays, and the cache (None unless keep_cache).
    """
    T, B, H = xproj.shape
    xp = array_module(xproj)
    w_hh_t = xp.ascontiguousarray(w_hh.T)            # one copy per window, faster products per step
    hs = xp.empty((T, B, H), xproj.dtype)
    rec = xp.empty((B, H), xproj.dtype)              # reused each step for h_{t-1} @ W_hh.T
    h_prev = h0
    for t in range(T):
        xp.matmul(h_prev, w_hh_t, out=rec)
        cell_forward(xproj[t], rec, hs[t])
        h_prev = hs[t]
    final = (h_prev.copy(), c0.copy())
    cache = (xproj, hs, h0, c0, w_hh) if keep_cache else None
    return hs, final, cache


def rnn_backward(dhs, cache, dh_T=None, dc_T=None):
    """Backpropagate through one layer's window.

    dhs: (T, B, H) gradient of the loss with respect to each h_t; dh_T, dc_T: optional (B, H)
    gradients of the final state. Returns dxproj (T, B, H), dw_hh (H, H), dh0, dc0 (B, H).
    The xproj buffer in the cache becomes dxproj, so a cache serves one backward only.
    """
    xproj, hs, h0, c0, w_hh = cache
    T, B, H = xproj.shape
    xp = array_module(xproj)
    dh_next = xp.zeros_like(h0) if dh_T is None else dh_T.astype(h0.dtype, copy=True)
    dh = xp.empty_like(h0)
    # tanh's derivative 1 - h_t^2 for every step at once, into the spent pre-activations
    xp.multiply(hs, hs, out=xproj)
    xp.subtract(1, xproj, out=xproj)
    for t in range(T - 1, -1, -1):
        da = xproj[t]
        xp.add(dhs[t], dh_next, out=dh)
        da *= dh                                          # the pre-activation's gradient
        xp.matmul(da, w_hh, out=dh_next)                  # (B, H) @ (H, H): gradient of h_{t-1}
    dw_hh = _recurrent_weight_grad(xproj, hs, h0)
    dc0 = xp.zeros_like(c0) if dc_T is None else dc_T.astype(c0.dtype, copy=True)
    return xproj, dw_hh, dh_next, dc0
