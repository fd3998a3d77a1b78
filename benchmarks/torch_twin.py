"""A PyTorch twin of a `charlstm train` run, for the loop race of benchmarks/RESULTS.md (developers
only; torch is never a charlstm dependency).

The twin takes from charlstm everything but the arithmetic of a step: the config, the corpus and
its split, the initial weights, the windows in their order (the carried state reset at each
epoch), the learning-rate schedule over the training minutes and the evaluation (charlstm's
evaluator on the validation split, streams started from the carried state, with the twin's
averaged weights, every train.eval_minutes of training time). A step is PyTorch's: Embedding ->
nn.LSTM (oneDNN) -> Dropout -> Linear, cross-entropy, clip_grad_norm_, torch.optim.AdamW with
decay on the matrices only, then the moving average of the weights as optim.ema's (decay
min(ema, (1 + step) / (10 + step))). Only the steps are timed, as charlstm times them.

    python benchmarks/torch_twin.py configs/shakespeare.yaml            # 10 minutes, as it says
    python benchmarks/torch_twin.py configs/shakespeare.yaml --set train.max_minutes=2

It prints a line per evaluation and, last, one JSON line: steps, best validation loss, chars/s.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    import torch
except ImportError:                    # developers only: say so in one line
    sys.exit("torch_twin.py needs PyTorch, which is not installed here: pip install torch (into a "
             "scratch virtualenv; never a charlstm dependency)")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this clone's charlstm

from charlstm import optim, run as runs                          # noqa: E402
from charlstm.config import load_config                          # noqa: E402
from charlstm.errors import CharlstmError                        # noqa: E402
from charlstm.evaluate import evaluate                           # noqa: E402
from charlstm.step import next_window                            # noqa: E402


class Twin(torch.nn.Module):
    def __init__(self, V, E, H, L, dropout):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, E)
        self.lstm = torch.nn.LSTM(E, H, L, batch_first=True, dropout=dropout if L > 1 else 0.0)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(H, V)

    def forward(self, x, state):
        out, state = self.lstm(self.embedding(x), state)
        return self.head(self.drop(out)), state


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("config", help="the config of the charlstm run to twin (a plain LSTM with a "
                                   "time budget)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting on top of the config, as charlstm train's (repeatable)")
    a = ap.parse_args()
    try:
        cfg = load_config(a.config, a.set)
    except CharlstmError as e:
        sys.exit(f"torch_twin.py: {e}")
    m, o, t = cfg.model, cfg.optim, cfg.train
    if m.cell != "lstm" or m.peepholes or m.coupled_gates or not m.embedding_size \
            or m.weight_drop or m.dropout_mask != "step" or not t.max_minutes:
        sys.exit("the twin runs a plain LSTM with an embedding, step dropout masks and a "
                 "time budget (train.max_minutes)")
    torch.set_num_threads(t.threads or 2)
    with tempfile.TemporaryDirectory() as folder:   # charlstm's data, split and initial weights
        try:
            run = runs.start(cfg, Path(folder) / "run")
        except CharlstmError as e:
            sys.exit(f"torch_twin.py: {e}")
    V, ts = len(run.vocab), run.ts
    net = Twin(V, m.embedding_size, m.hidden_size, m.num_layers, m.dropout)
    net.load_state_dict({name: torch.from_numpy(p.copy()) for name, p in ts.params.items()},
                        strict=False)
    named = {name: p for name, p in net.named_parameters()}
    assert set(named) == set(ts.params), "the twin's parameters are charlstm's"
    adamw = torch.optim.AdamW(
        [{"params": [p for p in named.values() if p.ndim >= 2], "weight_decay": o.weight_decay},
         {"params": [p for p in named.values() if p.ndim < 2], "weight_decay": 0.0}],
        lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    average = {name: p.detach().clone() for name, p in named.items()} if o.ema else None
    state, epoch = None, ts.epoch
    train_time, step, best, next_eval, evaluated = 0.0, 0, math.inf, 60 * t.eval_minutes, None
    budget = 60 * t.max_minutes

    def evaluation():
        weights = average or {name: p.detach() for name, p in named.items()}
        params = {name: w.numpy().copy() for name, w in weights.items()}
        start = tuple(s.numpy() for s in state) if state is not None else None
        loss = evaluate(params, run.val_tokens, start=start)[0]   # streams from the carried state
        print(f"step {step}  train {train_time / 60:.2f} min  val loss {loss:.4f}", flush=True)
        return loss

    while train_time < budget:
        x, y = next_window(ts, run.batches, t.seed)       # ts only keeps the window's position
        if ts.epoch != epoch:                             # a new epoch starts from a zero state
            state, epoch = None, ts.epoch
        ts.window += 1
        tic = time.perf_counter()
        lr = optim.lr_at(step, o, None, train_time / budget)
        for group in adamw.param_groups:
            group["lr"] = lr
        net.train()
        logits, (h, c) = net(torch.from_numpy(x.astype(np.int64)), state)
        targets = torch.from_numpy(y.astype(np.int64)).reshape(-1)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets)
        adamw.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
        adamw.step()
        step += 1
        state = (h.detach(), c.detach())
        if average is not None:
            with torch.no_grad():
                d = optim.ema_decay(o.ema, step)
                for name, p in named.items():
                    average[name].lerp_(p, 1.0 - d)
        train_time += time.perf_counter() - tic
        if train_time >= next_eval:
            best, evaluated = min(best, evaluation()), step
            next_eval += 60 * t.eval_minutes
    if evaluated != step:
        best = min(best, evaluation())
    print(json.dumps({"steps": step, "best_val_loss": round(best, 4),
                      "train_minutes": round(train_time / 60, 3),
                      "chars_per_sec": round(step * t.batch_size * t.seq_len / train_time),
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
