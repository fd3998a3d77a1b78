"""Fused GPU kernels for the few places where CuPy would otherwise launch one kernel per NumPy line.

On the CPU, each line of `lstm.cell_forward` is one pass over a (B, 4H) buffer and that is fast.
On a GPU, each line is a kernel launch of a few microseconds, and one LSTM step would pay about a
dozen of them forward and fifteen backward, for arrays the GPU finishes in less time than it takes
to launch. So on CuPy arrays these three elementwise kernels replace those lines, one launch each:

    cell_forward(a, rec, c_prev, c_out, h_out)            # lstm.cell_forward
    cell_backward(a, c_t, c_prev, dh_out, dh_next, dc)    # one step of lstm.lstm_backward's loop
    adamw(flat, grad, m, v, decay_mask, ...)              # optim.adamw_step

They compute the same equations as the NumPy lines they stand beside (which stay the readable
reference), and tests/test_gpu.py holds each pair equal. Kernels compile on first use (a few
seconds, then cached by CuPy on disk). The cell kernels come in float32 and float64.
"""

import functools

import numpy as np

# One thread per (b, j) of a (B, H) state; gate k of that unit sits at column k*H + j of the
# (B, 4H) row b. Activations as in lstm.gate_constants: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5.
# Launched as raw kernels: they run once per layer and time step, where CuPy's generic kernel
# call would cost more host time than the GPU spends in them.
_CELL = r"""
extern "C" __global__ void lstm_cell_forward_SCALAR(
        const SCALAR* __restrict__ rec, const SCALAR* __restrict__ c_prev, SCALAR* a,
        SCALAR* c_out, SCALAR* h_out, const long long H, const long long n) {
    typedef SCALAR T;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long b = i / H, j = i - b * H, r = b * 4 * H + j;
    const T gi = tanh((a[r] + rec[r]) * (T)0.5) * (T)0.5 + (T)0.5;
    const T gf = tanh((a[r + H] + rec[r + H]) * (T)0.5) * (T)0.5 + (T)0.5;
    const T gg = tanh(a[r + 2 * H] + rec[r + 2 * H]);
    const T go = tanh((a[r + 3 * H] + rec[r + 3 * H]) * (T)0.5) * (T)0.5 + (T)0.5;
    a[r] = gi; a[r + H] = gf; a[r + 2 * H] = gg; a[r + 3 * H] = go;
    const T c = gf * c_prev[i] + gi * gg;
    c_out[i] = c;
    h_out[i] = go * tanh(c);
}

// The body of lstm_backward's time loop for one unit: a holds the activated gates and becomes
// their pre-activation gradient; dc enters as the gradient of c_t and leaves as that of c_{t-1}.
extern "C" __global__ void lstm_cell_backward_SCALAR(
        const SCALAR* __restrict__ c_t, const SCALAR* __restrict__ c_prev,
        const SCALAR* __restrict__ dh_out, const SCALAR* __restrict__ dh_next, SCALAR* a,
        SCALAR* dc, const long long H, const long long n) {
    typedef SCALAR T;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const long long b = i / H, j = i - b * H, r = b * 4 * H + j;
    const T gi = a[r], gf = a[r + H], gg = a[r + 2 * H], go = a[r + 3 * H];
    const T dh = dh_out[i] + dh_next[i];
    const T tc = tanh(c_t[i]);
    const T d = dc[i] + dh * go * ((T)1 - tc * tc);
    a[r] = d * gg * ((T)1 - gi) * gi;
    a[r + H] = d * c_prev[i] * ((T)1 - gf) * gf;
    a[r + 2 * H] = d * gi * ((T)1 - gg) * ((T)1 + gg);
    a[r + 3 * H] = dh * tc * ((T)1 - go) * go;
    dc[i] = d * gf;
}
"""

# torch.optim.AdamW's update, as optim.adamw_step computes it: decay first (biases masked out),
# then the moments, then the bias-corrected step.
_ADAMW = r"""
    T q = p - decay * mask * p;
    const T mm = b1 * m + ((T)1 - b1) * g;
    const T vv = b2 * v + ((T)1 - b2) * g * g;
    m = mm;
    v = vv;
    p = q - step * mm / (sqrt(vv) * bias2 + eps);
"""
_THREADS = 256


@functools.lru_cache(maxsize=None)
def _cell_kernels(dtype):
    import cupy
    scalar = {"float32": "float", "float64": "double"}[dtype.name]
    module = cupy.RawModule(code=_CELL.replace("SCALAR", scalar))
    return (module.get_function(f"lstm_cell_forward_{scalar}"),
            module.get_function(f"lstm_cell_backward_{scalar}"))


@functools.lru_cache(maxsize=None)
def _adamw_kernel():
    import cupy
    return cupy.ElementwiseKernel(
        "T g, T mask, T decay, T b1, T b2, T step, T bias2, T eps", "T p, T m, T v", _ADAMW,
        "charlstm_adamw")


def _launch(kernel, n, args):
    for a in args:
        if hasattr(a, "flags") and not a.flags.c_contiguous:
            raise ValueError("fused kernels take C-contiguous arrays")
    kernel(((n + _THREADS - 1) // _THREADS,), (_THREADS,), args)


def cell_forward(a, rec, c_prev, c_out, h_out):
    """a (B, 4H) += rec, then activated in place; writes c_out, h_out (B, H) from c_prev (B, H)."""
    B, H = c_prev.shape
    _launch(_cell_kernels(a.dtype)[0], B * H,
            (rec, c_prev, a, c_out, h_out, np.int64(H), np.int64(B * H)))


def cell_backward(a, c_t, c_prev, dh_out, dh_next, dc):
    """One step back: a (B, 4H) gates -> their pre-activation gradient; dc (B, H) -> dc_{t-1}.

    dh_out + dh_next is the gradient of this step's h_t (from above and from step t+1).
    """
    B, H = c_t.shape
    _launch(_cell_kernels(a.dtype)[1], B * H,
            (c_t, c_prev, dh_out, dh_next, a, dc, np.int64(H), np.int64(B * H)))


def adamw(flat, grad, m, v, decay_mask, lr, weight_decay, b1, b2, eps, t):
    """The AdamW update of optim.adamw_step, in one pass over the flat vectors (t >= 1)."""
    dt = flat.dtype.type
    _adamw_kernel()(grad, decay_mask, dt(lr * weight_decay), dt(b1), dt(b2),
                  dt(lr / (1.0 - b1 ** t)), dt(1.0 / (1.0 - b2 ** t) ** 0.5), dt(eps), flat, m, v)
