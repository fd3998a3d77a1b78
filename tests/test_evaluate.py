"""evaluate(): its streams' starting states, and its progress bar, only when asked (the training
loop's evaluations stay silent)."""

import numpy as np
import pytest
from tqdm import tqdm

from charlstm import evaluate as evaluate_module, model
from charlstm.config import load_config
from charlstm.evaluate import evaluate


def test_evaluate_is_silent_unless_asked_and_the_bar_changes_nothing(capfd, monkeypatch):
    counted = []

    class Counting(tqdm):
        def close(self):
            counted.append((self.n, self.total))
            super().close()
    monkeypatch.setattr(evaluate_module, "tqdm", Counting)
    _, params = model.init_params(5, load_config("configs/tiny.yaml").model,
                                  np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 5, 25_002).astype(np.uint8)  # 2 streams + tail
    quiet = evaluate(params, tokens)
    assert capfd.readouterr() == ("", "")
    shown = evaluate(params, tokens, progress=True)
    out, err = capfd.readouterr()
    assert shown == quiet and out == "" and shown[1] == 25_001
    assert err.startswith("\reval:   0%|") and "/25.0k [" in err and "char/s]" in err
    assert counted[-1] == (25_001, 25_001)                     # every character counted, once


def test_streams_start_from_the_given_states_in_turn():
    """Stream i starts from row i % R of `start` (a checkpoint's carried state), not from zeros."""
    cfg = load_config("configs/tiny.yaml").model
    _, params = model.init_params(5, cfg, np.random.default_rng(0))
    L, H = cfg.num_layers, cfg.hidden_size
    tokens = np.random.default_rng(1).integers(0, 5, 3 * 400 + 1)       # 3 streams, no tail
    rng = np.random.default_rng(2)
    start = tuple(rng.normal(0, 2, (L, 2, H)).astype(np.float32) for _ in range(2))
    total = 0.0
    for i in range(3):                                                   # rows 0, 1, 0
        row = tuple(s[:, [i % 2]].copy() for s in start)
        x, y = tokens[i * 400:(i + 1) * 400], tokens[i * 400 + 1:(i + 1) * 400 + 1]
        total += model.forward(params, x[None], y[None], row, keep_cache=False)[0] * 400
    loss, chars, streams = evaluate(params, tokens, min_stream=400, start=start)
    assert (chars, streams) == (1200, 3)
    assert loss == pytest.approx(total / 1200, rel=1e-5)
    assert loss != pytest.approx(evaluate(params, tokens, min_stream=400)[0], rel=1e-5)  # zeros
