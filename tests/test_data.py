"""Reading text, the vocabulary, the split, the batch streams and the evaluation streams."""

import numpy as np
import pytest

from charlstm.corpus import read_text
from charlstm.data import Batches, Vocab, builtin_corpus, eval_streams, split, token_dtype
from charlstm.errors import DataError


def test_vocab_is_sorted_code_points_and_round_trips():
    text = "héllo wörld\n€"
    v = Vocab.from_text(text)
    assert v.chars == "".join(sorted(set(text)))
    tokens = v.encode(text)
    assert tokens.dtype == np.uint8
    assert v.decode(tokens) == text
    assert [v.chars[t] for t in tokens] == list(text)


def test_token_dtype_widens_with_vocabulary():
    assert token_dtype(256) == np.uint8
    assert token_dtype(257) == np.uint16
    assert token_dtype(70_000) == np.uint32
    text = "".join(chr(0x4E00 + i) for i in range(300))          # 300 CJK characters
    assert Vocab.from_text(text).encode(text).dtype == np.uint16


def test_encode_names_unknown_characters():
    with pytest.raises(DataError, match="'xz'"):
        Vocab.from_text("abc").encode("axbz")


def test_split_is_contiguous_with_validation_last():
    tokens = np.arange(100, dtype=np.uint8)
    train, val, test = split(tokens, 0.1)
    assert len(val) == 10 and val[0] == 90 and train[-1] == 89 and len(test) == 0
    train, val, test = split(tokens, 0.1, 0.05)
    assert list(test) == list(range(95, 100)) and list(val) == list(range(85, 95))
    assert train[-1] == 84


def test_split_refuses_empty_validation():
    with pytest.raises(DataError, match="val_fraction"):
        split(np.arange(10, dtype=np.uint8), 0.05)


def test_batches_walk_contiguous_streams():
    tokens = np.arange(1000, dtype=np.uint16)
    b = Batches(tokens, batch_size=4, seq_len=10)
    L = 999 // 4
    assert b.num_batches == L // 10
    x0, y0 = b.get(0)
    x1, _ = b.get(1)
    assert x0.shape == (4, 10)
    np.testing.assert_array_equal(y0, x0 + 1)                  # targets are the next characters
    np.testing.assert_array_equal(x1[:, 0], x0[:, -1] + 1)     # window 1 continues window 0
    np.testing.assert_array_equal(x0[:, 0], np.arange(4) * L)  # row b starts stream b


def test_shifted_windows_start_each_stream_elsewhere_every_epoch():
    tokens = np.arange(1000, dtype=np.uint16)
    B, T, L = 4, 10, 999 // 4
    b = Batches(tokens, batch_size=B, seq_len=T, shifted=True)
    assert b.num_batches == (L - T + 1) // T
    assert Batches(tokens, B, T).offsets(3, seed=7) is None          # fixed: no shift
    offs = [b.offsets(e, seed=7) for e in range(6)]
    np.testing.assert_array_equal(offs[2], b.offsets(2, seed=7))   # (seed, epoch) decide them
    assert all(((o >= 0) & (o < T)).all() for o in offs)
    assert len({tuple(o) for o in offs}) > 1 and len(set(offs[0])) > 1
    o = offs[1]
    x0, y0 = b.get(0, o)
    np.testing.assert_array_equal(x0[:, 0], np.arange(B) * L + o)  # stream b from its offset
    np.testing.assert_array_equal(y0, x0 + 1)
    for i in range(1, b.num_batches):
        xi, yi = b.get(i, o)
        np.testing.assert_array_equal(xi[:, 0], x0[:, 0] + i * T)   # continues window i-1
        np.testing.assert_array_equal(yi, xi + 1)
    assert (xi[:, -1] < np.arange(1, B + 1) * L).all()             # never runs into the next stream


def test_too_short_text_says_how_long_and_what_to_lower():
    with pytest.raises(DataError) as e:
        Batches(np.zeros(100, np.uint8), batch_size=10, seq_len=20)
    msg = str(e.value)
    assert "201" in msg and "train.batch_size" in msg and "train.seq_len" in msg


@pytest.mark.parametrize("n", [2, 17, 25_000, 100_003])
def test_eval_streams_predict_every_character_once(n):
    tokens = (np.arange(n) % 251).astype(np.uint8)
    x, y, (tx, ty) = eval_streams(tokens, min_len=10_000)
    assert x.size + tx.size == n - 1
    assert x.shape[1] >= min(10_000, n - 1)
    # the targets, read stream by stream and then the tail, are characters 1..n-1 in order
    np.testing.assert_array_equal(np.concatenate([y.reshape(-1), ty.reshape(-1)]), tokens[1:])
    if tx.size:
        assert tx[0, 0] == y[-1, -1]                           # the tail continues the last stream


def test_read_text_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="directory"):
        read_text(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_text(empty)
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        read_text(binary)


def test_invalid_utf8_names_offset_or_is_replaced(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf".encode() + b"\xe9 ok")
    with pytest.raises(DataError, match="offset 3.*data.errors=replace"):
        read_text(bad)
    assert read_text(bad, errors="replace") == "caf\ufffd ok"


def test_builtin_corpus_is_ascii_python_source():
    text = builtin_corpus(max_chars=50_000)
    assert len(text) == 50_000
    assert text.isascii() and "def " in text
