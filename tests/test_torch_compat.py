"""PyTorch as an independent oracle: checkpoints load into torch.nn.LSTM and compute the same loss,
every gradient equals torch.autograd's, and training steps equal torch.optim.AdamW's.

torch is never a dependency. It is a test extra (`pip install -e '.[test,torch]'`) that `.ci/run`
installs; there CHARLSTM_REQUIRE_TORCH=1 turns a missing torch into a failure of these tests.
Elsewhere, without torch, they are skipped. torch is imported by the fixture alone, so collecting
this file never needs it.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from charlstm import model, optim
from charlstm.config import load_config
from charlstm.data import Batches, Vocab
from charlstm.run import Run

from helpers import synthetic_text, tiny_config


def torch_net(torch, V, E, H, L, params=None):
    """Embedding (if E) -> nn.LSTM -> Linear in float64, under charlstm's parameter names, with
    `params` (name -> array) copied in."""
    modules = {"lstm": torch.nn.LSTM(E or V, H, L, batch_first=True),
               "head": torch.nn.Linear(H, V)}
    if E:
        modules["embedding"] = torch.nn.Embedding(V, E)
    net = torch.nn.ModuleDict(modules).double()
    if params is not None:
        net.load_state_dict({k: torch.from_numpy(np.asarray(params[k], np.float64))
                             for k in net.state_dict()})
    return net


def torch_loss(torch, net, x, y, V, state=None):
    """Mean cross-entropy of the (B, T) window x against y; returns (loss, (h, c))."""
    x, y = torch.from_numpy(np.asarray(x, np.int64)), torch.from_numpy(np.asarray(y, np.int64))
    inp = (net["embedding"](x) if "embedding" in net else
           torch.nn.functional.one_hot(x, V).double())
    out, final = net["lstm"](inp, state)
    logits = net["head"](out)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1)), final


@pytest.mark.parametrize("layers,emb", [(2, 16), (1, 0)])
def test_checkpoint_loads_into_torch_and_matches(torch, tmp_path, corpus, layers, emb):
    """The README's loading snippet: a checkpoint as written by training, into torch modules."""
    cfg = tiny_config(corpus, model__num_layers=layers, model__embedding_size=emb,
                      train__max_steps=10, train__eval_every=10)
    run = Run.start(cfg, tmp_path / "r").train(progress=False, echo=lambda *a: 0)
    z = np.load(tmp_path / "r" / "last.npz", allow_pickle=False)
    meta = json.loads(bytes(z["__meta__"]))
    m, V = meta["config"]["model"], len(meta["vocab"])
    net = torch_net(torch, V, m["embedding_size"], m["hidden_size"], m["num_layers"])
    net.load_state_dict({k: torch.from_numpy(z[k].astype(np.float64)) for k in net.state_dict()})

    x, y = run.batches.get(3)
    params64 = {k: v.astype(np.float64) for k, v in run.params.items()}
    state = model.init_state(layers, len(x), 32, np.float64)
    loss, _, (h, c) = model.forward(params64, x, y, state, keep_cache=False)
    with torch.no_grad():
        tloss, (th, tc) = torch_loss(torch, net, x, y, V)
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    np.testing.assert_allclose(h, th.numpy(), atol=1e-12)
    np.testing.assert_allclose(c, tc.numpy(), atol=1e-12)


