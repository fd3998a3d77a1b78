"""The GPU figures of benchmarks/RESULTS.md: `charlstm bench --device cuda` beside PyTorch's cuDNN
nn.LSTM on the same GPU, in one sitting, alternating, float32 with TF32 off and on for both.

    python benchmarks/gpu.py                       # on a machine with an NVIDIA GPU, CuPy and torch
    python benchmarks/gpu.py --cpu-json cpu.json   # add the 2-core CPU figure measured elsewhere

TF32: charlstm's products go through cuBLAS, which uses TF32 tensor cores for float32 only when
CUPY_TF32=1 is set; PyTorch's cuDNN LSTM uses them unless told not to (--tf32 off).
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from run import HERE, run_json          # benchmarks/run.py, beside this script

CONFIGS = [(2, 512, 64, 100), (3, 1024, 256, 100)]  # (layers, hidden, batch, seq)


def main():
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--repeats", type=int, default=2,
                    help="runs of each configuration and TF32 setting, charlstm's and cuDNN's in "
                         "turn; the median counts (default 2)")
    ap.add_argument("--steps", type=int, default=10, help="steps timed in each run (default 10)")
    ap.add_argument("--cpu-json", help="JSON of {config: chars/s} of charlstm bench on a CPU")
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error(f"--repeats {a.repeats}: give 1 or more")
    try:
        cpu = json.loads(Path(a.cpu_json).read_text()) if a.cpu_json else {}
    except (OSError, ValueError) as e:
        ap.error(f"--cpu-json {a.cpu_json}: cannot read it as JSON "
                 f"({getattr(e, 'strerror', None) or e})")
    if not isinstance(cpu, dict):
        ap.error(f"--cpu-json {a.cpu_json}: not a table of chars/s by configuration "
                 '({"2x512, 64, 100": 12000, ...})')
    rows = []
    for L, H, B, T in CONFIGS:
        shape = ["--layers", str(L), "--hidden", str(H), "--batch", str(B), "--seq", str(T),
                 "--steps", str(a.steps)]
        for tf32 in ("off", "on"):
            env = dict(os.environ, CUPY_TF32="1" if tf32 == "on" else "0")
            ours, theirs, runs = [], [], []
            for _ in range(a.repeats):                 # alternating, in one sitting
                r = run_json([sys.executable, "-m", "charlstm", "bench", "--device", "cuda",
                              *shape, "--json"], env)
                runs.append(r)
                ours.append(r["train_chars_per_sec"])
                theirs.append(run_json([sys.executable, str(HERE / "torch_reference.py"),
                                        "--device", "cuda", "--tf32", tf32, *shape, "--json"],
                                       env)["train_chars_per_sec"])
            key = f"{L}x{H}, {B}, {T}"
            row = {"config": key, "tf32": tf32, "charlstm": statistics.median(ours),
                   "cudnn": statistics.median(theirs),
                   "step_ms": statistics.median(r["step_ms"] for r in runs),
                   "gflops": statistics.median(r["achieved_gflops"] for r in runs),
                   "machine": statistics.median(r["machine_gflops"] for r in runs),
                   "sample": statistics.median(r["sample_chars_per_sec"] for r in runs),
                   "gpu_mb": statistics.median(r["gpu_memory_mb"] for r in runs),
                   "cpu": cpu.get(key)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| config (layers x hidden, batch, seq) | TF32 | charlstm chars/s | cuDNN chars/s |"
          " ratio | GFLOP/s (GPU's matmul) | sampling chars/s | x 2-core CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        vs_cpu = f"{r['charlstm'] / r['cpu']:.0f}x" if r["cpu"] else "-"
        print(f"| {r['config']} | {r['tf32']} | {r['charlstm']:,.0f} | {r['cudnn']:,.0f} | "
              f"{r['charlstm'] / r['cudnn']:.2f}x | {r['gflops']:,.0f} ({r['machine']:,.0f}) | "
              f"{r['sample']:,.0f} | {vs_cpu} |")


if __name__ == "__main__":
    main()
