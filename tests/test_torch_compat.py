"""Our checkpoints load into PyTorch and compute the same thing (runs where torch is installed).

torch is not a dependency, not even for tests: this cross-check runs on developer machines that
have it (`pip install torch`) and is skipped elsewhere. The README's loading snippet is exercised.
"""

import json

import numpy as np
import pytest

from charlstm import model
from charlstm.train import Run

from conftest import tiny_config

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("layers,emb", [(2, 16), (1, 0)])
def test_checkpoint_loads_into_torch_and_matches(tmp_path, corpus, layers, emb):
    cfg = tiny_config(corpus, model__num_layers=layers, model__embedding_size=emb,
                      train__max_steps=10, train__eval_every=10)
    run = Run.start(cfg, tmp_path / "r").train(progress=False, echo=lambda *a: 0)
    z = np.load(tmp_path / "r" / "last.npz", allow_pickle=False)
    meta = json.loads(bytes(z["__meta__"]))
    m, V = meta["config"]["model"], len(meta["vocab"])
    modules = {"lstm": torch.nn.LSTM(m["embedding_size"] or V, m["hidden_size"],
                                     m["num_layers"], batch_first=True),
               "head": torch.nn.Linear(m["hidden_size"], V)}
    if m["embedding_size"]:
        modules["embedding"] = torch.nn.Embedding(V, m["embedding_size"])
    net = torch.nn.ModuleDict(modules).double()
    net.load_state_dict({k: torch.from_numpy(z[k].astype(np.float64)) for k in net.state_dict()})

    x, y = run.batches.get(3)
    params64 = {k: v.astype(np.float64) for k, v in run.params.items()}
    loss, _, (h, c) = model.forward(params64, x, y, model.init_state(layers, len(x), 32, np.float64),
                                    keep_cache=False)
    with torch.no_grad():
        inp = (net["embedding"](torch.from_numpy(x)) if emb else
               torch.nn.functional.one_hot(torch.from_numpy(x), V).double())
        out, (th, tc) = net["lstm"](inp)
        logits = net["head"](out)
        tloss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                                  torch.from_numpy(y).reshape(-1))
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    np.testing.assert_allclose(h, th.numpy(), atol=1e-12)
    np.testing.assert_allclose(c, tc.numpy(), atol=1e-12)
