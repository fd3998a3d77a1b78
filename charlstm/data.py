"""Text in, token windows out: reading text, the vocabulary, the split and the batches.

Dimension letters: B batch (parallel streams), T window length, N text length in characters.

    text = read_text("notes.txt")                             # corpus.py: files, caches
    vocab = Vocab.from_text(text)
    train, val, test = split(vocab.encode(text), cfg.data.val_fraction)
    batches = Batches(train, B, T)                            # x, y = batches.get(i)

The training text is cut into B contiguous streams, one per batch row; window i of an epoch is
columns [i*T, (i+1)*T) of every stream (shifted by a random column per stream and epoch with
train.windows: shifted), so row b of window i+1 continues row b of window i and the hidden state
can be carried from one window to the next (truncated backpropagation through time).
"""

import sysconfig
import unicodedata
from pathlib import Path

import numpy as np

from .errors import DataError

BUILTIN = "the Python standard library's source code"


def builtin_corpus(max_chars=2_000_000):
    """The offline demo corpus: this interpreter's own standard library source, ASCII files only.

    Files are read in sorted path order until `max_chars`, so the corpus is the same on every run
    of the same Python install. Needs no network and no download.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        try:
            text = path.read_bytes().decode("ascii")
        except (OSError, UnicodeDecodeError):
            continue                         # skip unreadable and non-ASCII files: a small vocab
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"no Python source found under {root} for the built-in corpus; "
                        "set data.path to a text file")
    return "".join(parts)[:max_chars]


def readable(chars):
    """repr(chars), with combining marks escaped too (repr leaves them raw, as printable): printed,
    a mark joins the character before it, and two characters look like one (c + U+0301: ć)."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c).startswith("M") else c
                   for c in repr(chars))


class Vocab:
    """The sorted characters (Unicode code points) of a text; index i is the i-th character."""

    def __init__(self, chars):
        self.chars = "".join(chars)
        # surrogatepass, as in encode: a checkpoint's vocabulary may hold a lone surrogate
        self._points = np.frombuffer(self.chars.encode("utf-32-le", "surrogatepass"),
                                     np.uint32)  # sorted
        self.dtype = token_dtype(len(self.chars))

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def missing(self, text):
        """The characters of `text` not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def encode(self, text):
        """str -> (N,) compact integer tokens. Raises DataError listing unknown characters."""
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        idx = np.searchsorted(self._points, points)
        idx = np.minimum(idx, len(self._points) - 1)
        if not np.array_equal(self._points[idx], points):
            shown = "".join(self.missing(text))[:40]
            raise DataError(f"text has characters not in the model's vocabulary: {shown!r}")
        return idx.astype(self.dtype)

    def decode(self, tokens):
        return "".join(self.chars[int(t)] for t in np.asarray(tokens).reshape(-1))


def token_dtype(V):
    """The smallest unsigned integer type that holds V token ids."""
    return np.uint8 if V <= 256 else np.uint16 if V <= 65536 else np.uint32


def split_sizes(n, val_fraction, test_fraction=0.0):
    """(n_val, n_test): how many of a text's n tokens `split` holds out."""
    return int(round(n * val_fraction)), int(round(n * test_fraction))


def split(tokens, val_fraction, test_fraction=0.0):
    """Contiguous split [train | val | test]: validation is the last `val_fraction` of the text
    (as nanoGPT), or the part before the last `test_fraction` when a test split is held out."""
    n_val, n_test = split_sizes(len(tokens), val_fraction, test_fraction)
    if n_val < 2:
        raise DataError(f"the validation split would have {n_val} characters (text has "
                        f"{len(tokens)}); raise data.val_fraction or use more text")
    if test_fraction and n_test < 2:
        raise DataError(f"the test split would have {n_test} characters (text has "
                        f"{len(tokens)}); raise data.test_fraction or use more text")
    end = len(tokens) - n_test
    return tokens[:end - n_val], tokens[end - n_val:end], tokens[end:]


class Batches:
    """The (B, T) windows of one epoch over B contiguous streams of the training tokens.

    shifted=False: every epoch cuts each stream into the same windows (as char-rnn and torch-rnn).
    shifted=True: each epoch, each stream starts at its own random column in [0, T), drawn from
    (seed, epoch), so window boundaries fall elsewhere every epoch and the last T-1 columns of a
    stream are there to absorb the shift (the role of AWD-LSTM's variable-length windows).
    """

    def __init__(self, tokens, batch_size, seq_len, shifted=False):
        B, T, N = batch_size, seq_len, len(tokens)
        if N < B * T + 1:
            raise DataError(
                f"the training text has {N} characters, but one batch needs batch_size x seq_len"
                f" + 1 = {B * T + 1}; lower train.batch_size or train.seq_len, lower "
                "data.val_fraction (or data.test_fraction), or use more text")
        L = (N - 1) // B                       # stream length; the last N-1-B*L chars are unused
        self.x = tokens[:B * L].reshape(B, L)              # views, no copy
        self.y = tokens[1:B * L + 1].reshape(B, L)
        self.seq_len = T
        self.shifted = shifted
        self.num_batches = windows_per_epoch(N, B, T, shifted)
        self.spare = L - self.num_batches * T  # the largest start column a shifted epoch can use

    def offsets(self, epoch, seed):
        """Each stream's first column in this epoch: (B,) ints when shifted, else None (all 0)."""
        if not self.shifted:
            return None
        high = min(self.seq_len - 1, self.spare)
        return np.random.default_rng([seed, 2, epoch]).integers(0, high + 1, self.x.shape[0])

    def get(self, i, offsets=None):
        """Window i of the epoch: inputs x (B, T) and targets y (B, T), int64 for indexing.

        offsets: each stream's first column this epoch (from `offsets`); None = all 0.
        """
        T = self.seq_len
        if offsets is None:
            cols = slice(i * T, (i + 1) * T)
            return self.x[:, cols].astype(np.int64), self.y[:, cols].astype(np.int64)
        cols = offsets[:, None] + np.arange(i * T, (i + 1) * T)            # (B, T)
        rows = np.arange(len(offsets))[:, None]
        return self.x[rows, cols].astype(np.int64), self.y[rows, cols].astype(np.int64)


def windows_per_epoch(N, B, T, shifted=False):
    """The windows of one epoch of Batches over N training tokens (at least 1)."""
    L = (N - 1) // B
    return max(1, (L - T + 1) // T) if shifted else max(1, L // T)


def eval_streams(tokens, min_len=10_000, max_streams=256):
    """Split a token sequence into S parallel streams for evaluation, every character counted.

    Returns (x, y, tail): x, y are (S, L) inputs and targets; `tail` is (x, y) for the last
    (N-1) - S*L characters, which continue the last stream. Predicting each of the N-1 characters
    after the first from all that precede it in its stream; streams are at least `min_len` long.
    """
    n = len(tokens) - 1
    S = int(max(1, min(max_streams, n // min_len)))
    L = n // S
    x = tokens[:S * L].reshape(S, L)
    y = tokens[1:S * L + 1].reshape(S, L)
    tail = (tokens[S * L:n][None, :], tokens[S * L + 1:n + 1][None, :])
    return x, y, tail

