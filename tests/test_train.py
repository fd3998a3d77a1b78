"""Training end to end: learning, determinism, exact resume, overfitting a tiny text."""

import json
import math
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from charlstm import checkpoint, model, optim
from charlstm.errors import CharlstmError
from charlstm.evaluate import evaluate
from charlstm.runstate import load_model
from charlstm.config import load_config, replaced
from charlstm import run as run_module
from charlstm.run import PLAN_STEPS, Run, _Bar

from helpers import invoke, synthetic_text, tiny_config


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def quiet(*_):
    pass


def test_validation_loss_falls_well_below_unigram_entropy(tmp_path, corpus):
    cfg = tiny_config(corpus, train__max_steps=300, train__eval_every=300, model__hidden_size=64,
                      train__seq_len=32, optim__lr=0.01)
    run = Run.start(cfg, tmp_path / "run").train(progress=False, echo=quiet)
    text = corpus.read_text()
    counts = np.unique(list(text), return_counts=True)[1]
    p = counts / counts.sum()
    unigram = float(-(p * np.log(p)).sum())
    assert run.best_val < 0.6 * unigram, (run.best_val, unigram)


def test_same_config_and_seed_give_the_same_run(tmp_path, corpus):
    cfg = lambda: tiny_config(corpus, model__dropout=0.2)  # noqa: E731
    Run.start(cfg(), tmp_path / "a").train(progress=False, echo=quiet)
    Run.start(cfg(), tmp_path / "b").train(progress=False, echo=quiet)
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("chars_per_sec", "train_time")}  # noqa: E731
                        for m in ms]
    assert strip(metrics(tmp_path / "a")) == strip(metrics(tmp_path / "b"))


@pytest.mark.parametrize("mask, windows", [("step", "fixed"), ("window", "shifted")])
def test_resume_equals_uninterrupted_run(tmp_path, corpus, mask, windows):
    """Dropout and weight drop (random state), an epoch boundary (state reset, new window
    offsets) and the schedule all continue."""
    sets = dict(model__dropout=0.3, model__weight_drop=0.25, optim__ema=0.9, train__max_steps=30,
                train__eval_every=10, train__log_every=1, model__dropout_mask=mask,
                train__windows=windows, train__batch_size=16, train__seq_len=40,
                optim__schedule="step", optim__decay_every=7, optim__warmup_steps=3)
    whole = Run.start(tiny_config(corpus, **sets), tmp_path / "whole")
    assert whole.batches.num_batches < 30                      # the run crosses an epoch
    whole.train(progress=False, echo=quiet)
    part = Run.start(tiny_config(corpus, **dict(sets, train__max_steps=20)), tmp_path / "part")
    part.train(progress=False, echo=quiet)
    # raising max_steps on resume extends the run (given as --set strings, or a whole Config)
    resumed = Run.resume(tmp_path / "part", ["train.max_steps=30"] if mask == "step" else
                         tiny_config(corpus, **sets))
    assert resumed.step == 20
    resumed.train(progress=False, echo=quiet)
    a = {m["step"]: m for m in metrics(tmp_path / "whole") if "train_loss" in m}
    b = {m["step"]: m for m in metrics(tmp_path / "part") if "train_loss" in m}
    assert sorted(a) == sorted(b) == list(range(1, 31))
    for step in range(1, 31):
        assert a[step]["train_loss"] == b[step]["train_loss"], step
    np.testing.assert_array_equal(whole.ts.flat, resumed.ts.flat)
    np.testing.assert_array_equal(whole.ts.ema, resumed.ts.ema)


