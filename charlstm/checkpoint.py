"""The versioned, pickle-free checkpoint file: atomic save, validated load.

A checkpoint is one uncompressed ``.npz`` archive, which plain
``numpy.load(path, allow_pickle=False)`` opens. It holds the caller's named arrays
(``lstm.weight_ih_l0``, ``optim.m.lstm.weight_ih_l0``, ``state.h``, ...) and one ``__meta__``
entry: JSON bytes in a uint8 array. The JSON is the caller's metadata (config, vocabulary, step,
rng state, metrics) plus what this module adds: ``format``, ``format_version`` and an ``arrays``
table giving each array's dtype, shape and CRC32, checked on load.

Loading trusts nothing the file says until it agrees with itself: before a byte of array data is
read, every entry must be stored uncompressed, and its zip-directory size and .npy header must be
those the table implies, all of them within the file's own size. So a zip bomb, or a header that
claims a terabyte, is refused without allocating it; and a path that is not a regular file (a
pipe, a device) is refused before it is opened.

    save_checkpoint("runs/x/last.npz", arrays, {"config": ..., "step": 1200})
    arrays, meta = load_checkpoint("runs/x/last.npz")
    meta = read_meta("runs/x/last.npz")  # for `charlstm info`: reads no array data

Every problem with a file that a user could cause raises CheckpointError, with a one-line message.
"""

