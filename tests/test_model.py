"""The model against independent oracles: finite differences, a naive per-gate loop, chunking."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from charlstm import model
from charlstm.lstm import lstm_backward, lstm_forward

from helpers import (assert_forward_equals_naive, make_params, numeric_grad, random_batch,
                     random_state, rel_error)


@pytest.mark.parametrize("E", [5, 0])
def test_fused_forward_equals_naive_loop(E):
    _, params = make_params(E=E)
    x, y = random_batch(7, 3, 5)
    state = random_state(2, 3, 6)
    assert_forward_equals_naive(params, x, y, state)


@pytest.mark.parametrize("E,L", [(5, 2), (0, 1), (4, 3)])
def test_backward_matches_finite_differences(E, L):
    flat, params = make_params(E=E, L=L, H=5)
    x, y = random_batch(7, 3, 6)
    h0, c0 = random_state(L, 3, 5)
    _, cache, _ = model.forward(params, x, y, (h0, c0))
    grads, (dh0, dc0) = model.backward(params, cache)

    def loss_at():
        return model.forward(params, x, y, (h0, c0), keep_cache=False)[0]

    for name, p in list(params.items()) + [("h0", h0), ("c0", c0)]:
        analytic = {"h0": dh0, "c0": dc0}.get(name, grads.get(name))
        assert rel_error(analytic, numeric_grad(loss_at, p)) < 1e-6, name


def test_lstm_layer_backward_with_final_state_gradients():
    """dh_T / dc_T flowing in from a later window reach every input through BPTT."""
    rng = np.random.default_rng(3)
    T, B, H = 4, 2, 3
    xproj = rng.uniform(-1, 1, (T, B, 4 * H))
    w_hh = rng.uniform(-1, 1, (4 * H, H))
    h0, c0 = rng.uniform(-1, 1, (B, H)), rng.uniform(-1, 1, (B, H))
    dhs, dh_T, dc_T = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))

    def objective(xp, w, h, c):
        hs, (hT, cT), _ = lstm_forward(xp.copy(), w, h, c, keep_cache=False)
        return (hs * dhs).sum() + (hT * dh_T).sum() + (cT * dc_T).sum()

    _, _, cache = lstm_forward(xproj.copy(), w_hh, h0, c0)
    grads = lstm_backward(dhs, cache, dh_T, dc_T)
    for arg, analytic in zip([xproj, w_hh, h0, c0], grads):
        numeric = numeric_grad(lambda: objective(xproj, w_hh, h0, c0), arg)
        assert rel_error(analytic, numeric) < 1e-6


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("E", [5, 0])
def test_step_logits_equal_forward_logits(L, E):
    """The sampler's step and the training forward are two implementations of one model: over two
    windows (the state carried from one to the next), every step's logits are forward's.

    forward keeps probabilities, not logits, and softmax forgets one constant per row, so the two
    are compared as log-probabilities: the logits up to that constant, which nothing downstream
    sees (temperature, top-k, top-p and argmax all ignore it). The loss the step's logits imply is
    forward's loss.
    """
    V, H, B, T = 7, 6, 3, 5
    _, params = make_params(V=V, E=E, H=H, L=L)
    windows = [random_batch(V, B, T, seed=s) for s in (1, 3)]
    state = random_state(L, B, H)
    prep = model.prepare_step(params)
    h, c = state[0].copy(), state[1].copy()
    for x, y in windows:
        loss, cache, state = model.forward(params, x, y, state)
        *_, probs, _ = cache                             # (T*B, V), time-major
        want = np.log(probs).reshape(T, B, V)
        got = np.stack([log_softmax(model.step(prep, x[:, t], h, c)) for t in range(T)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        implied = -np.take_along_axis(got, y.T[:, :, None], axis=2).mean()
        assert implied == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(h, state[0], atol=1e-12)
        np.testing.assert_allclose(c, state[1], atol=1e-12)


@pytest.mark.parametrize("dropout, weight_drop, kind", [
    (0.3, 0.0, "step"), (0.0, 0.4, "step"), (0.3, 0.4, "step"), (0.3, 0.4, "window")])
def test_dropout_gradient_matches_finite_differences_with_fixed_mask(dropout, weight_drop, kind):
    """With the dropout and weight-drop masks held fixed (same seed), backward is exact too."""
    flat, params = make_params(L=2, H=4)
    x, y = random_batch(7, 2, 3)
    state = random_state(2, 2, 4)

    def run(keep):
        return model.forward(params, x, y, state, dropout=dropout, weight_drop=weight_drop,
                             rng=np.random.default_rng(9), keep_cache=keep, dropout_mask=kind)

    _, cache, _ = run(True)
    grads, _ = model.backward(params, cache)
    eps = 1e-6
    names = ["lstm.weight_ih_l1", "head.weight", "embedding.weight", "lstm.weight_hh_l0",
             "lstm.weight_hh_l1"]
    for name in names:
        p = params[name]
        for idx in [(1, 2), (3, 1), (0, 3)]:
            old = p[idx]
            p[idx] = old + eps
            up = run(False)[0]
            p[idx] = old - eps
            down = run(False)[0]
            p[idx] = old
            # one element: the loss's round-off over 2*eps is ~1e-8 here, hence abs=1e-7
            assert grads[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)
    if weight_drop:   # a dropped recurrent weight has no effect, so exactly no gradient
        dropped = grads["lstm.weight_hh_l0"] == 0
        assert 0 < dropped.mean() < 1


@pytest.mark.parametrize("kind", ["step", "window"])
def test_window_dropout_drops_the_same_units_at_every_step(kind):
    """dropout_mask="window" zeroes a unit of a row for the whole window; "step" redraws each step."""
    _, params = make_params(L=2, H=64)
    x, y = random_batch(7, 3, 20)
    _, cache, _ = model.forward(params, x, y, random_state(2, 3, 64), dropout=0.5,
                                rng=np.random.default_rng(4), dropout_mask=kind)
    dropped = cache[2][1][0] == 0          # layer 1's input: layer 0's output after dropout
    assert dropped.shape == (20, 3, 64) and 0.3 < dropped.mean() < 0.7
    assert (dropped == dropped[:1]).all() == (kind == "window")
    assert (dropped[:, 0] != dropped[:, 1]).any()           # rows still draw their own masks


@pytest.mark.parametrize("draw", model.DRAWS)
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_dropout_masks_keep_one_minus_p_scaled_and_redraw(draw, p):
    """Either draw keeps about 1 - p of the elements, each scaled by 1 / (1 - p); the same
    generator state gives the same mask, the next draw another; the counter draw's elements are
    uncorrelated with their neighbours (its hash gives four draws a 64-bit counter)."""
    dt = np.dtype(np.float32)
    shape = (301, 67)                                     # not a multiple of 4 elements
    mask = model._dropout_mask(shape, p, np.random.default_rng(5), dt, draw=draw)
    assert mask.shape == shape and mask.dtype == dt
    assert set(np.unique(mask)) == {0, dt.type(1 / (1 - p))}
    kept = (mask > 0).ravel()
    assert abs(kept.mean() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / kept.size)
    rng = np.random.default_rng(5)
    first = model._dropout_mask(shape, p, rng, dt, draw=draw)
    again = model._dropout_mask(shape, p, rng, dt, draw=draw)
    assert (first == mask).all() and (again != mask).any()
    for lag in (1, 2, 3, 4, 67):
        assert abs(np.corrcoef(kept[:-lag], kept[lag:])[0, 1]) < 0.05


def test_the_host_draw_is_the_draw_of_checkpoints_from_before_the_counter():
    """A run whose checkpoint records no draw resumes with its masks: one host number each."""
    rng, ref = np.random.default_rng(2), np.random.default_rng(2)
    mask = model._dropout_mask((5, 7), 0.3, rng, np.dtype(np.float64), draw="host")
    assert (mask == (ref.random((5, 7), dtype=np.float32) >= 0.3) / 0.7).all()


def test_weight_drop_changes_training_forward_only():
    """Weight drop perturbs the training forward; evaluation (no rng, no drop) is unchanged."""
    _, params = make_params(L=2, H=4)
    x, y = random_batch(7, 2, 5)
    state = random_state(2, 2, 4)
    plain = model.forward(params, x, y, state, keep_cache=False)[0]
    dropped = model.forward(params, x, y, state, weight_drop=0.5, rng=np.random.default_rng(1),
                            keep_cache=False)[0]
    assert dropped != plain
    assert model.forward(params, x, y, state, keep_cache=False)[0] == plain


def test_initial_loss_is_close_to_ln_vocab():
    V = 65
    cfg = SimpleNamespace(embedding_size=32, hidden_size=64, num_layers=2, forget_bias=1.0)
    _, params = model.init_params(V, cfg, np.random.default_rng(0))
    x, y = random_batch(V, 8, 20)
    loss, _, _ = model.forward(params, x, y, model.init_state(2, 8, 64), keep_cache=False)
    assert abs(loss - math.log(V)) < 0.1


def test_float32_forward_stays_float32():
    _, params = make_params(dtype=np.float32)
    x, y = random_batch(7, 2, 3)
    h, c = model.init_state(2, 2, 6)
    loss, cache, (h1, c1) = model.forward(params, x, y, (h, c))
    grads, _ = model.backward(params, cache)
    assert h1.dtype == c1.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_a_ruled_out_character_keeps_normal_floats_in_the_gradient():
    """A character 90 below the rest (probability e^-90, subnormal in float32, slow on x86) counts
    as 50 below (model.LOGIT_FLOOR): its gradient is a normal float under 1e-20, the others' are
    (probs - onehot) / N, and the loss is that of float64 without the floor, even where the
    target is the ruled-out character."""
    _, params = make_params(dtype=np.float32)
    params["head.bias"][0] = -90.0
    x, y = random_batch(7, 2, 3)
    y[y == 0] = 1
    tiny = np.finfo(np.float32).tiny
    for target in (1, 0):                            # the second time, one target below the floor
        y[0, 0] = target
        loss, cache, _ = model.forward(params, x, y, model.init_state(2, 2, 6))
        top, probs = cache[4], cache[5].copy()
        logits = top.astype(np.float64) @ params["head.weight"].T.astype(np.float64)
        z = logits + params["head.bias"] - (logits + params["head.bias"]).max(axis=1, keepdims=True)
        nll = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), y.T.ravel()]
        assert loss == pytest.approx(nll.mean(), rel=1e-6)
        assert probs.min() >= tiny and probs[:, 0].max() < 1e-20
    assert loss > 90 / len(z)
    y[0, 0] = 1
    _, cache, _ = model.forward(params, x, y, model.init_state(2, 2, 6))
    grads, _ = model.backward(params, cache)
    assert tiny <= grads["head.bias"][0] < 1e-20
    assert np.all(np.abs(grads["head.weight"][0]) < 1e-20)
    exact = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    exact[np.arange(len(z)), y.T.ravel()] -= 1
    np.testing.assert_allclose(grads["head.bias"][1:], exact.sum(axis=0)[1:] / len(z), rtol=1e-5,
                               atol=1e-7)


def test_parameter_names_follow_pytorch():
    shapes = model.param_shapes(V=10, E=4, H=8, L=2)
    assert list(shapes) == [
        "embedding.weight",
        "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
        "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1", "lstm.bias_hh_l1",
        "head.weight", "head.bias"]
    assert shapes["lstm.weight_ih_l0"] == (32, 4) and shapes["lstm.weight_ih_l1"] == (32, 8)
    assert shapes["head.weight"] == (10, 8)


@pytest.mark.parametrize("E", [5, 0])
def test_the_transposed_recurrent_products_compute_the_same(monkeypatch, E):
    """Wide layers take the recurrent products transposed (lstm.TRANSPOSED_FROM): forward and
    backward give what the plain products give, in float64, at any width."""
    from charlstm import lstm
    _, params = make_params(V=7, E=E, H=6, L=2)
    x, y = random_batch(7, 3, 5)
    state = random_state(2, 3, 6)
    runs = []
    for start in (10 ** 9, 1):
        monkeypatch.setattr(lstm, "TRANSPOSED_FROM", start)
        loss, cache, (h, c) = model.forward(params, x, y, state)
        grads, (dh0, dc0) = model.backward(params, cache)
        runs.append((loss, h, c, {k: g.copy() for k, g in grads.items()}, dh0, dc0))
    (l1, h1, c1, g1, dh1, dc1), (l2, h2, c2, g2, dh2, dc2) = runs
    assert l1 == pytest.approx(l2, rel=1e-13)
    for a, b in [(h1, h2), (c1, c2), (dh1, dh2), (dc1, dc2)] + [(g1[k], g2[k]) for k in g1]:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell,peepholes,coupled", [("lstm", False, False), ("lstm", True, True),
                                                    ("gru", False, False), ("rnn", False, False)])
@pytest.mark.parametrize("V,E,H,L", [(65, 64, 32, 1), (11, 0, 16, 3), (7, 5, 9, 2)])
def test_param_count_is_the_sum_of_param_shapes(cell, peepholes, coupled, V, E, H, L):
    """Counted without listing (a billion layers are refused at once), held equal to the list."""
    shapes = model.param_shapes(V, E, H, L, cell, peepholes, coupled)
    assert model.param_count(V, E, H, L, cell, peepholes, coupled) == sum(
        math.prod(s) for s in shapes.values())
    assert model.param_count(V, E, H, L, cell, peepholes, coupled, core=True) == sum(
        math.prod(s) for name, s in shapes.items() if not name.startswith(("embedding.", "head.")))
