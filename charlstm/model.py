"""The character model: embedding -> L recurrent layers -> dropout -> head, forward and backward.

Dimension letters: B batch, T time, V vocabulary, E embedding, H hidden, L layers, G the gate
columns of a layer (4H for the LSTM; see cells.py).

Parameters are one flat `name -> array` dict whose names, shapes and gate order are exactly those of
    Embedding(V, E) -> LSTM(E, H, L) -> Linear(H, V)
in PyTorch (`embedding.weight`, `lstm.weight_ih_l{k}`, `lstm.weight_hh_l{k}`, `lstm.bias_ih_l{k}`,
`lstm.bias_hh_l{k}`, `head.weight`, `head.bias`), so `load_state_dict` takes them as they are; with
model.cell gru or rnn, nn.GRU or nn.RNN under `gru.` or `rnn.`, and the LSTM's variants add their
peephole vectors (cells.py). The names say which cell a dict is for (`cells.of_params`). With
`embedding_size == 0` there is no embedding: the first layer reads one-hot characters (char-rnn).
All arrays of a dict are views into one flat buffer (see `alloc`), so the optimizer, gradient
clipping and checkpoints can treat the model as one vector. The arrays may be NumPy or CuPy
(`to_device` moves a flat buffer and its views): every function works in the parameters' array
module `xp`, and token arrays may come from the host either way.

Usage:
    params = init_params(V, model_cfg, rng)
    loss, cache, state = forward(params, x, y, state, dropout, rng)   # x, y: (B, T) tokens
    grads, (dh0, dc0) = backward(params, cache)                        # same names and shapes
"""

import math
import os

import numpy as np

from .backend import array_module
from .backend import to_device as _array_to_device
from .cells import Cell, of_params
from .errors import CharlstmError


def param_shapes(V, E, H, L, cell="lstm", peepholes=False, coupled_gates=False):
    """Ordered name -> shape, in the order of PyTorch's state_dict."""
    spec = Cell(cell, peepholes, coupled_gates)
    shapes = {}
    if E > 0:
        shapes["embedding.weight"] = (V, E)
    for k in range(L):
        d_in = (E if E > 0 else V) if k == 0 else H
        shapes.update(spec.layer_shapes(k, d_in, H))
    shapes["head.weight"] = (V, H)
    shapes["head.bias"] = (V,)
    return shapes


def param_count(V, E, H, L, cell="lstm", peepholes=False, coupled_gates=False, core=False):
    """The number of parameters param_shapes would list, without listing them: a typo such as
    num_layers 1000000000 must not build a billion-entry dict before it is refused. `core`: the
    recurrent layers' alone (no embedding, no head)."""
    spec = Cell(cell, peepholes, coupled_gates)
    layer = [sum(math.prod(s) for s in spec.layer_shapes(k, (E if E > 0 else V) if k == 0 else H,
                                                         H).values()) for k in range(min(L, 2))]
    layers = sum(layer[:1]) + (L - 1) * sum(layer[1:])
    return layers if core else (V * E if E > 0 else 0) + layers + V * H + V


def config_shapes(V, model_cfg):
    """param_shapes for a ModelConfig: what a checkpoint of that config must hold."""
    m = model_cfg
    return param_shapes(V, m.embedding_size, m.hidden_size, m.num_layers, m.cell, m.peepholes,
                        m.coupled_gates)


def alloc(shapes, dtype=np.float32, xp=np):
    """A zeroed flat buffer and a dict of C-contiguous views into it, one per name."""
    flat = xp.zeros(sum(int(np.prod(s)) for s in shapes.values()), dtype)
    return flat, views(flat, shapes)


def to_device(flat, shapes, device):
    """(flat, views) moved to device "cpu" or "cuda" (the same buffer if it is already there)."""
    flat = _array_to_device(flat, device)
    return flat, views(flat, shapes)


def views(flat, shapes):
    """name -> view of `flat`, laid out one after another in the order of `shapes`."""
    out, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return out


def shapes_of(params):
    return {name: p.shape for name, p in params.items()}


