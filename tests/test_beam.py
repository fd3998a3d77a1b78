"""Beam search against brute force: every continuation of a tiny model, scored independently.

The oracle scores a continuation with model.forward (the training path, which shares no step code
with the sampler's model.step) and runs a naive beam search over strings on those scores.
"""

import itertools

import numpy as np
import pytest

from charlstm import beam, model
from charlstm.beam import MIN_ROWS, beam_search
from charlstm.config import Config, replaced
from charlstm.data import Vocab
from charlstm.errors import CharlstmError
from charlstm.sample import generate

LENGTH = 4                                  # 3 ** 4 = 81 continuations, all scored
BEAMS = (1, 2, 3, 4, 8, 9, 26, 27, 40)      # 27 = 3 ** 3 hypotheses at the last step: exact
SEED = 12                                   # greedy misses the optimum for all three MODELS
MODELS = [("lstm", 1), ("gru", 1), ("lstm", 2)]
# (vocabulary, prime, whether to pass a start state, what the model must read first)
CASES = [("\nab", "", False, "\n"), ("\nab", "b\na", False, "\nb\na"), ("\nab", "a", True, "\na"),
         ("abc", "", False, "a"), ("abc", "cb", True, "cb")]


def tiny(cell="lstm", layers=1, seed=SEED, dtype=np.float64):
    """A random 3-character model, biases included; weights x3 so its choices are peaked."""
    cfg = replaced(Config(), {"model.num_layers": layers, "model.hidden_size": 8,
                              "model.embedding_size": 4, "model.cell": cell}).model
    flat, params = model.init_params(3, cfg, np.random.default_rng(seed), dtype)
    flat *= 3.0
    return params


def random_start(params, rows=3, seed=1):
    """A carried state (h, c), each (L, rows, H), unlike the zero state in every row."""
    V, E, H, L = model.dims(params)
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-1, 1, (L, rows, H)) for _ in range(2))


def prefix_scores(params, feed, state):
    """{continuation tuple: total log-probability} for every continuation of length 1..LENGTH
    after reading `feed` (tokens), by model.forward on one row; `state` (L, 1, H) each."""
    if len(feed) > 1:
        _, _, state = model.forward(params, feed[None, :-1], feed[None, 1:], state,
                                    keep_cache=False)
    scores = {}
    for n in range(1, LENGTH + 1):
        for cont in itertools.product(range(3), repeat=n):
            x = np.array([feed[-1], *cont[:-1]])[None]                  # (1, n)
            loss, _, _ = model.forward(params, x, np.array(cont)[None], state, keep_cache=False)
            scores[cont] = -loss * n                                    # mean -> total
    return scores


def naive_beam(scores, k):
    """Beam search over strings: candidates in (hypothesis, char) order, a stable sort."""
    beams = [()]
    for _ in range(LENGTH):
        candidates = [b + (ch,) for b in beams for ch in range(3)]
        beams = sorted(candidates, key=lambda s: -scores[s])[:k]
    return beams[0]


def setup(cell, layers, chars, prime, with_start, feed):
    params = tiny(cell, layers)
    vocab = Vocab(chars)
    start = random_start(params) if with_start else None
    V, E, H, L = model.dims(params)
    first = tuple(s[:, :1] for s in start) if with_start else model.init_state(L, 1, H, np.float64)
    scores = prefix_scores(params, vocab.encode(feed), first)
    return params, vocab, start, scores


@pytest.mark.parametrize("chars,prime,with_start,feed", CASES)
@pytest.mark.parametrize("cell,layers", MODELS)
def test_beam_search_against_brute_force(cell, layers, chars, prime, with_start, feed):
    params, vocab, start, scores = setup(cell, layers, chars, prime, with_start, feed)
    full = {s: v for s, v in scores.items() if len(s) == LENGTH}
    best = max(full, key=full.get)
    greedy = None
    for k in BEAMS:
        out = beam_search(params, vocab, LENGTH, k, prime=prime, start=start)
        got = tuple(int(t) for t in vocab.encode(out))
        assert got == naive_beam(scores, k), k
        assert full[got] <= full[best] + 1e-9
        if k == 1:
            greedy = full[got]
        assert full[got] >= greedy - 1e-9, k              # never worse than greedy, here
        if k >= 27:
            assert got == best
    if prime:                                  # generate's greedy decoding (no burn-in with a prime)
        text = "".join(generate(params, vocab, LENGTH, np.random.default_rng(0), prime=prime,
                                argmax=True, start=start))
        assert text == beam_search(params, vocab, LENGTH, 1, prime=prime, start=start)


@pytest.mark.parametrize("cell,layers", MODELS)
def test_the_tiny_models_make_beams_matter(cell, layers):
    """Greedy misses the optimum, so a beam that were only greedy would fail above."""
    _, _, _, scores = setup(cell, layers, *CASES[0])
    full = [v for s, v in scores.items() if len(s) == LENGTH]
    assert scores[naive_beam(scores, 1)] < max(full) - 0.01


