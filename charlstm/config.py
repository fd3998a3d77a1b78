"""The typed run configuration: defaults in code, a YAML file on top, then `--set` overrides.

    cfg = load_config("run.yaml", ["optim.lr=1e-3", "train.max_steps=500"])
    save_config(cfg, run_dir / "config.yaml")        # load_config reads it back to an equal Config
    cfg = config_from_dict(saved, "x.npz", ["train.max_steps=900"])  # a checkpoint's, old ones too

This is the only module that reads YAML. Keys are spelled `section.key` exactly like the dataclass
fields (`KEYS` lists them). Every user mistake raises ConfigError with one line naming the file or
--set string, the key and the value, and saying what is expected.
"""

import copy
import dataclasses
import difflib
import math
import numbers
import os
import reprlib
import stat
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml

from charlstm.errors import ConfigError


@dataclass
class DataConfig:
    path: str | list[str] | None = None  # file, folder, glob, or a list; None = built-in corpus
    val_fraction: float = 0.1  # the last fraction of the text is validation
    test_fraction: float = 0.0  # held out after validation, for `charlstm eval --split test`
    errors: str = "strict"  # UTF-8 decoding: "strict" (error naming the byte offset) or "replace"
    separator: str = "\n"  # joins the files of a folder, glob or list
    url: str | None = None  # where to download data.path from if it is missing
    sha256: str | None = None  # the download's checksum
    cache_dir: str | None = None  # token cache folder; None = ~/.cache/charlstm
    unknown: str = "skip"  # fine-tuning: characters outside the vocabulary: "skip", or one to use


@dataclass
class ModelConfig:
    num_layers: int = 2
    hidden_size: int = 128
    embedding_size: int = 64  # 0 = one-hot input
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (tanh)
    peepholes: bool = False  # lstm only: the gates i, f, o also read the cell state
    coupled_gates: bool = False  # lstm only: no input gate, c = f * c + (1 - f) * g
    dropout: float = 0.0
    dropout_mask: str = "step"  # "step": a fresh mask every time step; "window": one per window
    weight_drop: float = 0.0  # DropConnect on the recurrent weights W_hh (AWD-LSTM)
    forget_bias: float = 1.0
    vocab_size: int | None = None  # derived from the corpus at run time and recorded


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 0.0  # AdamW, decoupled
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 5.0  # global norm; 0 = off
    schedule: str = "constant"  # constant | cosine | step
    warmup_steps: int = 0  # linear warmup (cosine and constant)
    hold_steps: int = 0  # cosine: keep lr until this step, then decay (a time budget's plan)
    replan_step: int = 0   # cosine: a time budget's second plan, at this step, stretched the
    replan_total: int = 0  # decay, which until then ran towards replan_total, to max_steps
    min_lr: float = 0.0  # cosine floor
    decay_every: int = 1000  # step schedule: lr *= decay_rate every decay_every steps
    decay_rate: float = 0.97
    ema: float = 0.0  # decay of a moving average of the weights, which evaluation, checkpoints
                      # and sampling then use; 0 = off


@dataclass
class TrainConfig:
    batch_size: int = 50
    seq_len: int = 50
    windows: str = "fixed"  # "fixed": the same windows every epoch; "shifted": a random start per epoch
    max_steps: int | None = 5000  # training stops at the first of the three limits that is set
    max_epochs: float | None = None
    max_minutes: float | None = None  # wall-time budget
    recipe: str = "off"  # "auto": choose every setting not set explicitly for max_minutes (recipe.py)
    eval_every: int = 500
    eval_minutes: float | None = None  # also evaluate every this many training minutes
    log_every: int = 10
    seed: int = 1337
    threads: int = 0  # 0 = leave the BLAS library's default
    device: str = "cpu"  # "cpu", or "cuda": an NVIDIA GPU through CuPy (pip install 'charlstm[gpu]')
    sample_length: int = 200  # chars sampled at each evaluation; 0 = none
    keep_last: int = 0  # step checkpoints kept besides last.npz and best.npz; 0 = none
    on_divergence: str = "stop"  # nan/inf/exploding loss: "stop", or "skip" the step and halve lr
    explode_ratio: float | None = None  # a loss above this multiple of the best smoothed loss


