"""The recipe (`charlstm train --minutes N --device cuda`) on an NVIDIA GPU, one thing at a time:
how well its timing lines (a few widths timed per layer count, the rest read off lines in
matrix FLOPs) predict the step time of every net it weighs there; what the heavy regularization's
masks cost a step, drawn on the host or on the device; then a time-budgeted run of its choice and
one of configs/shakespeare-gpu.yaml for the same minutes.

    python benchmarks/gpu_recipe.py --timing --out gpu/    # every width of 1 and 2 layers
    python benchmarks/gpu_recipe.py --masks --out gpu/     # plain, heavy (host), heavy (device)
    python benchmarks/gpu_recipe.py --minutes 2 --out gpu/ # the recipe's run, then the config's
    python benchmarks/gpu_recipe.py --cpu --out cpu/       # the first two on this CPU (a check)

Writes timing.json (a row a net: measured and predicted seconds a step), masks.json and
runs.jsonl (a row a run: best validation loss, steps planned and made), with each run's
metrics.jsonl beside them. Needs data/tinyshakespeare/input.txt (see the README's Quickstart).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import heldout
import study
from charlstm import backend, recipe
from charlstm.bench import random_tokens
from charlstm.cells import Cell
from charlstm.config import Config, replaced
from charlstm.errors import CharlstmError
from charlstm.step import TrainState

SHAKESPEARE = study.HERE.parent / "data" / "tinyshakespeare" / "input.txt"


def timing(device, widths, out, V=65):
    """Each net's measured seconds a step (recipe.time_step, FIXED's batch) beside what the
    recipe reads off its lines through the widths it times (recipe._speeds); returns the rows."""
    cfg = replaced(Config(), {**recipe.FIXED, "train.device": device})
    m, t = cfg.model, cfg.train
    cell = Cell.of_config(m)
    measured = {(L, H): recipe.time_step(V, m.embedding_size, H, L, t.batch_size, t.seq_len,
                                         cell, 0.0, device)
                for L in (1, 2) for H in widths}
    s = recipe._Settings(cfg, set())
    line, said, _ = recipe._speeds(s, V, lambda V, E, H, L, *rest: measured[L, H])
    rows = [{"layers": L, "width": H, "measured_s": measured[L, H], "line_s": line[L, H],
             "error": line[L, H] / measured[L, H] - 1,
             "chars_per_sec": t.batch_size * t.seq_len / measured[L, H]}
            for L, H in measured]
    (out / "timing.json").write_text(json.dumps({"device": device, "timed": said, "rows": rows},
                                                indent=1))
    print(said)
    print("| net | measured ms a step | read off the lines, ms | error | chars/s |\n"
          "| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['layers']} x {r['width']} | {1e3 * r['measured_s']:.2f} | "
              f"{1e3 * r['line_s']:.2f} | {100 * r['error']:+.0f}% | {r['chars_per_sec']:,.0f} |")
    return rows


def masks(device, nets, out, V=65):
    """Seconds a step of each net: without regularization, and with the heavy set (window
    dropout, weight drop, weight decay) drawing its masks on the host and by the counter draw."""
    rows = []
    for L, H in nets:
        plain = recipe.timing_config(V, 64, H, L, 32, 50, Cell("lstm"), 0.0, device)
        heavy = replaced(plain, recipe_heavy())
        row = {"layers": L, "width": H}
        for name, cfg, draw in (("plain", plain, "counter"), ("heavy_host", heavy, "host"),
                                ("heavy_counter", heavy, "counter")):
            row[name] = _step_seconds(cfg, V, device, draw)
        rows.append(row)
        print(f"{L} x {H}: ms a step {1e3 * row['plain']:.2f} plain, {1e3 * row['heavy_host']:.2f}"
              f" heavy (host masks), {1e3 * row['heavy_counter']:.2f} heavy (counter)", flush=True)
    (out / "masks.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))


def recipe_heavy():
    """The heavy set as the recipe sets it (recipe._regularize past OVERFIT_EPOCHS)."""
    s = recipe._Settings(Config(), set())
    recipe._regularize(s, 100.0, 10.0)       # the budget counts only below 3 epochs
    return {k: v for k, v, _ in s.rows}


def _step_seconds(cfg, V, device, draw):
    """Seconds a training step (recipe.time_state: 20 steps after 5), masks drawn by `draw`."""
    ts = TrainState.new(cfg, V)
    ts.to_device(device)
    ts.draw = draw
    x, y = random_tokens(cfg, V, np.random.default_rng(0))
    return recipe.time_state(ts, cfg, x, y, seconds=0.0, steps=20, warmup=5)


def runs(minutes, out):
    """The recipe's run on tiny-shakespeare, then configs/shakespeare-gpu.yaml's for as long."""
    trials = {"recipe": ["--data", str(SHAKESPEARE), "--minutes", str(minutes),
                         "--device", "cuda"],
              "config": ["configs/shakespeare-gpu.yaml", "--set",
                         f"train.max_minutes={minutes}"]}
    for name, args in trials.items():
        folder = Path("runs") / f"gpu-recipe-{name}-{minutes}m"
        shutil.rmtree(folder, ignore_errors=True)
        cmd = [sys.executable, "-m", "charlstm", "train", *args, "--out", str(folder),
               "--no-progress", "--set", "train.sample_length=0"]
        tic = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=study.HERE.parent)
        said = proc.stdout + proc.stderr
        (out / f"{name}.log").write_text(said)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{said[-2000:]}")
        record = {"name": name, "minutes": minutes, "args": args, **study.summarize(folder),
                  **heldout.plans(said), "wall_s": round(time.time() - tic),
                  "chosen": (folder / "config.yaml").read_text()}
        shutil.copy(folder / "metrics.jsonl", out / f"{name}-metrics.jsonl")
        with open(out / "runs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name}: best val {record['best_val']:.4f} in {record['steps']} steps "
              f"(planned {record['planned_steps']}, again {record['replanned_steps']}), "
              f"{record['chars_per_sec']:,} chars/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--timing", action="store_true", help="time every net on the GPU")
    ap.add_argument("--masks", action="store_true", help="the heavy set's masks' cost a step")
    ap.add_argument("--cpu", action="store_true", help="the first two on the CPU (a check)")
    ap.add_argument("--minutes", type=float, help="a recipe run and a config run this long")
    ap.add_argument("--out", type=Path, default=Path("gpu-recipe"),
                    help="the folder the tables, logs and metrics go to (default gpu-recipe)")
    a = ap.parse_args()
    if not (a.timing or a.masks or a.cpu or a.minutes):
        ap.error("give --timing, --masks, --minutes N or --cpu")
    if a.minutes is not None and not a.minutes > 0:
        ap.error(f"--minutes must be a positive number of minutes, got {a.minutes}")
    try:
        a.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {a.out}: cannot make that folder ({e.strerror})")
    try:
        if a.timing or a.masks or a.minutes:
            backend.require("cuda")          # before anything is timed on the CPU
        if a.cpu:
            timing("cpu", (128, 256, 512), a.out)
            masks("cpu", [(1, 256), (1, 416)], a.out)
        if a.timing:
            timing("cuda", recipe.GPU_WIDTHS, a.out)
        if a.masks:
            masks("cuda", [(1, 1024), (1, 2048), (2, 1024)], a.out)
        if a.minutes:
            runs(a.minutes, a.out)
    except CharlstmError as e:
        raise SystemExit(f"gpu_recipe.py: {e}") from None


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
