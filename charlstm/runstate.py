"""A run's saved state: what a run checkpoint holds, how it is written and how it is read back.

Every command that opens a checkpoint comes through here (checkpoint.py is only the file format:
atomic save, validated load), so the layout below is known in one place and checked by one
function, whose one-line refusal is the same from `info`, `sample`, `eval` and `train --resume`.

    runstate.save_run("runs/x/last.npz", cfg, vocab, ts, run_position, init_from, stream)
    saved = runstate.load_run("runs/x/last.npz")         # RunState: what a resumed run needs
    ts.restore(saved)                                     # a step.TrainState, as it was saved
    params, vocab, cfg, meta = runstate.load_model(path)  # the weights alone
    params, vocab, cfg, meta, start = runstate.load_model(path, with_start=True)  # sample, eval
    cfg, vocab, meta = runstate.inspect(path)             # `info`: checks without reading arrays

Arrays (L layers, B batch rows, H hidden; names and shapes of the parameters: model.param_shapes):

    <param>                     the weights sample, eval and PyTorch load; with optim.ema, their
                                moving average
    train.<param>               only with optim.ema: the weights training continues from
    optim.m.<param>, .v.<param> AdamW's moments
    state.h, state.c            (L, B, H): the state carried into the next window, which sample
                                and eval start from

Metadata: charlstm_version, config (resolved), vocab (the characters in index order), the
run's position (POSITION: step, epoch, window, optim_t, rng, ...), init_from (the checkpoint a
fine-tuning run started from) and stream: the text the run trains on, as source files with size
and SHA-256 and a token count, which check_stream holds a resumed run to.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, checkpoint, model
from .cells import Cell
from .config import ARCHITECTURE, KEYS, Config, config_from_dict, config_to_dict, get
from .data import Vocab, split_sizes, windows_per_epoch
from .errors import CharlstmError, CheckpointError
from .runfolder import LAST

# Where a run stands, besides its arrays: its TrainState's scalars (step.TrainState.position)
# and the run's own two; the losses that may be infinite are stored as null.
POSITION = ("step", "epoch", "window", "optim_t", "rng", "train_time", "best_val_loss",
            "lr_scale", "smooth_loss", "loss_floor")
RUN_POSITION = ("train_time", "best_val_loss")
# Position keys that checkpoints from before them lack (a missing one reads as None): how the
# dropout masks are drawn (model.DRAWS; None: "host", step.TrainState.restore).
LATER_POSITION = ("draw",)
MODEL_META = ("config", "vocab")
RUN_META = MODEL_META + POSITION
_INFINITE_AS_NULL = ("best_val_loss", "loss_floor")


@dataclass
class RunState:
    """One run checkpoint in memory. Array dicts map parameter names to arrays."""
    cfg: Config              # the config the run trained with
    vocab: Vocab
    weights: dict            # the weights training continues from
    average: dict | None     # optim.ema's moving average of them, or None
    moments: tuple           # (m, v): AdamW's moments
    state: tuple             # (h, c), each (L, B, H)
    position: dict           # POSITION key -> value
    init_from: str | None = None
    stream: dict | None = None   # what stream_of returns; None in checkpoints from before it


def save_run(path, cfg, vocab, ts, run_position, init_from=None, stream=None, state=None):
    """Write a run checkpoint of `ts` (a step.TrainState, on either device) atomically.
    run_position: RUN_POSITION's values; `state`: the whole batch's carried (h, c) under MPI
    (ts.state, this process's rows, otherwise)."""
    shapes = model.shapes_of(ts.params)
    save(path, RunState(
        cfg, vocab, weights=ts.params,
        average=None if ts.ema is None else ts.eval_params(),
        moments=tuple(model.views(ts.opt[key], shapes) for key in "mv"),
        state=ts.state if state is None else state, position={**ts.position(), **run_position},
        init_from=init_from, stream=stream))


def save(path, s):
    """Write a RunState as a run checkpoint (atomically; see checkpoint.save_checkpoint)."""
    shown = s.average if s.average is not None else s.weights
    arrays = dict(shown)                          # what sample/eval/PyTorch load
    if s.average is not None:
        arrays.update({f"train.{name}": p for name, p in s.weights.items()})
    for key, moments in zip("mv", s.moments):
        arrays.update({f"optim.{key}.{name}": a for name, a in moments.items()})
    arrays["state.h"], arrays["state.c"] = s.state
    position = {k: None if k in _INFINITE_AS_NULL and math.isinf(s.position[k]) else s.position[k]
                for k in POSITION}
    position.update({k: s.position.get(k) for k in LATER_POSITION})
    meta = {"charlstm_version": __version__, "config": config_to_dict(s.cfg),
            "vocab": s.vocab.chars, **position, "init_from": s.init_from, "stream": s.stream}
    checkpoint.save_checkpoint(path, arrays, meta)


def load_run(path):
    """Everything a resumed run needs, from a run checkpoint: a RunState."""
    arrays, meta = checkpoint.load_checkpoint(path)
    cfg, vocab = _validated(path, meta, run=True)
    _check_finite(path, arrays)                               # a run goes on from all of them
    names = list(_parameter_shapes(cfg, len(vocab)))

    def named(prefix):
        return {name: arrays[prefix + name] for name in names}
    averaged = f"train.{names[0]}" in arrays                  # saved with optim.ema
    position = {k: math.inf if k in _INFINITE_AS_NULL and meta[k] is None else meta[k]
                for k in POSITION}
    position.update({k: meta.get(k) for k in LATER_POSITION})
    return RunState(cfg, vocab, weights=named("train.") if averaged else named(""),
                    average=named("") if averaged else None,
                    moments=(named("optim.m."), named("optim.v.")),
                    state=(arrays["state.h"], arrays["state.c"]), position=position,
                    init_from=meta.get("init_from"), stream=meta.get("stream"))


def load_model(path, with_start=False):
    """What sampling and evaluation need, from a checkpoint alone: (params, vocab, cfg, meta),
    and with `with_start` the state to start from: the carried (state.h, state.c), states the
    model reached reading its training text, or None if the file has none."""
    arrays, meta = checkpoint.load_checkpoint(path)
    cfg, vocab = _validated(path, meta)
    _, params = model.alloc(_parameter_shapes(cfg, len(vocab)))
    with np.errstate(over="ignore"):     # a float64 weight past float32's range: inf, refused below
        for name, p in params.items():
            p[...] = arrays[name]
    _check_finite(path, params)
    if not with_start:
        return params, vocab, cfg, meta
    start = (arrays["state.h"], arrays["state.c"]) if "state.h" in arrays else None
    if start is not None:
        _check_finite(path, {"state.h": start[0], "state.c": start[1]})
    return params, vocab, cfg, meta, start


def inspect(path):
    """(cfg, vocab, meta) of a checkpoint, checked as load_model checks it but from its metadata
    alone (the table of array names, dtypes and shapes): no array data is read."""
    meta = checkpoint.read_meta(path)
    cfg, vocab = _validated(path, meta)
    return cfg, vocab, meta


def epochs(cfg, meta):
    """How many epochs a run checkpoint's position stands at, as training reports it (Run's
    epoch_progress: epoch + window / windows per epoch, from the token count its `stream`
    records); None for a checkpoint without one. Its `epoch` alone is the index of the epoch its
    position is in, one less than the count when the epoch's last window was the last trained."""
    stream = meta.get("stream")
    if stream is None or "epoch" not in meta or "window" not in meta:
        return None
    d, t = cfg.data, cfg.train
    n_val, n_test = split_sizes(stream["tokens"], d.val_fraction, d.test_fraction)
    per = windows_per_epoch(stream["tokens"] - n_val - n_test, t.batch_size, t.seq_len,
                            t.windows == "shifted")
    return meta["epoch"] + meta["window"] / per


def require_meta(meta, keys, path):
    missing = [k for k in keys if k not in meta]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)} in its metadata; it was not "
                              "written by charlstm train (or by an incompatible version)")


