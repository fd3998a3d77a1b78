"""Every cell and LSTM variant through the commands: train, exact resume, sample, eval, info, plot,
fine-tuning, data-parallel MPI, and the checkpoints of runs from before model.cell existed."""

import json

import numpy as np
import pytest

from charlstm import checkpoint, model
from charlstm.runstate import load_model
from charlstm.run import Run

from helpers import (MPI_SETTINGS, assert_losses_close, invoke, needs_mpi, one_line_error, quiet,
                     step_losses, tiny_config, train_ranks)

# --set strings per cell and variant
SPECS = {"lstm": [], "peepholes": ["model.peepholes=true"], "coupled": ["model.coupled_gates=true"],
         "peepholes+coupled": ["model.peepholes=true", "model.coupled_gates=true"],
         "gru": ["model.cell=gru"], "rnn": ["model.cell=rnn"]}


def config(corpus, spec, **overrides):
    cfg = tiny_config(corpus, **overrides)
    for s in SPECS[spec]:
        key, value = s.split("=")
        setattr(cfg.model, key.split(".")[1], value if key == "model.cell" else value == "true")
    return cfg


@pytest.mark.parametrize("spec", list(SPECS))
def test_resume_equals_uninterrupted_run(tmp_path, corpus, spec):
    """Dropout, weight drop, the weight average and an epoch boundary, for every cell."""
    sets = dict(model__dropout=0.3, model__weight_drop=0.25, model__dropout_mask="window",
                optim__ema=0.9, train__max_steps=30, train__eval_every=10, train__log_every=1,
                train__batch_size=16, train__seq_len=40)
    whole = Run.start(config(corpus, spec, **sets), tmp_path / "whole")
    assert whole.batches.num_batches < 30
    whole.train(progress=False, echo=quiet)
    Run.start(config(corpus, spec, **dict(sets, train__max_steps=20)), tmp_path / "part").train(
        progress=False, echo=quiet)
    resumed = Run.resume(tmp_path / "part", config(corpus, spec, **sets))
    resumed.train(progress=False, echo=quiet)
    assert step_losses(tmp_path / "whole") == step_losses(tmp_path / "part")
    assert len(step_losses(tmp_path / "whole")) == 30
    np.testing.assert_array_equal(whole.ts.flat, resumed.ts.flat)
    # the checkpoint records the cell and holds its parameters
    arrays, meta = checkpoint.load_checkpoint(tmp_path / "part" / "last.npz")
    assert meta["config"]["model"]["cell"] == whole.cfg.model.cell
    assert set(whole.params) <= set(arrays)


@pytest.mark.parametrize("spec", ["gru", "rnn", "peepholes+coupled"])
def test_every_command_works(tmp_path, corpus, spec):
    out = tmp_path / spec
    sets = [x for s in SPECS[spec] for x in ("--set", s)]
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress",
                    *sets)
    assert result.exit_code == 0, result.output
    best = out / "best.npz"
    text = invoke("sample", best, "--prime", "the", "--length", "50", "--seed", "1")
    assert text.exit_code == 0 and text.output.startswith("the") and len(text.output) > 50
    greedy = [invoke("sample", best, "--argmax", "--length", "30").output for _ in range(2)]
    assert greedy[0] == greedy[1]
    ev = invoke("eval", best, "--text", corpus, "--json")
    assert ev.exit_code == 0 and json.loads(ev.output)["loss"] < 3.0, ev.output
    info = invoke("info", best)
    described = {"gru": "GRU", "rnn": "RNN (tanh)",
                 "peepholes+coupled": "LSTM with peepholes and coupled gates"}[spec]
    assert f"model: 1 x 32 {described}, embedding 16" in info.output, info.output
    params, _, _, _ = load_model(best)
    n = sum(p.size for p in params.values())
    assert f"{n:,} parameters" in info.output
    resumed = invoke("train", "--resume", out, "--set", "train.max_steps=50", "--no-progress")
    assert resumed.exit_code == 0 and "step 50" in resumed.output, resumed.output


def test_resume_refuses_another_cell_or_variant(tmp_path, corpus):
    out = tmp_path / "r"
    assert invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress",
                  "--set", "train.max_steps=5").exit_code == 0
    for change, words in [("model.cell=gru", "model.cell: 'lstm' -> 'gru'"),
                          ("model.peepholes=true", "model.peepholes: false -> true"),
                          ("model.coupled_gates=true", "model.coupled_gates: false -> true")]:
        one_line_error(invoke("train", "--resume", out, "--set", change, "--set",
                              "train.max_steps=10"), "cannot resume", words,
                       "a resumed run keeps its model")


