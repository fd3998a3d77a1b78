"""AdamW on one flat parameter vector, global-norm gradient clipping and learning-rate schedules.

The model's parameters and gradients are views into flat buffers (model.alloc), so every update
here is a handful of whole-vector NumPy operations, whatever the number of layers. On CuPy arrays
the same functions run on the GPU, AdamW as one fused kernel (fused.adamw).

    opt = adamw_init(flat_params, flat_decay_mask)
    norm = grad_norm(flat_grads)
    adamw_step(flat_params, flat_grads, opt, lr_at(step, cfg, total_steps), cfg,
               grad_scale=clip_factor(norm, cfg.grad_clip))      # clipped inside the update
"""

import math

import numpy as np

from . import fused
from .backend import array_module, flush_subnormal


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


def grad_norm(grad):
    """The L2 norm of the flat gradient (inf or nan if it is not finite)."""
    xp = array_module(grad)
    return float(xp.sqrt(xp.dot(grad, grad)))


def clip_factor(norm, max_norm):
    """What clipping to max_norm multiplies a gradient of this norm by (max_norm 0: no clipping)."""
    if max_norm > 0 and norm > max_norm:
        return max_norm / (norm + 1e-6)
    return 1.0


def clip_grad_norm(grad, max_norm):
    """Scale the flat gradient in place so its L2 norm is at most max_norm (0 = no clipping).

    Returns the norm before clipping (inf or nan if the gradient is not finite). Training does
    not call this: it passes clip_factor to adamw_step, which saves a pass over the gradient.
    """
    norm = grad_norm(grad)
    factor = clip_factor(norm, max_norm)
    if factor != 1.0:
        grad *= factor
    return norm


# The CPU update walks the flat vectors in chunks of this many elements, each chunk through every
# operation before the next: the chunk's parameters, gradient, moments, average and scratch
# (1.5 MB in float32) stay in a core's L2 cache, so each vector comes from memory once per step
# rather than once per operation (1 x 640 with clipping and the average: 12.1 -> 8.4 ms a step,
# benchmarks/RESULTS.md).
CHUNK = 1 << 16
# Every this many steps Adam's moments below the smallest normal float are set to 0: a row that
# gets no gradient (a symbol not in the batch, a quiet unit) decays into subnormal numbers, on
# which x86 arithmetic is many times slower (benchmarks/RESULTS.md, "Subnormal floats").
FLUSH_EVERY = 16


def adamw_step(flat, grad, state, lr, cfg, grad_scale=1.0, average=None, average_decay=0.0):
    """One bias-corrected AdamW update, in place; weight decay decoupled (as torch.optim.AdamW).

    The gradient used is grad * grad_scale (clipping, see clip_factor); on the CPU `grad` itself
    is not changed (on a GPU it is scaled in place first). With `average` (optim.ema's copy of
    the weights), the average then moves towards the new weights: average += (1 -
    average_decay) * (flat - average), as ema_update.
    """
    b1, b2 = cfg.beta1, cfg.beta2
    state["t"] += 1
    t = state["t"]
    if array_module(flat) is not np:                # one GPU kernel, then the average
        if grad_scale != 1.0:
            grad *= grad_scale
        fused.adamw(flat, grad, state["m"], state["v"], state["decay_mask"], lr,
                    cfg.weight_decay, b1, b2, cfg.eps, t)
        if average is not None:
            ema_update(average, flat, average_decay, state["scratch"])
        return
    # p <- p - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)
    #    = p - lr * root / (1 - b1^t) * m / (sqrt(v) + eps * root), with root = sqrt(1 - b2^t)
    root = math.sqrt(1.0 - b2 ** t)
    step, eps = lr * root / (1.0 - b1 ** t), cfg.eps * root
    decay = lr * cfg.weight_decay
    m_in, v_in = (1.0 - b1) * grad_scale, (1.0 - b2) * grad_scale ** 2
    scratch, mask = state["scratch"], state["decay_mask"]
    for a, decayed in zip(range(0, len(flat), CHUNK), _decayed_chunks(state)):
        part = slice(a, a + CHUNK)
        p, g, m, v, s = flat[part], grad[part], state["m"][part], state["v"][part], scratch[part]
        if decay > 0 and decayed:                   # p <- p - lr * wd * p, biases excluded
            if decayed == "all":                    # a chunk of matrices only: the usual case
                p *= 1.0 - decay
            else:
                np.multiply(p, mask[part], out=s)
                s *= decay
                p -= s
        m *= b1
        np.multiply(g, m_in, out=s)
        m += s                                      # m <- b1 m + (1 - b1) g
        v *= b2
        np.multiply(g, g, out=s)
        s *= v_in
        v += s                                      # v <- b2 v + (1 - b2) g^2
        if t % FLUSH_EVERY == 0:
            flush_subnormal(m)
            flush_subnormal(v)
        np.sqrt(v, out=s)
        s += eps
        np.divide(m, s, out=s)
        s *= step
        p -= s
        if average is not None:
            _move_towards(average[part], p, average_decay, s)


def lr_at(step, cfg, total_steps, time_fraction=None):
    """Learning rate for the update after `step` completed steps (0-based).

    constant: cfg.lr.  cosine: from cfg.lr down to cfg.min_lr at the end of training, measured in
    steps when total_steps is known, else as `time_fraction` (0..1) of a time budget; it starts
    after the warmup and after cfg.hold_steps, until which it keeps cfg.lr (without a total or
    a time fraction it keeps cfg.lr: a time-budgeted run before its plan, see run.Run.plan).
    A run re-planned at cfg.replan_step (run.Run.replan) decays towards cfg.replan_total until
    then, and from there over the rest of the way in the steps left to total_steps.
    step: cfg.lr * decay_rate ** (step // decay_every), char-rnn's decay.
    All three start with a linear warmup over cfg.warmup_steps steps when it is > 0.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        start = max(cfg.warmup_steps, cfg.hold_steps)
        if total_steps:
            first = cfg.replan_total if cfg.replan_step else total_steps
            progress = (step - start) / max(1, first - start)
            if cfg.replan_step and step >= cfg.replan_step:      # the rest, stretched or shrunk
                done = (cfg.replan_step - start) / max(1, first - start)
                progress = done + (1 - done) * (step - cfg.replan_step) / max(
                    1, total_steps - cfg.replan_step)
        else:
            progress = time_fraction or 0.0
        progress = min(1.0, max(0.0, progress))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.lr * cfg.decay_rate ** (step // cfg.decay_every)
    return cfg.lr


def _decayed_chunks(state):
    """For each CHUNK of the decay mask: "all", "some" or None (no entry decayed). Cached."""
    key = ("decayed_chunks", CHUNK)
    if key not in state:
        mask = state["decay_mask"]
        parts = (mask[a:a + CHUNK] for a in range(0, len(mask), CHUNK))
        state[key] = [("all" if part.all() else "some") if part.any() else None
                      for part in parts]
    return state[key]


def ema_decay(decay, step):
    """The average's decay after `step` updates: min(decay, (1 + step) / (10 + step)).

    The warm-up (as TensorFlow's ExponentialMovingAverage with num_updates) keeps the average
    from being dominated by the initial weights early in a run.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def ema_update(avg, flat, d, scratch=None):
    """avg <- avg + (1 - d) * (flat - avg), in place (d: ema_decay). Training does this inside
    adamw_step's pass."""
    _move_towards(avg, flat, d, array_module(avg).empty_like(avg) if scratch is None else scratch)


def _move_towards(avg, flat, d, scratch):
    array_module(avg).subtract(flat, avg, out=scratch)
    scratch *= 1.0 - d
    avg += scratch
