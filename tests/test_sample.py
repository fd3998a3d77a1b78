"""Sampling: the shaping of the next-character distribution, and reproducible generation."""

import warnings

import numpy as np
import pytest

from charlstm import model, sample
from charlstm.config import load_config
from charlstm.data import Vocab
from charlstm.errors import CharlstmError
from charlstm.sample import (BURN_IN_MAX, BURN_IN_MIN, burn_in, check_options, generate,
                             next_distribution)
from charlstm.run import Run

from helpers import tiny_config

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))


def test_temperature_sharpens_and_flattens():
    assert np.allclose(next_distribution(LOGITS), [0.5, 0.2, 0.15, 0.1, 0.05])
    cold, hot = next_distribution(LOGITS, 0.5), next_distribution(LOGITS, 2.0)
    assert cold[0] > 0.5 > hot[0]
    assert np.isclose(cold.sum(), 1) and np.isclose(hot.sum(), 1)


def test_top_k_keeps_the_k_most_likely():
    p = next_distribution(LOGITS, top_k=2)
    assert np.allclose(p, [0.5 / 0.7, 0.2 / 0.7, 0, 0, 0])


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert np.allclose(next_distribution(LOGITS, top_p=0.5), [1, 0, 0, 0, 0])
    p = next_distribution(LOGITS, top_p=0.8)                   # 0.5 + 0.2 < 0.8 <= 0.85
    assert np.allclose(p, np.array([0.5, 0.2, 0.15, 0, 0]) / 0.85)


@pytest.mark.parametrize("temperature", [5e-324, 1e-320, 1e-309, 1e-300, 1e-250])
def test_a_tiny_temperature_is_greedy_without_overflow(temperature):
    """A temperature a request may send (> 0, but so small that logit / temperature overflowed):
    the draw is the argmax, as the limit is, on the one-stream and the batched path, and NumPy
    has nothing to warn about (the softmax was NaN: token 0 every time, warnings in the log)."""
    from charlstm.sample import draw, draw_rows
    logits = np.array([[-3.0, 2.5, 7.0, 6.9, -40.0], [9.0, -2.0, 0.5, 8.99, 3.0]], np.float32)

    class S:                                     # a Stream's sampling fields
        def __init__(self, seed):
            self.temperature, self.rng = temperature, np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps = [next_distribution(row, temperature) for row in logits]
        assert [p.tolist() for p in ps] == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]
        assert [draw(p, np.random.default_rng(i)) for i, p in enumerate(ps)] == [2, 0]
        assert draw_rows(logits, [S(0), S(1)]) == [2, 0]
        assert next_distribution(logits[0], temperature, top_k=2).tolist() == [0, 0, 1, 0, 0]
        assert next_distribution(logits[0], temperature, top_p=0.9).tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize("kw,match", [
    (dict(temperature=0), "temperature"), (dict(temperature=-1), "temperature"),
    (dict(temperature=float("inf")), "--temperature must be a finite number > 0, got inf"),
    (dict(top_k=-1), "top-k"), (dict(top_p=0), "top-p"), (dict(top_p=1.5), "top-p"),
    (dict(length=-3), "length"),
    # from Python: a length of 2.5 never reached 0 (a generation without end); the others
    # failed deep in a comparison or in NumPy (top_k 2.5: "Partition index must be integer")
    (dict(length=2.5), "--length must be a whole number >= 0, got 2.5"),
    (dict(length="5"), "--length must be a whole number >= 0, got '5'"),
    (dict(top_k=2.5), "--top-k must be a whole number >= 0, got 2.5"),
    (dict(temperature="hot"), "--temperature must be a number > 0, got 'hot'"),
    (dict(top_p=None), r"--top-p must be a number in \(0, 1\], got None")])
def test_bad_options_are_clear_errors(kw, match):
    with pytest.raises(CharlstmError, match=match):
        check_options(**kw)


@pytest.fixture
def trained(tmp_path, corpus):
    return Run.start(tiny_config(corpus), tmp_path / "r").train(progress=False, echo=lambda *a: 0)


def test_generation_is_reproducible_and_respects_length(trained):
    def text(seed, **kw):
        return "".join(generate(trained.params, trained.vocab, 80, np.random.default_rng(seed),
                                prime="the ", **kw))
    a, b, c = text(1), text(1), text(2)
    assert a == b and a != c and len(a) == 80
    assert set(a) <= set(trained.vocab.chars)
    assert text(1, argmax=True) == text(2, argmax=True)
    assert text(1, top_k=1) == text(1, argmax=True)