def test_weight_average_is_what_evaluation_and_checkpoints_use(tmp_path, corpus):
    """With optim.ema, val loss, best.npz and sampling see the average; training continues from
    the raw weights (kept as train.*); without it, checkpoints hold no train.* arrays."""
    run = Run.start(tiny_config(corpus, optim__ema=0.95, train__max_steps=25, train__eval_every=25),
                    tmp_path / "avg").train(progress=False, echo=quiet)
    arrays, _ = checkpoint.load_checkpoint(tmp_path / "avg" / "last.npz")
    for name, p in run.params.items():
        np.testing.assert_array_equal(arrays[f"train.{name}"], p)
    assert not np.array_equal(arrays["head.weight"], run.params["head.weight"])
    # the logged val loss was measured on the averaged weights that best.npz holds, from the
    # carried state it holds
    params, _, _, _, start = load_model(tmp_path / "avg" / "best.npz", with_start=True)
    logged = [m for m in metrics(tmp_path / "avg") if "val_loss" in m][-1]
    assert evaluate(params, run.val_tokens, start=start)[0] == pytest.approx(logged["val_loss"],
                                                                            rel=1e-6)
    plain = Run.start(tiny_config(corpus, train__max_steps=5), tmp_path / "plain")
    plain.train(progress=False, echo=quiet)
    assert not any(k.startswith("train.") for k in checkpoint.load_checkpoint(tmp_path / "plain" / "last.npz")[0])


def test_ema_update_averages_with_warmup():
    avg, scratch = np.zeros(3), np.empty(3)
    assert optim.ema_decay(0.99, 0) == 0.1                  # min(0.99, 1/10): mostly the new value
    optim.ema_update(avg, np.ones(3), optim.ema_decay(0.99, 0), scratch)
    np.testing.assert_allclose(avg, 0.9)
    for step in range(1, 2000):
        optim.ema_update(avg, np.full(3, 2.0), optim.ema_decay(0.99, step), scratch)
    np.testing.assert_allclose(avg, 2.0, atol=1e-6)


def test_metrics_logged_after_the_checkpoint_are_dropped_on_resume(tmp_path, corpus):
    run = Run.start(tiny_config(corpus, train__max_steps=20), tmp_path / "r")
    run.train(progress=False, echo=quiet)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as f:        # a killed run's extra lines
        f.write(json.dumps({"step": 25, "train_loss": 1.0}) + "\n" + '{"step": "x"}\n'
                + '{"step": null}\n[3]\n' + '{"step": 2')               # and lines not ours
    resumed = Run.resume(tmp_path / "r", ["train.max_steps=40"])
    resumed.train(progress=False, echo=quiet)
    steps = [m["step"] for m in metrics(tmp_path / "r") if "train_loss" in m]
    assert steps == sorted(steps) and steps.count(25) == 1


def test_checkpoint_holds_everything_to_rebuild_the_model(tmp_path, corpus):
    run = Run.start(tiny_config(corpus), tmp_path / "r").train(progress=False, echo=quiet)
    arrays, meta = checkpoint.load_checkpoint(tmp_path / "r" / "last.npz")
    assert meta["vocab"] == run.vocab.chars and meta["step"] == 40
    assert meta["config"]["model"]["vocab_size"] == len(run.vocab)
    for name, p in run.params.items():
        np.testing.assert_array_equal(arrays[name], p)
        assert f"optim.m.{name}" in arrays and f"optim.v.{name}" in arrays
    params, vocab, cfg, _ = load_model(tmp_path / "r" / "best.npz")
    assert vocab.chars == run.vocab.chars and set(params) == set(run.params)
    assert (tmp_path / "r" / "config.yaml").exists()


