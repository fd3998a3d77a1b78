"""Every cell and LSTM variant against independent oracles: finite differences in float64 for every
parameter and the initial state, a naive per-gate loop written from the equations, a chunked run
equal to a whole run, and the sampler's step equal to the training forward."""

from types import SimpleNamespace

import numpy as np
import pytest

from charlstm import cells, model
from charlstm.gru import gru_backward, gru_forward
from charlstm.lstm_variants import variant_backward, variant_forward
from charlstm.rnn import rnn_backward, rnn_forward

from helpers import (CELLS, IDS, assert_forward_equals_naive, make_params, numeric_grad,
                     random_batch, random_state, rel_error)

# CELLS: (cell, peepholes, coupled_gates); the plain LSTM is tested in test_model.py, and here too


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
@pytest.mark.parametrize("E", [5, 0])
def test_forward_equals_naive_loop(spec, E):
    _, params = make_params(*spec, E=E)
    x, y = random_batch(7, 3, 5)
    state = random_state(2, 3, 6)
    _, c = assert_forward_equals_naive(params, x, y, state)
    if spec[0] != "lstm":                      # no cell state: c passes through unchanged
        np.testing.assert_array_equal(c, state[1])


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
@pytest.mark.parametrize("E,L", [(4, 2), (0, 1)])
def test_backward_matches_finite_differences(spec, E, L):
    flat, params = make_params(*spec, E=E, L=L, H=4)
    x, y = random_batch(7, 3, 5)
    h0, c0 = random_state(L, 3, 4)
    _, cache, _ = model.forward(params, x, y, (h0, c0))
    grads, (dh0, dc0) = model.backward(params, cache)
    assert set(grads) == set(params)

    def loss_at():
        return model.forward(params, x, y, (h0, c0), keep_cache=False)[0]

    for name, p in list(params.items()) + [("h0", h0), ("c0", c0)]:
        analytic = {"h0": dh0, "c0": dc0}.get(name, grads.get(name))
        numeric = numeric_grad(loss_at, p)
        if name == "c0" and spec[0] != "lstm":
            assert not analytic.any() and not numeric.any()    # c does not reach the loss
        else:
            assert rel_error(analytic, numeric) < 1e-6, name


def _layer(kernel, H, rng):
    """One layer's kernels with random weights: (G, forward(xproj, h0, c0, keep), weights)."""
    if kernel == "gru":
        w, b = rng.uniform(-1, 1, (3 * H, H)), rng.uniform(-1, 1, 3 * H)
        return 3 * H, lambda xp, h, c, keep=True: gru_forward(xp, w, b, h, c, keep), [w, b]
    if kernel == "rnn":
        w = rng.uniform(-1, 1, (H, H))
        return H, lambda xp, h, c, keep=True: rnn_forward(xp, w, h, c, keep), [w]
    coupled = kernel.endswith("coupled")
    G = (3 if coupled else 4) * H
    w = rng.uniform(-1, 1, (G, H))
    peep = (None if coupled else rng.uniform(-1, 1, H), rng.uniform(-1, 1, H),
            rng.uniform(-1, 1, H))
    return G, lambda xp, h, c, keep=True: variant_forward(xp, w, peep, h, c, coupled, keep), \
        [w] + [v for v in peep if v is not None]