def test_start_is_its_first_row_and_left_alone():
    params = tiny()
    vocab = Vocab("\nab")
    start = random_start(params)
    before = [s.copy() for s in start]
    first = tuple(s[:, :1].copy() for s in start)
    a = beam_search(params, vocab, 12, 3, prime="a", start=start)
    assert a == beam_search(params, vocab, 12, 3, prime="a", start=first)
    assert all(np.array_equal(x, y) for x, y in zip(before, start))
    zeros = tuple(np.zeros_like(s) for s in start)
    assert beam_search(params, vocab, 12, 3, start=zeros) == beam_search(params, vocab, 12, 3)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_every_step_has_at_least_min_rows(monkeypatch, k):
    rows, step = [], model.step

    def recording(prep, tokens, h, c):
        rows.append((len(tokens), h.shape[1], c.shape[1]))
        return step(prep, tokens, h, c)
    monkeypatch.setattr(beam.model, "step", recording)
    beam_search(tiny(dtype=np.float32), Vocab("\nab"), 6, k, prime="ab")
    assert len(rows) == len("\nab") + 6 - 1               # the last character needs no step
    assert all(n >= MIN_ROWS and n == r == s for n, r, s in rows), rows
    assert max(n for n, _, _ in rows) == max(k, MIN_ROWS)          # all k hypotheses at once


@pytest.mark.parametrize("k", [1, 2, 7])
def test_ties_go_to_the_first_hypothesis_and_character(k):
    """With the head's weights zeroed, the next-character distribution is the softmax of its
    bias alone, whatever the state: with bias (0, 1, 1), the two best characters tie at every
    step, and every string of them has the same total, so the order decides: the lowest."""
    params = tiny()
    params["head.weight"][...] = 0.0
    params["head.bias"][...] = [0.0, 1.0, 1.0]
    assert beam_search(params, Vocab("\nab"), 5, k) == "aaaaa"
    params["head.bias"][...] = 0.0                                  # all 3 ** 5 strings tie
    assert beam_search(params, Vocab("\nab"), 5, k) == "\n" * 5


def test_lengths_and_float32():
    params, vocab = tiny(dtype=np.float32), Vocab("\nab")
    assert beam_search(params, vocab, 0, 4, prime="a") == ""
    out = beam_search(params, vocab, 50, 5)
    assert len(out) == 50 and set(out) <= set(vocab.chars)
    assert out == beam_search(params, vocab, 50, 5)                  # deterministic


@pytest.mark.parametrize("kw,message", [
    (dict(beam=0), "--beam must be >= 1, got 0"), (dict(beam=-2), "--beam must be >= 1, got -2"),
    (dict(length=-1), "--length must be >= 0, got -1"),
    (dict(prime="a?b"), "--prime has characters not in the model's vocabulary: '?'")])
def test_bad_options_are_one_line_errors(kw, message):
    args = dict(length=4, beam=2, prime="") | kw
    with pytest.raises(CharlstmError) as e:
        beam_search(tiny(), Vocab("\nab"), **args)
    assert str(e.value) == message


# --- the backpointer search against the naive one: the same text on every case ------------------

def naive_search(params, vocab, length, k, prime="", start=None):
    """Beam search as it was written first, the oracle of beam_search's backpointers: every
    hypothesis carries its whole sequence, copied at each step (quadratic in the length); its own
    log-softmax, and candidates ranked by Python's stable sort in (hypothesis, char) order.
    Returns (text, the best hypothesis's sequence after each step)."""
    V, E, H, L = model.dims(params)
    prep, dtype = model.prepare_step(params), params["head.weight"].dtype
    if start is None:
        h, c = model.init_state(L, MIN_ROWS, H, dtype)
    else:
        h, c = (np.array(s[:, [0] * MIN_ROWS], dtype=dtype) for s in start)

    def logp(tokens, h, c):                     # (K,) -> (K, V) float64 log-probabilities
        z = model.step(prep, np.resize(tokens, max(len(tokens), MIN_ROWS)), h, c)
        z = z[:len(tokens)].astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    fed = vocab.encode(("\n" if "\n" in vocab.chars else "") + prime or vocab.chars[0])
    for tok in fed:
        lp = logp(np.array([tok]), h, c)
    beams, leaders = [(0.0, ())], []                                 # (score, sequence)
    for t in range(length):
        candidates = [(score + float(lp[i, ch]), seq + (ch,), i)
                      for i, (score, seq) in enumerate(beams) for ch in range(V)]
        kept = sorted(candidates, key=lambda cand: -cand[0])[:k]     # stable: ties keep order
        beams = [(score, seq) for score, seq, _ in kept]
        leaders.append(beams[0][1])
        if t + 1 < length:
            rows = np.resize([i for _, _, i in kept], max(len(kept), MIN_ROWS))
            h, c = h[:, rows], c[:, rows]
            lp = logp(np.array([seq[-1] for _, seq in beams]), h, c)
    return "".join(vocab.chars[t] for t in beams[0][1]), leaders


