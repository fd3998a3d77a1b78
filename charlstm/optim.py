"""AdamW on one flat parameter vector, global-norm gradient clipping and learning-rate schedules.

The model's parameters and gradients are views into flat buffers (model.alloc), so every update
here is a handful of whole-vector NumPy operations, whatever the number of layers. On CuPy arrays
the same functions run on the GPU, AdamW as one fused kernel (fused.adamw).

    opt = adamw_init(flat_params, flat_decay_mask)
    norm = clip_grad_norm(flat_grads, cfg.grad_clip)
    adamw_step(flat_params, flat_grads, opt, lr_at(step, cfg, total_steps), cfg)
"""

import math

import numpy as np

from . import fused
from .backend import array_module


def adamw_init(flat, decay_mask):
    """Optimizer state: first and second moments (saved in checkpoints), step count, scratch."""
    return {"m": np.zeros_like(flat), "v": np.zeros_like(flat), "t": 0,
            "decay_mask": decay_mask.astype(flat.dtype), "scratch": np.empty_like(flat)}


def decay_mask_for(params, flat):
    """1 for matrices (weights and embedding), 0 for biases: weight decay skips biases."""
    mask = np.zeros_like(flat)
    offset = 0
    for p in params.values():
        if p.ndim >= 2:
            mask[offset:offset + p.size] = 1.0
        offset += p.size
    return mask


def clip_grad_norm(grad, max_norm):
    """Scale the flat gradient in place so its L2 norm is at most max_norm (0 = no clipping).

    Returns the norm before clipping (inf or nan if the gradient is not finite).
    """
    xp = array_module(grad)
    norm = float(xp.sqrt(xp.dot(grad, grad)))
    if max_norm > 0 and norm > max_norm:
        grad *= max_norm / (norm + 1e-6)
    return norm


def adamw_step(flat, grad, state, lr, cfg):
    """One bias-corrected AdamW update, in place; weight decay decoupled (as torch.optim.AdamW)."""
    m, v, s = state["m"], state["v"], state["scratch"]
    b1, b2 = cfg.beta1, cfg.beta2
    state["t"] += 1
    t = state["t"]
    if array_module(flat) is not np:                # the lines below, as one GPU kernel
        fused.adamw(flat, grad, m, v, state["decay_mask"], lr, cfg.weight_decay, b1, b2, cfg.eps, t)
        return
    if cfg.weight_decay > 0:
        np.multiply(flat, state["decay_mask"], out=s)
        s *= lr * cfg.weight_decay
        flat -= s                                   # p <- p - lr * wd * p, biases excluded
    m *= b1
    np.multiply(grad, 1.0 - b1, out=s)
    m += s
    v *= b2
    np.multiply(grad, grad, out=s)
    s *= 1.0 - b2
    v += s
    # p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    np.sqrt(v, out=s)
    s *= 1.0 / math.sqrt(1.0 - b2 ** t)
    s += cfg.eps
    np.divide(m, s, out=s)
    s *= lr / (1.0 - b1 ** t)
    flat -= s


def lr_at(step, cfg, total_steps, time_fraction=None):
    """Learning rate for the update after `step` completed steps (0-based).

    constant: cfg.lr.  cosine: from cfg.lr down to cfg.min_lr at the end of training, measured in
    steps when total_steps is known, else as `time_fraction` (0..1) of a time budget.
    step: cfg.lr * decay_rate ** (step // decay_every), char-rnn's decay.
    All three start with a linear warmup over cfg.warmup_steps steps when it is > 0.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        if total_steps:
            span = max(1, total_steps - cfg.warmup_steps)
            progress = (step - cfg.warmup_steps) / span
        else:
            progress = time_fraction or 0.0
        progress = min(1.0, max(0.0, progress))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.lr * cfg.decay_rate ** (step // cfg.decay_every)
    return cfg.lr


def ema_update(avg, flat, decay, step, scratch):
    """avg <- avg + (1 - d) * (flat - avg), in place, with d = min(decay, (1 + step) / (10 + step)).

    The warm-up of d (as TensorFlow's ExponentialMovingAverage with num_updates) keeps the
    average from being dominated by the initial weights early in a run.
    """
    d = min(decay, (1.0 + step) / (10.0 + step))
    array_module(avg).subtract(flat, avg, out=scratch)
    scratch *= 1.0 - d
    avg += scratch