def test_resume_refuses_architecture_change_and_finished_runs(tmp_path, corpus):
    Run.start(tiny_config(corpus), tmp_path / "r").train(progress=False, echo=quiet)
    with pytest.raises(CharlstmError, match="model.hidden_size: 32 -> 64"):
        Run.resume(tmp_path / "r", ["model.hidden_size=64"])
    with pytest.raises(CharlstmError, match="already finished at step 40"):
        Run.resume(tmp_path / "r")
    with pytest.raises(CharlstmError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        Run.resume(tmp_path / "empty")
    with pytest.raises(CharlstmError, match="already holds a run"):
        Run.start(tiny_config(corpus), tmp_path / "r")


def test_a_run_ended_by_epochs_or_minutes_is_told_which_limit_to_raise(tmp_path, corpus):
    """Resuming a run that max_epochs or max_minutes ended names that limit and how to raise it:
    the max_steps it used to suggest left an epoch-limited run finished, and a budget-limited
    one was evaluated again at the same step with exit status 0, its metrics line repeated."""
    run = Run.start(tiny_config(corpus, train__max_steps=1000, train__max_epochs=0.5,
                                train__batch_size=32, train__seq_len=50), tmp_path / "e")
    run.train(progress=False, echo=quiet)
    epochs = math.ceil(run.step / run.batches.num_batches * 1000) / 1000
    for sets in ([], ["--set", "train.max_steps=2000"]):
        result = invoke("train", "--resume", tmp_path / "e", "--no-progress", *sets)
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"Error: run '{tmp_path / 'e'}' already finished at step {run.step} (train.max_epochs "
            f"reached); to train longer, resume with --set train.max_epochs=E (E > {epochs:g})")
    result = invoke("train", "--resume", tmp_path / "e", "--no-progress", "--set",
                    f"train.max_epochs={epochs + 0.1}")
    assert result.exit_code == 0, result.output

    Run.start(tiny_config(corpus, train__max_minutes=1e-6), tmp_path / "m").train(
        progress=False, echo=quiet)                      # out of time after its first step
    before = metrics(tmp_path / "m")
    result = invoke("train", "--resume", tmp_path / "m", "--no-progress")
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: run '{tmp_path / 'm'}' already finished at step 1 (train.max_minutes reached); "
        "to train longer, resume with --set train.max_minutes=M (M > 0.001)")
    assert metrics(tmp_path / "m") == before
    result = invoke("train", "--resume", tmp_path / "m", "--no-progress", "--set",
                    "train.max_minutes=0.002")
    assert result.exit_code == 0 and metrics(tmp_path / "m")[-1]["step"] > 1, result.output


def test_max_epochs_and_max_minutes_stop_training(tmp_path, corpus):
    run = Run.start(tiny_config(corpus, train__max_steps="null", train__max_epochs=0.5,
                                train__batch_size=32, train__seq_len=50), tmp_path / "e")
    run.train(progress=False, echo=quiet)
    assert run.step == math.ceil(0.5 * run.batches.num_batches)
    run = Run.start(tiny_config(corpus, train__max_steps="null", train__max_minutes=0.001),
                    tmp_path / "m")
    run.train(progress=False, echo=quiet)
    assert 0 < run.step < 1000 and (tmp_path / "m" / "last.npz").exists()


def test_an_absurd_but_finite_epoch_count_or_budget_is_a_run_without_end(tmp_path, corpus):
    """1e308 epochs times the batches, or 1e308 minutes over a step's seconds, overflow a float to
    inf: the step count is then sys.maxsize, more than any run takes (was an internal error, an
    OverflowError)."""
    from helpers import invoke
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "e",
                    "--set", "train.max_steps=3", "--set", "train.max_epochs=1e308",
                    "--no-progress")
    assert result.exit_code == 0 and "done: step 3," in result.output, result.output

    class Planned(Exception):
        pass

    def stop_at_the_plan(line):
        if line.startswith("planned: "):
            raise Planned(line)
    run = Run.start(tiny_config(corpus, train__max_steps="null", train__max_minutes=1e308),
                    tmp_path / "m")
    with pytest.raises(Planned):
        run.train(progress=False, echo=stop_at_the_plan)
    assert load_config(tmp_path / "m" / "config.yaml").train.max_steps >= sys.maxsize


