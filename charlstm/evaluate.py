"""Measuring a trained model: its loss on a text, and rebuilding it from a checkpoint alone.

    params, vocab, cfg, meta = load_model("runs/shakespeare/best.npz")
    loss, chars, streams = evaluate(params, vocab.encode(text))     # nats per character
    print(bpc(loss))                                                # bits per character

Sampling and evaluation never need the YAML or data that trained a model: the checkpoint holds
its config and vocabulary.
"""

import math

import numpy as np

from . import checkpoint, model
from .backend import array_module
from .cells import Cell
from .config import config_from_dict
from .corpus import prepare, remap
from .data import Vocab, eval_streams, split
from .errors import CharlstmError, CheckpointError


def evaluate(params, tokens, window=128, min_stream=10_000):
    """Mean cross-entropy (nats/char) of predicting every token after the first from those before.

    Forward only, no caches. The tokens are read as S parallel streams of at least `min_stream`
    characters from the zero state (see data.eval_streams). Returns (loss, chars predicted, S).
    """
    V, E, H, L = model.dims(params)
    x, y, (tail_x, tail_y) = eval_streams(tokens, min_stream)
    w = params["head.weight"]
    state = model.init_state(L, x.shape[0], H, w.dtype, array_module(w))
    with np.errstate(over="ignore", invalid="ignore"):      # a diverged model reports nan/inf
        return _evaluate_streams(params, x, y, tail_x, tail_y, state, window)


def _evaluate_streams(params, x, y, tail_x, tail_y, state, window):
    (S, n), total = x.shape, 0.0
    for lo in range(0, n, window):
        xs, ys = x[:, lo:lo + window].astype(np.int64), y[:, lo:lo + window].astype(np.int64)
        loss, _, state = model.forward(params, xs, ys, state, keep_cache=False)
        total += loss * xs.size
    if tail_x.size:                        # the last stream's remainder, from its carried state
        last = (state[0][:, -1:], state[1][:, -1:])
        loss, _, _ = model.forward(params, tail_x.astype(np.int64), tail_y.astype(np.int64),
                                   last, keep_cache=False)
        total += loss * tail_x.size
    count = x.size + tail_x.size
    return total / count, count, S


def bpc(nats):
    """Bits per character from nats per character."""
    return nats / math.log(2)


def split_tokens(cfg, vocab, which, source):
    """The val or test tokens of the data a checkpoint's config names, in its vocabulary."""
    if which == "test" and not cfg.data.test_fraction:
        raise CharlstmError(f"'{source}' was trained without a test split (data.test_fraction "
                            "is 0); use --split val or --text FILE")
    corpus = prepare(cfg.data)
    tokens = corpus.tokens
    if corpus.vocab.chars != vocab.chars:
        tokens = fine_tune_tokens(corpus, vocab, cfg.data.unknown, lambda *a: None)
    _, val, test = split(tokens, cfg.data.val_fraction, cfg.data.test_fraction)
    return val if which == "val" else test


def load_model(path):
    """Everything sampling and evaluation need, from a checkpoint alone: (params, vocab, cfg, meta)."""
    arrays, meta = checkpoint.load_checkpoint(path)
    require_meta(meta, ("config", "vocab"), path)
    cfg = config_from_dict(meta["config"], str(path))
    m = cfg.model
    shapes = model.config_shapes(len(meta["vocab"]), m)
    _, params = model.alloc(shapes)
    for name, shape in shapes.items():
        if name not in arrays or arrays[name].shape != shape:
            raise CheckpointError(
                f"'{path}' does not match its own config (a {m.num_layers} x {m.hidden_size} "
                f"{Cell.of_config(m).describe()}, model.cell {m.cell}): parameter '{name}' is "
                f"missing or has the wrong shape (expected {shape})")
        params[name][...] = arrays[name]
    return params, Vocab(meta["vocab"]), cfg, meta


def fine_tune_tokens(corpus, vocab, unknown, echo):
    """The corpus in a checkpoint's vocabulary, reporting the characters it does not have."""
    if unknown != "skip" and unknown not in vocab.chars:
        raise CharlstmError(f"data.unknown: {unknown!r} is not in the checkpoint's vocabulary; "
                            "use 'skip' or one of its characters")
    tokens, missing = remap(corpus.tokens, corpus.vocab, vocab, unknown)
    if missing:
        action = "skipped" if unknown == "skip" else f"replaced by {unknown!r}"
        echo(f"{len(missing)} characters of the new text are not in the checkpoint's vocabulary"
             f" and are {action}: {''.join(missing)[:40]!r}")
    return tokens


def require_meta(meta, keys, path):
    missing = [k for k in keys if k not in meta]
    if missing:
        raise CheckpointError(f"'{path}' lacks {', '.join(missing)} in its metadata; it was not "
                              "written by charlstm train (or by an incompatible version)")
