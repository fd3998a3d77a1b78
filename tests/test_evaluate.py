"""evaluate()'s progress bar: only when asked: the training loop's evaluations stay silent."""

import numpy as np
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
