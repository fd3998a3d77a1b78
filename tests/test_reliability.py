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
from charlstm.run import Run
from charlstm.step import divergence

from helpers import no_internal_error, tiny_config

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
    assert f"after step {step}" in message
    no_internal_error(message)
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
    no_internal_error(err.decode())
    assert not list(run_dir.glob(".*.tmp-*"))       # the interrupted write cleaned up
    every_checkpoint_loads(run_dir)


def bad_loss_at(monkeypatch, step_to_fail, bad=float("nan")):
    """Make the forward pass of one training step return the loss `bad`."""
    import charlstm.step as step_mod
    real = step_mod.model.forward
    calls = {"n": 0}

    def forward(*args, **kw):
        loss, cache, state = real(*args, **kw)
        if kw.get("keep_cache", True):                      # training steps, not evaluation
            calls["n"] += 1
            if calls["n"] == step_to_fail:
                loss = bad
        return loss, cache, state
    monkeypatch.setattr(step_mod.model, "forward", forward)


# NaN, and a finite loss no sane model produces (above 3 ln V + 10; V = 17 here: 18.5)
BAD = [(float("nan"), "the loss is nan"), (1e6, "the loss 1e+06 is beyond any sane model's")]


@pytest.mark.parametrize("bad,words", BAD)
def test_bad_loss_stops_with_the_step_and_leaves_checkpoints_untouched(tmp_path, corpus,
                                                                       monkeypatch, bad, words):
    out = tmp_path / "r"
    run = Run.start(tiny_config(corpus, train__eval_every=5), out)
    bad_loss_at(monkeypatch, 13, bad)
    with pytest.raises(CharlstmError) as e:
        run.train(progress=False, echo=lambda *a: 0)
    msg = str(e.value)
    assert f"step 13: {words}" in msg and "optim.lr" in msg and "on_divergence" in msg
    assert checkpoint.read_meta(out / "last.npz")["step"] == 10
    assert checkpoint.read_meta(out / "best.npz")["step"] <= 10


@pytest.mark.parametrize("bad,words", BAD)
def test_bad_loss_skip_keeps_weights_and_halves_lr(tmp_path, corpus, monkeypatch, bad, words):
    run = Run.start(tiny_config(corpus, train__on_divergence="skip", train__max_steps=12),
                    tmp_path / "r")
    bad_loss_at(monkeypatch, 7, bad)
    for _ in range(6):
        run.train_step()
    before = run.ts.flat.copy()
    loss, lr, _ = run.train_step()
    np.testing.assert_array_equal(run.ts.flat, before)
    assert run.ts.lr_scale == 0.5 and run.step == 7
    skipped = json.loads((run.out / "metrics.jsonl").read_text().splitlines()[-1])
    assert skipped["step"] == 7 and words in skipped["skipped"]
    run.train_step()
    assert not np.array_equal(run.ts.flat, before)


def test_the_sanity_bound_sits_far_above_a_uniform_guess(tmp_path, corpus):
    run = Run.start(tiny_config(corpus), tmp_path / "r")
    V = len(run.vocab)
    bound = 3 * np.log(V) + 10
    assert divergence(bound * 1.001, 1.0, V) and divergence(1e30, 1.0, V)
    assert divergence(bound * 0.999, 1.0, V) is None
    first, _, _ = run.train_step()                   # an untrained model: about ln V
    assert abs(first - np.log(V)) < 0.5 and first < bound / 3


def test_only_rank_0_logs_and_reports_a_skipped_step(tmp_path, corpus, capsys):
    run = Run.start(tiny_config(corpus, train__on_divergence="skip"), tmp_path / "r")
    run.is_main = False                              # as on MPI rank 1
    run.on_divergence("the loss is nan", 0.01)
    assert run.ts.lr_scale == 0.5                    # every rank halves, to stay in step
    assert not (run.out / "metrics.jsonl").exists() and capsys.readouterr().out == ""
    run.is_main = True
    run.on_divergence("the loss is nan", 0.005)
    assert run.ts.lr_scale == 0.25 and "step skipped" in capsys.readouterr().out
    assert "skipped" in (run.out / "metrics.jsonl").read_text()


def test_explode_ratio_is_off_by_default_and_stops_when_set(tmp_path, corpus):
    V = 17                                           # the corpus's characters
    ratio = tiny_config(corpus).train.explode_ratio
    assert divergence(15.0, 1.0, V, ratio, loss_floor=0.1) is None   # 150 x the floor, below
    ratio = tiny_config(corpus, train__explode_ratio=3).train.explode_ratio   # 3 ln V + 10
    assert "explode_ratio" in divergence(3.5, 1.0, V, ratio, loss_floor=1.0)
    assert divergence(2.9, 1.0, V, ratio, loss_floor=1.0) is None
    assert "gradient norm" in divergence(1.0, float("inf"), V, ratio, loss_floor=1.0)


def test_real_divergence_through_the_cli(tmp_path, corpus):
    """lr 1e30 without clipping: the first update moves every weight by about 1e30, so the second
    step's loss is about 1e30 (or NaN, or Inf, depending on the machine): stopped either way."""
    result = CliRunner().invoke(cli, ["train", "configs/tiny.yaml", "--data", str(corpus),
                                      "--out", str(tmp_path / "d"), "--no-progress",
                                      "--set", "optim.lr=1e30", "--set", "optim.grad_clip=0"])
    assert result.exit_code == 1, result.output
    assert "step 2: the loss" in result.output and "training stopped" in result.output
    no_internal_error(result.output)
    assert not (tmp_path / "d" / "best.npz").exists()


def test_absurd_but_finite_loss_through_the_cli(tmp_path, corpus, monkeypatch):
    args = ["train", "configs/tiny.yaml", "--data", str(corpus), "--no-progress"]
    bad_loss_at(monkeypatch, 3, 1e6)
    stop = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "stop")])
    assert stop.exit_code == 1
    assert "step 3: the loss 1e+06 is beyond any sane model's" in stop.output
    assert "training stopped" in stop.output
    no_internal_error(stop.output)
    bad_loss_at(monkeypatch, 3, 1e6)
    skip = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "skip"),
                                           "--set", "train.on_divergence=skip"])
    assert skip.exit_code == 0, skip.output
    assert "step 3: the loss 1e+06 is beyond any sane model's" in skip.output
    assert "step skipped" in skip.output and "done: step 40" in skip.output


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
    no_internal_error(result.output)
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


def test_only_rank_0_says_a_signal_stops_the_run(tmp_path, corpus, capsys):
    """mpirun passes SIGTERM (and Ctrl-C, as SIGTERM) to every rank: each printed the line."""
    from charlstm.run import _stop_on_signals
    run = Run.start(tiny_config(corpus), tmp_path / "r")
    run.is_main = False                              # as on MPI rank 1
    with _stop_on_signals(run):
        os.kill(os.getpid(), signal.SIGTERM)
    assert run.stop_signal == signal.SIGTERM and capsys.readouterr() == ("", "")
    run.is_main, run.stop_signal = True, None
    with _stop_on_signals(run):
        os.kill(os.getpid(), signal.SIGTERM)
    assert "SIGTERM: stopping after this step" in capsys.readouterr().out
