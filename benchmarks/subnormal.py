"""What subnormal floats cost a training step, and what setting them to 0 gives back, alternating:

1. Adam's step on the moments of a finished run (default: the held-out study's french-man, 10 min,
   1 x 576: 364,534 subnormal entries in m), gradients zero where m is subnormal, with and without
   the flush of subnormal moments every optim.FLUSH_EVERY steps.
2. Whole training steps (forward, backward, Adam) from a finished run's weights and moments
   (default: french-man, 10 min, 1 x 288) and from a fresh initialization of the same net, with
   and without model.LOGIT_FLOOR: a trained net gives the characters it rules out subnormal
   probabilities, which slow the backward's products.

    python benchmarks/subnormal.py [--adam CHECKPOINT] [--steps CHECKPOINT]
"""
import argparse
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from charlstm import model, optim, runstate, step
from charlstm.errors import CharlstmError

RUNS = Path.home() / ".cache/charlstm-study/runs"
TINY = np.finfo(np.float32).tiny


def subnormal(a):
    """Where a holds a subnormal number (nonzero, below float32's smallest normal)."""
    return (a != 0) & (np.abs(a) < TINY)


def adam(path, rounds=4, steps=64):
    try:
        z = np.load(path)
        keys = sorted(k[len("optim.m."):] for k in z.files if k.startswith("optim.m."))
        m0 = np.concatenate([z["optim.m." + k].ravel() for k in keys]).astype(np.float32)
        v0 = np.concatenate([z["optim.v." + k].ravel() for k in keys]).astype(np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise SystemExit(f"subnormal.py: {path}: not a checkpoint with Adam moments "
                         f"({' '.join(str(e).split())})") from None
    quiet = subnormal(m0)
    print(f"Adam: {m0.size:,} entries, {quiet.sum():,} subnormal in m, {subnormal(v0).sum():,} "
          "in v")
    rng = np.random.default_rng(0)
    grad = (rng.standard_normal(m0.size).astype(np.float32) * 1e-3) * ~quiet
    cfg = SimpleNamespace(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)

    def run(flush):
        optim.FLUSH_EVERY = 16 if flush else 1 << 30
        flat = np.zeros_like(m0)
        state = optim.adamw_init(flat, np.ones_like(flat))
        state["m"][:], state["v"][:], state["t"] = m0, v0, 1000
        t = time.perf_counter()
        for _ in range(steps):
            optim.adamw_step(flat, grad, state, 1e-3, cfg)
        return (time.perf_counter() - t) / steps * 1e3
    res = {True: [], False: []}
    for _ in range(rounds):
        for f in (False, True):
            res[f].append(run(f))
    optim.FLUSH_EVERY = 16
    for f in (False, True):
        print(f"  {'flush every 16 steps' if f else 'no flush':22s} ms per Adam step:",
              [round(x, 2) for x in res[f]])


def steps(path, rounds=4, n=60):
    try:
        rs = runstate.load_run(path)
        cfg, V = rs.cfg, len(rs.vocab)
        text = Path(cfg.data.path).read_text(encoding="utf-8")[:600_000]
    except (OSError, CharlstmError) as e:        # a damaged checkpoint, or its text gone
        raise SystemExit(f"subnormal.py: {e}") from None
    known = set(rs.vocab.chars)
    ids = np.asarray(rs.vocab.encode("".join(c for c in text if c in known)))
    B, T = cfg.train.batch_size, cfg.train.seq_len
    nets = {"fresh": step.TrainState.new(cfg, V), "trained": step.TrainState.new(cfg, V)}
    nets["trained"].restore(rs)

    def block(ts, flush, seed):
        model.LOGIT_FLOOR = floor if flush else -np.inf
        r = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for _ in range(n):
            o = r.integers(0, len(ids) - T - 1, size=B)
            w = np.stack([ids[a:a + T + 1] for a in o])
            step.train_step(ts, cfg, w[:, :-1], w[:, 1:], 1e-4)
        return (time.perf_counter() - t0) / n * 1e3
    floor = model.LOGIT_FLOOR
    res = {(k, f): [] for k in nets for f in (False, True)}
    for r in range(rounds):
        for (k, f) in res:
            res[k, f].append(block(nets[k], f, r))
    model.LOGIT_FLOOR = floor
    L, H = cfg.model.num_layers, cfg.model.hidden_size
    print(f"Training steps, {L} x {H}, V {V}, batch {B} x {T}, from {path}:")
    for (k, f), v in res.items():
        print(f"  {k:7s} {'floor' if f else 'no floor':8s} ms per step:", [round(x, 1) for x in v])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adam", default=RUNS / "judge-french-man-10m-v2:w1.4/last.npz",
                    help="the checkpoint whose moments Adam steps on (1.)")
    ap.add_argument("--steps", default=RUNS / "judge-french-man-10m-v2:w0.7/last.npz",
                    help="the checkpoint whose weights and moments the steps start from (2.)")
    a = ap.parse_args()
    for option in ("adam", "steps"):
        if not Path(getattr(a, option)).is_file():
            ap.error(f"--{option} {getattr(a, option)}: no such checkpoint (the default is a run "
                     "of the held-out study: give one of yours)")
    adam(a.adam)
    steps(a.steps)


if __name__ == "__main__":
    main()
