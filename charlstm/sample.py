"""Generation: feed a prime, then draw one character at a time, streaming each as it is drawn.

    for ch in generate(params, vocab, length=500, rng=rng, prime="ROMEO:", temperature=0.8):
        print(ch, end="", flush=True)

Each character is drawn from the model's next-character distribution, reshaped by (in this order)
temperature, top-k (keep the k most likely) and top-p (keep the smallest set whose probability
reaches p, "nucleus" sampling); `argmax` takes the most likely character instead (greedy).
Without a prime, the model writes an unseen burn-in first, so the sample starts at a line.
"""

import math
import os
from numbers import Integral, Real

import numpy as np

from . import model
from .backend import array_module, to_host
from .errors import CharlstmError


def check_options(temperature=1.0, top_k=0, top_p=1.0, length=0):
    """One clear error per out-of-range sampling option (the CLI and the library share it)."""
    check_number("--temperature", temperature, "a number > 0")
    check_number("--top-k", top_k, "a whole number >= 0", whole=True)
    check_number("--top-p", top_p, "a number in (0, 1]")
    check_number("--length", length, "a whole number >= 0", whole=True)
    if not 0 < temperature < math.inf:   # as sample.temperature in a config: finite
        raise CharlstmError(f"--temperature must be a finite number > 0, got {temperature} (use "
                            "--argmax for greedy decoding)")
    if top_k < 0:
        raise CharlstmError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise CharlstmError(f"--top-p must be in (0, 1], got {top_p}")
    if length < 0:
        raise CharlstmError(f"--length must be >= 0, got {length}")


def check_number(option, value, what, whole=False):
    """A value from Python (the API) of the type its option takes: "5" or None failed deep in a
    comparison, top_k 2.5 in NumPy, and a length of 2.5 never reached 0 (a generation without
    end)."""
    if not isinstance(value, Integral if whole else Real):
        raise CharlstmError(f"{option} must be {what}, got {value!r:.40}")


PRIME_FILE_BYTES = 1_000_000      # the most a --prime-file may hold


def read_prime(path):
    """A prime from a UTF-8 file, checked as any text file is (corpus.read_text: not a device,
    not a folder, a bad byte's offset), and at most PRIME_FILE_BYTES."""
    from .corpus import read_text
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0                          # missing or unreadable: read_text says which
    if size > PRIME_FILE_BYTES:
        raise CharlstmError(f"prime file '{path}' is {size:,} bytes, more than the "
                            f"{PRIME_FILE_BYTES:,} a prime may have; use the end of it")
    return read_text(path, what="prime file")


def known(vocab, text, skip_unknown=False, what="prime"):
    """`text` if the vocabulary has all its characters; with skip_unknown, without the others;
    else one clear error naming them."""
    option = "--prime" if what == "prime" else what
    if not isinstance(text, str):
        raise CharlstmError(f"{option} must be a string, got {type(text).__name__} "
                            f"{text!r:.40}")
    missing = vocab.missing(text)
    if not missing:
        return text
    if not skip_unknown:
        raise CharlstmError(f"{option} has characters not in the model's vocabulary: "
                            f"{''.join(missing)[:40]!r}; remove them or pass --skip-unknown "
                            "(skip_unknown=True in Python, \"skip_unknown\": true in a request)")
    gone = set(missing)
    return "".join(ch for ch in text if ch not in gone)


# The least temperature the logits are divided by. Below it (a request may send 5e-324) a logit
# over the temperature overflowed to inf and the softmax to NaN: every draw was token 0, and NumPy
# warned in the server's log. Divided by this, a float32 logit (under 3.5e38) stays finite and the
# softmax is already one-hot at the largest logit, as at any smaller temperature (greedy decoding,
# the limit); a temperature from this up is used as it is, so its draws are unchanged.
LEAST_DIVISOR = 1e-250


def next_distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """(V,) logits -> (V,) float64 probabilities after temperature, top-k and top-p."""
    z = np.asarray(logits, np.float64) / max(temperature, LEAST_DIVISOR)
    if 0 < top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[:int(np.searchsorted(cum, top_p)) + 1]   # smallest prefix reaching top_p
        kept = np.zeros_like(p)
        kept[keep] = p[keep]
        p = kept / kept.sum()
    return p