# --- the one check -------------------------------------------------------------------------------

def _validated(path, meta, run=False):
    """(cfg, vocab) once the metadata and the arrays table agree with each other.

    Every parameter must be there with the shape the config and vocabulary imply, and nothing
    else; so must the optimizer moments and carried state when the file has any of them, or
    when it is to resume a run (run=True, which also needs every POSITION key). The position
    keys present must be of the right kinds.
    """
    require_meta(meta, RUN_META if run else MODEL_META, path)
    cfg = config_from_dict(meta["config"], str(path))
    chars = meta["vocab"]
    if not (isinstance(chars, str) and chars and list(chars) == sorted(set(chars))):
        raise CheckpointError(f"'{path}' is damaged: its vocabulary is not a string of distinct "
                              "characters in order")
    table, V = meta["arrays"], len(chars)
    head = tuple(table["head.weight"]["shape"]) if "head.weight" in table else None
    if head is not None and head[:1] != (V,):
        raise CheckpointError(f"'{path}' is damaged: its vocabulary has {V} characters, but "
                              f"head.weight has shape {head}")
    m = cfg.model
    where = (f"'{path}' does not match its own config ({m.num_layers} x {m.hidden_size} "
             f"{Cell.of_config(m).describe()}, embedding {m.embedding_size}, vocabulary {V}, "
             f"batch {cfg.train.batch_size}):")
    # Every layer holds arrays of its own: checked before the layout is built, whose names for a
    # config claiming a billion layers would take minutes and gigabytes.
    if m.num_layers > len(table):
        raise CheckpointError(f"{where} it holds {len(table)} arrays in all, too few for "
                              f"{m.num_layers:,} layers")
    want = _layout(cfg, V, table, run)
    for name in table:
        if name not in want:
            raise CheckpointError(f"{where} it holds '{name}', which such a model does not have")
    for name, shape in want.items():
        if name not in table:
            raise CheckpointError(f"{where} '{name}' is missing")
        entry = table[name]
        if tuple(entry["shape"]) != shape or not _is_float(entry["dtype"]):
            raise CheckpointError(f"{where} '{name}' is {entry['dtype'][:20]} "
                                  f"{tuple(entry['shape'])}, not float {shape}")
    _check_position(meta, path)
    return cfg, Vocab(chars)