@dataclass
class SampleConfig:  # defaults for `charlstm sample`
    prime: str = ""
    length: int = 500
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}


def _field_types() -> dict[str, tuple[type, bool]]:
    """Dotted key -> (int | float | str, whether null is allowed), read off the annotations."""
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            args = typing.get_args(hints[f.name]) or (hints[f.name],)
            base = next(a for a in args if a is not type(None))
            out[f"{section}.{f.name}"] = (base, type(None) in args)
    return out


_TYPES = _field_types()
KEYS: list[str] = list(_TYPES)
_OPTIONAL = [k for k, (_, optional) in _TYPES.items() if optional]

CELLS = ("lstm", "gru", "rnn")  # model.cell
# The keys that fix a model's parameter names and shapes (with the vocabulary): a fine-tuning run
# takes them from its checkpoint, and a resumed run must keep them.
ARCHITECTURE = ("model.num_layers", "model.hidden_size", "model.embedding_size", "model.cell",
                "model.peepholes", "model.coupled_gates")

_ge0 = ("be >= 0", lambda v: v >= 0)
_ge1 = ("be >= 1", lambda v: v >= 1)
_gt0 = ("be > 0", lambda v: v > 0)
_unit_half = ("be in [0, 1)", lambda v: 0 <= v < 1)
_half_unit = ("be in (0, 1]", lambda v: 0 < v <= 1)


def _is_path(v: str) -> bool:
    """Not blank, and no NUL character, which no file name holds (the OS refuses it)."""
    return v.strip() != "" and "\0" not in v


def _one_of(*choices: str) -> tuple[str, Any]:
    return "be one of " + ", ".join(choices), lambda v: v in choices


# (what the value must be, test) for each key with a constraint beyond its type. Null values of
# optional keys skip this table.
_RULES: dict[str, tuple[str, Any]] = {
    "data.path": ("be a file path or null", lambda v: _is_path(v)),
    "data.val_fraction": ("be in (0, 1)", lambda v: 0 < v < 1),
    "data.errors": _one_of("strict", "replace"),
    "data.test_fraction": ("be in [0, 1)", lambda v: 0 <= v < 1),
    "data.sha256": ("be 64 hexadecimal digits", lambda v: len(v) == 64 and all(
        ch in "0123456789abcdefABCDEF" for ch in v)),
    "data.cache_dir": ("be a folder path or null", lambda v: _is_path(v)),
    # a download of a file:// url could be a device without end (file:///dev/zero)
    "data.url": ("be an http:// or https:// address or null",
                 lambda v: v.lower().startswith(("http://", "https://")) and _is_path(v)),
    "data.unknown": ("be 'skip' or a single character (one code point)",
                     lambda v: v == "skip" or len(v) == 1),
    "model.num_layers": _ge1, "model.hidden_size": _ge1, "model.embedding_size": _ge0,
    "model.dropout": _unit_half, "model.weight_drop": _unit_half,
    "model.dropout_mask": _one_of("step", "window"),
    "model.cell": _one_of(*CELLS),
    "model.vocab_size": _ge1,
    "optim.lr": _gt0, "optim.weight_decay": _ge0, "optim.beta1": _unit_half,
    "optim.beta2": _unit_half, "optim.eps": _gt0, "optim.grad_clip": _ge0,
    "optim.schedule": _one_of("constant", "cosine", "step"), "optim.warmup_steps": _ge0,
    "optim.hold_steps": _ge0, "optim.replan_step": _ge0, "optim.replan_total": _ge0,
    "optim.min_lr": _ge0, "optim.decay_every": _ge1, "optim.decay_rate": _half_unit,
    "optim.ema": _unit_half,
    "train.batch_size": _ge1, "train.seq_len": _ge1,
    "train.windows": _one_of("fixed", "shifted"), "train.max_steps": _ge1,
    "train.max_epochs": _gt0, "train.max_minutes": _gt0, "train.eval_every": _ge1, "train.eval_minutes": _gt0,
    "train.log_every": _ge1, "train.seed": _ge0, "train.threads": _ge0,
    "train.device": _one_of("cpu", "cuda"), "train.recipe": _one_of("off", "auto"),
    # printed at every evaluation, which stops nothing while it writes
    "train.sample_length": ("be in [0, 100000]", lambda v: 0 <= v <= 100_000),
    "train.keep_last": _ge0,
    "train.on_divergence": _one_of("stop", "skip"),
    "train.explode_ratio": ("be > 1", lambda v: v > 1),
    "sample.length": _ge0, "sample.temperature": _gt0, "sample.top_k": _ge0,
    "sample.top_p": _half_unit,
}
assert set(_RULES) <= set(_TYPES)