# The model starts from `start`, a state it reached reading its training text (a checkpoint's
# carried state), not from the zero state, which it has not met since its first training step
# and from which some starts never recover (evaluate.evaluate). Without a prime it
# then writes a burn-in of its own text (drawn like the rest, never shown) and the sample starts
# after a newline, at the beginning of a line. BURN_IN_MIN characters are drawn at least, so the
# state has left the text it came from; BURN_IN_MAX at most, should no newline come (or the
# vocabulary have none).
BURN_IN_MIN = 50
BURN_IN_MAX = 200
# The server's batches run at least this many rows (a lone stream beside a copy of itself):
# OpenBLAS rounds a one-row product (gemv) differently from products of 2 or more rows (gemm),
# which agree with each other, so a served stream's text is the same alone and beside any number
# of others. generate() runs its lone stream as one row: gemv is 3-4 times faster there (1 x 640:
# 0.14 ms against 0.45 ms), so `charlstm sample` and Model.generate keep that speed and agree
# with each other, and a served request may differ from them in the last bits of a logit.
MIN_ROWS = 2


def generate(params, vocab, length, rng, prime="", temperature=1.0, top_k=0, top_p=1.0,
             argmax=False, start=None):
    """Yield `length` generated characters, one at a time, after feeding `prime` (not yielded).

    `start`: (h, c) of shape (L, R, H), a checkpoint's carried state; the model starts from its
    first row (from the zero state without it). It first reads a newline (when its vocabulary
    has one), so the prime is continued as text that starts at the beginning of a line, not in
    the middle of a word; with neither a prime nor a newline it starts from its first character.
    With no prime, a burn-in of the model's own text comes first and is not yielded (see
    BURN_IN_MIN): the same rng gives the same text. One Stream in a Batch of its own.
    """
    stream = Stream(vocab, length, rng, prime, temperature, top_k, top_p, argmax)
    batch = Batch(params, start, min_rows=1)
    batch.add(stream)
    while not stream.done:
        batch.step()
        for tok in stream.take():
            yield vocab.chars[tok]


class Stream:
    """One generation in progress: the tokens still to read, its sampling options, its own random
    generator, and the characters drawn but not yet taken. A Batch steps it."""

    def __init__(self, vocab, length, rng, prime="", temperature=1.0, top_k=0, top_p=1.0,
                 argmax=False):
        check_options(temperature, top_k, top_p, length)
        tokens = [int(t) for t in vocab.encode(("\n" if "\n" in vocab.chars else "") + prime
                                               or vocab.chars[0])]
        # tokens[:-1] are read without drawing (queue[fed:], an index: a long prime is no
        # quadratic list.pop(0)), then each token drawn is read after tokens[-1]
        self.queue, self.fed, self.tok = tokens[:-1], 0, tokens[-1]
        self.rng, self.argmax = rng, argmax
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.newline = vocab.chars.find("\n")            # -1: none in the vocabulary
        self.burning = 0 if prime or not length or BURN_IN_MAX <= 0 else 1   # 1 + drawn so far
        self.left, self.out = length, []
        # written by one thread each (left: the one stepping; cancelled: any), so a cancel
        # that lands while a step is in after() is never overwritten
        self.cancelled = False

    def input(self):
        """The token this step feeds."""
        return self.queue[self.fed] if self.reading() else self.tok

    def reading(self):
        """Still reading the prime: this step's logits are not drawn from."""
        return self.fed < len(self.queue)

    def plain(self):
        """Drawn from the softmax at a temperature alone (Batch draws these rows together)."""
        return not self.argmax and self.top_k == 0 and self.top_p == 1.0

    def after(self, logits, tok=None):
        """Take this step's (V,) logits: the next prime token is read, or a token drawn (`tok`,
        if the batch drew it already) and kept, unless it is burn-in."""
        if self.reading():
            self.fed += 1
            return
        if tok is None:
            tok = int(np.argmax(logits)) if self.argmax else draw(
                next_distribution(logits, self.temperature, self.top_k, self.top_p), self.rng)
        self.tok = tok
        if self.burning:
            drawn, self.burning = self.burning, self.burning + 1
            if (tok == self.newline and drawn >= BURN_IN_MIN) or drawn >= BURN_IN_MAX:
                self.burning = 0
            return
        self.out.append(tok)
        self.left -= 1

    @property
    def done(self):
        return self.cancelled or self.left == 0

    def take(self):
        """The tokens drawn since the last take."""
        out, self.out = self.out, []
        return out

    def cancel(self):
        self.cancelled = True