def test_tiny_text_is_overfit():
    """200 characters memorized: the loss drops below 0.1 nats/char."""
    text = synthetic_text(201, seed=3)
    chars = sorted(set(text))
    tokens = np.array([chars.index(c) for c in text])
    V = len(chars)
    cfg = SimpleNamespace(embedding_size=16, hidden_size=64, num_layers=1, forget_bias=1.0)
    flat, params = model.init_params(V, cfg, np.random.default_rng(0))
    gflat, grads = model.alloc(model.shapes_of(params))
    opt = optim.adamw_init(flat, optim.decay_mask_for(params, flat))
    ocfg = SimpleNamespace(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    x, y = tokens[None, :-1], tokens[None, 1:]
    for _ in range(300):
        loss, cache, _ = model.forward(params, x, y, model.init_state(1, 1, 64))
        model.backward(params, cache, grads)
        optim.clip_grad_norm(gflat, 5.0)
        optim.adamw_step(flat, gflat, opt, 1e-2, ocfg)
    assert loss < 0.1


def test_evaluate_counts_every_character(tmp_path, corpus):
    run = Run.start(tiny_config(corpus), tmp_path / "r")
    tokens = run.vocab.encode(synthetic_text(25_001, seed=5))
    loss, count, streams = evaluate(run.params, tokens)
    assert count == 25_000 and streams == 2
    # one stream from the zero state, the same characters: the same loss up to stream starts
    ref, _, _ = model.forward(run.params, tokens[None, :-1].astype(np.int64),
                              tokens[None, 1:].astype(np.int64),
                              model.init_state(1, 1, 32), keep_cache=False)
    assert abs(loss - ref) < 0.01


def test_a_time_budget_is_planned_and_its_config_repeats_the_run(tmp_path, corpus):
    """A time budget alone becomes train.max_steps and optim.hold_steps at the warmup's end (at
    least PLAN_STEPS steps); config.yaml records them, and training that config again (with the minutes as a loose
    guard) takes the same steps at the same rates: the same losses, the same weights."""
    cfg = tiny_config(corpus, train__max_steps="null", train__max_minutes=0.02,
                      train__log_every=1, train__eval_every=100000, model__dropout=0.1,
                      optim__schedule="cosine", optim__warmup_steps=5, optim__min_lr=1e-4)
    said = []
    a = Run.start(cfg, tmp_path / "a").train(progress=False, echo=said.append)
    planned = load_config(tmp_path / "a" / "config.yaml")
    total, hold = planned.train.max_steps, planned.optim.hold_steps
    assert total and hold == PLAN_STEPS < total and planned.train.max_minutes == 0.02
    assert any(line.startswith(f"planned: {total:,} steps") for line in said), said
    assert a.step <= total
    first = [m for m in metrics(tmp_path / "a") if "train_loss" in m]
    lrs = [m["lr"] for m in first]
    peak = pytest.approx(cfg.optim.lr)
    assert lrs[4] == peak and lrs[hold - 1] == peak and lrs[hold + 1] < lrs[hold - 1]

    b = Run.start(replaced(planned, {"train.max_minutes": 10}), tmp_path / "b")
    b.train(progress=False, echo=quiet)
    assert b.step == total
    again = [m for m in metrics(tmp_path / "b") if "train_loss" in m]
    keys = ("step", "train_loss", "lr", "grad_norm")
    same = [[m[k] for k in keys] for m in again[:len(first)]]
    assert [[m[k] for k in keys] for m in first] == same
    if a.step == total:                                  # not cut short by a slower moment
        for name, p in a.params.items():
            np.testing.assert_array_equal(p, b.params[name])


def test_a_time_budget_is_planned_again_a_third_in_and_its_config_repeats_the_run(
        tmp_path, corpus, monkeypatch):
    """A third of the way through its budget, at least REPLAN_SECONDS in (a minute; here half a
    second), the run plans again from the speed since its first plan: config.yaml records both plans, and training it again takes
    the same steps at the same rates."""
    monkeypatch.setattr(run_module, "REPLAN_SECONDS", 0.5)
    cfg = tiny_config(corpus, train__max_steps="null", train__max_minutes=0.02,
                      train__log_every=1, train__eval_every=100000, optim__schedule="cosine",
                      optim__warmup_steps=5, optim__min_lr=1e-4)
    said = []
    a = Run.start(cfg, tmp_path / "a").train(progress=False, echo=said.append)
    planned = load_config(tmp_path / "a" / "config.yaml")
    o, total = planned.optim, planned.train.max_steps
    first = [line for line in said if line.startswith("planned: ")]
    second = [line for line in said if line.startswith("planned again after ")]
    assert len(first) == len(second) == 1, said
    assert f"{o.replan_total:,} steps" in first[0] and f" {total:,} steps" in second[0]
    assert o.hold_steps == PLAN_STEPS < o.replan_step < total and a.step <= total
    lrs = [m["lr"] for m in metrics(tmp_path / "a") if "lr" in m]
    assert lrs[PLAN_STEPS:] == sorted(lrs[PLAN_STEPS:], reverse=True)    # one smooth decay

    b = Run.start(replaced(planned, {"train.max_minutes": 10}), tmp_path / "b")
    b.train(progress=False, echo=quiet)
    assert b.step == total
    keys = ("step", "train_loss", "lr", "grad_norm")
    runs = [[[m[k] for k in keys] for m in metrics(tmp_path / name) if "train_loss" in m]
            for name in ("a", "b")]
    assert runs[0] == runs[1][:len(runs[0])]
    if a.step == total:                                  # not cut short by a slower moment
        for name, p in a.params.items():
            np.testing.assert_array_equal(p, b.params[name])


def test_a_longer_budget_plans_again_later(tmp_path, corpus):
    for minutes, seconds in ((2, 60), (10, 200), (30, 600)):     # a minute at least, else a third
        cfg = tiny_config(corpus, train__max_steps="null", train__max_minutes=minutes)
        assert Run.start(cfg, tmp_path / str(minutes)).replan_at() == pytest.approx(seconds)


def test_a_run_resumed_from_before_plans_keeps_its_clock_schedule(tmp_path, corpus):
    """Saved past the planning point without a plan (a run begun before plans existed): it goes
    on with its cosine following the training clock, and plans nothing."""
    cfg = tiny_config(corpus, train__max_steps=30, train__eval_every=30, optim__schedule="cosine")
    Run.start(cfg, tmp_path / "r").train(progress=False, echo=quiet)
    run = Run.resume(tmp_path / "r", ["train.max_steps=null", "train.max_minutes=0.01",
                                      "train.log_every=1", "train.eval_every=100000"])
    assert run.clock_schedule
    run.train(progress=False, echo=quiet)
    assert load_config(tmp_path / "r" / "config.yaml").train.max_steps is None
    after = [m for m in metrics(tmp_path / "r") if "lr" in m and m["step"] > 30]
    assert len(after) > 5
    for m in after:                  # the rate of the step before: its training time, about
        clock = optim.lr_at(m["step"] - 1, run.cfg.optim, None, m["train_time"] / 0.6)
        assert m["lr"] == pytest.approx(clock, rel=0.05, abs=1e-5)


def test_a_time_budget_has_a_bar_in_minutes_and_an_overfit_estimate(tmp_path, corpus):
    cfg = tiny_config(corpus, train__max_steps="null", train__max_minutes=2)
    run = Run.start(cfg, tmp_path / "run")
    bar = _Bar(run, run.total_steps(), disable=False)
    assert (bar.bar.unit, bar.bar.total) == ("min", 2)
    bar.close()
    said = []
    run.warn_overfit(None, 0.001, said.append)         # 120,000 steps of 140 windows: 857 epochs
    assert len(said) == 1 and "about 857 times (epochs)" in said[0]
    run.lock.release()
    steps = Run.start(tiny_config(corpus), tmp_path / "steps")
    bar = _Bar(steps, steps.total_steps(), disable=False)
    assert (bar.bar.unit, bar.bar.total) == ("step", 40)
    bar.close()
    steps.lock.release()


FAULTS = """
import resource
import numpy as np
from charlstm.malloc import keep_freed_memory

def faults():      # minor page faults of ten rounds of a step's pattern: arrays of megabytes, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        arrays = [np.ones(n, np.float32) for n in (2**20, 3 * 2**20, 2**19, 5 * 2**20)]
        del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults()
took = keep_freed_memory()
faults()
print(plain, took, faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")
def test_memory_a_step_frees_stays_for_the_next_step():
    """malloc.keep_freed_memory (called before training's first step): freed arrays of megabytes
    come back without new pages. By default glibc gives them back to the system, and each step's
    fresh pages cost configs/shakespeare.yaml 9% of its step time. A fresh process, to see both."""
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent).stdout.split()
    plain, took, kept = int(out[0]), out[1], int(out[2])
    assert took == "True" and plain > 1000 and kept < 50, (plain, took, kept)
