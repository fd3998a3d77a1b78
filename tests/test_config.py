"""Tests for charlstm.config: defaults, YAML and --set layering, typing, and every error message."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from charlstm.config import (KEYS, Config, DataConfig, ModelConfig, OptimConfig, SampleConfig,
                             TrainConfig, config_from_dict, config_to_dict, load_config,
                             parse_override, save_config)
from charlstm.errors import CharlstmError, ConfigError


def write(tmp_path, text, name="x.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error(*args, **kwargs) -> str:
    """The message of the ConfigError that load_config raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---- defaults, keys, dicts ------------------------------------------------------------------


CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path):
    """Every config in configs/ loads as shipped: a typo there is the first error a user would meet."""
    cfg = load_config(path)
    assert config_from_dict(config_to_dict(cfg), "checkpoint") == cfg   # as a run saves it


def test_shipped_configs_are_found():
    assert {"shakespeare.yaml", "shakespeare-30min.yaml", "tiny.yaml"} <= {p.name for p in CONFIGS}


def test_defaults_are_valid():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.optim.lr == 2e-3 and cfg.train.max_steps == 5000 and cfg.model.vocab_size is None
    assert config_from_dict({}, "ckpt") == Config()
    assert issubclass(ConfigError, CharlstmError)


def test_keys_list_every_field_in_order():
    expected = [f"{s.name}.{f.name}" for s in dataclasses.fields(Config)
                for f in dataclasses.fields(s.default_factory)]
    assert KEYS == expected
    assert "optim.lr" in KEYS and "sample.top_p" in KEYS and "data.errors" in KEYS


def test_config_to_dict_is_nested_plain_and_json_safe():
    d = config_to_dict(Config())
    assert list(d) == ["data", "model", "optim", "train", "sample"]
    assert list(d["optim"])[:3] == ["lr", "weight_decay", "beta1"]
    assert json.loads(json.dumps(d)) == d


def test_config_from_dict_missing_keys_take_defaults():
    d = {"model": {"hidden_size": 32, "vocab_size": 65}, "train": {}}
    cfg = config_from_dict(d, "old.ckpt")
    assert cfg.model == ModelConfig(hidden_size=32, vocab_size=65)
    assert cfg.optim == OptimConfig() and cfg.sample == SampleConfig()


def test_config_from_dict_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^old\.ckpt: unknown key 'model\.hiden_size'"):
        config_from_dict({"model": {"hiden_size": 3}}, "old.ckpt")
    with pytest.raises(ConfigError, match=r"^old\.ckpt: expected a mapping of sections .*a list"):
        config_from_dict([1], "old.ckpt")
    with pytest.raises(ConfigError, match=r"^old\.ckpt: model\.vocab_size: must be >= 1, got 0"):
        config_from_dict({"model": {"vocab_size": 0}}, "old.ckpt")


# ---- YAML files -----------------------------------------------------------------------------


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["data.path=corpus.txt", "model.vocab_size=65", "optim.lr=1e-3",
                             "optim.schedule=cosine", "train.max_minutes=1.5",
                             "sample.prime=ROMEO:"])
    p = tmp_path / "config.yaml"
    save_config(cfg, p)
    assert load_config(p) == cfg
    doc = yaml.safe_load(p.read_text())
    assert list(doc) == ["data", "model", "optim", "train", "sample"]
    assert list(doc["train"]) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert doc["optim"]["lr"] == 1e-3 and doc["data"]["path"] == "corpus.txt"


@settings(max_examples=50, deadline=None)
@given(prime=st.text(),
       path=st.none() | st.text(min_size=1).filter(lambda s: s.strip() and "\0" not in s),
       lr=st.floats(min_value=1e-300, max_value=1e300), steps=st.integers(1, 10**12))
def test_yaml_round_trip_any_values(tmp_path_factory, prime, path, lr, steps):
    cfg = Config(data=DataConfig(path=path), optim=OptimConfig(lr=lr),
                 train=TrainConfig(max_steps=steps), sample=SampleConfig(prime=prime))
    p = tmp_path_factory.mktemp("rt") / "config.yaml"
    save_config(cfg, p)
    assert load_config(p) == cfg


