"""Reproduce the performance tables of benchmarks/RESULTS.md: `charlstm bench` on each
configuration, the median of several runs, beside PyTorch's nn.LSTM (nn.GRU, nn.RNN with --cell)
measured in the same sitting when a Python with torch is given.

    python benchmarks/run.py                                  # charlstm only
    python benchmarks/run.py --torch-python /path/to/venv/bin/python --repeats 3
    python benchmarks/run.py --cell gru --configs 2x128,2x256,2x512 --torch-python python
    python benchmarks/run.py --native-blas                    # see the README on OPENBLAS_CORETYPE

Each run is a separate process, so memory and thread settings do not leak between them. With
torch, each repeat runs charlstm then PyTorch, so that a machine whose load changes during the
sitting slows both alike.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CONFIGS = [  # (layers, hidden, embedding, batch, seq); both sides get the same embedding
    (1, 256, 64, 32, 50),      # the shapes `--minutes` picks, from small texts and budgets...
    (1, 352, 64, 32, 50),
    (1, 448, 64, 32, 50),
    (1, 640, 64, 32, 50),      # ...to configs/shakespeare.yaml
    (2, 128, 128, 50, 50),     # char-rnn's default size
    (2, 256, 64, 64, 100),
    (2, 512, 64, 64, 100),     # torch-rnn's benchmark size
    (3, 512, 64, 64, 100),
]
HERE = Path(__file__).resolve().parent


def run_json(cmd, env):
    """The JSON line a bench prints last; a bench that stops ends the sitting in one line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        what = " ".join(cmd[2:4]) if cmd[1] == "-m" else Path(cmd[1]).name
        said = (proc.stderr.strip().splitlines() or ["(it said nothing)"])[-1]
        raise SystemExit(f"{what} stopped (exit status {proc.returncode}): {said}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each configuration, the median counts (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="threads of each run (default 2)")
    ap.add_argument("--torch-python", help="a Python interpreter that has torch installed")
    ap.add_argument("--native-blas", action="store_true",
                    help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for charlstm's runs")
    ap.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm",
                    help="the cell to time (default lstm)")
    ap.add_argument("--configs", default=",".join(f"{L}x{H}" for L, H, *_ in CONFIGS),
                    help="which configurations, as LxH, comma-separated")
    a = ap.parse_args()
    wanted = a.configs.split(",")
    known = [f"{L}x{H}" for L, H, *_ in CONFIGS]
    unknown = [c for c in wanted if c not in known]
    if unknown:
        ap.error(f"--configs: no configuration {unknown[0]!r} (one of {', '.join(known)})")
    if a.repeats < 1:
        ap.error(f"--repeats {a.repeats}: give 1 or more")
    if a.torch_python:
        try:
            has_torch = not subprocess.run([a.torch_python, "-c", "import torch"],
                                           capture_output=True).returncode
        except OSError as e:
            ap.error(f"--torch-python {a.torch_python}: cannot run it ({e.strerror})")
        if not has_torch:
            ap.error(f"--torch-python {a.torch_python}: that Python has no torch (pip install "
                     "torch into it)")
    env = dict(os.environ)
    if a.native_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    rows = []
    for L, H, E, B, T in CONFIGS:
        if f"{L}x{H}" not in wanted:
            continue
        shape = ["--layers", str(L), "--hidden", str(H), "--embedding", str(E), "--batch", str(B),
                 "--seq", str(T), "--threads", str(a.threads), "--cell", a.cell]
        steps = ["--steps", "30" if H * L * B * T <= 128 * 2 * 50 * 50 else "10"]
        runs, truns = [], []
        for _ in range(a.repeats):                      # ours, then theirs, in turn
            runs.append(run_json([sys.executable, "-m", "charlstm", "bench", *shape, *steps,
                                  "--json"], env))
            if a.torch_python:
                ref = [a.torch_python, str(HERE / "torch_reference.py"), *shape, *steps, "--json"]
                truns.append(run_json(ref, os.environ))
        ours = statistics.median(r["train_chars_per_sec"] for r in runs)
        row = {"config": f"{L}x{H}, E{E}, B{B}, T{T}", "cell": a.cell, "charlstm": ours,
               "gflops": statistics.median(r["achieved_gflops"] for r in runs),
               "machine": statistics.median(r["machine_gflops"] for r in runs),
               "sample": statistics.median(r["sample_chars_per_sec"] for r in runs),
               "rss": statistics.median(r["peak_rss_mb"] for r in runs)}
        if a.torch_python:
            row["torch"] = statistics.median(r["train_chars_per_sec"] for r in truns)
            row["torch_sample"] = statistics.median(r["sample_chars_per_sec"] for r in truns)
            row["ratios"] = [round(o["train_chars_per_sec"] / t["train_chars_per_sec"], 3)
                             for o, t in zip(runs, truns)]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print("| cell, config (layers x hidden, embedding, batch, seq) | charlstm chars/s | GFLOP/s (machine) |"
          " peak RSS MB | sampling chars/s | PyTorch chars/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        torch_cols = (f"{r['torch']:,.0f} | {r['charlstm'] / r['torch']:.2f}x" if "torch" in r
                      else "- | -")
        print(f"| {r['cell']} {r['config']} | {r['charlstm']:,.0f} | {r['gflops']:.0f} ({r['machine']:.0f}) |"
              f" {r['rss']:.0f} | {r['sample']:,.0f} | {torch_cols} |")


if __name__ == "__main__":
    main()
