"""Sampling: the shaping of the next-character distribution, and reproducible generation."""

import numpy as np
import pytest

from charlstm.errors import CharlstmError
from charlstm.sample import check_options, generate, next_distribution
from charlstm.train import Run

from conftest import tiny_config

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


@pytest.mark.parametrize("kw,match", [
    (dict(temperature=0), "temperature"), (dict(temperature=-1), "temperature"),
    (dict(top_k=-1), "top-k"), (dict(top_p=0), "top-p"), (dict(top_p=1.5), "top-p"),
    (dict(length=-3), "length")])
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


def test_generate_is_lazy(trained):
    gen = generate(trained.params, trained.vocab, 10**9, np.random.default_rng(0))
    assert len(next(gen)) == 1                                 # streams: no need to finish first
