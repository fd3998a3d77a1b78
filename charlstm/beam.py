"""Beam search: the most likely continuation of a prime, keeping `beam` hypotheses per character.

    text = beam_search(params, vocab, length=200, beam=8, prime="ROMEO:")

Sampling (sample.py) draws one character at a time; greedy decoding (`--argmax`) takes the most
likely one. Beam search looks further: after each character it keeps the `beam` continuations
with the highest total log-probability (temperature 1) and extends each by every character, so
a likely string that starts with a less likely character can still win. beam 1 is greedy.
The model is fed exactly what `sample.generate` feeds (a newline, then the prime) from the same
start state; there is no burn-in, as nothing is random.

Each step keeps, per hypothesis, only its parent's index and its last character; the winner's
text is read back along those pointers once, at the end. (Copying every hypothesis's whole
sequence at each step made a search quadratic in its length: `sample --beam 8 --length 40000`
of a 1 x 32 model took 40 s, now 3.7 s.)
A caller that may give up (the server: its --timeout, a client gone) passes `should_stop`.
"""

import numpy as np

from . import model
from .backend import array_module, to_host
from .errors import CharlstmError
from .sample import check_number

# Rows a step runs at least: a lone hypothesis runs alone, as a lone sample does (sample.generate),
# so that beam 1 is greedy decoding to the bit (BLAS rounds a one-row product its own way).
MIN_ROWS = 1
# After t steps a search holds at most min(beam, V ** t) hypotheses; with V >= 2, V ** 64 is
# beyond any beam that fits in memory, so a step past the 64th holds no more than the 64th.
FULL_AFTER = 64


class Stopped(CharlstmError):
    """beam_search's should_stop() said so: the search ended before its last character."""


def check_options(length, beam):
    """One clear error per out-of-range option, in the words of a command-line option."""
    check_number("--beam", beam, "a whole number >= 1", whole=True)
    check_number("--length", length, "a whole number >= 0", whole=True)
    if beam < 1:
        raise CharlstmError(f"--beam must be >= 1, got {beam}")
    if length < 0:
        raise CharlstmError(f"--length must be >= 0, got {length}")


def log_softmax(logits):
    """(K, V) logits -> (K, V) float64 log-probabilities; the row maximum goes first, so no
    exp overflows and the largest entry's exp is 1 (the log of the sum is never -inf)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def padded(rows):
    """(K,) indices repeated cyclically to at least MIN_ROWS entries (see MIN_ROWS)."""
    return np.resize(rows, max(len(rows), MIN_ROWS))


def advance(prep, tokens, h, c):
    """model.step on (K,) tokens, padded to h's R >= MIN_ROWS rows; h, c (L, R, H) are updated
    in place. Returns (K, V) float64 log-probabilities of the next character, on the host."""
    logits = to_host(model.step(prep, padded(tokens), h, c))        # (R, V), from the GPU if there
    return log_softmax(logits[:len(tokens)])


def prune(scores, beam):
    """(K, V) candidate totals -> the best `beam` as (scores, hypothesis, char), each (K',).

    The flat index is hypothesis * V + char, so a stable sort on -score breaks ties by
    (hypothesis index, char index): the same answer every time, on every machine.
    """
    order = np.argsort(-scores.ravel(), kind="stable")[:beam]
    hyp, ch = np.divmod(order, scores.shape[1])
    return scores.ravel()[order], hyp, ch


def beam_search(params, vocab, length, beam, prime="", start=None, should_stop=None):
    """Return the `length`-character continuation of `prime` (not included) of the highest total
    log-probability that beam search with `beam` hypotheses finds.

    `start`: (h, c) of shape (L, R, H), a checkpoint's carried state; the model starts from its
    first row (from the zero state without it), and `start` is left unchanged.
    `should_stop`: a callable asked before each character is fed or chosen (a few microseconds
    apart for a small model); once it returns true, the search raises Stopped.
    """
    check_options(length, beam)
    missing = vocab.missing(prime)
    if missing:
        raise CharlstmError(f"--prime has characters not in the model's vocabulary: "
                            f"{''.join(missing)[:40]!r}")
    V, E, H, L = model.dims(params)
    prep = model.prepare_step(params)
    w = params["head.weight"]
    xp = array_module(w)
    if start is None:
        h, c = model.init_state(L, MIN_ROWS, H, w.dtype, xp)
    else:                                   # copies of the first row: step updates them in place
        h, c = (xp.array(s[:, [0] * MIN_ROWS], dtype=w.dtype) for s in start)
    fed = vocab.encode(("\n" if "\n" in vocab.chars else "") + prime or vocab.chars[0])
    for tok in fed:                         # the logits after the last one give the first char
        _check(should_stop, "feeding the prime")
        logp = advance(prep, np.array([tok]), h, c)                 # (1, V)
    # after step t, hypothesis i is hypothesis parent[t, i] of step t - 1 plus char[t, i];
    # a step keeps at most min(beam, V ** (t + 1)) of them
    width = min(beam, V ** min(length, FULL_AFTER))
    parent = np.zeros((length, width), np.min_scalar_type(width - 1))
    char = np.zeros((length, width), vocab.dtype)
    scores = np.zeros((1, 1))                                       # one empty hypothesis
    for t in range(length):
        _check(should_stop, f"after {t:,} of {length:,} characters")
        scores, hyp, ch = prune(scores + logp, beam)               # (K,) each
        scores = scores[:, None]                                   # (K, 1): broadcast over chars
        parent[t, :len(hyp)], char[t, :len(ch)] = hyp, ch
        if t + 1 < length:                  # the states follow their hypotheses, then step
            rows = xp.asarray(padded(hyp))
            h, c = h[:, rows], c[:, rows]
            logp = advance(prep, ch, h, c)                         # (K, V)
    return vocab.decode(backtrack(parent, char))


def backtrack(parent, char):
    """(T, K) parents and characters -> (T,) the characters of the best hypothesis after the
    last step (index 0: prune puts the best first), from the last step back to the first."""
    tokens, i = np.zeros(len(char), np.int64), 0
    for t in range(len(char) - 1, -1, -1):
        tokens[t], i = char[t, i], parent[t, i]
    return tokens


def _check(should_stop, where):
    if should_stop is not None and should_stop():
        raise Stopped(f"beam search stopped {where}")