def test_generation_starts_from_the_first_row_of_start_and_leaves_it_alone(trained):
    params, vocab, state = trained.params, trained.vocab, trained.ts.state
    L, _, H = state[0].shape
    zeros = tuple(np.zeros((L, 3, H), np.float32) for _ in range(2))
    assert text(params, vocab, 40, 1, start=zeros) == text(params, vocab, 40, 1)
    before = [s.copy() for s in state]
    first = tuple(s[:, :1].copy() for s in state)
    assert text(params, vocab, 40, 1, start=state) == text(params, vocab, 40, 1, start=first)
    assert all(np.array_equal(a, b) for a, b in zip(before, state))


def test_generate_is_lazy(trained):
    gen = generate(trained.params, trained.vocab, 10**9, np.random.default_rng(0))
    assert len(next(gen)) == 1                                 # streams: no need to finish first


def text(params, vocab, length, seed, **kw):
    return "".join(generate(params, vocab, length, np.random.default_rng(seed), **kw))


def burn_in_end(raw):
    """Where a prime-less sample starts in the text drawn straight from the zero state: after the
    first newline among characters BURN_IN_MIN..BURN_IN_MAX (1-based), else after BURN_IN_MAX."""
    for drawn in range(BURN_IN_MIN, BURN_IN_MAX + 1):
        if raw[drawn - 1] == "\n":
            return drawn
    return BURN_IN_MAX


@pytest.mark.parametrize("newlines,stop", [
    ([10, 50, 60], 50),                  # the first newline at or past BURN_IN_MIN characters
    ([3, 49, 120], 120),
    ([], BURN_IN_MAX),                   # none: the most
    ([BURN_IN_MAX + 5], BURN_IN_MAX),
])
def test_burn_in_stops_after_a_newline_past_the_minimum(newlines, stop):
    assert (BURN_IN_MIN, BURN_IN_MAX) == (50, 200)
    fed = []

    def draw(tok):                       # token 0 is the newline, at the listed 1-based draws
        fed.append(tok)
        return 0 if len(fed) in newlines else len(fed)
    last = burn_in(draw, -7, newline=0)
    assert len(fed) == stop and fed[0] == -7
    assert last == (0 if stop in newlines else stop)
    assert fed[1:] == [0 if i in newlines else i for i in range(1, stop)]   # each draw fed on


def test_empty_prime_starts_at_a_line_after_the_burn_in(trained, monkeypatch):
    p, v, seeds = trained.params, trained.vocab, range(4)
    warm = [text(p, v, 60, seed) for seed in seeds]
    assert warm == [text(p, v, 60, seed) for seed in seeds] and len(set(warm)) == len(warm)
    assert {len(w) for w in warm} == {60}
    monkeypatch.setattr(sample, "BURN_IN_MAX", 0)     # no burn-in: what the old sampler yielded
    raw = [text(p, v, BURN_IN_MAX + 60, seed) for seed in seeds]   # the same draws, same rng
    ends = [burn_in_end(r) for r in raw]
    assert warm == [r[end:end + 60] for r, end in zip(raw, ends)]
    assert any(end < BURN_IN_MAX and r[end - 1] == "\n" for r, end in zip(raw, ends))


def test_empty_prime_greedy_is_the_same_for_every_seed(trained):
    p, v = trained.params, trained.vocab
    assert text(p, v, 40, 1, argmax=True) == text(p, v, 40, 2, argmax=True)
    assert text(p, v, 0, 1) == ""


def test_empty_prime_without_newline_in_the_vocabulary_burns_in_the_maximum(monkeypatch):
    vocab = Vocab("abcd")
    _, params = model.init_params(len(vocab), load_config("configs/tiny.yaml").model,
                                  np.random.default_rng(0))
    warm = text(params, vocab, 30, 5)
    assert len(warm) == 30 and warm == text(params, vocab, 30, 5)
    monkeypatch.setattr(sample, "BURN_IN_MAX", 0)
    assert warm == text(params, vocab, BURN_IN_MAX + 30, 5)[BURN_IN_MAX:]


def test_a_prime_is_continued_without_burn_in(trained, monkeypatch):
    p, v = trained.params, trained.vocab
    primed = text(p, v, 50, 3, prime="the ")
    monkeypatch.setattr(sample, "BURN_IN_MAX", 0)
    assert text(p, v, 50, 3, prime="the ") == primed
