"""Hostile files cost nothing: zip bombs, lying .npy headers and tables, and paths that are no file.

The archives are written here byte by byte, so that the zip directory, the .npy headers and the
metadata's table can each say whatever a test needs. Every refusal is one line naming the file and
the entry, reached without allocating what the file claims: the library is watched by tracemalloc
(NumPy reports its array memory to it), the command in a child process by its peak resident memory
under an address-space limit. Pipes, devices and sockets given as a checkpoint, text or config are
refused before anything opens them, so a read that would block or never end cannot start.
"""

import io
import json
import os
import socket
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from charlstm.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, read_meta
from charlstm.cli import cli
from charlstm.errors import CheckpointError

from helpers import synthetic_text

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
HUGE = 3 << 30                     # bytes a bomb expands to: fits the zip's 32-bit size fields
SMALL = np.arange(10, dtype=np.uint8)


# ---- building archives by hand ----

def npy_header(dtype, shape):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def npy(a):
    return npy_header(a.dtype, a.shape) + a.tobytes()


def meta_json(table):
    return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "step": 7,
                       "arrays": table}).encode()


def meta_npy(table):
    return npy(np.frombuffer(meta_json(table), np.uint8))


def row(a, shape=None):
    """The table's entry for array `a`, or for one of its dtype claiming `shape`."""
    return {"dtype": a.dtype.str, "shape": list(a.shape if shape is None else shape),
            "crc32": zlib.crc32(a.tobytes())}


