"""The race of benchmarks/RESULTS.md: every cell and LSTM variant trained for the same minutes on
one corpus, one after another, then a table and one plot overlaying their curves.

    python benchmarks/race.py                      # configs/shakespeare.yaml, 10 minutes each
    python benchmarks/race.py --minutes 5 --only lstm,gru --out runs/race-5
    python benchmarks/race.py --entry gru-lr2e-3:model.cell=gru,optim.lr=0.002
    python benchmarks/race.py --data notes.txt --set train.threads=2

Each entry is `charlstm train CONFIG --set train.max_minutes=MINUTES` plus its own --set strings,
in OUT/NAME. It is resumable: a finished run is skipped, an interrupted one continues from its
last checkpoint (`--resume`), and a larger --minutes trains finished runs on to the new budget.
A run folder remembers its entry's settings and refuses to continue under others. The table goes
to OUT/race.md (and the screen): cell, settings, best val loss, steps, training chars/s and
parameters; the plot, drawn by `charlstm plot`, to OUT/race.png.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))             # this clone's charlstm, here and in the runs below
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                 os.environ.get("PYTHONPATH")])))

from charlstm import model  # noqa: E402
from charlstm.cells import Cell  # noqa: E402
from charlstm.checkpoint import read_meta  # noqa: E402
from charlstm.config import config_from_dict, load_config  # noqa: E402
from charlstm.errors import CharlstmError  # noqa: E402

# name -> --set strings on top of the config: the shipped recipe for every cell unless an entry
# says otherwise (tune here, or add entries with --entry)
ENTRIES = {
    "lstm": [],
    "lstm-peepholes": ["model.peepholes=true"],
    "lstm-coupled": ["model.coupled_gates=true"],
    "lstm-peepholes-coupled": ["model.peepholes=true", "model.coupled_gates=true"],
    "gru": ["model.cell=gru"],
    "rnn": ["model.cell=rnn"],
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--config", default="configs/shakespeare.yaml", help="the recipe every entry "
                    "starts from [configs/shakespeare.yaml]")
    ap.add_argument("--data", help="text to train on instead of the config's data.path")
    ap.add_argument("--minutes", type=float, default=10.0, help="training minutes per entry [10]")
    ap.add_argument("--out", default="runs/race", help="folder of the runs, table and plot")
    ap.add_argument("--only", help="comma-separated entry names to run (default: all)")
    ap.add_argument("--entry", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="add an entry, or replace the one of that name (repeatable)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a --set for every entry (repeatable)")
    a = ap.parse_args(argv)
    if not a.minutes > 0:
        ap.error("--minutes must be > 0")
    entries = dict(ENTRIES)
    for text in a.entry:
        name, _, sets = text.partition(":")
        if not name or "/" in name:
            ap.error(f"--entry {text!r}: expected NAME:KEY=VALUE,...")
        entries[name] = [s for s in sets.split(",") if s]
    if a.only:
        unknown = [n for n in a.only.split(",") if n not in entries]
        if unknown:
            ap.error(f"--only: unknown entries {', '.join(unknown)}; known: {', '.join(entries)}")
        entries = {n: entries[n] for n in a.only.split(",")}
    a.entries = entries
    return a


def status(run_dir, minutes):
    """'new', 'partial' or 'done' for a run folder, from its last checkpoint: done when it used
    the budget, or made the steps it planned for this budget (charlstm's run.Run.plan)."""
    last = run_dir / "last.npz"
    if not last.exists():
        return "new"
    meta, t = read_meta(last), load_config(run_dir / "config.yaml").train
    planned_out = t.max_minutes == minutes and t.max_steps and meta["step"] >= t.max_steps
    return "done" if meta["train_time"] >= 60 * minutes or planned_out else "partial"


def train(a, name, sets):
    """Start, continue or skip one entry's run; returns its folder."""
    run_dir = Path(a.out) / name
    record = {"config": a.config, "data": a.data, "sets": a.overrides + sets}
    stamp = run_dir / "race-entry.json"
    again = f"remove {run_dir} to train it anew, or choose another --out"
    try:
        stamped = json.loads(stamp.read_text()) if stamp.exists() else record
    except (OSError, ValueError) as e:
        sys.exit(f"race.py: {name}: {stamp} cannot be read ({e}); {again}")
    if stamped != record:
        sys.exit(f"race.py: {run_dir} was trained with other settings ({stamped}); remove it or "
                 "choose another --out")
    try:
        state = status(run_dir, a.minutes)
    except CharlstmError as e:
        sys.exit(f"race.py: {name}: {e}; {again}")
    budget = [f"train.max_minutes={a.minutes}"]
    if state == "done":
        print(f"race: {name}: done, skipped", flush=True)
        return run_dir
    if state == "partial":
        cmd = ["train", "--resume", str(run_dir), "--set", budget[0]]
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            sys.exit(f"race.py: --out {a.out}: cannot make {run_dir} ({e.strerror}); give a "
                     "folder path")
        stamp.write_text(json.dumps(record))
        sets_all = ["train.max_steps=null"] + budget + a.overrides + sets
        cmd = ["train", a.config, "--out", str(run_dir)] + (["--data", a.data] if a.data else [])
        cmd += [x for s in sets_all for x in ("--set", s)]
    print(f"race: {name}: {'continuing' if state == 'partial' else 'training'} for "
          f"{a.minutes:g} minutes: charlstm {' '.join(cmd)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "charlstm", *cmd, "--no-progress"], env=ENV)
    if result.returncode != 0:
        sys.exit(f"race.py: {name} failed (exit {result.returncode}); fix it, then run the race "
                 "again: finished runs are kept")
    return run_dir


def row(name, run_dir):
    """The table's figures for one finished run."""
    meta = read_meta(run_dir / "last.npz")
    cfg = config_from_dict(meta["config"], str(run_dir))
    m, t = cfg.model, cfg.train
    n_params = sum(int(np.prod(s)) for s in model.config_shapes(len(meta["vocab"]), m).values())
    sets = json.loads((run_dir / "race-entry.json").read_text())["sets"]
    settings = f"{m.num_layers} x {m.hidden_size}, lr {cfg.optim.lr:g}" + (
        "; " + ", ".join(sets) if sets else "")
    return {"name": name, "cell": Cell.of_config(m).describe(), "settings": settings,
            "val_loss": meta["best_val_loss"], "steps": meta["step"],
            "chars_per_sec": meta["step"] * t.batch_size * t.seq_len / meta["train_time"],
            "parameters": n_params}


def table(rows, minutes):
    lines = [f"| cell | settings | best val loss after {minutes:g} min (nats/char) | steps | "
             "chars/s | parameters |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        lines.append(f"| {r['cell']} (`{r['name']}`) | {r['settings']} | {loss} | {r['steps']:,} | "
                     f"{r['chars_per_sec']:,.0f} | {r['parameters']:,} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    a = parse_args(argv)
    dirs = {name: train(a, name, sets) for name, sets in a.entries.items()}
    out = Path(a.out)
    text = table([row(name, d) for name, d in dirs.items()], a.minutes)
    (out / "race.md").write_text(text)
    print(text, end="")
    print(f"race: table in {out / 'race.md'}", flush=True)
    plot = subprocess.run([sys.executable, "-m", "charlstm", "plot", *map(str, dirs.values()),
                           "-o", str(out / "race.png")], env=ENV)
    if plot.returncode != 0:
        print("race: no plot (see the line above); the table is complete", file=sys.stderr)


if __name__ == "__main__":
    main()
