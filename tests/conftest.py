"""Shared fixtures: small corpora built inside the tests (the suite never needs a download).

Plain helper functions shared by test modules are in helpers.py."""

import os

import pytest

pytest.register_assert_rewrite("helpers")     # before its import: its asserts explain failures too

from helpers import synthetic_text  # noqa: E402


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(), encoding="utf-8")
    return path


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