def _check_finite(path, arrays):
    """Refuse, naming the first, arrays holding NaN or infinity: training never saves such weights
    (a step whose loss or gradient is not finite is undone or stops the run), and from them a
    model would only write its first character or measure nan."""
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"'{path}' is damaged: array '{name}' holds NaN or infinite "
                                  "values; use another checkpoint (a run folder's best.npz, "
                                  "last.npz or step_*.npz)")


def _parameter_shapes(cfg, V):
    return model.config_shapes(V, cfg.model)


def _layout(cfg, V, table, run):
    """name -> shape of every array the checkpoint must hold (see the module docstring)."""
    params = _parameter_shapes(cfg, V)
    want = dict(params)
    has = lambda prefix: any(n.startswith(prefix) for n in table)  # noqa: E731
    if has("train."):
        want.update({f"train.{n}": s for n, s in params.items()})
    if run or has("optim."):
        for key in "mv":
            want.update({f"optim.{key}.{n}": s for n, s in params.items()})
    if run or has("state."):
        m = cfg.model
        want["state.h"] = want["state.c"] = (m.num_layers, cfg.train.batch_size, m.hidden_size)
    return want


def _is_float(dtype):
    try:
        return np.dtype(dtype).kind == "f"
    except (TypeError, ValueError, SyntaxError):     # not a dtype at all
        return False


def _rng_ok(state):
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError):
        return False
    return True


def _stream_ok(stream):
    def source_ok(s):
        return (isinstance(s, dict) and isinstance(s.get("path"), str)
                and type(s.get("size")) is int and isinstance(s.get("sha256"), str))
    return (isinstance(stream, dict) and type(stream.get("tokens")) is int
            and isinstance(stream.get("sources"), list) and all(map(source_ok, stream["sources"])))


_COUNT = ("a count", lambda v: type(v) is int and v >= 0)
_NUMBER = ("a number", lambda v: type(v) in (int, float) and v >= 0)
# NaN (or -inf) would compare below no loss: a resumed run would never write best.npz again
_LOSS = ("a number or null", lambda v: v is None or (type(v) in (int, float) and v > -math.inf))
_KINDS = {"step": _COUNT, "epoch": _COUNT, "window": _COUNT, "optim_t": _COUNT,
          "train_time": _NUMBER, "lr_scale": _NUMBER, "best_val_loss": _LOSS,
          "smooth_loss": _LOSS, "loss_floor": _LOSS, "rng": ("a random generator's state", _rng_ok),
          "draw": ("null or one of " + ", ".join(model.DRAWS), lambda v: v in (None, *model.DRAWS)),
          "init_from": ("a path or null", lambda v: v is None or isinstance(v, str)),
          "stream": ("a record of source files and tokens", lambda v: v is None or _stream_ok(v))}