_WANT = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_LISTS = ("data.path",)  # string keys that also take a list of strings
_STOPS = ("train.max_steps", "train.max_epochs", "train.max_minutes")
CONFIG_BYTES = 1 << 20  # a config file is a few lines of YAML
_NULLS = ("null", "Null", "NULL", "~")  # YAML's spellings of null, honoured by --set data.path=null


def _fail(where: str | None, msg: str):
    raise ConfigError(f"{where}: {msg}" if where else msg)


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 2, 60, 60, 60


def _show(v: object) -> str:
    """A short one-line repr: a bad value can be a whole YAML document, even an alias bomb."""
    try:
        r = _repr.repr(v)
    except ValueError:  # an int past Python's 4300-digit str() limit
        r = f"<{type(v).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."


def _names(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def _hint(name: str, sections: bool = False) -> str:
    """'; did you mean ...?' for a misspelled key (dotted or bare) or, with `sections`, section."""
    section, _, key = name.rpartition(".")
    close = difflib.get_close_matches
    bare = close(key, [k.partition(".")[2] for k in KEYS], n=2)
    tiers = [  # the first tier with a match wins: the right key in the wrong (or no) section first
        [k for k in KEYS if k.endswith("." + key)],
        [f"{section}.{m}" for m in close(key, _names(section), n=2)] if section in SECTIONS else [],
        close(name, KEYS, n=2),
        close(name, list(SECTIONS), n=1) if sections and not section else [],
        [k for m in bare for k in KEYS if k.endswith("." + m)] if not section else [],
    ]
    for tier in tiers:
        found = [f for f in tier if f != name]
        if found:
            return "; did you mean " + " or ".join(repr(f) for f in found) + "?"
    if section in SECTIONS:
        return f"; valid keys in {section}: {', '.join(_names(section))}"
    return f"; keys are SECTION.KEY with SECTION one of {', '.join(SECTIONS)}"


def _number(v: object, integer: bool) -> int | float | None:
    """v as an int (3.0 and '1e4' count) or a float (inf and nan too); None if it is neither."""
    if isinstance(v, bool) or not isinstance(v, (str, numbers.Real)):
        return None
    if integer and isinstance(v, (str, numbers.Integral)):
        try:
            return int(v)
        except ValueError:
            pass
    try:
        f = float(v)  # PyYAML reads `lr: 1e-3` and `max_steps: 1e4` as strings
    except ValueError:
        return None
    except OverflowError:  # an int with hundreds of digits
        f = math.inf
    if not integer:
        return f
    return int(f) if math.isfinite(f) and f.is_integer() else None


def _coerce(key: str, value: object, where: str | None) -> object:
    """The checked value of `key`, as a plain int, float, str or None."""
    base, optional = _TYPES[key]
    if value is None:
        if optional:
            return None
        _fail(where, f"{key}: expected {_WANT[base]}, got null "
              f"(only {', '.join(_OPTIONAL)} may be null)")
    if key in _LISTS and isinstance(value, (list, tuple)):
        paths = [str(x) for x in value if isinstance(x, (str, os.PathLike)) and _is_path(str(x))]
        if not value or len(paths) != len(value):
            _fail(where, f"{key}: expected a path or a list of paths, got {_show(value)}")
        return paths
    if base is str:
        v = str(value) if isinstance(value, (str, os.PathLike)) else None  # Path for data.path
    elif base is bool:
        v = value if isinstance(value, bool) else None  # YAML's true/false; not 0, 1 or 'true'
    else:
        v = _number(value, integer=base is int)
    if v is None:
        quote = "; put it in quotes" if base is str and isinstance(value, (int, float)) else ""
        got = f"{_show(value)} ({type(value).__name__})"
        _fail(where, f"{key}: expected {_WANT[base]}, got {got}{quote}")
    if base is float and not math.isfinite(v):
        _fail(where, f"{key}: must be a finite number, got {_show(value)}")
    rule = _RULES.get(key)
    if rule and not rule[1](v):
        _fail(where, f"{key}: must {rule[0]}, got {_show(v)}")
    return v


def _collect(doc: object, where: str, values: dict) -> None:
    """Record each `section: {key: value}` of `doc` in `values` (dotted key -> (value, where))."""
    if not isinstance(doc, dict):
        kind = {list: "a list", str: "a string", int: "an integer", float: "a number",
                bool: "a boolean"}
        got = kind.get(type(doc), f"a {type(doc).__name__}")
        _fail(where, f"expected a mapping of sections ({', '.join(SECTIONS)}), got {got}")
    for section, body in doc.items():
        if section not in SECTIONS:
            name = str(section)
            if name in _TYPES:  # a flat `model.hidden_size: 3`
                s, k = name.split(".")
                _fail(where, f"unknown section {name!r}; nest the key: '{s}:' then '  {k}: ...'")
            _fail(where, f"unknown section {_show(section)}{_hint(name, sections=True)}")
        if body is None:  # `model:` with every key commented out
            continue
        if not isinstance(body, dict):
            _fail(where, f"section {section!r} must be a mapping of keys, got {_show(body)}")
        for key, value in body.items():
            dotted = f"{section}.{key}"
            if dotted not in _TYPES:
                _fail(where, f"unknown key {_show(dotted)}{_hint(dotted)}")
            _put(values, dotted, value, where)


def _put(values: dict, dotted: str, value: object, where: str | None) -> None:
    # Re-insert so that dict order is the order values were last set in: errors then name the
    # source a user would edit.
    values.pop(dotted, None)
    values[dotted] = (value, where)


def _build(values: dict, fallback: str | None) -> Config:
    """Coerce every set value, fill in the defaults and run the checks across keys."""
    kwargs: dict[str, dict] = {s: {} for s in SECTIONS}
    for dotted, (value, where) in values.items():
        section, key = dotted.split(".")
        kwargs[section][key] = _coerce(dotted, value, where)
    cfg = Config(**{s: SECTIONS[s](**kw) for s, kw in kwargs.items()})

    def where(*keys: str) -> str | None:
        srcs = [w for k, (_, w) in values.items() if k in keys and w]
        return ", ".join(dict.fromkeys(srcs)) or fallback

    t, o, d, m = cfg.train, cfg.optim, cfg.data, cfg.model
    for key, flag in (("model.peepholes", m.peepholes), ("model.coupled_gates", m.coupled_gates)):
        if flag and m.cell != "lstm":
            _fail(where(key, "model.cell"), f"{key}: the {m.cell} cell has no such variant (only "
                  f"lstm has); set {key}: false, or model.cell: lstm")
    if d.val_fraction + d.test_fraction >= 1:
        _fail(where("data.val_fraction", "data.test_fraction"),
              f"data.val_fraction + data.test_fraction must be < 1, got {d.val_fraction!r} + "
              f"{d.test_fraction!r}: nothing would be left to train on")
    if t.max_steps is None and t.max_epochs is None and t.max_minutes is None:
        _fail(where(*_STOPS), f"{', '.join(_STOPS)} are all null: set at least one so training "
              "stops, e.g. train.max_steps=2000")
    for key in ("warmup_steps", "hold_steps"):       # the cosine must have steps to decay over
        if o.schedule == "cosine" and t.max_steps is not None and getattr(o, key) >= t.max_steps:
            _fail(where(f"optim.{key}", "train.max_steps", "optim.schedule"),
                  f"optim.{key}: must be < train.max_steps ({t.max_steps}) with the cosine "
                  f"schedule, got {getattr(o, key)}")
    if o.replan_step and not (max(o.warmup_steps, o.hold_steps) < o.replan_total
                              and (t.max_steps is None or o.replan_step < t.max_steps)):
        _fail(where("optim.replan_step", "optim.replan_total", "train.max_steps"),
              f"optim.replan_step {o.replan_step} and optim.replan_total {o.replan_total}: a "
              "second plan needs replan_total past the warmup and hold_steps, and replan_step "
              "below train.max_steps; they are written by a time budget's plan: set both to 0")
    if o.schedule == "cosine" and o.min_lr > o.lr:
        _fail(where("optim.min_lr", "optim.lr", "optim.schedule"),
              f"optim.min_lr: must be <= optim.lr ({o.lr!r}) with the cosine schedule, "
              f"got {o.min_lr!r}")
    return cfg


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_yaml(name: str) -> object:
    try:
        st = os.stat(name)
        mode, size = st.st_mode, st.st_size
    except OSError:
        mode = size = None  # missing or unreadable: open says so below
    # Looked at before open: opening a pipe blocks, and reading a device may never end.
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ConfigError(f"config file {name!r} is not a regular file (a device, pipe or "
                          "socket), expected a YAML file")
    # A text to train on, given as the config by mistake: parsing takes 20 times its size in
    # memory and half a second a megabyte, before saying it is not a mapping.
    if mode is not None and stat.S_ISREG(mode) and size > CONFIG_BYTES:
        raise ConfigError(f"config file {name!r} is {size:,} bytes, too big for a config (at "
                          f"most {CONFIG_BYTES:,}); to train on a text file, give it with --data")
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {name!r} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {name!r} is a directory, expected a YAML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {name!r}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        msg = f"{name}: not valid UTF-8 at byte offset {e.start}; save it as UTF-8"
        raise ConfigError(msg) from None
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _one_line(e.problem or e.context or "invalid YAML")
        raise ConfigError(f"{name}: YAML syntax error{at}: {problem}") from None
    except (AttributeError, TypeError):    # a tag's constructor on the wrong text: `!!timestamp 3`
        raise ConfigError(f"{name}: cannot parse YAML: a value its tag cannot read (such as "
                          "!!timestamp 3); remove the tag") from None
    except Exception as e:  # ReaderError, deep nesting, and tags like `!!int abc` (ValueError)
        raise ConfigError(f"{name}: cannot parse YAML: {_one_line(e)}") from None
    if doc is None:
        raise ConfigError(f"{name} is empty: expected a mapping of sections "
                          f"({', '.join(SECTIONS)}), e.g. 'train: {{max_steps: 1000}}'; "
                          "or give no config file")
    return doc


def parse_override(s: str) -> tuple[str, str, object]:
    """Parse and check one `--set section.key=value`; returns (section, key, typed value).

    The value text is read as YAML (`1e-3`, `null`, `500`), except for string keys, which take the
    raw text so that `--set sample.prime=123` is the string '123'. Dashes in the key count as
    underscores, as on the command line.
    """
    where = f"--set {_show(s)}"
    if not isinstance(s, str):
        _fail(where, "expected a KEY=VALUE string")
    lhs, eq, text = s.partition("=")
    name = lhs.strip().replace("-", "_")
    if not eq or not name:
        _fail(where, "expected KEY=VALUE, e.g. --set optim.lr=0.001")
    if name not in _TYPES:
        _fail(where, f"unknown key {_show(name)}{_hint(name)}")
    base, optional = _TYPES[name]
    if base is str and name in _LISTS and text.lstrip().startswith("["):
        try:
            value = yaml.safe_load(text)       # --set data.path=[a.txt, b.txt]
        except Exception:
            value = text
    elif base is str:
        value = None if optional and text.strip() in _NULLS else text
    elif not text.strip():
        value = text  # reported as "expected a number, got ''" rather than as null
    else:
        try:
            value = yaml.safe_load(text)
        except Exception:  # not YAML: let the type check name the raw text
            value = text
    section, key = name.split(".")
    return section, key, _coerce(name, value, where)


def stale_source_keys(overridden: Sequence[str]) -> list[str]:
    """The keys to drop from a config when `overridden` (dotted keys set on the command line)
    gives it a new data source.

    data.url and data.sha256 describe the file at the config's own data.path: kept beside a new
    path, a missing file (a typo in --data) would be downloaded from the old url under the new
    name, and the run would train on the wrong text. So a new data.path drops them, unless they
    are set again in the same command.
    """
    if "data.path" not in overridden:
        return []
    return [k for k in ("data.url", "data.sha256") if k not in overridden]


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at `path` (if any), then each override in order; checked.

    An override of data.path replaces the whole data source (see stale_source_keys).
    """
    return load_config_keys(path, overrides)[0]


def load_config_keys(path: str | os.PathLike | None = None,
                     overrides: Sequence[str] = ()) -> tuple[Config, frozenset[str]]:
    """load_config, and the dotted keys that the file or the overrides set: the ones the
    automatic recipe (recipe.py) must leave as they are."""
    if isinstance(overrides, str):  # one override passed bare would otherwise iterate by char
        overrides = [overrides]
    values: dict = {}
    name = None
    if path is not None:
        name = os.fsdecode(path)
        _collect(_read_yaml(name), name, values)
    _override(values, overrides)
    return _build(values, name), frozenset(values)


def config_from_dict(d: dict, source: str, overrides: Sequence[str] = ()) -> Config:
    """Build and check a Config from nested dicts (a checkpoint's); missing keys take defaults.
    `overrides` (--set strings) apply on top, as in load_config."""
    values: dict = {}
    _collect(d, source, values)
    _override(values, overrides)
    return _build(values, source)


def _override(values: dict, overrides: Sequence[str]) -> None:
    """Apply --set strings in order; a new data.path replaces the whole data source."""
    overridden = []
    for s in overrides:
        section, key, value = parse_override(s)
        _put(values, f"{section}.{key}", value, f"--set {_show(s)}")
        overridden.append(f"{section}.{key}")
    for key in stale_source_keys(overridden):
        values.pop(key, None)


def get(cfg: Config, dotted: str) -> Any:
    """The value of a dotted key, e.g. get(cfg, "model.hidden_size")."""
    section, key = dotted.split(".")
    return getattr(getattr(cfg, section), key)


def replaced(cfg: Config, values: dict) -> Config:
    """A copy of `cfg` with {dotted key: value} set; `cfg` itself is never changed. The values
    are the library's own (derived or chosen), so they are not checked again here."""
    out = copy.deepcopy(cfg)
    for dotted, value in values.items():
        section, key = dotted.split(".")
        setattr(getattr(out, section), key, value)
    return out


def config_to_dict(cfg: Config) -> dict:
    """Nested plain dict, sections and keys in dataclass order; JSON- and YAML-safe once checked."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write `cfg` as YAML that load_config reads back to an equal Config."""
    name = os.fsdecode(path)
    # Re-check first, which also turns NumPy scalars into plain numbers that safe_dump can write.
    checked = config_from_dict(config_to_dict(cfg), "config to save")
    text = yaml.safe_dump(config_to_dict(checked), sort_keys=False)
    try:
        with open(name, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ConfigError(f"cannot write config file {name!r}: {e.strerror or e}") from None