import contextlib
import io
import json
import math
import os
import stat
import struct
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
_MAX_META = 64 << 20    # bytes; a real checkpoint's metadata is a few kilobytes
_MAX_HEADER = 12 + 10000  # bytes; magic, version, length, and numpy's own limit on a header


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
    checked by zipfile, still applies); names, dtypes, shapes and sizes are always checked, before
    any array is read, so a hostile file costs no more memory than its own size.
    """
    with _open(path) as (p, f, z):
        entries, meta = _validated(p, f, z)
        table = meta["arrays"]
        arrays = {n: _read_entry(z, p, entries[n], f"array {n!r}") for n in table}  # saved order
    if verify:
        for name, a in arrays.items():
            if _crc32(a) != table[name]["crc32"]:
                raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} fails its checksum")
    return arrays, meta


def read_meta(path):
    """The metadata of a checkpoint, validated like load_checkpoint's but without reading arrays.

    The zip directory and every .npy header are checked against the metadata's table, so a file
    that `sample` would refuse for its layout is refused here with the same line.
    """
    with _open(path) as (p, f, z):
        return _validated(p, f, z)[1]


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


def _open_regular(p):
    """An open binary file at `p`, once it is a regular file: a pipe or a device would block or
    never end, so it is refused before anything reads it."""
    fd = None
    try:
        mode = os.stat(p).st_mode
        if stat.S_ISREG(mode):
            # Non-blocking, and looked at again once open: a path that turns into a pipe after
            # the stat can neither hang the open nor be read.
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            mode = os.fstat(fd).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {_q(p)} not found") from None
    except OSError as e:
        raise CheckpointError(f"could not read checkpoint {_q(p)}: {e.strerror or e}") from e
    if stat.S_ISREG(mode):
        return os.fdopen(fd, "rb")
    if fd is not None:
        os.close(fd)
    if stat.S_ISDIR(mode):
        from .runfolder import BEST, LAST         # here: runfolder itself reads checkpoints
        inside = [os.path.join(p, n) for n in (BEST, LAST) if os.path.isfile(os.path.join(p, n))]
        raise CheckpointError(f"{_q(p)} is a directory; pass a checkpoint file" + (
            " such as " + " or ".join(inside) if inside else ", not a folder"))
    raise CheckpointError(f"{_q(p)} is not a regular file (a device, pipe or socket); "
                          "pass a checkpoint file")


@contextlib.contextmanager
def _open(path):
    """(path as a string, the open file, its zipfile.ZipFile), once it starts like a zip."""
    p = os.fspath(path)
    with _open_regular(p) as f:
        try:
            head = f.read(len(_NPY_MAGIC))
        except OSError as e:
            raise CheckpointError(f"could not read checkpoint {_q(p)}: {e.strerror or e}") from e
        # Said here, since zipfile would call random or empty bytes and a lone .npy array alike
        # "not a zip file".
        if head.startswith(_NPY_MAGIC):
            raise _foreign(p, "it is a single .npy array, not an .npz archive")
        if not head.startswith(_ZIP_MAGIC):
            why = "not a zip archive" if head else "the file is empty"
            raise CheckpointError(_unreadable(p, why))
        try:
            f.seek(0)
            z = zipfile.ZipFile(f)
        except Exception as e:  # anything, for the reason given in _read_entry
            raise CheckpointError(_unreadable(p, _why(e))) from e
        with z:
            yield p, f, z


def _validated(p, f, z):
    """(entries, meta): every entry's zip record and .npy header checked against the metadata's
    table, reading no array data. `entries` maps each array name to its zipfile.ZipInfo."""
    infos = z.infolist()
    names = [_array_name(i.filename) for i in infos]
    entries = dict(zip(names, infos))
    # Every header is read before names or metadata are judged, so that a file holding object
    # arrays is always refused for what it is: something that would need pickle.
    headers = {n: _read_header(f, p, i, _label(n)) for n, i in zip(names, infos)
               if i.compress_type == zipfile.ZIP_STORED}
    meta, problem = _parse_meta(z, p, entries, headers)
    if problem:
        raise _foreign(p, problem)
    table = meta["arrays"]
    _check_names(p, names, table)
    _check_layout(p, os.fstat(f.fileno()).st_size, entries, headers, table)
    return entries, meta


def _array_name(filename):
    # As numpy.load names them: "w.npy" holds array "w"; a name without the suffix stays as is.
    return filename[:-4] if filename.endswith(".npy") else filename


def _label(name):
    return "its metadata" if name == META_KEY else f"array {name!r}"


def _read_header(f, p, info, label):
    """(shape, fortran_order, dtype, header bytes) of a stored entry's .npy header.

    Read straight from the file, at most _MAX_HEADER bytes, and without zipfile: it would check
    the CRC of a small entry, which is reading its data.
    """
    try:
        f.seek(info.header_offset)
        local = f.read(30)  # the zip local header, then the file name and extra field
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local file header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        head = io.BytesIO(f.read(min(info.compress_size, _MAX_HEADER)))
        if not info.filename.endswith(".npy") or not head.getvalue().startswith(_NPY_MAGIC):
            # numpy.load hands such an entry back as raw bytes
            raise CheckpointError(f"{_q(p)} is corrupted: {label} is not a NumPy array")
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read(head)
    except CheckpointError:
        raise
    except Exception as e:  # anything, for the reason given in _read_entry
        raise CheckpointError(_unreadable(p, f"{label}: {_why(e)}")) from e
    if dtype.hasobject:
        raise _pickle(p, label)
    return shape, fortran_order, dtype, head.tell()


def _read_entry(z, p, info, label):
    """One archive entry as an in-memory ndarray; `label` names it in messages.

    Called only once the entry is known to be stored uncompressed with a header and size that
    match the metadata, so it reads exactly the bytes the table declares.
    """
    try:
        with z.open(info) as entry:
            return np.lib.format.read_array(entry, allow_pickle=False)
    except Exception as e:
        # zipfile and numpy raise a wide, version-dependent set of exceptions on damaged bytes
        # (BadZipFile, EOFError, struct.error, ValueError, ...). Raised while parsing the file's
        # bytes, any of them means the file is damaged, never a bug here.
        if isinstance(e, zipfile.BadZipFile) and "CRC" in str(e):
            raise CheckpointError(f"{_q(p)} is corrupted: {label} fails its checksum") from e
        raise CheckpointError(_unreadable(p, f"{label}: {_why(e)}")) from e


def _pickle(p, label):
    return CheckpointError(f"{_q(p)} holds {label} that would need pickle to load; refused, "
                           "since unpickling a file can run arbitrary code")


def _check_stored(p, info, label):
    # Never opened, not even for a header: a deflated entry of a few megabytes can expand to
    # gigabytes, and zipfile bounds neither bzip2 nor lzma output per read.
    if info.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"{_q(p)} holds {label} compressed; refused, since charlstm "
                              "writes checkpoints uncompressed and a compressed entry can expand "
                              "to any size")


def _check_size(p, info, expected, label):
    # For a stored entry both sizes are the bytes on disk; zipfile reads by them.
    for size in (info.compress_size, info.file_size):
        if size != expected:
            raise CheckpointError(
                f"{_q(p)} is corrupted: {label} is {size:,} bytes in the zip directory, its "
                f".npy header and metadata say {expected:,}")


def _parse_meta(z, p, entries, headers):
    """(meta, None) for a checkpoint this program can read, or (None, why) for a foreign file.

    A newer format version raises at once: the rest of such a file is not ours to judge.
    """
    if META_KEY not in entries:
        return None, f"it has no {META_KEY} entry"
    info, label = entries[META_KEY], _label(META_KEY)
    _check_stored(p, info, label)
    if max(info.compress_size, info.file_size) > _MAX_META:
        raise CheckpointError(f"{_q(p)} holds metadata of {info.file_size:,} bytes; refused, "
                              f"since charlstm's is far smaller (at most {_MAX_META >> 20} MiB)")
    shape, _, dtype, header_size = headers[META_KEY]
    if dtype != np.uint8 or len(shape) != 1:
        return None, f"its {META_KEY} entry is {dtype} {shape}, not JSON bytes"
    _check_size(p, info, header_size + shape[0], label)
    raw = _read_entry(z, p, info, label)
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


def _check_names(p, names, table):
    # Compared before any data is read, so a missing array is named as such, not as a read error.
    if len(set(names)) != len(names):
        raise CheckpointError(f"{_q(p)} is corrupted: it holds two entries with the same name")
    for name in table:
        if name not in names:
            raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} is missing")
    for name in names:
        if name != META_KEY and name not in table:
            raise CheckpointError(f"{_q(p)} is corrupted: array {name!r} is not in its metadata")


def _check_layout(p, file_size, entries, headers, table):
    """Each array stored uncompressed, its .npy header saying the table's dtype and shape, its
    zip sizes those of that header and data; and all of them no larger than the file."""
    total = 0
    for name, entry in table.items():
        info, label = entries[name], _label(name)
        _check_stored(p, info, label)
        shape, _, dtype, header_size = headers[name]
        if dtype.str != entry["dtype"] or list(shape) != entry["shape"]:
            raise CheckpointError(
                f"{_q(p)} is corrupted: {label} is {dtype.str} {shape}, its metadata "
                f"says {entry['dtype']} {tuple(entry['shape'])}")
        nbytes = dtype.itemsize * math.prod(shape)  # Python ints: no overflow, no allocation
        _check_size(p, info, header_size + nbytes, label)
        total += nbytes
    # Entries may share bytes in a crafted zip; this bounds what loading can allocate.
    if total > file_size:
        raise CheckpointError(f"{_q(p)} is corrupted: its arrays declare {total:,} bytes in all, "
                              f"more than the file's {file_size:,}")