def _check_position(meta, path):
    """The position keys the metadata holds (all of them, to resume) are of the right kinds."""
    for key, (what, ok) in _KINDS.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(f"'{path}' is damaged: its metadata's {key} is "
                                  f"{str(meta[key])[:40]!r}, not {what}")


# --- the data stream a resumed run must keep -----------------------------------------------------

# Data keys that leave the tokens alone: which path names the text (the text itself is compared,
# file by file, through the hashes in `stream`), how a missing file is downloaded, and where the
# token cache lives. Every other data key, present or future, counts.
_NOT_STREAM = ("data.path", "data.url", "data.sha256", "data.cache_dir")
# Outside the data section: how the text is cut into windows, and the architecture.
_LAYOUT = ("train.batch_size", "train.seq_len", "train.windows") + ARCHITECTURE


def fixed_keys(saved_cfg, fine_tuning):
    """The settings a resumed run must keep: those that shape its token stream, and its model."""
    keys = [k for k in KEYS if k.startswith("data.") and k not in _NOT_STREAM]
    if not fine_tuning:
        keys.remove("data.unknown")        # it only maps a fine-tuning run's text
    if saved_cfg.train.windows == "shifted":
        keys.append("train.seed")          # it draws each epoch's window offsets
    return keys + list(_LAYOUT)


def stream_of(corpus, tokens):
    """What a checkpoint records of the token stream a run trains on (`tokens`, from `corpus`)."""
    return {"sources": corpus.sources, "tokens": len(tokens)}


def check_stream(run_dir, saved, cfg, corpus, tokens):
    """Refuse, in one line, to resume `saved` with config `cfg` on this corpus and tokens when
    anything that shapes the stream of windows (or the model) differs from what the run had."""
    keys = [k for k in fixed_keys(saved.cfg, saved.init_from is not None)
            if get(saved.cfg, k) != get(cfg, k)]
    changes = [f"{k}: {_shown(get(saved.cfg, k))} -> {_shown(get(cfg, k))}" for k in keys]
    if saved.stream is not None:                 # a changed key may explain a token count
        changes += stream_changes(saved.stream, corpus, tokens, count_tokens=not changes)
    # A checkpoint from before `stream` was recorded: its settings are checked above, and of its
    # text only what the vocabulary shows (a fine-tuning run's text is mapped into it anyway).
    elif saved.init_from is None and corpus.vocab.chars != saved.vocab.chars:
        new, gone = saved.vocab.missing(corpus.vocab.chars), corpus.vocab.missing(saved.vocab.chars)
        changes.append(f"the text's characters (new {''.join(new)[:20]!r}, absent "
                       f"{''.join(gone)[:20]!r})")
    if not changes:
        return
    if all(k.startswith("model.") for k in keys) and len(keys) == len(changes):
        advice = "a resumed run keeps its model; start a new run with --out NEW_DIR"
    else:
        advice = ("a resumed run trains on the data stream it started with; to train its "
                  "weights on the changed data, start a new run from them with --init-from "
                  f"{Path(run_dir) / LAST} --out NEW_DIR (or afresh with --out NEW_DIR)")
    raise CharlstmError(f"cannot resume '{run_dir}': {'; '.join(changes)}; {advice}")


def stream_changes(stream, corpus, tokens, count_tokens=True):
    """How the text (`corpus`, read as `tokens`) differs from a checkpoint's recorded `stream`:
    changed source files, else a changed token count; [] when it is the same text."""
    old, new = stream["sources"], corpus.sources
    if [s["sha256"] for s in old] != [s["sha256"] for s in new]:
        return _source_changes(old, new)
    if count_tokens and stream["tokens"] != len(tokens):
        return [f"the text's tokens: {stream['tokens']:,} -> {len(tokens):,}"]
    return []


def _source_changes(old, new, most=4):
    before = {s["path"]: s for s in old}
    after = {s["path"]: s for s in new}
    out = [f"'{p}' removed" for p in before if p not in after]
    out += [f"'{p}' changed ({s['size']:,} -> {after[p]['size']:,} bytes)"
            for p, s in before.items() if p in after and after[p]["sha256"] != s["sha256"]]
    out += [f"'{p}' added" for p in after if p not in before]
    out = out or ["the source files' order"]
    return out[:most] + ([f"{len(out) - most} more files"] if len(out) > most else [])


def _shown(value):
    if isinstance(value, bool):
        return str(value).lower()                             # as YAML and --set spell it
    return repr(value) if isinstance(value, str) else value   # a separator may be a newline
