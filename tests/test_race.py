"""benchmarks/race.py on a tiny budget: it trains each entry, skips finished runs, continues
unfinished ones, and writes the table and the overlay plot."""

import subprocess
import sys
from pathlib import Path

import pytest

from charlstm.checkpoint import read_meta
from charlstm.config import load_config

RACE = Path(__file__).resolve().parents[1] / "benchmarks" / "race.py"


def race(tmp_path, corpus, *args):
    cmd = [sys.executable, str(RACE), "--config", "configs/tiny.yaml", "--data", str(corpus),
           "--out", str(tmp_path / "race"), "--set", "train.eval_every=1000000", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_race_trains_skips_and_continues(tmp_path, corpus):
    first = race(tmp_path, corpus, "--minutes", 0.005, "--only", "gru,lstm-peepholes-coupled",
                 "--entry", "gru:model.cell=gru,optim.lr=0.003")
    assert first.returncode == 0, first.stderr
    out = tmp_path / "race"
    lines = (out / "race.md").read_text().splitlines()
    assert lines[0].startswith("| cell | settings | best val loss after 0.005 min (nats/char) |")
    gru, both = lines[2].split(" | "), lines[3].split(" | ")
    assert gru[0] == "| GRU (`gru`)" and gru[1] == "1 x 32, lr 0.003; train.eval_every=1000000, " \
        "model.cell=gru, optim.lr=0.003"
    assert both[0] == "| LSTM with peepholes and coupled gates (`lstm-peepholes-coupled`)"
    for cols in (gru, both):
        assert 0 < float(cols[2]) < 5 and int(cols[3].replace(",", "")) > 0
        assert float(cols[4].replace(",", "")) > 0 and int(cols[5].strip(" |").replace(",", "")) > 0
    if not (out / "race.png").exists():                     # no plot only without matplotlib
        pytest.importorskip("matplotlib")
    assert (out / "race.png").read_bytes()[:4] == b"\x89PNG"
    meta, planned = read_meta(out / "gru" / "last.npz"), load_config(out / "gru" / "config.yaml")
    assert meta["train_time"] >= 0.3 or meta["step"] == planned.train.max_steps   # budget or plan
    # a second race skips both; a larger budget continues them from their checkpoints
    again = race(tmp_path, corpus, "--minutes", 0.005, "--only", "gru,lstm-peepholes-coupled",
                 "--entry", "gru:model.cell=gru,optim.lr=0.003")
    assert again.returncode == 0 and again.stdout.count("done, skipped") == 2, again.stdout
    steps = read_meta(out / "gru" / "last.npz")["step"]
    longer = race(tmp_path, corpus, "--minutes", 0.01, "--only", "gru",
                  "--entry", "gru:model.cell=gru,optim.lr=0.003")
    assert longer.returncode == 0 and "gru: continuing" in longer.stdout, longer.stdout
    meta = read_meta(out / "gru" / "last.npz")
    assert meta["train_time"] >= 0.6 and meta["step"] > steps
    # other settings for a folder that holds a run: refused, the run kept
    other = race(tmp_path, corpus, "--minutes", 0.01, "--only", "gru")
    assert other.returncode != 0 and "was trained with other settings" in other.stderr
    assert read_meta(out / "gru" / "last.npz")["step"] == meta["step"]


def test_race_rejects_unknown_entries(tmp_path, corpus):
    bad = race(tmp_path, corpus, "--only", "lstm,transformer")
    assert bad.returncode == 2 and "unknown entries transformer" in bad.stderr
