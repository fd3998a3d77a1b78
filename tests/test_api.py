"""charlstm.train, the Python API of `charlstm train`; one training step shared by training, bench
and the recipe; a caller's config is never changed."""

import copy
import json
import importlib.util

import numpy as np
import pytest

import charlstm
from charlstm import recipe
from charlstm.bench import bench_config, random_tokens, run_bench
from charlstm.config import Config, load_config
from charlstm.corpus import prepare
from charlstm.run import Run
from charlstm.step import TrainState, train_step

from helpers import invoke, one_line_error, tiny_config

STEPS = {"train.max_steps": 10, "train.eval_every": 5, "train.sample_length": 0}


def test_train_returns_the_run_and_resume_continues_it(tmp_path, corpus):
    result = charlstm.train("configs/tiny.yaml", data=str(corpus), out=tmp_path / "r",
                            overrides=STEPS)
    assert result.run_dir == tmp_path / "r" and result.steps == 10 and result.main
    assert result.best.exists() and result.last.exists()
    assert 0 < result.best_val < np.log(result.config.model.vocab_size)
    more = charlstm.train(resume=tmp_path / "r", overrides=["train.max_steps=15"])
    assert more.steps == 15 and more.best_val <= result.best_val


def test_train_is_the_command(tmp_path, corpus):
    """The same run through the API and through `charlstm train`: the same losses."""
    charlstm.train("configs/tiny.yaml", data=str(corpus), out=tmp_path / "api", overrides=STEPS)
    sets = [x for k, v in STEPS.items() for x in ("--set", f"{k}={v}")]
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "cli",
                    "--no-progress", *sets)
    assert result.exit_code == 0, result.output
    assert ((tmp_path / "api" / "metrics.jsonl").read_text().count("val_loss") == 2)
    a, b = (load(tmp_path / d) for d in ("api", "cli"))
    assert a == b