def wide(seed=5, V=11, dtype=np.float64):
    """A random 2-layer LSTM over 11 characters (a newline among them), weights x2."""
    cfg = replaced(Config(), {"model.num_layers": 2, "model.hidden_size": 12,
                              "model.embedding_size": 6}).model
    flat, params = model.init_params(V, cfg, np.random.default_rng(seed), dtype)
    flat *= 2.0
    return params, Vocab("\n abcdefghijklm"[:V])


def tied(bias, make=lambda: (tiny(), Vocab("\nab"))):
    """A model with the head's weights zeroed: every step's distribution is softmax(bias)."""
    params, vocab = make()
    params["head.weight"][...] = 0.0
    params["head.bias"][...] = bias
    return params, vocab


TWIN_MODELS = {
    "tiny-lstm": lambda: (tiny(), Vocab("\nab")),
    "tiny-gru-2": lambda: (tiny("gru", 2), Vocab("\nab")),
    "tiny-float32": lambda: (tiny(dtype=np.float32), Vocab("\nab")),
    "no-newline": lambda: (tiny(seed=3), Vocab("abc")),
    "wide": wide,
    "wide-float32": lambda: wide(seed=6, dtype=np.float32),
    "ties-two": lambda: tied([0.0, 1.0, 1.0]),
    "ties-all": lambda: tied([0.0, 0.0, 0.0]),
    # hundreds of tied candidates a step: an unstable sort orders them its own way
    "ties-wide": lambda: tied([0, 1, 1, 0, 1, 0.5, 1, 0, 0.5, 1, 0], wide),
}


@pytest.mark.parametrize("name", TWIN_MODELS)
def test_beam_search_is_the_naive_search(name):
    """The same text as the naive search for every beam (1, within, at and past the vocabulary
    and its square), length (0, 1, 2, long), prime and start state; and among the cases, the
    final winner's prefix was not the leader at some step, so the backpointers are followed
    through hypotheses that were not first (a search keeping only the leader would differ)."""
    params, vocab = TWIN_MODELS[name]()
    V = len(vocab)
    start = random_start(params)
    overtaken = 0
    for k, length, prime, with_start in [
            (1, 0, "", False), (4, 0, vocab.chars[-1], True), (1, 1, "", False),
            (2, 1, "", True), (V + 3, 1, "", False), (1, 40, "", False), (2, 2, "", False),
            (2, 40, vocab.chars[1], False), (3, 40, "", True), (V, 40, vocab.chars[:2], False),
            (V + 1, 25, "", True), (8, 60, vocab.chars[-1] * 3, False),
            (V * V + 2, 12, vocab.chars[0], True), (16, 30, "", False)]:
        s = start if with_start else None
        want, leaders = naive_search(params, vocab, length, k, prime, s)
        got = beam_search(params, vocab, length, k, prime=prime, start=s)
        assert got == want, (k, length, prime, with_start)
        final = tuple(int(t) for t in vocab.encode(want))
        overtaken += any(lead != final[:len(lead)] for lead in leaders)
    assert overtaken > 0 or name.startswith("ties"), "no case where backpointers matter"


@pytest.mark.parametrize("n,where", [(1, "feeding the prime"), (3, "feeding the prime"),
                                     (4, "after 0 of 20 characters"),
                                     (23, "after 19 of 20 characters")])
def test_should_stop_is_asked_before_each_character_and_stops_the_search(monkeypatch, n, where):
    """Asked before each of the 3 characters fed ("\\nab") and the 20 chosen; the search ends
    when it first says yes, with no model step after it."""
    params, vocab = tiny(), Vocab("\nab")
    asked, steps, step = [], [], model.step

    def counting(*args):
        steps.append(1)
        return step(*args)
    monkeypatch.setattr(beam.model, "step", counting)

    def asking(stop_at=None):                 # a should_stop that says yes on call `stop_at`
        def should_stop():
            asked.append(1)
            return len(asked) == stop_at
        return should_stop
    assert beam_search(params, vocab, 20, 3, "ab", should_stop=asking()) == \
        beam_search(params, vocab, 20, 3, "ab")
    assert len(asked) == 3 + 20
    asked.clear(), steps.clear()
    with pytest.raises(beam.Stopped) as e:
        beam_search(params, vocab, 20, 3, "ab", should_stop=asking(n))
    assert str(e.value) == f"beam search stopped {where}"
    assert len(asked) == n and len(steps) == n - 1
    assert isinstance(e.value, CharlstmError)
