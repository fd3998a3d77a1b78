"""The versioned, pickle-free checkpoint file: atomic save, validated load.

A checkpoint is one uncompressed ``.npz`` archive, which plain
``numpy.load(path, allow_pickle=False)`` opens. It holds the caller's named arrays
(``lstm.weight_ih_l0``, ``optim.m.lstm.weight_ih_l0``, ``state.h``, ...) and one ``__meta__``
entry: JSON bytes in a uint8 array. The JSON is the caller's metadata (config, vocabulary, step,
rng state, metrics) plus what this module adds: ``format``, ``format_version`` and an ``arrays``
table giving each array's dtype, shape and CRC32, checked on load.

    save_checkpoint("runs/x/last.npz", arrays, {"config": ..., "step": 1200})
    arrays, meta = load_checkpoint("runs/x/last.npz")
    meta = read_meta("runs/x/last.npz")  # for `charlstm info`: reads no array data

Every problem with a file that a user could cause raises CheckpointError, with a one-line message.
"""

import contextlib
import json
import os
import zipfile
import zlib

import numpy as np

from charlstm.backend import to_host
from charlstm.errors import CheckpointError

FORMAT = "charlstm-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"

# np.savez takes "file" and "allow_pickle" as keywords, and NpzFile strips a ".npy" suffix from
# entry names, so "a" and "a.npy" would collide on load.
_RESERVED = {META_KEY, "file", "allow_pickle"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an archive with entries, an empty archive
_NPY_MAGIC = b"\x93NUMPY"


def save_checkpoint(path, arrays, meta):
    """Write `arrays` (name -> ndarray) and `meta` (a JSON-able dict) to `path`, atomically.

    Either the complete new checkpoint is at `path`, or the previous file there is untouched and
    CheckpointError says why. Object arrays and reserved names are programming errors: ValueError.
    """
    path = os.fspath(path)
    arrays = {name: _plain_array(name, a) for name, a in arrays.items()}
    table = {n: {"dtype": a.dtype.str, "shape": list(a.shape), "crc32": _crc32(a)}
             for n, a in arrays.items()}
    record = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, arrays=table)
    # Default ensure_ascii: the JSON is plain ASCII (so valid UTF-8) even when a vocabulary holds
    # lone surrogates from undecodable text, which a UTF-8 encoder would refuse.
    blob = json.dumps(record, default=_json_default).encode("ascii")
    entries = {**arrays, META_KEY: np.frombuffer(blob, dtype=np.uint8)}

    folder, name = os.path.split(os.path.abspath(path))
    # Same directory, so os.replace is a rename within one file system; the name says what it is
    # if a crash leaves it behind.
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "wb") as f:
            # An open file, not a path: np.savez would append ".npz" to a path. Not compressed:
            # weights hardly compress, and saving sits inside the training loop.
            np.savez(f, allow_pickle=False, **entries)
            f.flush()
            os.fsync(f.fileno())  # the data must be on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise CheckpointError(f"could not write checkpoint {_q(path)}: {e.strerror or e}; "
                              "the previous checkpoint is unchanged") from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(folder)


def load_checkpoint(path, verify=True):
    """Read a checkpoint: returns (arrays, meta), arrays as in-memory ndarrays.

    `meta` is the stored metadata, including the "format", "format_version" and "arrays" keys
    added on save. verify=False skips recomputing the CRC32 of every array (the zip's own CRC,
    checked by zipfile, still applies); names, dtypes and shapes are always checked.
    """
    p = _check_path(path)
    with _open(p) as z:
        meta, problem = _parse_meta(z, p)
        # Every entry is read before names or metadata are judged, so that a file holding object
        # arrays is always refused for what it is: something that would need pickle.
        found = {n: _read_entry(z, p, n, f"array {n!r}") for n in z.files if n != META_KEY}
        if problem:
            raise _foreign(p, problem)
        table = meta["arrays"]
        _check_names(z, p, table)
    arrays = {name: found[name] for name in table}  # in the order they were saved
    for name, a in arrays.items():
        entry = table[name]
        if a.dtype.str != entry["dtype"] or list(a.shape) != entry["shape"]:
            raise CheckpointError(
                f"{_q(p)} is corrupted: array {name!r} is {a.dtype.str} {a.shape}, its metadata "
                f"says {entry['dtype']} {tuple(entry['shape'])}")
        if verify and _crc32(a) != entry["crc32"]:
            raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} fails its checksum")
    return arrays, meta


def read_meta(path):
    """The metadata of a checkpoint, validated like load_checkpoint's but without reading arrays."""
    p = _check_path(path)
    with _open(p) as z:
        meta, problem = _parse_meta(z, p)
        if problem:
            raise _foreign(p, problem)
        _check_names(z, p, meta["arrays"])
    return meta


# ---- saving helpers ----

def _plain_array(name, value):
    if not isinstance(name, str) or not name or name in _RESERVED or name.endswith(".npy"):
        raise ValueError(f"{name!r} cannot name a checkpoint array")
    a = to_host(value)                  # a GPU run's arrays are saved as host NumPy arrays
    if a.dtype.hasobject:
        raise ValueError(f"checkpoint array {name!r} has dtype {a.dtype}, which would need "
                         "pickle; store numbers, or put the value in the metadata")
    return a