def draw(p, rng):
    """A token drawn from the (V,) probabilities `p` with one uniform number from `rng`."""
    cdf = np.cumsum(p)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(p) - 1)


class Batch:
    """Streams stepped together: one batched product per layer per character for all of them
    (continuous batching: a stream joins at the next step, and leaves when done or cancelled).

    Rows of h and c (L, R, H) are the streams in order, padded to `min_rows` (see MIN_ROWS).
    """

    def __init__(self, params, start=None, min_rows=MIN_ROWS):
        self.min_rows = min_rows
        self.prep = model.prepare_step(params)
        V, E, H, L = model.dims(params)
        w = params["head.weight"]
        self.xp = array_module(w)
        if start is None:
            self.first = model.init_state(L, 1, H, w.dtype, self.xp)
        else:
            self.first = tuple(self.xp.array(s[:, :1], dtype=w.dtype) for s in start)
        self.h, self.c = (self.xp.concatenate([s] * min_rows, axis=1) for s in self.first)
        self.streams = []

    def add(self, stream):
        """A new stream starts from the first row of `start` at the next step."""
        if len(self.streams) >= self.min_rows:
            self.h, self.c = (self.xp.concatenate([s, f], axis=1)
                              for s, f in zip((self.h, self.c), self.first))
        else:
            n = len(self.streams)
            self.h[:, n], self.c[:, n] = self.first[0][:, 0], self.first[1][:, 0]
        self.streams.append(stream)

    def step(self):
        """One character for every stream; then the finished and cancelled ones leave."""
        n = len(self.streams)
        if not n:
            return
        tokens = np.array([s.input() for s in self.streams] + [0] * (self.h.shape[1] - n))
        logits = to_host(model.step(self.prep, tokens, self.h, self.c))[:n]
        plain = [i for i, s in enumerate(self.streams)
                 if s.plain() and not s.reading() and not s.done]
        drawn = dict(zip(plain, draw_rows(logits[plain], [self.streams[i] for i in plain])))
        for i, s in enumerate(self.streams):
            if not s.done:
                s.after(logits[i], drawn.get(i))
        keep = [i for i, s in enumerate(self.streams) if not s.done]
        if len(keep) < n:
            self.streams = [self.streams[i] for i in keep]
            rows = keep + [0] * (self.min_rows - len(keep))    # padding: a copy of a row
            self.h, self.c = self.h[:, rows], self.c[:, rows]


def draw_rows(logits, streams):
    """draw(next_distribution(row, temperature), stream.rng) for every row at once: the same
    numbers, row by row, as the one-stream path (tested), for streams with neither top-k, top-p
    nor argmax."""
    if not streams:
        return []
    t = np.maximum([s.temperature for s in streams], LEAST_DIVISOR)
    z = np.asarray(logits, np.float64) / t[:, None]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    cdf = np.cumsum(p, axis=1)
    u = np.array([s.rng.random() for s in streams]) * cdf[:, -1]
    picked = (cdf <= u[:, None]).sum(axis=1)               # searchsorted(..., side="right")
    return [min(int(k), logits.shape[1] - 1) for k in picked]


def burn_in(draw_next, tok, newline):
    """The burn-in rule on its own (Stream.after applies it step by step): `draw_next(tok)` feeds
    a token and returns the next. Stops after the first `newline` token once BURN_IN_MIN were
    drawn, else after BURN_IN_MAX; returns the last token drawn, the one the sample continues
    from."""
    for drawn in range(1, BURN_IN_MAX + 1):
        tok = draw_next(tok)
        if tok == newline and drawn >= BURN_IN_MIN:
            break
    return tok
