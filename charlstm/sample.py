"""Generation: feed a prime, then draw one character at a time, streaming each as it is drawn.

    for ch in generate(params, vocab, length=500, rng=rng, prime="ROMEO:", temperature=0.8):
        print(ch, end="", flush=True)

Each character is drawn from the model's next-character distribution, reshaped by (in this order)
temperature, top-k (keep the k most likely) and top-p (keep the smallest set whose probability
reaches p, "nucleus" sampling); `argmax` takes the most likely character instead (greedy).
Without a prime, the model writes an unseen burn-in first, so the sample starts at a line.
"""

import numpy as np

from . import model
from .backend import array_module, to_host
from .errors import CharlstmError


def check_options(temperature=1.0, top_k=0, top_p=1.0, length=0):
    """One clear error per out-of-range sampling option (the CLI and the library share it)."""
    if not temperature > 0:
        raise CharlstmError(f"--temperature must be > 0, got {temperature} (use --argmax for "
                            "greedy decoding)")
    if top_k < 0:
        raise CharlstmError(f"--top-k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise CharlstmError(f"--top-p must be in (0, 1], got {top_p}")
    if length < 0:
        raise CharlstmError(f"--length must be >= 0, got {length}")


def next_distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """(V,) logits -> (V,) float64 probabilities after temperature, top-k and top-p."""
    z = np.asarray(logits, np.float64) / temperature
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


def generate(params, vocab, length, rng, prime="", temperature=1.0, top_k=0, top_p=1.0,
             argmax=False, start=None):
    """Yield `length` generated characters, one at a time, after feeding `prime` (not yielded).

    `start`: (h, c) of shape (L, R, H), a checkpoint's carried state; the model starts from its
    first row (from the zero state without it). It first reads a newline (when its vocabulary
    has one), so the prime is continued as text that starts at the beginning of a line, not in
    the middle of a word; with neither a prime nor a newline it starts from its first character.
    With no prime, a burn-in of the model's own text comes first and is not yielded (see
    BURN_IN_MIN): the same rng gives the same text.
    """
    check_options(temperature, top_k, top_p, length)
    V, E, H, L = model.dims(params)
    prep = model.prepare_step(params)
    w = params["head.weight"]
    xp = array_module(w)
    if start is None:
        h, c = model.init_state(L, 1, H, w.dtype, xp)
    else:
        h, c = (xp.array(s[:, :1], dtype=w.dtype) for s in start)   # copies: step updates them

    def draw(tok):
        """Feed token `tok` (updates h, c in place) and draw the next one."""
        logits = to_host(model.step(prep, np.array([tok]), h, c)[0])   # from the GPU, if there
        if argmax:
            return int(np.argmax(logits))
        cdf = np.cumsum(next_distribution(logits, temperature, top_k, top_p))
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), V - 1)

    start = ("\n" if "\n" in vocab.chars else "") + prime or vocab.chars[0]
    tokens = vocab.encode(start)
    for tok in tokens[:-1]:                  # the prime's state; only the last logits matter
        model.step(prep, np.array([tok]), h, c)
    tok = int(tokens[-1])
    if not prime and length:
        tok = burn_in(draw, tok, vocab.chars.find("\n"))   # -1: no newline in the vocabulary
    for _ in range(length):
        tok = draw(tok)
        yield vocab.chars[tok]


def burn_in(draw, tok, newline):
    """Draw the unshown text before a prime-less sample: `draw(tok)` feeds a token and returns the
    next. Stops after the first `newline` token once BURN_IN_MIN were drawn, else after
    BURN_IN_MAX; returns the last token drawn, the one the sample continues from."""
    for drawn in range(1, BURN_IN_MAX + 1):
        tok = draw(tok)
        if tok == newline and drawn >= BURN_IN_MIN:
            break
    return tok