def _crc32(a):
    # Over the C-order bytes, so the sum does not depend on memory layout (a Fortran-ordered
    # array is saved and loaded as such, but checksums the same as its C-ordered copy).
    return zlib.crc32(np.ascontiguousarray(a))


def _json_default(value):
    # Metrics often arrive as NumPy scalars; store them as the equal Python number.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"checkpoint metadata cannot hold {type(value).__name__} value {value!r}")


def _remove_quietly(tmp):
    with contextlib.suppress(OSError):
        os.remove(tmp)


def _fsync_dir(folder):
    # Makes the rename itself survive a power cut. Best effort: some systems (Windows) cannot
    # open or fsync a directory, and the checkpoint is already in place.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- loading helpers ----

def _q(path):
    return f"'{path}'"


def _why(e):
    return " ".join(str(e).split()) or type(e).__name__  # one line, whatever the library said


def _unreadable(p, why):
    return f"{_q(p)} is not a readable checkpoint (truncated or corrupted: {why})"


def _foreign(p, why):
    return CheckpointError(f"{_q(p)} is not a charlstm checkpoint ({why})")


def _check_path(path):
    """The path as a string, once it names a file that starts like a zip archive."""
    p = os.fspath(path)
    if os.path.isdir(p):
        raise CheckpointError(f"{_q(p)} is a directory; pass a checkpoint file such as "
                              f"{os.path.join(p, 'best.npz')} or {os.path.join(p, 'last.npz')}")
    try:
        with open(p, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {_q(p)} not found") from None
    except OSError as e:
        raise CheckpointError(f"could not read checkpoint {_q(p)}: {e.strerror or e}") from e
    # np.load guesses the format from these bytes and blames anything it does not know on pickle,
    # which would be a misleading message for random or empty bytes.
    if head.startswith(_NPY_MAGIC):
        raise _foreign(p, "it is a single .npy array, not an .npz archive")
    if not head.startswith(_ZIP_MAGIC):
        why = "not a zip archive" if head else "the file is empty"
        raise CheckpointError(_unreadable(p, why))
    return p


@contextlib.contextmanager
def _open(p):
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:  # anything, for the reason given in _read_entry
        raise CheckpointError(_unreadable(p, _why(e))) from e
    with z:
        yield z


def _read_entry(z, p, key, label):
    """One archive entry as an in-memory ndarray; `label` names it in messages."""
    try:
        a = z[key]
    except Exception as e:
        # zipfile and numpy raise a wide, version-dependent set of exceptions on damaged bytes
        # (BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError for a garbled
        # compression method, MemoryError for a garbled shape, ...). Raised while parsing the
        # file's bytes, any of them means the file is damaged, never a bug here.
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise CheckpointError(f"{_q(p)} holds {label} that would need pickle to load; refused, "
                                  "since unpickling a file can run arbitrary code") from None
        if isinstance(e, zipfile.BadZipFile) and "CRC" in str(e):
            raise CheckpointError(f"{_q(p)} is corrupted: {label} fails its checksum") from e
        raise CheckpointError(_unreadable(p, f"{label}: {_why(e)}")) from e
    if not isinstance(a, np.ndarray):  # NpzFile hands back raw bytes for a non-.npy entry
        raise CheckpointError(f"{_q(p)} is corrupted: {label} is not a NumPy array")
    return a


def _parse_meta(z, p):
    """(meta, None) for a checkpoint this program can read, or (None, why) for a foreign file.

    A newer format version raises at once: the rest of such a file is not ours to judge.
    """
    if META_KEY not in z.files:
        return None, f"it has no {META_KEY} entry"
    raw = _read_entry(z, p, META_KEY, "its metadata")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        return None, f"its {META_KEY} entry is {raw.dtype} {raw.shape}, not JSON bytes"
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, deep nesting
        return None, f"its {META_KEY} entry is not UTF-8 JSON: {_why(e)}"
    if not isinstance(meta, dict):
        return None, f"its {META_KEY} entry is a JSON {type(meta).__name__}, not an object"
    if meta.get("format") != FORMAT:
        return None, f"format {meta.get('format')!r}, expected {FORMAT!r}"
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        return None, f"bad format_version {version!r}"
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{_q(p)} was written by a newer charlstm (format version {version}, this program "
            f"reads up to {FORMAT_VERSION}); upgrade charlstm")
    if not _table_ok(meta.get("arrays")):
        return None, "its metadata has no valid 'arrays' table"
    return meta, None


def _table_ok(table):
    def entry_ok(e):
        return (isinstance(e, dict) and isinstance(e.get("dtype"), str)
                and isinstance(e.get("shape"), list)
                and all(type(n) is int and n >= 0 for n in e["shape"])
                and type(e.get("crc32")) is int)
    return isinstance(table, dict) and all(entry_ok(e) for e in table.values())


def _check_names(z, p, table):
    # Compared before any data is read, so a missing array is named as such, not as a read error.
    names = [n for n in z.files if n != META_KEY]
    if len(set(z.files)) != len(z.files):
        raise CheckpointError(f"{_q(p)} is corrupted: it holds two entries with the same name")
    for name in table:
        if name not in names:
            raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} is missing")
    for name in names:
        if name not in table:
            raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} is not in its metadata")
