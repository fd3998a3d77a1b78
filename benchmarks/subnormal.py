"""Adam's step on the moments of a finished run (default: the held-out study's french-man, 10 min,
1 x 576: 364,534 subnormal entries in m), gradients zero where m is subnormal, with and without
the flush of subnormal moments (optim.FLUSH_EVERY), alternating.

    python benchmarks/subnormal.py [CHECKPOINT]
"""
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from charlstm import optim

DEFAULT = Path.home() / ".cache/charlstm-study/runs/judge-french-man-10m-v2:w1.4/last.npz"
z = np.load(sys.argv[1] if len(sys.argv) > 1 else DEFAULT)
keys = sorted(k[len("optim.m."):] for k in z.files if k.startswith("optim.m."))
m0 = np.concatenate([z["optim.m." + k].ravel() for k in keys]).astype(np.float32)
v0 = np.concatenate([z["optim.v." + k].ravel() for k in keys]).astype(np.float32)
tiny = np.finfo(np.float32).tiny
quiet = (m0 != 0) & (np.abs(m0) < tiny)
print(f"{m0.size:,} entries, {quiet.sum():,} subnormal in m, {((v0 != 0) & (v0 < tiny)).sum():,} in v")
rng = np.random.default_rng(0)
grad = (rng.standard_normal(m0.size).astype(np.float32) * 1e-3) * ~quiet
cfg = SimpleNamespace(beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
def run(flush, steps=64):
    optim.FLUSH_EVERY = 16 if flush else 1 << 30
    flat = np.zeros_like(m0)
    state = optim.adamw_init(flat, np.ones_like(flat))
    state["m"][:], state["v"][:], state["t"] = m0, v0, 1000
    t = time.perf_counter()
    for _ in range(steps):
        optim.adamw_step(flat, grad, state, 1e-3, cfg)
    return (time.perf_counter() - t) / steps * 1e3
res = {True: [], False: []}
for _ in range(4):
    for f in (False, True):
        res[f].append(run(f))
for f in (False, True):
    print(("flush every 16 steps" if f else "no flush"), "ms per step:", [round(x, 2) for x in res[f]])