def test_plot_overlays_runs_of_different_cells(tmp_path, corpus):
    pytest.importorskip("matplotlib")
    dirs = []
    for spec in ("lstm", "gru", "rnn"):
        Run.start(config(corpus, spec, train__max_steps=10, train__eval_every=5),
                  tmp_path / spec).train(progress=False, echo=quiet)
        dirs.append(tmp_path / spec)
    result = invoke("plot", *dirs, "-o", tmp_path / "cells.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cells.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("spec", ["gru", "peepholes"])
def test_init_from_keeps_the_checkpoints_cell(tmp_path, corpus, spec):
    Run.start(config(corpus, spec, train__max_steps=5), tmp_path / "base").train(
        progress=False, echo=quiet)
    saved, _, _, _ = load_model(tmp_path / "base" / "last.npz")
    # the new run's config asks for a plain LSTM: the checkpoint's cell wins, as its sizes do
    run = Run.start(tiny_config(corpus, train__max_steps=5), tmp_path / "tuned",
                    init_from=tmp_path / "base" / "last.npz")
    assert set(run.params) == set(saved)
    for name, p in saved.items():
        np.testing.assert_array_equal(run.params[name], p)
    run.train(progress=False, echo=quiet)
    assert checkpoint.read_meta(tmp_path / "tuned" / "last.npz")["config"]["model"]["cell"] == \
        run.cfg.model.cell == ("gru" if spec == "gru" else "lstm")


def _rewrite_meta(path, change):
    arrays, meta = checkpoint.load_checkpoint(path)
    for key in ("format", "format_version", "arrays"):
        meta.pop(key)
    change(meta["config"]["model"])
    checkpoint.save_checkpoint(path, arrays, meta)


def test_checkpoint_from_before_cells_loads_as_an_lstm(tmp_path, corpus):
    Run.start(tiny_config(corpus, train__max_steps=10, train__eval_every=5),
              tmp_path / "old").train(progress=False, echo=quiet)
    last = tmp_path / "old" / "last.npz"

    def forget(m):
        for key in ("cell", "peepholes", "coupled_gates"):
            del m[key]
    _rewrite_meta(last, forget)
    assert "cell" not in checkpoint.read_meta(last)["config"]["model"]
    params, _, cfg, _ = load_model(last)
    assert cfg.model.cell == "lstm" and "lstm.weight_hh_l0" in params
    assert "1 x 32 LSTM," in invoke("info", last).output
    assert invoke("sample", last, "--length", "20").exit_code == 0
    result = invoke("train", "--resume", tmp_path / "old", "--set", "train.max_steps=15",
                    "--no-progress")
    assert result.exit_code == 0 and "step 15" in result.output, result.output


def test_checkpoint_whose_arrays_do_not_fit_its_cell_is_one_line(tmp_path, corpus):
    Run.start(tiny_config(corpus, train__max_steps=5), tmp_path / "r").train(
        progress=False, echo=quiet)
    last = tmp_path / "r" / "last.npz"
    _rewrite_meta(last, lambda m: m.update(cell="gru"))
    for args in (["sample", last], ["eval", last, "--text", corpus], ["info", last],
                 ["train", "--resume", tmp_path / "r", "--set", "train.max_steps=9"]):
        one_line_error(invoke(*args), f"'{last}' does not match its own config (1 x 32 GRU,",
                       "it holds 'lstm.weight_ih_l0', which such a model does not have")
    _rewrite_meta(last, lambda m: m.update(cell="lstm", coupled_gates=True))
    one_line_error(invoke("sample", last), "(1 x 32 LSTM with coupled gates,",
                   "'lstm.weight_ih_l0' is <f4 (128, 16), not float (96, 16)")
    _rewrite_meta(last, lambda m: m.update(cell="transformer"))
    one_line_error(invoke("sample", last), "model.cell: must be one of lstm, gru, rnn, got "
                   "'transformer'")


@pytest.mark.parametrize("args, words", [
    (["--set", "model.cell=lstn"], ["model.cell: must be one of lstm, gru, rnn, got 'lstn'"]),
    (["--set", "model.cell=rnn", "--set", "model.peepholes=true"],
     ["model.peepholes: the rnn cell has no such variant", "model.cell: lstm"]),
    (["--set", "model.cell=gru", "--set", "model.coupled_gates=true"],
     ["model.coupled_gates: the gru cell has no such variant"]),
    (["--set", "model.peepholes=yes please"], ["model.peepholes: expected true or false"]),
])
def test_bad_cell_settings_are_one_line(tmp_path, corpus, args, words):
    one_line_error(invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "o",
                          *args), *words)
    assert not (tmp_path / "o").exists()


def test_bench_every_cell(monkeypatch):
    from charlstm import bench
    monkeypatch.setattr(bench, "machine_gflops", lambda *a, **k: 1.0)     # a second per call
    for extra, described in [(["--cell", "gru"], "GRU"), (["--cell", "rnn"], "RNN (tanh)"),
                             (["--peepholes", "--coupled-gates"],
                              "LSTM with peepholes and coupled gates")]:
        result = invoke("bench", "--layers", 1, "--hidden", 16, "--batch", 4, "--seq", 8,
                        "--steps", 1, *extra)
        assert result.exit_code == 0 and f"1 x 16 {described}, batch 4" in result.output, \
            result.output
    r = json.loads(invoke("bench", "--layers", 2, "--hidden", 8, "--batch", 2, "--seq", 4,
                          "--steps", 1, "--cell", "gru", "--json").output)
    assert r["config"]["cell"] == "gru" and r["activation_bound_mb"] is None
    assert r["parameters"] == sum(int(np.prod(s)) for s in model.param_shapes(
        65, 64, 8, 2, "gru").values())
    bad = invoke("bench", "--cell", "gru", "--peepholes")
    assert bad.exit_code == 2 and "the gru cell has no such variant" in bad.output


@needs_mpi
@pytest.mark.parametrize("spec", ["gru", "peepholes+coupled"])
def test_two_mpi_ranks_equal_one_process(tmp_path, corpus, spec):
    sets = MPI_SETTINGS + SPECS[spec] + ["model.dropout_mask=window"]
    train_ranks(2, tmp_path / "two", corpus, sets=sets)
    train_ranks(None, tmp_path / "one", corpus, sets=sets)
    assert_losses_close(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"))