def test_save_config_accepts_a_path_object_and_reports_write_errors(tmp_path):
    cfg = Config(data=DataConfig(path=tmp_path / "corpus.txt"))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").data.path == str(tmp_path / "corpus.txt")
    with pytest.raises(ConfigError, match="cannot write config file"):
        save_config(Config(), tmp_path / "no" / "such" / "dir.yaml")
    with pytest.raises(ConfigError, match=r"model\.dropout: must be in \[0, 1\)"):
        save_config(Config(model=ModelConfig(dropout=2.0)), tmp_path / "bad.yaml")


def test_huge_aliased_value_gives_a_short_message(tmp_path):
    lines = ["model:", "  hidden_size:", "    - &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):  # 10**9 ones if printed in full
        lines.append(f"    - &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    p = write(tmp_path, "\n".join(lines) + "\n")
    msg = error(p)
    assert "model.hidden_size: expected an integer, got [[1, 1," in msg and len(msg) < 300


def test_yaml_file_values_and_typing(tmp_path):
    p = write(tmp_path, """
model:
  hidden_size: 3.0      # an integral float is an int
  dropout: 0            # ints are floats
optim:
  lr: 1e-3              # PyYAML reads this as a string
  schedule: step
train:
  max_steps: null
  max_epochs: 2
data:                   # every key commented out
""")
    cfg = load_config(p)
    assert cfg.model.hidden_size == 3 and type(cfg.model.hidden_size) is int
    assert cfg.model.dropout == 0.0 and type(cfg.model.dropout) is float
    assert cfg.optim.lr == 1e-3 and cfg.train.max_steps is None and cfg.train.max_epochs == 2.0
    assert cfg.data == DataConfig()


def test_a_new_data_path_replaces_the_whole_data_source(tmp_path):
    sha = "ab" * 32
    p = write(tmp_path, f"data:\n  path: input.txt\n  url: https://host/input.txt\n"
                        f"  sha256: {sha}\n  val_fraction: 0.2\n")
    kept = load_config(p, ["optim.lr=0.01"]).data
    assert (kept.path, kept.url, kept.sha256) == ("input.txt", "https://host/input.txt", sha)
    for override in ["data.path=mytxet.txt", "data.path=null"]:
        d = load_config(p, [override]).data
        assert d.url is None and d.sha256 is None and d.val_fraction == 0.2
    again = load_config(p, ["data.path=other.txt", "data.url=https://host/other.txt"]).data
    assert again.url == "https://host/other.txt" and again.sha256 is None
    both = load_config(p, [f"data.sha256={'cd' * 32}", "data.path=o.txt",
                           "data.url=http://u"]).data
    assert (both.url, both.sha256) == ("http://u", "cd" * 32)


def test_missing_file_and_directory(tmp_path):
    assert error(tmp_path / "x.yaml") == f"config file '{tmp_path / 'x.yaml'}' not found"
    assert "is a directory" in error(tmp_path)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    p = write(tmp_path, "train:\n  seq_len: 5\n  batch_size: : 3\n")
    assert error(p) == (f"{p}: YAML syntax error at line 3, column 15: "
                        "mapping values are not allowed here")


def test_yaml_duplicate_key_and_bad_tag(tmp_path):
    msg = error(write(tmp_path, "optim:\n  lr: 0.1\n  lr: 0.2\n"))
    assert "line 3, column 3" in msg and "duplicate key 'lr'" in msg
    assert "cannot parse YAML" in error(write(tmp_path, "optim:\n  lr: !!int abc\n"))
    p = write(tmp_path, "train:\n  seed: !!timestamp 3\n")     # was: 'NoneType' object has ...
    assert error(p) == (f"{p}: cannot parse YAML: a value its tag cannot read (such as "
                        "!!timestamp 3); remove the tag")


def test_not_utf8_names_byte_offset(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_bytes(b"model:\n  x: \xff\n")
    assert error(p) == f"{p}: not valid UTF-8 at byte offset 12; save it as UTF-8"


@pytest.mark.parametrize("text, got", [("- 1\n- 2\n", "got a list"), ("hello\n", "got a string"),
                                       ("3\n", "got an integer")])
def test_file_not_a_mapping(tmp_path, text, got):
    p = write(tmp_path, text)
    assert error(p) == (f"{p}: expected a mapping of sections (data, model, optim, train, sample), "
                        + got)


def test_empty_file(tmp_path):
    p = write(tmp_path, "# nothing here\n")
    assert error(p).startswith(f"{p} is empty: expected a mapping of sections")


def test_a_text_given_as_the_config_is_refused_by_its_size(tmp_path):
    """`charlstm train notes.txt` (for --data notes.txt): parsing a big text as YAML took half a
    second and 20 MB a megabyte before saying 'got a string'; a big corpus ran out of memory."""
    from helpers import invoke, one_line_error
    from charlstm.config import CONFIG_BYTES
    text = write(tmp_path, "All the world's a stage\n" * 100_000, name="notes.txt")
    size = text.stat().st_size
    expected = (f"config file '{text}' is {size:,} bytes, too big for a config (at most "
                f"{CONFIG_BYTES:,}); to train on a text file, give it with --data")
    assert error(text) == expected
    for command in ("train", "prepare"):
        one_line_error(invoke(command, text, "--no-progress"), expected)
    padded = "train: {max_steps: 7}\n" + "#" * (CONFIG_BYTES - 40) + "\n"
    assert load_config(write(tmp_path, padded)).train.max_steps == 7   # up to the limit: read


def test_section_not_a_mapping(tmp_path):
    p = write(tmp_path, "model: 3\n")
    assert error(p) == f"{p}: section 'model' must be a mapping of keys, got 3"


@pytest.mark.parametrize("text, expected", [
    ("modle: {}\n", "unknown section 'modle'; did you mean 'model'?"),
    ("hidden_size: 3\n", "unknown section 'hidden_size'; did you mean 'model.hidden_size'?"),
    ("model:\n  hiden_size: 3\n",
     "unknown key 'model.hiden_size'; did you mean 'model.hidden_size'?"),
    ("train:\n  lr: 3\n", "unknown key 'train.lr'; did you mean 'optim.lr'?"),
    ("model:\n  zzzzzz: 3\n", "unknown key 'model.zzzzzz'; valid keys in model: num_layers, hidden_size"),
    ("model.hidden_size: 3\n", "unknown section 'model.hidden_size'; nest the key"),
])
def test_unknown_section_or_key_suggests(tmp_path, text, expected):
    p = write(tmp_path, text)
    assert error(p).startswith(f"{p}: {expected}")


# ---- types and ranges -----------------------------------------------------------------------


@pytest.mark.parametrize("key, value, expected", [
    ("model.hidden_size", "abc", "model.hidden_size: expected an integer, got 'abc' (str)"),
    ("model.hidden_size", True, "model.hidden_size: expected an integer, got True (bool)"),
    ("model.hidden_size", 3.5, "model.hidden_size: expected an integer, got 3.5 (float)"),
    ("model.hidden_size", [3], "model.hidden_size: expected an integer, got [3] (list)"),
    ("model.hidden_size", None, "model.hidden_size: expected an integer, got null"),
    ("optim.lr", "fast", "optim.lr: expected a number, got 'fast' (str)"),
    ("optim.lr", False, "optim.lr: expected a number, got False (bool)"),
    ("optim.lr", float("nan"), "optim.lr: must be a finite number, got nan"),
    ("optim.lr", "inf", "optim.lr: must be a finite number, got 'inf'"),
    ("model.forget_bias", 10**400, "model.forget_bias: must be a finite number"),
    ("sample.prime", 123, "sample.prime: expected a string, got 123 (int); put it in quotes"),
    ("optim.schedule", None, "optim.schedule: expected a string, got null"),
])
def test_wrong_type(key, value, expected):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as info:
        config_from_dict({section: {name: value}}, "x.yaml")
    assert str(info.value).startswith(f"x.yaml: {expected}")


def test_type_coercions_accepted():
    cfg = config_from_dict({"model": {"num_layers": 3.0, "forget_bias": -2},
                            "train": {"max_steps": "1e4", "max_epochs": 1},
                            "optim": {"eps": "1e-6", "lr": "0.5"}}, "d")
    assert cfg.model.num_layers == 3 and cfg.model.forget_bias == -2.0
    assert cfg.train.max_steps == 10000 and cfg.optim.eps == 1e-6 and cfg.optim.lr == 0.5
    nulls = {"data": {"path": None}, "model": {"vocab_size": None}}
    assert config_from_dict(nulls, "d") == Config()


# One value out of range and one edge value in range, for every key with a range.
RANGES = [
    ("data.test_fraction", 1.0, 0.05, "be in [0, 1)"),
    ("data.sha256", "abc", "a" * 64, "be 64 hexadecimal digits"),
    ("data.cache_dir", " ", "/tmp/cache", "be a folder path or null"),
    ("data.url", "file:///dev/zero", "https://example.org/a.txt",     # a file:// download could
     "be an http:// or https:// address or null"),                    # be a device without end
    ("data.unknown", "e\u0301", "?", "be 'skip' or a single character (one code point)"),
    ("train.eval_minutes", 0.0, 0.5, "be > 0"),
    ("train.keep_last", -1, 3, "be >= 0"),
    ("train.on_divergence", "ignore", "skip", "be one of stop, skip"),
    ("train.explode_ratio", 1.0, 3.0, "be > 1"),
    ("data.path", "  ", None, "be a file path or null"),
    ("data.val_fraction", 1.0, 0.999, "be in (0, 1)"),
    ("data.val_fraction", 0.0, 1e-9, "be in (0, 1)"),
    ("data.errors", "ignore", "replace", "be one of strict, replace"),
    ("model.num_layers", 0, 1, "be >= 1"), ("model.hidden_size", -1, 1, "be >= 1"),
    ("model.embedding_size", -1, 0, "be >= 0"), ("model.dropout", 1.0, 0.0, "be in [0, 1)"),
    ("model.weight_drop", 1.0, 0.5, "be in [0, 1)"),
    ("model.dropout_mask", "locked", "window", "be one of step, window"),
    ("model.cell", "lstn", "gru", "be one of lstm, gru, rnn"),
    ("model.vocab_size", 0, 1, "be >= 1"), ("optim.lr", -1.0, 1e-12, "be > 0"),
    ("optim.weight_decay", -0.1, 0, "be >= 0"), ("optim.beta1", 1.0, 0, "be in [0, 1)"),
    ("optim.beta2", -0.5, 0.5, "be in [0, 1)"), ("optim.eps", 0.0, 1e-30, "be > 0"),
    ("optim.grad_clip", -1.0, 0, "be >= 0"),
    ("optim.schedule", "linear", "cosine", "be one of constant, cosine, step"),
    ("optim.warmup_steps", -1, 0, "be >= 0"), ("optim.hold_steps", -2, 0, "be >= 0"), ("optim.min_lr", -1e-3, 0, "be >= 0"),
    ("optim.replan_step", -1, 0, "be >= 0"), ("optim.replan_total", -1, 0, "be >= 0"),
    ("optim.decay_every", 0, 1, "be >= 1"), ("optim.decay_rate", 0.0, 1, "be in (0, 1]"),
    ("optim.ema", 1.0, 0.999, "be in [0, 1)"),
    ("train.batch_size", 0, 1, "be >= 1"), ("train.seq_len", 0, 1, "be >= 1"),
    ("train.windows", "random", "shifted", "be one of fixed, shifted"),
    ("train.device", "gpu", "cuda", "be one of cpu, cuda"),
    ("train.recipe", "on", "auto", "be one of off, auto"),
    ("train.max_steps", 0, 1, "be >= 1"), ("train.max_epochs", 0.0, 0.01, "be > 0"),
    ("train.max_minutes", -1.0, 0.5, "be > 0"), ("train.eval_every", 0, 1, "be >= 1"),
    ("train.log_every", 0, 1, "be >= 1"), ("train.seed", -1, 0, "be >= 0"),
    ("train.threads", -1, 0, "be >= 0"), ("train.sample_length", -1, 0, "be in [0, 100000]"),
    ("train.sample_length", 10 ** 15, 100_000, "be in [0, 100000]"),   # an evaluation without end
    ("sample.length", -1, 0, "be >= 0"), ("sample.temperature", 0.0, 1e-3, "be > 0"),
    ("sample.top_k", -1, 0, "be >= 0"), ("sample.top_p", 0.0, 1, "be in (0, 1]"),
]


@pytest.mark.parametrize("key, bad, good, must", RANGES)
def test_ranges(tmp_path, key, bad, good, must):
    section, name = key.split(".")
    p = write(tmp_path, yaml.safe_dump({section: {name: bad}}))
    assert error(p) == f"{p}: {key}: must {must}, got {bad!r}"  # float keys list float values
    assert getattr(getattr(config_from_dict({section: {name: good}}, "d"), section), name) == good


def test_range_messages_from_the_spec(tmp_path):
    assert error(write(tmp_path, "optim: {lr: -1}\n")).endswith("optim.lr: must be > 0, got -1.0")
    assert error(write(tmp_path, "model: {dropout: 1.5}\n")).endswith(
        "x.yaml: model.dropout: must be in [0, 1), got 1.5")


@pytest.mark.parametrize("key, value", [("path", "books/\0x/*.txt"), ("path", ["a.txt", "b\0/*"]),
                                        ("cache_dir", "cache\0")])
def test_a_nul_character_in_a_path_is_refused_in_one_line(tmp_path, key, value):
    """No file name holds NUL: the OS refuses one with a ValueError, which was an internal error
    (from a glob's folder or from data.cache_dir) or a 'not found' naming another path."""
    from helpers import one_line_error, invoke
    p = write(tmp_path, yaml.safe_dump({"data": {key: value}}))
    one_line_error(invoke("prepare", p, "--no-progress"), f"{p}: data.{key}: ", "\\x00")


def test_every_ranged_key_is_tested():
    tested = {k for k, *_ in RANGES}
    untested = {"model.forget_bias", "sample.prime", "data.separator"}  # any finite float, any string
    booleans = {"model.peepholes", "model.coupled_gates"}    # test_boolean_keys
    assert tested | untested | booleans == set(KEYS)


@pytest.mark.parametrize("key", ["model.peepholes", "model.coupled_gates"])
def test_boolean_keys(tmp_path, key):
    """true/false from YAML, --set and a checkpoint's JSON; anything else names the key."""
    section, name = key.split(".")
    assert getattr(load_config(None, [f"{key}=true"]).model, name) is True
    assert getattr(load_config(write(tmp_path, f"model: {{{name}: false}}\n")).model, name) is False
    assert getattr(config_from_dict({section: {name: True}}, "ckpt").model, name) is True
    for bad, shown in [(1, "1 (int)"), ("true", "'true' (str)"), (None, "null")]:
        with pytest.raises(ConfigError) as info:
            config_from_dict({section: {name: bad}}, "x.yaml")
        assert str(info.value).startswith(f"x.yaml: {key}: expected true or false, got {shown}")
    with pytest.raises(ConfigError, match=f"--set '{key}=': {key}: expected true or false"):
        load_config(None, [f"{key}="])


@pytest.mark.parametrize("cell", ["gru", "rnn"])
@pytest.mark.parametrize("key", ["model.peepholes", "model.coupled_gates"])
def test_lstm_variants_on_another_cell_are_one_line(tmp_path, cell, key):
    p = write(tmp_path, f"model: {{cell: {cell}}}\n")
    msg = error(p, [f"{key}=true"])
    assert msg == (f"{p}, --set '{key}=true': {key}: the {cell} cell has no such variant (only "
                   f"lstm has); set {key}: false, or model.cell: lstm")
    both = load_config(None, ["model.peepholes=true", "model.coupled_gates=true"]).model
    assert (both.cell, both.peepholes, both.coupled_gates) == ("lstm", True, True)


def test_some_stop_condition_required(tmp_path):
    msg = error(None, ["train.max_steps=null"])
    assert msg.startswith("--set 'train.max_steps=null': ")
    assert "train.max_steps, train.max_epochs, train.max_minutes" in msg
    cfg = load_config(None, ["train.max_steps=null", "train.max_minutes=5"])
    assert cfg.train.max_minutes == 5.0
    p = write(tmp_path, "train: {max_steps: null}\n")
    assert error(p).startswith(f"{p}: train.max_steps, train.max_epochs, train.max_minutes are")


def test_cosine_warmup_must_be_below_max_steps(tmp_path):
    p = write(tmp_path, "optim: {schedule: cosine, warmup_steps: 100}\ntrain: {max_steps: 100}\n")
    assert error(p) == (f"{p}: optim.warmup_steps: must be < train.max_steps (100) with the cosine "
                        "schedule, got 100")
    assert load_config(p, ["optim.warmup_steps=99"]).optim.warmup_steps == 99
    assert load_config(p, ["optim.schedule=constant"]).optim.warmup_steps == 100
    assert load_config(p, ["train.max_steps=null", "train.max_epochs=1"]).optim.warmup_steps == 100
    p = write(tmp_path, "optim: {schedule: cosine, hold_steps: 100}\ntrain: {max_steps: 100}\n")
    assert error(p) == (f"{p}: optim.hold_steps: must be < train.max_steps (100) with the cosine "
                        "schedule, got 100")
    assert load_config(p, ["optim.hold_steps=99"]).optim.hold_steps == 99


@pytest.mark.parametrize("step, total, max_steps", [(50, 20, 100), (100, 80, 100), (50, 30, 100)])
def test_a_second_plan_must_fit_the_first_and_the_run(tmp_path, step, total, max_steps):
    """optim.replan_total must lie past the warmup and hold_steps (30), replan_step below
    train.max_steps: one line naming both keys otherwise."""
    p = write(tmp_path, f"optim: {{schedule: cosine, hold_steps: 30, replan_step: {step}, "
                        f"replan_total: {total}}}\ntrain: {{max_steps: {max_steps}}}\n")
    assert error(p) == (f"{p}: optim.replan_step {step} and optim.replan_total {total}: a second "
                        "plan needs replan_total past the warmup and hold_steps, and replan_step "
                        "below train.max_steps; they are written by a time budget's plan: set "
                        "both to 0")
    assert load_config(p, ["optim.replan_step=0"]).optim.replan_step == 0
    assert load_config(p, ["optim.replan_step=50", "optim.replan_total=80"]).optim.replan_total == 80


def test_cosine_floor_not_above_lr():
    msg = error(None, ["optim.schedule=cosine", "optim.min_lr=0.1"])
    assert "optim.min_lr: must be <= optim.lr (0.002)" in msg


# ---- --set overrides ------------------------------------------------------------------------


def test_set_typing():
    assert parse_override("optim.lr=1e-3") == ("optim", "lr", 1e-3)
    assert parse_override("train.max_steps=null") == ("train", "max_steps", None)
    assert parse_override("train.max_steps=500") == ("train", "max_steps", 500)
    assert parse_override("sample.prime=123") == ("sample", "prime", "123")
    assert parse_override("sample.prime=ROMEO:") == ("sample", "prime", "ROMEO:")
    assert parse_override("sample.prime=a=b: [c") == ("sample", "prime", "a=b: [c")
    assert parse_override("sample.prime=") == ("sample", "prime", "")
    assert parse_override("data.path=null") == ("data", "path", None)
    assert parse_override("data.path=my file.txt") == ("data", "path", "my file.txt")
    assert parse_override("optim.schedule=cosine") == ("optim", "schedule", "cosine")
    assert parse_override(" optim.grad-clip = 1") == ("optim", "grad_clip", 1.0)


def test_set_order_and_layering(tmp_path):
    p = write(tmp_path, "optim: {lr: 0.5}\nmodel: {dropout: 1.5}\n")
    cfg = load_config(p, ["model.dropout=0.1", "optim.lr=0.1", "optim.lr=0.2", "train.seed=7"])
    assert cfg.optim.lr == 0.2 and cfg.model.dropout == 0.1 and cfg.train.seed == 7  # later wins
    assert load_config(None, "optim.lr=0.3").optim.lr == 0.3  # one bare string is one override


@pytest.mark.parametrize("s, expected", [
    ("optim.lr", "expected KEY=VALUE, e.g. --set optim.lr=0.001"),
    ("=3", "expected KEY=VALUE, e.g. --set optim.lr=0.001"),
    ("", "expected KEY=VALUE"),
    ("lr=0.1", "unknown key 'lr'; did you mean 'optim.lr'?"),
    ("hiden_size=3", "unknown key 'hiden_size'; did you mean 'model.hidden_size'?"),
    ("opitm.lr=3", "unknown key 'opitm.lr'; did you mean 'optim.lr'?"),
    ("a.b.c=1", "unknown key 'a.b.c'; keys are SECTION.KEY"),
    ("optim.lr=abc", "optim.lr: expected a number, got 'abc' (str)"),
    ("optim.lr=", "optim.lr: expected a number, got '' (str)"),
    ("optim.lr=[1, 2]", "optim.lr: expected a number, got [1, 2] (list)"),
    ("model.dropout=1.5", "model.dropout: must be in [0, 1), got 1.5"),
    ("model.hidden_size=null", "model.hidden_size: expected an integer, got null"),
    ("optim.schedule=linear", "optim.schedule: must be one of constant, cosine, step, got 'linear'"),
])
def test_set_errors(s, expected):
    expected = f"--set {s!r}: {expected}"
    with pytest.raises(ConfigError) as info:
        parse_override(s)
    assert str(info.value).startswith(expected)
    assert error(None, [s]).startswith(expected)


def test_set_multiline_value_stays_one_line():
    msg = error(None, ["optim.lr=1\n2"])
    assert msg.startswith("--set 'optim.lr=1\\n2': optim.lr: expected a number")


# ---- fuzzing: a Config or a ConfigError, nothing else ---------------------------------------

_names = st.sampled_from(["data", "model", "optim", "train", "sample"]
                         + [k.split(".")[1] for k in KEYS])
_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
            | st.sampled_from(["1e-3", "nan", "-inf", "3.0", "null", "cosine", "strict"]))
_docs = st.recursive(_scalars, lambda c: st.lists(c, max_size=3)
                     | st.dictionaries(_names | st.text(max_size=5), c, max_size=4), max_leaves=12)
_sections = st.dictionaries(st.sampled_from(["data", "model", "optim", "train", "sample"]),
                            st.dictionaries(_names, _scalars, max_size=4), max_size=5)


def outcome(fn, *args):
    try:
        assert isinstance(fn(*args), Config)
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=20)
                | st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=12)),
                max_size=4))
def test_fuzz_set_strings(overrides):
    outcome(load_config, None, overrides)


@settings(max_examples=200, deadline=None)
@given(doc=_docs | _sections)
def test_fuzz_yaml_documents(tmp_path_factory, doc):
    p = tmp_path_factory.mktemp("fz") / "x.yaml"
    p.write_text(yaml.safe_dump(doc), encoding="utf-8")
    outcome(load_config, p)
    outcome(config_from_dict, doc, "d")


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_fuzz_yaml_bytes(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("fz") / "x.yaml"
    p.write_bytes(b"optim:\n  " + raw if raw[:1] == b"l" else raw)
    outcome(load_config, p)
