"""Faults: SIGKILL at any moment, SIGINT/SIGTERM, divergence, failed writes, checkpoint hygiene.

The kill tests run real training processes and kill them, 12 times in all: 8 at random moments,
2 in the middle of writing a checkpoint's temporary file and 2 between its fsync and rename. After
every kill each checkpoint on disk must load, and the run, resumed to the end, must have logged
exactly the losses of a run that was never interrupted.
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charlstm
from charlstm import checkpoint
from charlstm.cli import cli
from charlstm.errors import CharlstmError, Interrupted
from charlstm.train import Run

from conftest import tiny_config

# Enough steps for a kill to land mid-run; threads=1 so every process computes bit-identically.
SETTINGS = ["train.max_steps=200", "train.eval_every=6", "train.log_every=1", "train.threads=1",
            "model.hidden_size=48", "model.dropout=0.1", "train.batch_size=16",
            "train.seq_len=32"]

# Runs the CLI; with KILLTEST_HOOK set, a checkpoint write pauses (and says so through a marker
# file) half-way through writing its temporary file, or after fsync just before the rename.
RUNNER = r"""
import os, sys, time
from charlstm import checkpoint
hook, marker = os.environ.get("KILLTEST_HOOK"), os.environ.get("KILLTEST_MARKER")
if hook == "mid-write":
    real_savez = checkpoint.np.savez
    def savez(f, **entries):
        f.write(b"PK\x03\x04 half a checkpoint")
        f.flush()
        open(marker, "w").close()
        time.sleep(60)
    checkpoint.np.savez = savez
elif hook == "before-rename":
    real_replace = checkpoint.os.replace
    def replace(src, dst):
        if ".npz.tmp-" in str(src):
            open(marker, "w").close()
            time.sleep(60)
        return real_replace(src, dst)
    checkpoint.os.replace = replace
