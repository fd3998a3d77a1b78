"""The GRU layer (Cho et al., 2014) as torch.nn.GRU computes it: pure forward/backward kernels.

Dimension letters: T time steps, B batch, H hidden size, G = 3H, the gates side by side.

Gates in torch.nn.GRU's order r, z, n along the last axis, with a = x_t @ W_ih.T + b_ih (the input
part) and rec = h_{t-1} @ W_hh.T + b_hh (the recurrent part):
    r = sigmoid(a_r + rec_r)    reset gate          z = sigmoid(a_z + rec_z)    update gate
    n = tanh(a_n + r * rec_n)   candidate           h_t = (1 - z) * n + z * h_{t-1}
The reset gate scales the recurrent part of n alone, so unlike the LSTM's, the two parts cannot
be summed before the step, and b_hh stays on the recurrent side. The caller computes the input
parts of all T steps in one product before the loop (`xproj`); each step adds one fused
(B, H) @ (H, 3H) product. There is no cell state: `c` passes through unchanged.

`gru_forward` returns `(hs, (h_T, c_T), cache)`; `gru_backward(dhs, cache)` returns the gradients of
`xproj` (summed over T and B: of b_ih), of the recurrent parts (summed: of b_hh), of W_hh and of
the initial state. The kernels run on NumPy or CuPy arrays alike (`xp`, see backend.py).
"""

from .backend import array_module
from .lstm import _recurrent_weight_grad


def cell_forward(a, rec, h_prev, h_out, scratch):
    """One step. a: (B, 3H) input part, overwritten with the gates r, z, n; rec: (B, 3H)
    recurrent part, b_hh included (not modified). Writes h_out (B, H), which may be h_prev;
    scratch (B, H). Shared by the training forward and the sampler."""
    xp = array_module(a)
    H = h_prev.shape[1]
    rz = a[:, :2 * H]
    rz += rec[:, :2 * H]
    rz *= 0.5                                        # sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5
    xp.tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
    xp.multiply(r, rec[:, 2 * H:], out=scratch)
    n += scratch
    xp.tanh(n, out=n)
    xp.subtract(h_prev, n, out=scratch)              # h = n + z * (h_prev - n)
    scratch *= z
    xp.add(n, scratch, out=h_out)


def gru_forward(xproj, w_hh, b_hh, h0, c0, keep_cache=True):
    """Run one GRU layer over a window.

    xproj: (T, B, 3H) input parts x_t @ W_ih.T + b_ih; overwritten with the gates, which the cache
        keeps. w_hh: (3H, H), b_hh: (3H,).  h0: (B, H) initial state; c0 (B, H) is passed through.
    Returns hs (T, B, H), (h_T, c_T) as new arrays, and the cache (None unless keep_cache).
    """
    T, B, G = xproj.shape
    H = G // 3
    dt = xproj.dtype
    xp = array_module(xproj)
    w_hh_t = xp.ascontiguousarray(w_hh.T)            # (H, 3H): one copy, a faster product per step
    hs = xp.empty((T, B, H), dt)
    # the recurrent parts: every step's is kept for backward, or one buffer is reused
    recs = xp.empty((T, B, G), dt) if keep_cache else xp.empty((1, B, G), dt)
    scratch = xp.empty((B, H), dt)
    h_prev = h0
    for t in range(T):
        rec = recs[t] if keep_cache else recs[0]
        xp.matmul(h_prev, w_hh_t, out=rec)
        rec += b_hh
        cell_forward(xproj[t], rec, h_prev, hs[t], scratch)
        h_prev = hs[t]
    final = (h_prev.copy(), c0.copy())
    cache = (xproj, recs, hs, h0, c0, w_hh) if keep_cache else None
    return hs, final, cache


def gru_backward(dhs, cache, dh_T=None, dc_T=None):
    """Backpropagate through one GRU layer's window.

    dhs: (T, B, H) gradient of the loss with respect to each h_t; dh_T, dc_T: optional (B, H)
    gradients of the final state. Returns dxproj (T, B, 3H), dw_hh (3H, H), db_hh (3H,), dh0 and
    dc0 (B, H). The cached gates become dxproj and the cached recurrent parts their gradient, in
    place, so a cache serves one backward only.

    dxproj and drec share their r and z thirds (a and rec enter those gates as a sum); they differ
    in n: d(a_n) = dn_pre while d(rec_n) = dn_pre * r.
    """
    gates, recs, hs, h0, c0, w_hh = cache
    T, B, G = gates.shape
    H = G // 3
    dt = gates.dtype
    xp = array_module(gates)
    dh_next = xp.zeros((B, H), dt) if dh_T is None else dh_T.astype(dt, copy=True)
    dh, dz_direct, s = xp.empty((B, H), dt), xp.empty((B, H), dt), xp.empty((B, H), dt)
    local = xp.empty((B, 2 * H), dt)
    for t in range(T - 1, -1, -1):
        g, rec = gates[t], recs[t]
        h_prev = hs[t - 1] if t > 0 else h0
        r, z, n, rec_n = g[:, :H], g[:, H:2 * H], g[:, 2 * H:], rec[:, 2 * H:]
        xp.subtract(1, g[:, :2 * H], out=local)          # sigmoid's derivative y (1 - y), r and z
        local *= g[:, :2 * H]
        xp.add(dhs[t], dh_next, out=dh)
        # through h_t = n + z * (h_prev - n): to h_prev directly, to n and to z
        xp.multiply(dh, z, out=dz_direct)                # dh * z, added to dh_prev at the end
        xp.subtract(dh, dz_direct, out=s)                # dn = dh * (1 - z)
        xp.subtract(h_prev, n, out=z)                    # z's slot becomes dz = dh * (h_prev - n)
        z *= dh
        # n = tanh(a_n + r * rec_n): n's slot becomes dn_pre = dn * (1 - n^2)
        xp.multiply(n, n, out=n)
        xp.subtract(1, n, out=n)
        n *= s
        xp.multiply(n, rec_n, out=s)                     # dr = dn_pre * rec_n
        xp.multiply(n, r, out=rec_n)                     # rec's n slot becomes dn_pre * r
        xp.multiply(s, local[:, :H], out=r)              # r's slot becomes dr_pre
        z *= local[:, H:]                                # z's slot becomes dz_pre
        rec[:, :2 * H] = g[:, :2 * H]                    # the recurrent r, z parts: the same
        xp.matmul(rec, w_hh, out=dh_next)                # (B, 3H) @ (3H, H): gradient of h_{t-1}
        dh_next += dz_direct
    dw_hh = _recurrent_weight_grad(recs, hs, h0)
    db_hh = recs.reshape(T * B, G).sum(axis=0)
    dc0 = xp.zeros_like(c0) if dc_T is None else dc_T.astype(c0.dtype, copy=True)
    return gates, dw_hh, db_hh, dh_next, dc0