@pytest.mark.parametrize("emb", [5, 0])
def test_every_gradient_equals_torch_autograd(torch, emb):
    """Every parameter random (biases too), 2 layers, a random carried-in state: the gradient of
    every parameter and of the initial state equals autograd's."""
    V, H, L, B, T = 11, 8, 2, 3, 7
    cfg = SimpleNamespace(embedding_size=emb, hidden_size=H, num_layers=L, forget_bias=1.0)
    rng = np.random.default_rng(5)
    flat, params = model.init_params(V, cfg, rng, np.float64)
    flat[...] = rng.uniform(-0.7, 0.7, flat.shape)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0, c0 = rng.uniform(-0.5, 0.5, (L, B, H)), rng.uniform(-0.5, 0.5, (L, B, H))

    loss, cache, _ = model.forward(params, x, y, (h0, c0))
    grads, (dh0, dc0) = model.backward(params, cache)

    net = torch_net(torch, V, emb, H, L, params)
    th0, tc0 = (torch.tensor(s, requires_grad=True) for s in (h0, c0))
    tloss, _ = torch_loss(torch, net, x, y, V, (th0, tc0))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    names = dict(net.named_parameters())
    assert sorted(names) == sorted(params)
    want = {name: p.grad.numpy() for name, p in names.items()} | {
        "initial h": th0.grad.numpy(), "initial c": tc0.grad.numpy()}
    got = dict(grads) | {"initial h": dh0, "initial c": dc0}
    for name, ref in want.items():
        assert np.abs(ref).max() > 1e-6, f"{name}: a zero gradient proves nothing"
        error = np.abs(got[name] - ref).max() / np.abs(ref).max()
        assert error < 1e-8, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("emb", [16, 0])
def test_twenty_training_steps_follow_torch_adamw(torch, emb):
    """20 training steps as Run.train_step takes them (clip, AdamW with weight decay on the
    matrices only, the cosine schedule with warmup, the state carried from window to window)
    against torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW with two parameter groups."""
    steps = 20
    cfg = load_config("configs/tiny.yaml", [
        f"model.embedding_size={emb}", "model.num_layers=2", "optim.lr=0.02",
        "optim.weight_decay=0.1", "optim.grad_clip=0.25", "optim.schedule=cosine",
        "optim.warmup_steps=3", "optim.beta2=0.99", f"train.max_steps={steps}"])
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert m.dropout == 0 and m.weight_drop == 0 and o.ema == 0
    text = synthetic_text(4000)
    vocab = Vocab.from_text(text)
    V = len(vocab)
    batches = Batches(vocab.encode(text), t.batch_size, t.seq_len)
    windows = [batches.get(i % batches.num_batches) for i in range(steps)]
    lrs = [optim.lr_at(i, o, steps) for i in range(steps)]

    # charlstm, float64
    flat, params = model.init_params(V, m, np.random.default_rng(t.seed), np.float64)
    start = {name: p.copy() for name, p in params.items()}
    gflat, grads = model.alloc(model.shapes_of(params), np.float64)
    opt = optim.adamw_init(flat, optim.decay_mask_for(params, flat))
    state = model.init_state(m.num_layers, t.batch_size, m.hidden_size, np.float64)
    ours, norms = [], []
    for (x, y), lr in zip(windows, lrs):
        loss, cache, state = model.forward(params, x, y, state)
        model.backward(params, cache, grads)
        norms.append(optim.clip_grad_norm(gflat, o.grad_clip))
        optim.adamw_step(flat, gflat, opt, lr, o)
        ours.append(loss)
    assert min(norms) < o.grad_clip < max(norms)     # steps with and without clipping

    # torch, float64, from the same initial weights
    net = torch_net(torch, V, emb, m.hidden_size, m.num_layers, start)
    named = dict(net.named_parameters())
    groups = [{"params": [p for p in named.values() if p.ndim >= 2],      # matrices: decayed
               "weight_decay": o.weight_decay},
              {"params": [p for p in named.values() if p.ndim < 2], "weight_decay": 0.0}]
    adamw = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    theirs, tstate = [], None
    for (x, y), lr in zip(windows, lrs):
        for group in adamw.param_groups:
            group["lr"] = lr
        adamw.zero_grad()
        loss, (h, c) = torch_loss(torch, net, x, y, V, tstate)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
        adamw.step()
        tstate = (h.detach(), c.detach())          # carried, as truncated BPTT
        theirs.append(loss.item())

    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert ours[-1] < ours[0] - 0.3                  # it trained: the steps did something
    for name, p in named.items():
        np.testing.assert_allclose(params[name], p.detach().numpy(), rtol=1e-5, atol=1e-8)