def deflate_zeros(prefix, mib):
    """Raw deflate of `prefix` then `mib` MiB of zeros, about 1 KB per MiB, made in milliseconds:
    after a full flush a deflate block stands alone, so one compressed MiB can be repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return head + block * mib + c.flush()


def entry(name, data, method=STORED, size=None, csize=None, crc=None):
    """One zip entry: its bytes on disk and what its directory record claims about them."""
    size = len(data) if size is None else size
    csize = len(data) if csize is None else csize
    # A bomb's checksum is left 0: zipfile checks it after inflating, too late to matter.
    crc = (zlib.crc32(data) if method == STORED else 0) if crc is None else crc
    return name, data, method, size, csize, crc


def write_zip(path, entries):
    out, central = bytearray(), bytearray()
    for name, data, method, size, csize, crc in entries:
        name = name.encode()
        # version needed, flags, method, time, date (1980-01-01), crc, sizes, name and extra length
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, csize, size, len(name), 0)
        # version made by, the shared fields, comment length, disk, attributes, local offset
        central += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                    + struct.pack("<HHHII", 0, 0, 0, 0, len(out)) + name)
        out += b"PK\x03\x04" + fields + name + data
    n = len(entries)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


def checkpoint(path, w_entry, table_row, meta_entry=None):
    """A one-array checkpoint: array "w" as `w_entry`, the table saying `table_row` about it."""
    meta_entry = meta_entry or entry("__meta__.npy", meta_npy({"w": table_row}))
    return write_zip(path, [w_entry, meta_entry])


def test_hand_built_archive_is_a_valid_checkpoint(tmp_path):
    # Without this, every refusal below could be the builder's fault.
    path = checkpoint(tmp_path / "ok.npz", entry("w.npy", npy(SMALL)), row(SMALL))
    arrays, meta = load_checkpoint(path)
    assert np.array_equal(arrays["w"], SMALL) and meta["step"] == 7
    assert read_meta(path) == meta
    with np.load(path) as z:                                    # plain numpy agrees
        assert np.array_equal(z["w"], SMALL)
    assert zlib.decompressobj(-15).decompress(deflate_zeros(b"head", 2), 10) == b"head" + bytes(6)


# ---- hostile archives ----

def bomb_declared(path):
    # header, table and zip directory all tell the truth: 3 GiB of zeros in a 3 MB file
    header = npy_header(np.uint8, (HUGE,))
    return checkpoint(path, entry("w.npy", deflate_zeros(header, HUGE >> 20), DEFLATED,
                                  size=len(header) + HUGE), row(SMALL, (HUGE,)))


def bomb_disguised(path):
    # header, table and zip directory say 10 bytes; the deflate stream goes on for 3 GiB
    data = npy(SMALL)
    return checkpoint(path, entry("w.npy", deflate_zeros(data, HUGE >> 20), DEFLATED,
                                  size=len(data)), row(SMALL))


def header_huge(path, table_shape=(2 ** 40,)):
    # a tiny body behind a header claiming a terabyte
    data = npy_header(np.uint8, (2 ** 40,)) + SMALL.tobytes()
    return checkpoint(path, entry("w.npy", data), row(SMALL, table_shape))


def table_huge(path):
    return checkpoint(path, entry("w.npy", npy(SMALL)), row(SMALL, (2 ** 40,)))


def all_claim_huge(path):
    # header, table and directory agree on 3 GiB; the file holds 10 bytes of it
    header = npy_header(np.uint8, (HUGE,))
    return checkpoint(path, entry("w.npy", header + SMALL.tobytes(), size=len(header) + HUGE,
                                  csize=len(header) + HUGE), row(SMALL, (HUGE,)))


def meta_deflated(path):
    data = meta_npy({"w": row(SMALL)})
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = entry("__meta__.npy", c.compress(data) + c.flush(), DEFLATED, size=len(data),
                     crc=zlib.crc32(data))
    return checkpoint(path, entry("w.npy", npy(SMALL)), row(SMALL), deflated)


def meta_bomb(path):
    header = npy_header(np.uint8, (HUGE,))
    return checkpoint(path, entry("w.npy", npy(SMALL)), row(SMALL), entry(
        "__meta__.npy", deflate_zeros(header, HUGE >> 20), DEFLATED, size=len(header) + HUGE))


def meta_huge(path):
    data = meta_npy({"w": row(SMALL)})
    return checkpoint(path, entry("w.npy", npy(SMALL)), row(SMALL),
                      entry("__meta__.npy", data, size=100_000_000, csize=100_000_000))


def meta_header_huge(path):
    data = npy_header(np.uint8, (2 ** 40,)) + meta_json({"w": row(SMALL)})
    return checkpoint(path, entry("w.npy", npy(SMALL)), row(SMALL), entry("__meta__.npy", data))


HOSTILE = {
    "bomb_declared": (bomb_declared, "holds array 'w' compressed; refused"),
    "bomb_disguised": (bomb_disguised, "holds array 'w' compressed; refused"),
    "header_huge": (header_huge, "is corrupted: array 'w' is 138 bytes in the zip directory, "
                    "its .npy header and metadata say 1,099,511,627,904"),
    "header_huge_table_small": (lambda p: header_huge(p, (10,)),
                                "is corrupted: array 'w' is |u1 (1099511627776,), its metadata "
                                "says |u1 (10,)"),
    "table_huge": (table_huge, "is corrupted: array 'w' is |u1 (10,), its metadata says "
                   "|u1 (1099511627776,)"),
    "all_claim_huge": (all_claim_huge, "is corrupted: its arrays declare 3,221,225,472 bytes in "
                       "all, more than the file's "),
    "meta_deflated": (meta_deflated, "holds its metadata compressed; refused"),
    "meta_bomb": (meta_bomb, "holds its metadata compressed; refused"),
    "meta_huge": (meta_huge, "holds metadata of 100,000,000 bytes; refused"),
    "meta_header_huge": (meta_header_huge, "is corrupted: its metadata is "),
}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_hostile_archive_is_refused_without_allocating(tmp_path, case, reader):
    build, words = HOSTILE[case]
    path = build(tmp_path / f"{case}.npz")
    assert path.stat().st_size < 8 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            reader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"'{path}' ") and words in message, message
    assert "\n" not in message and "internal error" not in message
    assert peak < 16 << 20, f"{peak:,} bytes traced"


PEAK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a belt, should the guard fail
from charlstm.bench import peak_rss_mb
from charlstm.cli import main
sys.argv[0] = "charlstm"
try:
    main()
finally:
    print(f"peak {peak_rss_mb():.0f} MB", file=sys.stderr)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's VmHWM")
@pytest.mark.parametrize("case", ["bomb_declared", "bomb_disguised", "header_huge",
                                  "all_claim_huge", "meta_bomb"])
@pytest.mark.parametrize("command", ["info", "sample", "eval --split val"])
def test_hostile_archive_through_the_cli(tmp_path, case, command):
    build, words = HOSTILE[case]
    path = build(tmp_path / f"{case}.npz")
    out = subprocess.run([sys.executable, "-c", PEAK, *command.split(), str(path)],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    *lines, peak = out.stderr.strip().splitlines()
    assert out.returncode == 1 and out.stdout == "", out.stderr
    assert len(lines) == 1 and lines[0].startswith(f"Error: '{path}' "), out.stderr
    assert words in lines[0] and "internal error" not in lines[0], lines[0]
    assert float(peak.split()[1]) < 200, peak


# ---- paths that are not regular files ----

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "corpus.txt"
    corpus.write_text(synthetic_text(3000))
    result = CliRunner().invoke(cli, ["train", "configs/tiny.yaml", "--data", str(corpus),
                                      "--set", "train.max_steps=2", "--out", str(folder / "run"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    return corpus, folder / "run" / "last.npz"


@pytest.fixture
def special(tmp_path):
    """make(kind, path): a FIFO, a socket, or a link to /dev/zero at `path`; closed at the end."""
    sockets = []

    def make(kind, path):
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(path))
            sockets.append(s)
        else:
            os.symlink(kind, path)
        return path

    yield make
    for s in sockets:
        s.close()


KINDS = [
    pytest.param("fifo", marks=pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")),
    pytest.param("socket", marks=pytest.mark.skipif(not hasattr(socket, "AF_UNIX"),
                                                    reason="no Unix sockets")),
    pytest.param("/dev/zero", marks=pytest.mark.skipif(not os.path.exists("/dev/zero"),
                                                       reason="no /dev/zero")),
]

# place -> (file name, arguments given the special path, the trained corpus and checkpoint)
PLACES = {
    "info": ("c.npz", lambda p, corpus, ckpt: ["info", p]),
    "sample": ("c.npz", lambda p, corpus, ckpt: ["sample", p, "--length", "5"]),
    "eval": ("c.npz", lambda p, corpus, ckpt: ["eval", p, "--split", "val"]),
    "init-from": ("c.npz", lambda p, corpus, ckpt: [
        "train", "configs/tiny.yaml", "--data", corpus, "--init-from", p,
        "--out", p.parent / "ft", "--no-progress"]),
    "resume": ("last.npz", lambda p, corpus, ckpt: ["train", "--resume", p.parent,
                                                   "--no-progress"]),
    "train --data": ("d.txt", lambda p, corpus, ckpt: [
        "train", "configs/tiny.yaml", "--data", p, "--out", p.parent / "run", "--no-progress"]),
    "prepare --data": ("d.txt", lambda p, corpus, ckpt: ["prepare", "--data", p]),
    "eval --text": ("d.txt", lambda p, corpus, ckpt: ["eval", ckpt, "--text", p]),
    "train CONFIG": ("c.yaml", lambda p, corpus, ckpt: [
        "train", p, "--data", corpus, "--out", p.parent / "run", "--no-progress"]),
    "prepare CONFIG": ("c.yaml", lambda p, corpus, ckpt: ["prepare", p]),
}


def charlstm(*args):
    # A timeout, so that a read that blocks fails the test instead of hanging the suite.
    return subprocess.run([sys.executable, "-m", "charlstm", *map(str, args)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("place", list(PLACES))
def test_special_file_is_refused_in_one_line(tmp_path, special, trained, kind, place):
    name, args = PLACES[place]
    path = special(kind, tmp_path / name)
    out = charlstm(*args(path, *trained))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith("Error: ") and f"{path}' is not a regular file" in lines[0], lines
    assert "internal error" not in lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("args", [["info", "/dev/zero"], ["train", "--data", "/dev/urandom"],
                                  ["train", "/dev/zero"], ["train", "/dev/stdin"]])
def test_device_paths_are_refused_in_one_line(args):
    out = charlstm(*args)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == out.stderr.strip().splitlines()[0]
    assert f"'{args[-1]}' is not a regular file" in out.stderr, out.stderr