def load(run_dir):
    return [(m["step"], m.get("train_loss"), m.get("val_loss")) for m in
            map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_a_dry_run_resolves_and_trains_nothing(tmp_path, corpus):
    result = charlstm.train("configs/tiny.yaml", data=str(corpus), dry_run=True,
                            overrides={"model.dropout": 0.25, "train.max_steps": None,
                                       "train.max_minutes": 2, "model.peepholes": True})
    assert result.run_dir is None and result.best is None
    t = result.config.train
    assert result.config.model.dropout == 0.25 and result.config.model.peepholes is True
    assert t.max_steps is None and t.max_minutes == 2 and t.recipe == "off"


def test_mistakes_raise_the_commands_one_line(tmp_path, corpus):
    with pytest.raises(charlstm.CharlstmError, match="model.hiden_size.*did you mean"):
        charlstm.train("configs/tiny.yaml", overrides={"model.hiden_size": 8})
    with pytest.raises(charlstm.CharlstmError, match="--resume takes the run's own config"):
        charlstm.train("configs/tiny.yaml", resume=tmp_path)
    with pytest.raises(charlstm.CharlstmError, match="dict or a list"):
        charlstm.train("configs/tiny.yaml", overrides="train.max_steps=3")


@pytest.mark.parametrize("kw,message", [
    (dict(overrides=5), "overrides must be a dict or a list of 'key=value' strings, not int 5"),
    (dict(config={"train": {"max_steps": 3}}), "config must be a YAML file's path or a Config, "
                                              "not dict {'train': {'max_steps': 3}}"),
    (dict(config=5), "config must be a YAML file's path or a Config, not int 5"),
    (dict(out=""), "out is an empty path; give one (or None)"),       # it was the current folder
    (dict(init_from=" "), "init_from is an empty path; give one (or None)"),
])
def test_an_argument_of_the_wrong_type_is_named(corpus, kw, message):
    """train's config and overrides of a type they do not take: the argument and the value
    (they were TypeErrors that named neither: "'int' object is not iterable", "expected str,
    bytes or os.PathLike object, not dict")."""
    kw.setdefault("overrides", STEPS)
    with pytest.raises(charlstm.CharlstmError) as e:
        charlstm.train(data=corpus, dry_run=True, **kw)
    assert str(e.value) == message


def test_a_missing_gpu_is_refused_before_the_run_folder_is_made(tmp_path, corpus):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the device may exist (tests/test_gpu.py runs there)")
    one_line_error(invoke("train", "configs/tiny.yaml", "--data", corpus, "--device", "cuda",
                          "--out", tmp_path / "r", "--no-progress"), "device 'cuda' needs CuPy")
    assert not (tmp_path / "r").exists()


def test_a_gpu_run_resumed_without_a_gpu_is_told_of_the_cpu(tmp_path, corpus):
    """It said only how to install CuPy, where going on on the CPU is the likelier way out."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the device may exist (tests/test_gpu.py runs there)")
    from charlstm import checkpoint
    out = tmp_path / "r"
    assert invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out,
                  "--set", "train.max_steps=10", "--no-progress").exit_code == 0
    arrays, meta = checkpoint.load_checkpoint(out / "last.npz")        # as if trained on a GPU
    for key in ("format", "format_version", "arrays"):
        meta.pop(key)
    meta["config"]["train"]["device"] = "cuda"
    checkpoint.save_checkpoint(out / "last.npz", arrays, meta)
    more = ["train", "--resume", out, "--set", "train.max_steps=20", "--no-progress"]
    one_line_error(invoke(*more), "device 'cuda' needs CuPy",
                   "; or go on on the CPU: --device cpu")
    resumed = invoke(*more, "--device", "cpu")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint.read_meta(out / "last.npz")["step"] == 20


def test_echo_gets_every_line_of_the_run_and_none_prints_nothing(tmp_path, corpus, capsys):
    """echo=None is silence and a callable gets the run's lines (they went to stdout instead),
    the skipped steps of train.on_divergence=skip included."""
    charlstm.train("configs/tiny.yaml", data=str(corpus), out=tmp_path / "quiet", overrides=STEPS)
    assert capsys.readouterr().out == ""
    lines = []
    charlstm.train("configs/tiny.yaml", data=str(corpus), out=tmp_path / "told", echo=lines.append,
                   overrides={**STEPS, "optim.lr": 1e9, "optim.grad_clip": 0,
                              "train.on_divergence": "skip"})
    assert capsys.readouterr().out == ""
    assert lines[0] == f"run folder: {tmp_path / 'told'}"
    assert lines[1].startswith(f"training on '{corpus}'")
    assert any(line.startswith("step 2: ") and "step skipped, learning rate halved" in line
               for line in lines)
    assert lines[-1].startswith("step 10 (epoch ")


def test_a_callers_config_is_never_changed(tmp_path, corpus):
    cfg = tiny_config(corpus, train__max_minutes=1, train__recipe="auto", train__max_steps="null")
    before = copy.deepcopy(cfg)
    choice = recipe.choose(cfg, set(), prepare(cfg.data), timer=lambda *a: 0.01)
    assert cfg == before and choice.cfg != cfg and choice.cfg.train.recipe == "off"
    plain = tiny_config(corpus)
    before = copy.deepcopy(plain)
    run = Run.start(plain, tmp_path / "r")
    assert plain == before and plain.model.vocab_size is None
    assert run.cfg.model.vocab_size == len(run.vocab)
    run.lock.release()


def test_bench_times_the_training_step():
    """bench's timed steps are step.train_step on the config, dropout and average included."""
    cfg = bench_config(None, ["model.num_layers=1", "model.hidden_size=16", "train.batch_size=4",
                              "train.seq_len=8", "model.dropout=0.2", "optim.ema=0.9"])
    r = run_bench(cfg, vocab=20, steps=3, warmup=1, sample_chars=10)
    ts = TrainState.new(cfg, 20)
    ts.keep_average(cfg.optim.ema)
    x, y = random_tokens(cfg, 20, np.random.default_rng(0))
    losses = [train_step(ts, cfg, x, y, 1e-3)[0] for _ in range(4)]
    assert r["losses"] == losses[1:] and r["config"]["hidden"] == 16


def test_bench_takes_a_config_file_and_its_shortcuts():
    cfg = bench_config("configs/tiny.yaml", ["model.cell=gru"])
    assert cfg.model.cell == "gru" and cfg == load_config("configs/tiny.yaml", ["model.cell=gru"])
    assert bench_config().model.hidden_size == 512 and Config().model.hidden_size == 128
    result = invoke("bench", "configs/tiny.yaml", "--hidden", "8", "--steps", "1", "--json")
    assert result.exit_code == 0, result.output
    assert '"hidden": 8, "batch": 8' in result.output   # tiny.yaml's batch, --hidden's width