@pytest.mark.parametrize("kernel", ["gru", "rnn", "peepholes", "peepholes+coupled"])
def test_layer_backward_with_final_state_gradients(kernel):
    """dh_T / dc_T flowing in from a later window reach every input, every weight included."""
    T, B, H = 4, 2, 3
    rng = np.random.default_rng(4)
    G, forward, weights = _layer(kernel, H, rng)
    xproj = rng.uniform(-1, 1, (T, B, G))
    h0, c0 = rng.uniform(-1, 1, (B, H)), rng.uniform(-1, 1, (B, H))
    dhs = rng.standard_normal((T, B, H))
    dh_T, dc_T = rng.standard_normal((B, H)), rng.standard_normal((B, H))

    def objective():
        hs, (hT, cT), _ = forward(xproj.copy(), h0, c0, keep=False)
        return (hs * dhs).sum() + (hT * dh_T).sum() + (cT * dc_T).sum()

    _, _, cache = forward(xproj.copy(), h0, c0)
    backward = {"gru": gru_backward, "rnn": rnn_backward}.get(kernel, variant_backward)
    dx, dw, *rest, dh0, dc0 = backward(dhs, cache, dh_T, dc_T)
    if kernel == "gru":
        weight_grads = [dw, rest[0]]                       # W_hh, b_hh
    elif kernel == "rnn":
        weight_grads = [dw]
    else:
        weight_grads = [dw] + [g for g in rest[0] if g is not None]     # W_hh, peepholes
    pairs = [(xproj, dx), *zip(weights, weight_grads), (h0, dh0), (c0, dc0)]
    assert len(pairs) == len(weights) + 3
    for arg, analytic in pairs:
        assert rel_error(analytic, numeric_grad(objective, arg)) < 1e-6


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_chunked_run_equals_whole_run(spec):
    _, params = make_params(*spec)
    x, y = random_batch(7, 2, 12)
    state = random_state(2, 2, 6)
    whole, _, (h_whole, c_whole) = model.forward(params, x, y, state, keep_cache=False)
    total, carried = 0.0, state
    for lo in range(0, 12, 4):
        loss, _, carried = model.forward(params, x[:, lo:lo + 4], y[:, lo:lo + 4], carried,
                                         keep_cache=False)
        total += loss * 4
    assert total / 12 == pytest.approx(whole, rel=1e-12)
    np.testing.assert_allclose(carried[0], h_whole, atol=1e-13)
    np.testing.assert_allclose(carried[1], c_whole, atol=1e-13)


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_step_equals_window_forward(spec):
    """The sampler's one-character step computes the same cell, and the same logits, as the
    training forward."""
    _, params = make_params(*spec, L=3)
    x, y = random_batch(7, 2, 6)
    h, c = random_state(3, 2, 6)
    prep = model.prepare_step(params)
    hh, cc = h.copy(), c.copy()
    for t in range(6):
        logits = model.step(prep, x[:, t], hh, cc)
    _, _, (h_ref, c_ref) = model.forward(params, x, y, (h, c), keep_cache=False)
    np.testing.assert_allclose(hh, h_ref, atol=1e-12)
    np.testing.assert_allclose(cc, c_ref, atol=1e-12)
    # the last step's logits against the head applied to the forward's final top state
    expect = h_ref[-1] @ params["head.weight"].T + params["head.bias"]
    np.testing.assert_allclose(logits, expect, atol=1e-12)


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_dropout_and_weight_drop_gradients_with_fixed_masks(spec):
    flat, params = make_params(*spec, L=2, H=4)
    x, y = random_batch(7, 2, 3)
    state = random_state(2, 2, 4)

    def run(keep):
        return model.forward(params, x, y, state, dropout=0.3, weight_drop=0.4, keep_cache=keep,
                             rng=np.random.default_rng(9), dropout_mask="window")

    _, cache, _ = run(True)
    grads, _ = model.backward(params, cache)
    p = spec[0]
    eps = 1e-6
    for name in [f"{p}.weight_ih_l1", f"{p}.weight_hh_l0", f"{p}.weight_hh_l1", f"{p}.bias_hh_l1"]:
        for idx in [(1, 2), (3, 1), (0, 3)] if params[name].ndim == 2 else [(1,), (2,)]:
            old = params[name][idx]
            params[name][idx] = old + eps
            up = run(False)[0]
            params[name][idx] = old - eps
            down = run(False)[0]
            params[name][idx] = old
            assert grads[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7)
    assert 0 < (grads[f"{p}.weight_hh_l0"] == 0).mean() < 1     # dropped weights: no gradient


@pytest.mark.parametrize("spec", CELLS, ids=IDS)
def test_float32_stays_float32_and_initial_loss_is_ln_vocab(spec):
    cfg = SimpleNamespace(embedding_size=16, hidden_size=32, num_layers=2, forget_bias=1.0,
                          cell=spec[0], peepholes=spec[1], coupled_gates=spec[2])
    _, params = model.init_params(65, cfg, np.random.default_rng(0))
    x, y = random_batch(65, 4, 10)
    loss, cache, (h, c) = model.forward(params, x, y, model.init_state(2, 4, 32))
    grads, _ = model.backward(params, cache)
    assert abs(loss - np.log(65)) < 0.1
    assert h.dtype == c.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())


def test_parameter_names_shapes_and_forget_bias():
    shapes = model.param_shapes(10, 4, 8, 2, "gru")
    assert list(shapes)[1:5] == ["gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0",
                                 "gru.bias_hh_l0"]
    assert shapes["gru.weight_ih_l0"] == (24, 4) and shapes["gru.weight_hh_l1"] == (24, 8)
    assert model.param_shapes(10, 0, 8, 1, "rnn")["rnn.weight_ih_l0"] == (8, 10)
    peep = model.param_shapes(10, 4, 8, 1, "lstm", peepholes=True)
    assert [n for n in peep if "_c" in n] == ["lstm.weight_ci_l0", "lstm.weight_cf_l0",
                                              "lstm.weight_co_l0"]
    both = model.param_shapes(10, 4, 8, 1, "lstm", peepholes=True, coupled_gates=True)
    assert both["lstm.weight_hh_l0"] == (24, 8) and "lstm.weight_ci_l0" not in both
    for spec in CELLS:
        cfg = SimpleNamespace(embedding_size=4, hidden_size=8, num_layers=2, forget_bias=2.5,
                              cell=spec[0], peepholes=spec[1], coupled_gates=spec[2])
        _, params = model.init_params(10, cfg, np.random.default_rng(0))
        assert cells.of_params(params) == cells.Cell(*spec)
        if spec[0] == "lstm":                 # the forget gate: f of i, f, g, o or of f, g, o
            f = slice(0, 8) if spec[2] else slice(8, 16)
            total = params["lstm.bias_ih_l1"] + params["lstm.bias_hh_l1"]
            assert (total[f] == 2.5).all() and (total != 2.5).sum() == total.size - 8


def test_cell_descriptions():
    assert [cells.Cell(*s).describe() for s in CELLS] == [
        "LSTM", "LSTM with peepholes", "LSTM with coupled gates",
        "LSTM with peepholes and coupled gates", "GRU", "RNN (tanh)"]
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        cells.Cell("lstn")
    with pytest.raises(ValueError, match="the gru cell has no peephole"):
        cells.Cell("gru", peepholes=True)