from charlstm.cli import main
sys.argv = ["charlstm"] + sys.argv[1:]
main()
"""


def losses(run_dir):
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        for key in ("train_loss", "val_loss"):
            if key in m:
                assert (m["step"], key) not in out, f"step {m['step']} {key} logged twice"
                out[m["step"], key] = m[key]
    return out


def logged_steps(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("train_loss") if path.exists() else 0


def every_checkpoint_loads(run_dir):
    for path in run_dir.glob("*.npz"):
        checkpoint.load_checkpoint(path)          # raises if any is unreadable


@pytest.fixture
def reference(tmp_path, corpus):
    """The uninterrupted run, in-process with the same settings."""
    sets = [f"data.path={corpus}"] + SETTINGS
    from charlstm.config import load_config
    run = Run.start(load_config("configs/tiny.yaml", sets), tmp_path / "reference")
    run.train(progress=False, echo=lambda *a: 0)
    return losses(tmp_path / "reference")


def start(tmp_path, corpus, run_dir, hook=None):
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    args = (["train", "--resume", str(run_dir)] if (run_dir / "last.npz").exists() else
            ["train", "configs/tiny.yaml", "--out", str(run_dir)]
            + [x for s in [f"data.path={corpus}"] + SETTINGS for x in ("--set", s)])
    env = dict(os.environ, KILLTEST_MARKER=str(tmp_path / "marker"),
               PYTHONPATH=str(Path(charlstm.__file__).parents[1]))   # the charlstm under test
    if hook:
        env["KILLTEST_HOOK"] = hook
    (tmp_path / "marker").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(runner), *args, "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc, condition, timeout=60):
    deadline = time.time() + timeout
    while not condition() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()


def finish(tmp_path, corpus, run_dir):
    proc = start(tmp_path, corpus, run_dir)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def test_sigkill_at_random_moments_loses_nothing(tmp_path, corpus, reference):
    run_dir = tmp_path / "killed"
    rnd = random.Random(1234)
    for k in range(8):
        proc = start(tmp_path, corpus, run_dir)
        # a random moment: once the run has logged a random step, plus a random fraction of one
        target = rnd.randint(25 * k + 1, 25 * k + 20)
        kill_when(proc, lambda: logged_steps(run_dir) >= target)
        time.sleep(rnd.uniform(0, 0.01))
        every_checkpoint_loads(run_dir)
    finish(tmp_path, corpus, run_dir)
    assert losses(run_dir) == reference
    assert not list(run_dir.glob(".*tmp*"))


@pytest.mark.parametrize("hook", ["mid-write", "before-rename"])
def test_sigkill_during_checkpoint_writes_loses_nothing(tmp_path, corpus, reference, hook):
    run_dir = tmp_path / "killed"
    for _ in range(2):
        proc = start(tmp_path, corpus, run_dir, hook)
        kill_when(proc, (tmp_path / "marker").exists)
        assert list(run_dir.glob(".*.tmp-*")), "the kill should leave a temporary file"
        every_checkpoint_loads(run_dir)
    finish(tmp_path, corpus, run_dir)
    assert losses(run_dir) == reference
    assert not list(run_dir.glob(".*tmp*"))


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_saves_and_exits(tmp_path, corpus, reference, signum, code):
    run_dir = tmp_path / "signalled"
    proc = start(tmp_path, corpus, run_dir)
    while logged_steps(run_dir) < 40 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    message = err.decode()
    assert f"charlstm train --resume {run_dir}" in message
    step = checkpoint.read_meta(run_dir / "last.npz")["step"]
    assert f"after step {step}" in message and "Traceback" not in message
    finish(tmp_path, corpus, run_dir)
    assert losses(run_dir) == reference


def test_second_ctrl_c_exits_at_once(tmp_path, corpus):
    run_dir = tmp_path / "twice"
    proc = start(tmp_path, corpus, run_dir, hook="before-rename")  # first save hangs
    kill_when_ready = time.time() + 60
    while not (tmp_path / "marker").exists() and time.time() < kill_when_ready:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)                 # asks for a stop after the step...
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)                 # ...and now, during the hung write
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err.decode()
    assert not list(run_dir.glob(".*.tmp-*"))       # the interrupted write cleaned up
    every_checkpoint_loads(run_dir)


def nan_at(monkeypatch, step_to_fail):
    """Make the forward pass of one step return a nan loss."""
    import charlstm.train as train_mod
    real = train_mod.model.forward
    calls = {"n": 0}

    def forward(*args, **kw):
        loss, cache, state = real(*args, **kw)
        if kw.get("keep_cache", True):                      # training steps, not evaluation
            calls["n"] += 1
            if calls["n"] == step_to_fail:
                loss = float("nan")
        return loss, cache, state
    monkeypatch.setattr(train_mod.model, "forward", forward)


def test_nan_stops_with_the_step_and_leaves_checkpoints_untouched(tmp_path, corpus, monkeypatch):
    out = tmp_path / "r"
    run = Run.start(tiny_config(corpus, train__eval_every=5), out)
    nan_at(monkeypatch, 13)
    with pytest.raises(CharlstmError) as e:
        run.train(progress=False, echo=lambda *a: 0)
    msg = str(e.value)
    assert "step 13: the loss is nan" in msg and "optim.lr" in msg and "on_divergence" in msg
    assert checkpoint.read_meta(out / "last.npz")["step"] == 10
    assert checkpoint.read_meta(out / "best.npz")["step"] <= 10


def test_nan_skip_keeps_weights_and_halves_lr(tmp_path, corpus, monkeypatch):
    run = Run.start(tiny_config(corpus, train__on_divergence="skip", train__max_steps=12), tmp_path / "r")
    nan_at(monkeypatch, 7)
    for _ in range(6):
        run.train_step()
    before = run.flat.copy()
    loss, lr, _ = run.train_step()
    np.testing.assert_array_equal(run.flat, before)
    assert run.lr_scale == 0.5 and run.step == 7
    run.train_step()
    assert not np.array_equal(run.flat, before)


def test_explode_ratio_is_off_by_default_and_stops_when_set(tmp_path, corpus):
    run = Run.start(tiny_config(corpus), tmp_path / "a")
    run.loss_floor = 0.1
    assert run.divergence(100.0, 1.0) is None
    run = Run.start(tiny_config(corpus, train__explode_ratio=3), tmp_path / "b")
    run.loss_floor = 1.0
    assert "explode_ratio" in run.divergence(3.5, 1.0)
    assert run.divergence(2.9, 1.0) is None
    assert "gradient norm" in run.divergence(1.0, float("inf"))


def test_real_divergence_through_the_cli(tmp_path, corpus):
    result = CliRunner().invoke(cli, ["train", "configs/tiny.yaml", "--data", str(corpus),
                                      "--out", str(tmp_path / "d"), "--no-progress",
                                      "--set", "optim.lr=1e30", "--set", "optim.grad_clip=0"])
    assert result.exit_code == 1
    assert "training stopped" in result.output and "Traceback" not in result.output


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, corpus, monkeypatch):
    out = tmp_path / "r"
    Run.start(tiny_config(corpus, train__max_steps=20), out).train(progress=False, echo=lambda *a: 0)
    before = (out / "last.npz").read_bytes()

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint.np, "savez", full)
    result = CliRunner().invoke(cli, ["train", "--resume", str(out), "--no-progress",
                                      "--set", "train.max_steps=40"])
    assert result.exit_code == 1
    assert "No space left on device" in result.output
    assert "previous checkpoint is unchanged" in result.output
    assert (out / "last.npz").read_bytes() == before
    assert not list(out.glob(".*tmp*"))


def test_keep_last_prunes_step_checkpoints(tmp_path, corpus):
    out = tmp_path / "r"
    Run.start(tiny_config(corpus, train__keep_last=2, train__eval_every=5, train__max_steps=22),
              out).train(progress=False, echo=lambda *a: 0)
    kept = sorted(p.name for p in out.glob("step_*.npz"))
    assert kept == ["step_00000020.npz", "step_00000022.npz"]
    assert checkpoint.read_meta(out / kept[0])["step"] == 20
    assert {"last.npz", "best.npz"} <= {p.name for p in out.iterdir()}


def test_interrupted_is_not_a_user_error():
    assert not issubclass(Interrupted, CharlstmError)
