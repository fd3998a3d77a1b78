"""The GRU and RNN cells against torch.nn.GRU and torch.nn.RNN: a checkpoint loads with
load_state_dict, and the loss, final state, every gradient and a greedy sample agree.

torch is a test-only extra, as for tests/test_torch_compat.py, and these tests take it the same
way: skipped where torch is missing, unless CHARLSTM_REQUIRE_TORCH is set (CI), then a failure.
"""

import json

import numpy as np
import pytest

from charlstm import model
from charlstm.data import Vocab
from charlstm.sample import generate
from charlstm.run import Run

from helpers import random_state, rel_error, tiny_config

CASES = [("gru", 2, 16), ("gru", 1, 0), ("rnn", 2, 16), ("rnn", 1, 0)]


@pytest.fixture(params=CASES, ids=[f"{c}-{L}x-emb{E}" for c, L, E in CASES])
def trained(request, tmp_path, corpus, torch):
    """A short run of the cell, and its last.npz loaded into PyTorch (float64), as the README's
    snippet does for the LSTM."""
    cell, layers, emb = request.param
    cfg = tiny_config(corpus, model__cell=cell, model__num_layers=layers,
                      model__embedding_size=emb, train__max_steps=10, train__eval_every=10)
    run = Run.start(cfg, tmp_path / "r").train(progress=False, echo=lambda *a: 0)
    z = np.load(tmp_path / "r" / "last.npz", allow_pickle=False)
    meta = json.loads(bytes(z["__meta__"]))
    m, V = meta["config"]["model"], len(meta["vocab"])
    rnn_class = {"gru": torch.nn.GRU, "rnn": torch.nn.RNN}[m["cell"]]
    modules = {m["cell"]: rnn_class(m["embedding_size"] or V, m["hidden_size"], m["num_layers"],
                                    batch_first=True),
               "head": torch.nn.Linear(m["hidden_size"], V)}
    if m["embedding_size"]:
        modules["embedding"] = torch.nn.Embedding(V, m["embedding_size"])
    net = torch.nn.ModuleDict(modules).double()
    net.load_state_dict({k: torch.from_numpy(z[k].astype(np.float64)) for k in net.state_dict()})
    params64 = {k: v.astype(np.float64) for k, v in run.params.items()}
    return run, net, params64, cell


def torch_loss(torch, net, cell, x, y, h0):
    V = net["head"].out_features
    xt = torch.from_numpy(x)
    inp = (net["embedding"](xt) if "embedding" in net else
           torch.nn.functional.one_hot(xt, V).double())
    out, hT = net[cell](inp, h0)
    logits = net["head"](out)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
    return loss, hT


def test_forward_and_gradients_match_torch(trained, torch):
    run, net, params, cell = trained
    x, y = run.batches.get(3)
    L, H = run.cfg.model.num_layers, run.cfg.model.hidden_size
    h0, c0 = random_state(L, len(x), H)
    loss, cache, (h, c) = model.forward(params, x, y, (h0, c0))
    grads, (dh0, _) = model.backward(params, cache)
    th0 = torch.from_numpy(h0.copy()).requires_grad_()
    tloss, thT = torch_loss(torch, net, cell, x, y, th0)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    np.testing.assert_allclose(h, thT.detach().numpy(), atol=1e-12)
    np.testing.assert_array_equal(c, c0)                       # no cell state: passed through
    torch_grads = dict(net.named_parameters())
    assert set(torch_grads) == set(params)
    for name, p in torch_grads.items():
        assert rel_error(grads[name], p.grad.numpy()) < 1e-10, name
    assert rel_error(dh0, th0.grad.numpy()) < 1e-10


def test_greedy_sample_matches_torch(trained, torch):
    run, net, params, cell = trained
    vocab = Vocab(run.vocab.chars)
    ours = "".join(generate(params, vocab, 60, np.random.default_rng(0), prime="the ",
                            argmax=True))
    V = len(vocab)
    tokens = [int(t) for t in vocab.encode("\nthe ")]
    state, out = None, []
    with torch.no_grad():
        for i in range(len(tokens) - 1 + 60):
            tok = torch.tensor([[tokens[i] if i < len(tokens) else out[-1]]])
            inp = net["embedding"](tok) if "embedding" in net else \
                torch.nn.functional.one_hot(tok, V).double()
            hs, state = net[cell](inp, state)
            if i >= len(tokens) - 1:
                out.append(int(net["head"](hs[0, -1]).argmax()))
    assert ours == "".join(vocab.chars[t] for t in out)
