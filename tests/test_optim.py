"""AdamW, clipping and schedules against formulas written out here."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from charlstm import optim


def cfg(**kw):
    base = dict(lr=1e-2, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, schedule="constant",
                warmup_steps=0, hold_steps=0, replan_step=0, replan_total=0, min_lr=0.0,
                decay_every=10, decay_rate=0.5)
    base.update(kw)
    return SimpleNamespace(**base)


def test_adamw_matches_reference_formula():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(6)
    mask = np.array([1, 1, 1, 0, 0, 1], float)
    c = cfg(weight_decay=0.1)
    state = optim.adamw_init(p, mask)
    ref, m, v = p.copy(), np.zeros(6), np.zeros(6)
    for t in range(1, 6):
        g = rng.standard_normal(6)
        optim.adamw_step(p, g.copy(), state, c.lr, c)
        ref = ref - c.lr * c.weight_decay * mask * ref
        m = c.beta1 * m + (1 - c.beta1) * g
        v = c.beta2 * v + (1 - c.beta2) * g * g
        mhat, vhat = m / (1 - c.beta1 ** t), v / (1 - c.beta2 ** t)
        ref = ref - c.lr * mhat / (np.sqrt(vhat) + c.eps)
        np.testing.assert_allclose(p, ref, rtol=1e-12)


def test_decay_mask_skips_biases():
    params = {"w": np.zeros((2, 3)), "b": np.zeros(3)}
    mask = optim.decay_mask_for(params, np.zeros(9))
    np.testing.assert_array_equal(mask, [1] * 6 + [0] * 3)


def test_clip_grad_norm():
    g = np.array([3.0, 4.0])
    assert optim.clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    g = np.array([3.0, 4.0])
    optim.clip_grad_norm(g, 0)                       # 0 = off
    np.testing.assert_array_equal(g, [3.0, 4.0])
    assert math.isnan(optim.clip_grad_norm(np.array([np.nan, 1.0]), 1.0))


def test_schedules():
    assert optim.lr_at(5, cfg(), 100) == 1e-2
    c = cfg(schedule="cosine", warmup_steps=10, min_lr=1e-3)
    assert optim.lr_at(0, c, 110) == pytest.approx(1e-3)          # warmup: (0+1)/10 of lr
    assert optim.lr_at(9, c, 110) == pytest.approx(1e-2)
    assert optim.lr_at(10, c, 110) == pytest.approx(1e-2)
    assert optim.lr_at(60, c, 110) == pytest.approx((1e-2 + 1e-3) / 2)
    assert optim.lr_at(110, c, 110) == pytest.approx(1e-3)
    h = cfg(schedule="cosine", warmup_steps=10, hold_steps=30, min_lr=1e-3)
    assert optim.lr_at(29, h, 130) == pytest.approx(1e-2)              # held until step 30
    assert optim.lr_at(500, h, None) == pytest.approx(1e-2)            # no total yet: held
    assert optim.lr_at(80, h, 130) == pytest.approx((1e-2 + 1e-3) / 2)  # decays over 30..130
    timed = cfg(schedule="cosine", min_lr=0.0)               # a time budget, no step limit
    assert optim.lr_at(50, timed, None, time_fraction=0.5) == pytest.approx(5e-3)
    assert optim.lr_at(50, timed, None, time_fraction=1.2) == pytest.approx(0.0)
    s = cfg(schedule="step")
    assert optim.lr_at(9, s, 0) == 1e-2 and optim.lr_at(10, s, 0) == 5e-3
    assert optim.lr_at(25, s, 0) == 2.5e-3


def test_a_second_plan_keeps_the_decay_so_far_and_spreads_the_rest_over_the_steps_left():
    first = cfg(schedule="cosine", warmup_steps=10, hold_steps=20, min_lr=1e-3)
    again = cfg(schedule="cosine", warmup_steps=10, hold_steps=20, min_lr=1e-3,
                replan_step=60, replan_total=120)
    # until the second plan: the first plan's rates, bit for bit (a rerun of the saved config)
    assert [optim.lr_at(s, again, 220) for s in range(60)] == \
        [optim.lr_at(s, first, 120) for s in range(60)]
    # from there the progress so far (40 of 100 steps) goes on over the 160 steps left: 70% of
    # it is done halfway through them, where the first plan was at step 90
    assert optim.lr_at(60, again, 220) == optim.lr_at(60, first, 120)
    assert optim.lr_at(140, again, 220) == pytest.approx(optim.lr_at(90, first, 120))
    assert optim.lr_at(220, again, 220) == pytest.approx(1e-3)
    rates = [optim.lr_at(s, again, 220) for s in range(10, 221)]
    assert rates == sorted(rates, reverse=True)                   # down all the way
    shorter = cfg(**{**vars(again), "replan_total": 300})        # a plan that shrank the rest
    assert optim.lr_at(100, shorter, 100) == pytest.approx(1e-3)


@pytest.mark.parametrize("chunk", [7, optim.CHUNK])
def test_one_pass_update_clips_decays_and_averages(monkeypatch, chunk):
    """adamw_step with a clip factor and the weight average, chunk by chunk (a chunk size that
    splits the vector unevenly, and the real one): the same as clipping the gradient, the
    reference AdamW and ema_update done one after another over whole vectors."""
    monkeypatch.setattr(optim, "CHUNK", chunk)
    rng = np.random.default_rng(1)
    n = 30
    p = rng.standard_normal(n)
    mask = (rng.random(n) < 0.7).astype(float)
    c = cfg(weight_decay=0.1)
    state, avg = optim.adamw_init(p, mask), p.copy()
    ref, ref_avg, m, v = p.copy(), p.copy(), np.zeros(n), np.zeros(n)
    for t in range(1, 6):
        g = rng.standard_normal(n) * 10
        given = g.copy()
        norm = optim.grad_norm(g)
        factor = optim.clip_factor(norm, 1.0)
        assert factor == pytest.approx(1.0 / norm)
        d = optim.ema_decay(0.9, t)
        optim.adamw_step(p, g, state, c.lr, c, grad_scale=factor, average=avg, average_decay=d)
        np.testing.assert_array_equal(g, given)              # the gradient is left as it was
        g = g * factor
        ref = ref - c.lr * c.weight_decay * mask * ref
        m = c.beta1 * m + (1 - c.beta1) * g
        v = c.beta2 * v + (1 - c.beta2) * g * g
        ref = ref - c.lr * (m / (1 - c.beta1 ** t)) / (np.sqrt(v / (1 - c.beta2 ** t)) + c.eps)
        ref_avg += (1 - d) * (ref - ref_avg)
        np.testing.assert_allclose(p, ref, rtol=1e-12)
        np.testing.assert_allclose(avg, ref_avg, rtol=1e-12)


def test_adam_sets_moments_decayed_below_the_normal_floats_to_zero():
    """A row without gradient decays into subnormal floats, slow on x86: every FLUSH_EVERY steps
    they become 0; normal moments and the weights' update are left as they were."""
    cfg = SimpleNamespace(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    flat = np.zeros(4, np.float32)
    state = optim.adamw_init(flat, np.ones_like(flat))
    tiny = np.finfo(np.float32).tiny
    state["m"][:] = [tiny / 4, -tiny / 8, 1e-3, 0.0]
    state["v"][:] = [tiny / 2, 1e-6, 1e-6, 0.0]
    grad = np.zeros_like(flat)
    state["t"] = optim.FLUSH_EVERY - 2                  # the next step is not a flush's
    optim.adamw_step(flat, grad, state, 1e-3, cfg)
    assert 0 < abs(state["m"][0]) < tiny and 0 < state["v"][0] < tiny
    optim.adamw_step(flat, grad, state, 1e-3, cfg)      # step FLUSH_EVERY
    assert state["m"][0] == 0 and state["m"][1] == 0 and state["v"][0] == 0
    assert state["m"][2] == np.float32(1e-3) * np.float32(0.9) ** 2
    assert state["v"][1] > 0
