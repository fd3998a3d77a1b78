"""Where a training step's time goes: step.train_step at one shape, split into its parts, each
beside its floor (the matrix products at this machine's rate on a large product, the rest at its
memory bandwidth).

    python benchmarks/step_profile.py                                   # 1 x 640, E64, B32, T50
    python benchmarks/step_profile.py --set model.num_layers=2 --set model.hidden_size=128 \\
        --set model.embedding_size=128 --set train.batch_size=50

The parts are timed by wrapping the functions a step calls (the wrappers add about a microsecond
a call); "recurrent products" re-times each layer's T per-step products alone, at the same
shapes, and so is a part of the LSTM loops above it, not an extra.
"""

import argparse
import time
from collections import defaultdict

import numpy as np

from charlstm import cells, lstm, model, optim, step
from charlstm.bench import bench_config, machine_gflops, random_tokens
from charlstm.errors import CharlstmError

DEFAULTS = ["model.num_layers=1", "model.hidden_size=640", "model.embedding_size=64",
            "train.batch_size=32", "train.seq_len=50", "model.dropout=0.2", "optim.ema=0.999"]


def timed(spent, label, f):
    def wrapper(*a, **k):
        tic = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[label] += time.perf_counter() - tic
    return wrapper


def bandwidth_gbs(n=50_000_000):
    """A large copy's rate: reading and writing n float32."""
    a, b = np.ones(n, np.float32), np.empty(n, np.float32)
    np.copyto(b, a)
    tic, k = time.perf_counter(), 0
    while time.perf_counter() - tic < 1:
        np.copyto(b, a)
        k += 1
    return 2 * 4 * n * k / (time.perf_counter() - tic) / 1e9


def recurrent_products(ts, cfg, steps):
    """Seconds a step spends in the per-time-step recurrent products alone (forward + backward)."""
    m, t = cfg.model, cfg.train
    B, T, H = t.batch_size, t.seq_len, m.hidden_size
    total = 0.0
    for k in range(m.num_layers):
        w = ts.params[f"lstm.weight_hh_l{k}"]                    # (4H, H)
        h = np.random.default_rng(0).standard_normal((B, H)).astype(np.float32)
        da = np.random.default_rng(1).standard_normal((B, 4 * H)).astype(np.float32)
        wide = H >= lstm.TRANSPOSED_FROM
        fwd = (lambda: w @ h.T) if wide else (lambda: h @ w.T.copy())
        bwd = (lambda: w.T @ da.T) if wide else (lambda: da @ w)
        for f in (fwd, bwd):
            f()
            tic = time.perf_counter()
            for _ in range(steps * T):
                f()
            total += (time.perf_counter() - tic) / steps
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting on top of the 1 x 640 shape (repeatable)")
    ap.add_argument("--steps", type=int, default=10, help="steps timed (default 10)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error(f"--steps {args.steps}: give 1 or more")
    try:
        cfg = bench_config(None, DEFAULTS + args.sets)
    except CharlstmError as e:
        raise SystemExit(f"step_profile.py: {e}") from None
    m, t = cfg.model, cfg.train
    V, B, T, H, L, E = 65, t.batch_size, t.seq_len, m.hidden_size, m.num_layers, m.embedding_size
    spent = defaultdict(float)
    patches = [(model, "_input_table", "input table (embedding @ W_ih)"),
               (model, "_dropout_mask", "dropout masks"),
               (model, "softmax_cross_entropy", "softmax and loss"),
               (model, "_scatter_rows", "input gradient scatter"),
               (cells.lstm, "lstm_forward", "LSTM forward loop"),
               (cells.lstm, "lstm_backward", "LSTM backward loop (and dW_hh)"),
               (optim, "grad_norm", "gradient norm"),
               (optim, "adamw_step", "AdamW (with clipping and the weight average)"),
               (optim, "clip_grad_norm", "clip"), (optim, "ema_update", "weight average")]
    for mod, name, label in patches:
        if hasattr(mod, name):            # (the last two: steps that did them on their own)
            setattr(mod, name, timed(spent, label, getattr(mod, name)))
    ts = step.TrainState.new(cfg, V)
    ts.keep_average(cfg.optim.ema)
    x, y = random_tokens(cfg, V, np.random.default_rng(0))
    for _ in range(3):
        step.train_step(ts, cfg, x, y, 1e-3)
    spent.clear()
    marks = {}
    tic = time.perf_counter()
    for _ in range(args.steps):
        marks["start"] = time.perf_counter()
        step.train_step(ts, cfg, x, y, 1e-3,
                        timer=lambda phase: marks.update({phase: time.perf_counter()}))
    total = (time.perf_counter() - tic) / args.steps
    rec = recurrent_products(ts, cfg, 3)
    peak, bw = machine_gflops() * 1e9, bandwidth_gbs() * 1e9
    G = 4 * H
    mm = {"LSTM forward loop": 2 * T * B * H * G * L + 2 * T * B * H * G * (L - 1),
          "LSTM backward loop (and dW_hh)": 4 * T * B * H * G * L + 4 * T * B * H * G * (L - 1)}
    print(f"{L} x {H} LSTM, E{E}, B{B}, T{T}, V{V}, dropout {m.dropout}, ema {cfg.optim.ema}: "
          f"{1e3 * total:.1f} ms a step ({B * T / total:,.0f} chars/s); machine {peak / 1e9:.0f} "
          f"GFLOP/s, {bw / 1e9:.1f} GB/s")
    print("| part | ms a step | share | floor ms | x floor |")
    print("| --- | --- | --- | --- | --- |")
    n_params = ts.flat.size
    average = 4 if cfg.optim.ema else 0         # vectors read and written, each of n_params
    floors = {"AdamW (with clipping and the weight average)": (7 + average) * 4 * n_params / bw,
              "weight average": 4 * 4 * n_params / bw, "gradient norm": 4 * n_params / bw,
              "softmax and loss": 3 * 4 * T * B * V / bw,
              "clip": 4 * n_params / bw, "dropout masks": 2 * 4 * T * B * H * L / bw}
    for label, secs in sorted(spent.items(), key=lambda kv: -kv[1]):
        ms = 1e3 * secs / args.steps
        floor = 1e3 * (mm[label] / peak if label in mm else floors.get(label, float("nan")))
        print(f"| {label} | {ms:.1f} | {100 * ms / (1e3 * total):.0f}% | {floor:.1f} | "
              f"{ms / floor:.1f} |" if floor == floor else f"| {label} | {ms:.1f} | "
              f"{100 * ms / (1e3 * total):.0f}% | | |")
    per_step = 2 * 2 * T * B * H * G * L
    print(f"| of which: the recurrent products alone | {1e3 * rec:.1f} | "
          f"{100 * rec / total:.0f}% | {1e3 * per_step / peak:.1f} | "
          f"{rec / (per_step / peak):.1f} |")
    rest = total - sum(spent.values()) / args.steps
    print(f"| the rest (head products, gathers, Python) | {1e3 * rest:.1f} | "
          f"{100 * rest / total:.0f}% | | |")


if __name__ == "__main__":
    main()
