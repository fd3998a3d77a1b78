"""Shared fixtures: small corpora built inside the tests (the suite never needs a download)."""

import os

import numpy as np
import pytest

from charlstm.config import load_config


def synthetic_text(n=20_000, seed=0):
    """A text with learnable structure: words from a small lexicon in a fixed rotation, with noise.

    Its unigram entropy is about 3 nats/char, but the next character is nearly determined by
    the previous few, so a model that learns anything beats the unigram baseline by far.
    """
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "home"]
    out, i, size = [], 0, 0
    while size < n:
        word = words[i % len(words)] if rng.random() > 0.05 else words[rng.integers(12)]
        out += [word, "\n" if rng.random() < 0.1 else " "]
        size += len(word) + 1
        i += 1
    return "".join(out)[:n]


def no_internal_error(output):
    """What a command printed holds no traceback and no "internal error": the CLI prints that for
    an exception that is not a user error, i.e. a bug, so one such line is a failure too."""
    assert "Traceback" not in output, output
    assert "internal error" not in output, output


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


def tiny_config(data_path, **overrides):
    """configs/tiny.yaml on `data_path`, with section.key=value overrides."""
    sets = [f"data.path={data_path}"] + [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_config("configs/tiny.yaml", sets)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a temporary folder, never the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def torch():
    """torch; skipped where it is missing, unless CHARLSTM_REQUIRE_TORCH is set (then a failure)."""
    if os.environ.get("CHARLSTM_REQUIRE_TORCH"):
        try:
            import torch
        except ImportError as e:
            pytest.fail(f"CHARLSTM_REQUIRE_TORCH is set but torch cannot be imported ({e}): "
                        "pip install -e '.[torch]'")
    else:
        torch = pytest.importorskip("torch", reason="PyTorch cross-checks: pip install -e "
                                                    "'.[torch]'")
    return torch
