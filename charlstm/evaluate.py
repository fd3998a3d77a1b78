"""Measuring a model: its loss on a text, in nats and bits per character.

    params, vocab, cfg, meta = runstate.load_model("runs/shakespeare/best.npz")
    loss, chars, streams = evaluate(params, vocab.encode(text))     # nats per character
    print(bpc(loss))                                                # bits per character

Evaluating a checkpoint never needs the YAML or data that trained it (the checkpoint holds its
config and vocabulary), except to measure the run's own validation or test split.
"""

import dataclasses
import math
import os

import numpy as np
from tqdm import tqdm

from . import model
from .backend import array_module
from .corpus import fine_tune_tokens, prepare
from .data import eval_streams, split
from .errors import CharlstmError
from .runstate import stream_changes


def evaluate(params, tokens, window=128, min_stream=10_000, progress=False, start=None):
    """Mean cross-entropy (nats/char) of predicting every token after the first from those before.

    Forward only, no caches. The tokens are read as S parallel streams of at least `min_stream`
    characters (see data.eval_streams). Returns (loss, chars predicted, S). `start`: (h, c) of
    shape (L, R, H), states the model reached reading text (a checkpoint's carried state.h,
    state.c); stream i starts from row i % R. Without it, streams start from the zero state, which
    a trained net has not met since its first step: from there some starts send a net into a
    state it never leaves (on one 2 x 384 net, 2 streams of 24 lost 17.7 nats a character for
    all their 10,000 characters, the rest about 1.5). `progress` shows a bar of
    characters done on stderr (a megabyte takes tens of seconds on a CPU); the training loop
    evaluates silently.
    """
    V, E, H, L = model.dims(params)
    x, y, (tail_x, tail_y) = eval_streams(tokens, min_stream)
    w = params["head.weight"]
    xp = array_module(w)
    if start is None:
        state = model.init_state(L, x.shape[0], H, w.dtype, xp)
    else:
        rows = xp.asarray(np.arange(x.shape[0]) % start[0].shape[1])
        state = tuple(xp.asarray(s)[:, rows].astype(w.dtype) for s in start)
    with np.errstate(over="ignore", invalid="ignore"):      # a diverged model reports nan/inf
        with tqdm(total=x.size + tail_x.size, unit="char", unit_scale=True, desc="eval",
                  leave=False, disable=not progress, dynamic_ncols=True) as bar:
            return _evaluate_streams(params, x, y, tail_x, tail_y, state, window, bar)


def _evaluate_streams(params, x, y, tail_x, tail_y, state, window, bar):
    (S, n), total = x.shape, 0.0
    for lo in range(0, n, window):
        xs, ys = x[:, lo:lo + window].astype(np.int64), y[:, lo:lo + window].astype(np.int64)
        loss, _, state = model.forward(params, xs, ys, state, keep_cache=False)
        total += loss * xs.size
        bar.update(xs.size)
    if tail_x.size:                        # the last stream's remainder, from its carried state
        last = (state[0][:, -1:], state[1][:, -1:])
        loss, _, _ = model.forward(params, tail_x.astype(np.int64), tail_y.astype(np.int64),
                                   last, keep_cache=False)
        total += loss * tail_x.size
        bar.update(tail_x.size)
    count = x.size + tail_x.size
    return total / count, count, S


def bpc(nats):
    """Bits per character from nats per character."""
    return nats / math.log(2)


def _recorded(data_cfg, stream):
    """`data_cfg` reading the files the checkpoint recorded (their absolute paths, in order)
    when they all still exist: a relative data.path names them only from the folder training
    ran in (and a missing file with a data.url would be downloaded again here)."""
    paths = [s.get("path") for s in (stream or {}).get("sources") or []]
    if data_cfg.path is None or not paths or not all(
            isinstance(p, str) and os.path.isabs(p) and os.path.isfile(p) for p in paths):
        return data_cfg
    return dataclasses.replace(data_cfg, path=paths, url=None, sha256=None)


def split_tokens(cfg, vocab, which, source, stream=None):
    """The val or test tokens of the data a checkpoint's config names, in its vocabulary.

    stream: the text the checkpoint recorded (runstate.stream_of). If the files changed since,
    the split would hold other text, perhaps some the model trained on: refused."""
    if which == "test" and not cfg.data.test_fraction:
        raise CharlstmError(f"'{source}' was trained without a test split (data.test_fraction "
                            "is 0); use --split val or --text FILE")
    corpus = prepare(_recorded(cfg.data, stream), echo=lambda *a: None)  # a rebuilt cache: no news
    tokens = corpus.tokens
    if corpus.vocab.chars != vocab.chars:
        tokens = fine_tune_tokens(corpus, vocab, cfg.data.unknown, lambda *a: None)
    changes = stream_changes(stream, corpus, tokens) if stream else []
    if changes:
        raise CharlstmError(f"'{source}' was trained on text that has changed since "
                            f"({'; '.join(changes)}), so its {which} split is no longer the "
                            "held-out text; measure on a file of your own with --text FILE")
    _, val, test = split(tokens, cfg.data.val_fraction, cfg.data.test_fraction)
    return val if which == "val" else test