def dims(params):
    """(V, E, H, L) read back from the parameter shapes."""
    V, H = params["head.weight"].shape
    E = params["embedding.weight"].shape[1] if "embedding.weight" in params else 0
    L = sum(1 for name in params if ".weight_hh_l" in name)
    return V, E, H, L


def _check_fits(V, E, H, L, count, itemsize):
    """One clear line, before any allocation, for a net whose weights, gradients and AdamW's two
    moments alone would not fit in this machine's memory (a typo such as hidden_size 5120000)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):          # no sysconf (Windows): NumPy says
        return
    need = 4 * count * itemsize
    if need > memory:
        raise CharlstmError(
            f"model.hidden_size {_big(H)}, model.num_layers {_big(L)} and model.embedding_size "
            f"{_big(E)} with {V:,} symbols make {_big(count)} parameters, whose weights, "
            f"gradients and AdamW's moments need {_big(need // 2 ** 30)} GiB where this machine "
            f"has {memory / 2 ** 30:,.0f} GiB: lower model.hidden_size, model.num_layers or "
            "model.embedding_size")


def _big(n):
    """A whole number as 1,234,567, or past 10^15 as its power of ten (a typo's 1e30 is not
    worth 40 digits)."""
    return f"{n:,}" if n < 10 ** 15 else f"about 10^{len(str(n)) - 1}"


def init_params(V, model_cfg, rng, dtype=np.float32):
    """PyTorch's initialization: recurrent layers (peephole vectors too) and head uniform in
    +-1/sqrt(fan), embedding N(0, 1).

    For the LSTM, the forget gate's total bias (b_ih + b_hh) is set to `forget_bias`, which helps
    gradients flow through the cell early in training. Returns (flat, params).
    """
    E, H, L = model_cfg.embedding_size, model_cfg.hidden_size, model_cfg.num_layers
    cell = Cell.of_config(model_cfg)
    _check_fits(V, E, H, L, param_count(V, E, H, L, cell.name, cell.peepholes, cell.coupled_gates),
                np.dtype(dtype).itemsize)
    shapes = param_shapes(V, E, H, L, cell.name, cell.peepholes, cell.coupled_gates)
    flat, params = alloc(shapes, dtype)
    for name, p in params.items():
        if name == "embedding.weight":
            p[...] = rng.standard_normal(p.shape)
        else:                                 # recurrent layers and Linear(H, V) all use fan H
            bound = 1.0 / np.sqrt(H)
            p[...] = rng.uniform(-bound, bound, p.shape)
    forget = cell.forget_columns(H)
    for k in range(L if forget else 0):
        params[f"lstm.bias_ih_l{k}"][forget] = model_cfg.forget_bias
        params[f"lstm.bias_hh_l{k}"][forget] = 0.0
    return flat, params


def init_state(L, B, H, dtype=np.float32, xp=np):
    """Zero hidden and cell state: (h, c), each (L, B, H)."""
    return xp.zeros((L, B, H), dtype), xp.zeros((L, B, H), dtype)


def _input_table(params, cell):
    """Layer 0's input projection for every character, its input biases included: (V, G).

    The first layer's input is a character, so x_t @ W_ih.T is a row of this table: the projection
    of a whole window is a row gather instead of a matrix product over B*T rows.
    """
    w = params[f"{cell.name}.weight_ih_l0"]
    b = sum(cell.input_biases(params, 0))
    if "embedding.weight" in params:
        return params["embedding.weight"] @ w.T + b          # (V, E) @ (E, G)
    return w.T + b                                           # one-hot input: the table is W_ih.T


DRAWS = ("counter", "host")   # how dropout masks are drawn (_dropout_mask)


def _dropout_mask(shape, p, rng, dtype, xp=np, draw="counter"):
    """Inverted dropout: keep with probability 1-p and scale by 1/(1-p), so eval needs no change.

    Counter-based, as cuRAND's Philox: the host's generator draws one 64-bit key, SplitMix64's
    finalizer hashes the counters key + i * golden ratio, and each 64-bit hash gives four 16-bit
    draws; an element is kept when its draw is at least p * 65536. The mask is made on the device
    that uses it, the same on a CPU and a GPU, for one host draw: drawing every element on the
    host made a 1 x 2048 GPU step with weight drop (4H x H = 16.8M elements) 13 times as slow as
    without (benchmarks/RESULTS.md, "The recipe on a GPU"). draw "host": _host_mask, as runs
    that started before the counter draw go on drawing.
    """
    if draw == "host":
        return _host_mask(shape, p, rng, dtype, xp)
    n = math.prod(shape)
    bits = xp.arange((n + 3) // 4, dtype=xp.uint64)
    bits *= np.uint64(0x9E3779B97F4A7C15)
    bits += rng.integers(0, 2 ** 64, dtype=np.uint64)
    bits ^= bits >> np.uint64(30)
    bits *= np.uint64(0xBF58476D1CE4E5B9)
    bits ^= bits >> np.uint64(27)
    bits *= np.uint64(0x94D049BB133111EB)
    bits ^= bits >> np.uint64(31)
    mask = (bits.view(xp.uint16)[:n] >= np.uint16(min(round(p * 65536), 65535))).astype(dtype)
    mask *= dtype.type(1.0 / (1.0 - p))
    return mask.reshape(shape)


def _host_mask(shape, p, rng, dtype, xp=np):
    """The mask of runs whose checkpoints record no mask draw: every element drawn on the host."""
    mask = (rng.random(shape, dtype=np.float32) >= p).astype(dtype)
    mask *= 1.0 / (1.0 - p)
    return xp.asarray(mask)


def forward(params, x, y, state, dropout=0.0, rng=None, keep_cache=True, rows=None,
            weight_drop=0.0, dropout_mask="step", draw="counter"):
    """Forward a (B, T) window of tokens; y (B, T) are the targets (the next characters).

    state: (h, c), each (L, B, H), carried in from the previous window (not modified).
    dropout > 0 needs `rng` and applies between layers and before the head; dropout_mask "step"
    draws a fresh mask for every time step, "window" one mask per row shared by all T steps of
    the window (variational dropout, Gal & Ghahramani 2016; AWD-LSTM's locked dropout); `draw`
    how the masks are drawn (DRAWS, _dropout_mask).
    weight_drop > 0 needs `rng`: DropConnect on each recurrent matrix W_hh (AWD-LSTM's weight drop),
    one mask per layer and window, shared by every row and time step.
    rows: (slice, full batch size) when x holds only some rows of a larger batch (data-parallel
    ranks): the dropout masks are drawn for the full batch and sliced, exactly as one process
    training the full batch would draw them.
    Returns (loss, cache, new_state): loss is the mean cross-entropy in nats; cache is None when
    keep_cache is False (evaluation).
    """
    V, E, H, L = dims(params)
    cell = of_params(params)
    B, T = x.shape
    dt = params["head.weight"].dtype
    xp = array_module(params["head.weight"])
    h0, c0 = state
    xt = xp.ascontiguousarray(xp.asarray(x).T)               # (T, B): time-major inside
    table = _input_table(params, cell)
    inp = None
    layers, masks, h_new, c_new = [], [], xp.empty_like(h0), xp.empty_like(c0)
    for k in range(L):
        layer = cell.layer(params, k)
        wmask = None
        if weight_drop > 0:                # drawn first, for every rank alike (same rng stream)
            wmask = _dropout_mask(layer["weight_hh"].shape, weight_drop, rng, dt, xp, draw)
            layer["weight_hh"] = layer["weight_hh"] * wmask
        if k == 0:
            xproj = xp.take(table, xt, axis=0)                # (T, B, G) row gather
        else:
            w_ih_t = xp.ascontiguousarray(params[f"{cell.name}.weight_ih_l{k}"].T)  # faster
            xproj = inp.reshape(T * B, H) @ w_ih_t
            for b in cell.input_biases(params, k):
                xproj += b
            xproj = xproj.reshape(T, B, w_ih_t.shape[1])
        hs, (h_new[k], c_new[k]), cache = cell.forward(xproj, layer, h0[k], c0[k], keep_cache)
        mask = None
        if dropout > 0:                    # (T or 1, B, H): a window mask broadcasts over time
            steps = T if dropout_mask == "step" else 1
            if rows is None:
                mask = _dropout_mask((steps, B, H), dropout, rng, dt, xp, draw)
            else:
                mask = _dropout_mask((steps, rows[1], H), dropout, rng, dt, xp, draw)[:, rows[0]]
            hs = hs * mask
        layers.append((inp, cache))
        masks.append((mask, wmask))
        inp = hs                                              # (T, B, H)
    top = inp.reshape(T * B, H)
    logits = top @ params["head.weight"].T                    # (T*B, V)
    logits += params["head.bias"]
    targets = xp.ascontiguousarray(xp.asarray(y).T).reshape(-1)
    loss, probs = softmax_cross_entropy(logits, targets)
    cache = (xt, table, layers, masks, top, probs, targets) if keep_cache else None
    return loss, cache, (h_new, c_new)


# A trained model gives the characters it rules out probabilities like e^-100: subnormal floats,
# which x86 handles in microcode, and the backward's products with them ran 1.5 times slower (a
# 1 x 288 net on 744 symbols, benchmarks/RESULTS.md "Subnormal floats"). A logit at least 50 below
# its row's maximum counts as 50 below: no probability moves by more than e^-50 (2e-22), the loss
# (which reads the target's logit before the floor) by less than V e^-50, and for any V * N
# below 1e16 every gradient of the head stays a normal float.
LOGIT_FLOOR = -50.0


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy of (N, V) logits against (N,) targets; logits become probabilities in place.

    Computed as logsumexp(z) - z[target] after subtracting the row maximum, so it never overflows.
    Below the maximum by more than -LOGIT_FLOOR, a logit counts as LOGIT_FLOOR (see there).
    Returns (loss, probs) with probs the same buffer as logits.
    """
    N = logits.shape[0]
    xp = array_module(logits)
    logits -= logits.max(axis=1, keepdims=True)
    picked = logits[xp.arange(N), targets]                    # z[target] - max
    xp.maximum(logits, LOGIT_FLOOR, out=logits)
    xp.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    logits /= total
    loss = float(xp.mean(xp.log(total[:, 0].astype(np.float64)) - picked))
    return loss, logits


def backward(params, cache, grads=None):
    """Gradients of the mean loss for every parameter, as a dict with the same names and shapes.

    grads: optional preallocated dict (from `alloc`) to write into; every entry is overwritten.
    The cache is consumed: its buffers are reused in place for gradients.
    Also returns (dh0, dc0), each (L, B, H): the gradient of the initial state.
    """
    V, E, H, L = dims(params)
    cell = of_params(params)
    p = cell.name
    xt, table, layers, masks, top, probs, targets = cache
    T, B = xt.shape
    xp = array_module(probs)
    if grads is None:
        _, grads = alloc(shapes_of(params), probs.dtype, xp)
    # softmax + cross-entropy backward, in place: (probs - onehot(target)) / N
    dlogits = probs
    dlogits[xp.arange(T * B), targets] -= 1.0
    dlogits /= T * B
    xp.matmul(dlogits.T, top, out=grads["head.weight"])       # (V, N) @ (N, H)
    xp.sum(dlogits, axis=0, out=grads["head.bias"])
    dout = (dlogits @ params["head.weight"]).reshape(T, B, H)
    dh0, dc0 = xp.empty((L, B, H), probs.dtype), xp.empty((L, B, H), probs.dtype)
    for k in range(L - 1, -1, -1):
        inp, cache_k = layers[k]
        mask, wmask = masks[k]
        if mask is not None:
            dout *= mask
        dxproj, layer_grads, dh0[k], dc0[k] = cell.backward(dout, cache_k)
        if wmask is not None:
            layer_grads["weight_hh"] *= wmask      # the gradient of W_hh through W_hh * mask
        for name, g in layer_grads.items():        # weight_hh, and bias_hh, peepholes if apart
            grads[f"{p}.{name}_l{k}"][...] = g
        da = dxproj.reshape(T * B, dxproj.shape[2])
        db = grads[f"{p}.bias_ih_l{k}"]
        if k > 0:
            xp.sum(da, axis=0, out=db)
            xp.matmul(da.T, inp.reshape(T * B, H), out=grads[f"{p}.weight_ih_l{k}"])
            # dout is spent (BPTT above consumed it): the next layer's gradient goes in its place
            xp.matmul(da, params[f"{p}.weight_ih_l{k}"], out=dout.reshape(T * B, H))
        else:
            dtable = _scatter_rows(da, xt.reshape(-1), V)      # (V, G)
            xp.sum(dtable, axis=0, out=db)                     # V rows to add, not T * B
            if E > 0:
                xp.matmul(dtable.T, params["embedding.weight"], out=grads[f"{p}.weight_ih_l0"])
                xp.matmul(dtable, params[f"{p}.weight_ih_l0"], out=grads["embedding.weight"])
            else:
                grads[f"{p}.weight_ih_l0"][...] = dtable.T
        if "bias_hh" not in layer_grads:           # both biases were summed into xproj
            grads[f"{p}.bias_hh_l{k}"][...] = db
        # Release this layer's activations now rather than when the cache goes: the peak memory
        # of a step is then the forward's caches plus one layer's gradients, not two layers'.
        layers[k] = masks[k] = None
        del inp, cache_k, dxproj, da, layer_grads
    return grads, (dh0, dc0)


def _scatter_rows(rows, index, V):
    """out[v] = sum of rows[n] where index[n] == v, for (N, G) rows: the gather's backward.

    Done as a small one-hot matrix product over the characters present in the batch, which BLAS
    runs many times faster than np.add.at's unbuffered scatter.
    """
    xp = array_module(rows)
    present, inverse = xp.unique(index, return_inverse=True)
    onehot = xp.zeros((len(present), len(index)), rows.dtype)
    onehot[inverse.reshape(-1), xp.arange(len(index))] = 1.0
    out = xp.zeros((V, rows.shape[1]), rows.dtype)
    out[present] = onehot @ rows
    return out


# ---------------------------------------------------------------------------------------------
# One step at a time, for sampling


def prepare_step(params):
    """Precompute what `step` needs: layer 0's input table and, for the other layers, the input
    and recurrent weights stacked so each layer is one (B, D+H) @ (D+H, G) product per step (the
    GRU, whose two parts meet inside the cell, keeps them apart: two products)."""
    V, E, H, L = dims(params)
    cell = of_params(params)
    xp = array_module(params["head.weight"])
    layers = []
    for k in range(L):
        layer = cell.layer(params, k)
        w_hh_t = xp.ascontiguousarray(layer["weight_hh"].T)                     # (H, G)
        w_ih_t = params[f"{cell.name}.weight_ih_l{k}"].T
        b = sum(cell.input_biases(params, k))
        if k == 0:
            layers.append((w_hh_t, None, None, layer))
        elif cell.splits_recurrent:
            layers.append((w_hh_t, xp.ascontiguousarray(w_ih_t), b, layer))
        else:
            w = xp.concatenate([w_ih_t, w_hh_t], axis=0)                      # (2H, G)
            layers.append((w, None, b, layer))
    return {"cell": cell, "table": _input_table(params, cell), "layers": layers,
            "head_t": xp.ascontiguousarray(params["head.weight"].T), "head_b": params["head.bias"]}


def step(prep, tokens, h, c):
    """Advance the model one character: tokens (B,) ints; h, c (L, B, H) updated in place.

    Returns logits (B, V) for the next character (on the parameters' device).
    """
    L, B, H = h.shape
    xp = array_module(h)
    cell = prep["cell"]
    xh = xp.empty((B, 2 * H), h.dtype)
    tokens = xp.asarray(tokens)
    for k, (w, w_ih_t, b, layer) in enumerate(prep["layers"]):
        if k == 0:
            a, rec = prep["table"][tokens], h[0] @ w          # (B, G) input and recurrent parts
        elif w_ih_t is not None:                              # the GRU: two products
            a, rec = h[k - 1] @ w_ih_t, h[k] @ w
            a += b
        else:
            xh[:, :H] = h[k - 1]                              # this step's output of the layer below
            xh[:, H:] = h[k]
            a, rec = xp.broadcast_to(b, (B, w.shape[1])).copy(), xh @ w   # bias rows; one product
        cell.step(a, rec, layer, h[k], c[k])
    logits = h[L - 1] @ prep["head_t"]
    logits += prep["head_b"]
    return logits
