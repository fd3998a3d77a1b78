"""What `charlstm train --data TEXT --minutes N --dry-run` chooses at the edges of what a user
can give it: texts from 20 KB to 500 MB, 2 to 10,000 symbols, budgets from seconds to 8 hours.
Prints RESULTS.md's table: the choice, the steps it plans, the loss the law predicts, and where
the law extrapolates (or the one line a user gets instead of a choice).

    python benchmarks/corpora.py fortunes-100k pycode-50m     # the texts it cuts from
    python benchmarks/extremes.py                             # about 2 minutes

Each dry run times candidate nets on this machine (a few seconds): run nothing heavy beside it.
The texts are built under ~/.cache/charlstm-study/extremes (the 500 MB one is pycode-50m ten
times over) and never committed.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import corpora

HERE = Path(__file__).resolve().parent
OUT = corpora.DEFAULT_OUT / "extremes"
SHAKESPEARE = HERE.parent / "data" / "tinyshakespeare" / "input.txt"


def fortunes_20k():
    return corpora.build("fortunes-100k").read_text("utf-8")[:20_000]


def two_symbols():
    """1 MB of 'a' and 'b' from a two-state Markov chain (seeded): something to learn."""
    rng = np.random.default_rng(0)
    flips = rng.random(1_000_000) < 0.2
    return "".join(np.where(np.logical_xor.accumulate(flips), "a", "b"))


def ten_thousand_symbols():
    """2 M characters over 10,000 symbols (9,999 CJK ideographs and the line end), Zipf-drawn
    (seeded), a line end every 40 characters."""
    rng = np.random.default_rng(0)
    ranks = np.arange(1, 10_000)
    p = 1.0 / ranks
    symbols = np.array([chr(0x4E00 + i) for i in range(9_999)])
    draws = rng.choice(9_999, size=2_000_000, p=p / p.sum())
    draws[:9_999] = np.arange(9_999)                     # every symbol at least once
    lines = symbols[draws].reshape(-1, 40)
    return "\n".join("".join(line) for line in lines) + "\n"


def pycode_500m():
    return corpora.build("pycode-50m").read_text("utf-8") * 10


TEXTS = {"fortunes-20k": fortunes_20k, "shakespeare": None, "two-symbols-1m": two_symbols,
         "10k-symbols-2m": ten_thousand_symbols, "pycode-500m": pycode_500m}
CASES = [("fortunes-20k", 0.2), ("fortunes-20k", 1), ("fortunes-20k", 480),
         ("shakespeare", 1), ("shakespeare", 480), ("two-symbols-1m", 10),
         ("10k-symbols-2m", 10), ("pycode-500m", 1), ("pycode-500m", 480)]


def text_path(name):
    if name == "shakespeare":
        return SHAKESPEARE
    path = OUT / f"{name}.txt"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(TEXTS[name](), "utf-8")
        tmp.replace(path)
    return path


def dry_run(path, minutes):
    """(the row's cells) of one dry run: its choice, or the line it said instead."""
    proc = subprocess.run([sys.executable, "-m", "charlstm", "train", "--data", str(path),
                           "--minutes", str(minutes), "--dry-run", "--no-progress"],
                          capture_output=True, text=True, cwd=HERE.parent)
    said = proc.stdout
    if proc.returncode != 0:
        return ["-", "-", "-", "-", proc.stderr.strip().splitlines()[-1]]
    size = re.search(r"model\.hidden_size\s+\d+\s+(\d x \d+), [\d.]+M parameters: ([\d,]+) steps "
                     r"read ([\d.]+M) characters \(([\d,.]+) epochs", said)
    drop = re.search(r"model\.dropout\s+([\d.]+)", said)
    heavy = re.search(r"model\.weight_drop\s+([\d.]+)", said)
    loss = re.search(r"predicted validation loss: ([\d.]+)", said)
    far = re.search(r"the law extrapolates here: (.*?)(?=\n  \S|\n#|\Z)", said, re.S)
    regular = f"dropout {drop[1]}" + (", weight drop" if heavy and float(heavy[1]) else "")
    return [size[1], regular, f"{size[2]} ({size[4]} epochs)", loss[1] if loss else "-",
            " ".join(far[1].split()) if far else "inside"]


def main():
    argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split())).parse_args()
    print("| text | characters | symbols | minutes | choice | regularization | planned steps "
          "| predicted loss | where the law extrapolates |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, minutes in CASES:
        path = text_path(name)
        text = (corpora.build("pycode-50m") if name == "pycode-500m" else path).read_text("utf-8")
        n, v = len(text) * (10 if name == "pycode-500m" else 1), len(set(text))
        cells = dry_run(path, minutes)
        print(f"| {name} | {n:,} | {v:,} | {minutes:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
