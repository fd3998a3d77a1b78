"""Tests for charlstm.checkpoint: exact round trips, atomic saves, one clear error per damage."""

import errno
import json
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charlstm.checkpoint as ckpt
from charlstm.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, read_meta, save_checkpoint
from charlstm.errors import CharlstmError, CheckpointError


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "embed.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "lstm.weight_ih_l0": rng.standard_normal((8, 3)),  # float64
        "lstm.bias_ih_l0": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-310], dtype=np.float64),
        "optim.step": np.array(7, dtype=np.int64),  # 0-d
        "state.h": np.zeros((2, 0, 4), dtype=np.float32),  # empty
        "data.tokens": np.arange(300, dtype=np.int64).astype(np.uint8),
        "mask": np.array([True, False]),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "int32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    }


def sample_meta():
    return {
        "config": {"model": {"hidden": 64, "layers": 2},
                   "optim": {"lr": 2e-3, "betas": [0.9, 0.999]}},
        "vocab": ["\n", " ", "a", "é", "\u00a0", "😀", '"', "\\"],
        "step": 1200,
        "rng": np.random.default_rng(1).bit_generator.state,  # 128-bit Python ints
        "metrics": {"val_loss": 1.25, "best": None},
    }


def assert_same_arrays(got, want):
    assert list(got) == list(want)
    for name, a in want.items():
        b = got[name]
        assert type(b) is np.ndarray, name
        assert b.dtype == a.dtype and b.dtype.str == a.dtype.str and b.shape == a.shape, name
        assert np.ascontiguousarray(b).tobytes() == np.ascontiguousarray(a).tobytes(), name


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "run" / "last.npz"
    save_checkpoint(path, sample_arrays(), sample_meta())
    return path


def rewrite(path, entries):
    """Write `entries` with plain np.savez, as a foreign or tampered program would."""
    with open(path, "wb") as f:
        np.savez(f, **entries)


def meta_entry(meta):
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def raw_entries(path):
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


# ---- round trip ----

def test_round_trip_is_bit_exact(saved):
    arrays, meta = load_checkpoint(saved)
    assert_same_arrays(arrays, sample_arrays())
    want = sample_meta()
    assert {k: meta[k] for k in want} == want
    assert meta["format"] == "charlstm-checkpoint" and meta["format_version"] == FORMAT_VERSION == 1
    assert set(meta["arrays"]) == set(sample_arrays())
    assert meta["arrays"]["embed.weight"]["dtype"] == "<f4"
    assert meta["arrays"]["embed.weight"]["shape"] == [5, 3]
    assert meta["arrays"]["optim.step"]["shape"] == []


def test_rng_state_resumes_the_same_stream(saved):
    _, meta = load_checkpoint(saved)
    original = np.random.default_rng(1)
    restored = np.random.default_rng()
    restored.bit_generator.state = meta["rng"]
    assert np.array_equal(restored.integers(0, 2**63, 10), original.integers(0, 2**63, 10))


def test_loaded_arrays_are_plain_writable_and_in_memory(saved):
    arrays, _ = load_checkpoint(saved)
    os.remove(saved)  # nothing may still depend on the file
    for a in arrays.values():
        assert type(a) is np.ndarray and a.flags.writeable
    arrays["embed.weight"] += 1.0


def test_plain_numpy_opens_it_without_pickle(saved):
    with np.load(saved, allow_pickle=False) as z:
        assert set(z.files) == set(sample_arrays()) | {"__meta__"}
        assert z["__meta__"].dtype == np.uint8
        meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
        assert_same_arrays({n: z[n] for n in sample_arrays()}, sample_arrays())
    assert meta["format"] == "charlstm-checkpoint"
    crc = meta["arrays"]["embed.weight"]["crc32"]
    assert crc == zlib.crc32(sample_arrays()["embed.weight"].tobytes())


def test_read_meta_matches_load(saved):
    assert read_meta(saved) == load_checkpoint(saved)[1]


def test_no_npz_suffix_added_and_parent_created(tmp_path):
    path = tmp_path / "a" / "b" / "model.ckpt"
    save_checkpoint(str(path), {"w": np.ones(2)}, {})
    assert os.listdir(path.parent) == ["model.ckpt"]
    assert load_checkpoint(path)[0]["w"].tolist() == [1.0, 1.0]


def test_overwrite_replaces_and_leaves_no_temp(saved):
    save_checkpoint(saved, {"w": np.zeros(3)}, {"step": 2})
    arrays, meta = load_checkpoint(saved)
    assert list(arrays) == ["w"] and meta["step"] == 2
    assert os.listdir(saved.parent) == ["last.npz"]


def test_numpy_scalars_in_meta_become_python_numbers(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {}, {"loss": np.float32(0.5), "step": np.int64(3), "ok": np.bool_(True)})
    meta = read_meta(path)
    assert (meta["loss"], meta["step"], meta["ok"]) == (0.5, 3, True)
    assert load_checkpoint(path)[0] == {}


def test_lone_surrogate_in_vocab_survives(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {}, {"vocab": ["a", "\udcff"]})
    assert read_meta(path)["vocab"] == ["a", "\udcff"]


# ---- what save refuses ----

@pytest.mark.parametrize("name", ["__meta__", "file", "allow_pickle", "", "w.npy"])
def test_save_refuses_reserved_names(tmp_path, name):
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "c.npz", {name: np.zeros(1)}, {})
    assert os.listdir(tmp_path) == []


def test_save_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save_checkpoint(tmp_path / "c.npz", {"w": np.array([1, None], dtype=object)}, {})
    assert os.listdir(tmp_path) == []


# ---- atomic write ----

def failing_savez(file, *args, **kwargs):
    file.write(b"PK\x03\x04 half a checkpoint")  # a full disk fails after some bytes are written
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def failing_replace(src, dst):
    raise OSError(errno.EACCES, os.strerror(errno.EACCES))


@pytest.mark.parametrize("target, fake, reason", [
    ("savez", failing_savez, os.strerror(errno.ENOSPC)),
    ("replace", failing_replace, os.strerror(errno.EACCES)),
])
def test_failed_write_keeps_previous_and_no_temp(saved, monkeypatch, target, fake, reason):
    before = saved.read_bytes()
    monkeypatch.setattr(np if target == "savez" else os, target, fake)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(saved, {"w": np.zeros(3)}, {"step": 2})
    assert str(info.value) == (f"could not write checkpoint '{saved}': {reason}; "
                               "the previous checkpoint is unchanged")
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == ["last.npz"]
    monkeypatch.undo()
    assert_same_arrays(load_checkpoint(saved)[0], sample_arrays())


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(3)}, {})
    assert os.listdir(tmp_path) == []


def test_temp_file_is_named_after_target(saved, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(src), real_replace(src, dst)))
    save_checkpoint(saved, {"w": np.zeros(1)}, {})
    assert seen == [str(saved.parent / f".last.npz.tmp-{os.getpid()}")]


# ---- damaged and foreign files ----

def test_flipped_array_byte_fails_checksum(saved):
    data = bytearray(saved.read_bytes())
    payload = sample_arrays()["lstm.weight_ih_l0"].tobytes()
    start = data.find(payload)
    assert start > 0 and data.find(payload, start + 1) == -1
    data[start + len(payload) // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved)
    assert str(info.value) == (
        f"'{saved}' is corrupted: array 'lstm.weight_ih_l0' fails its checksum")
    assert read_meta(saved)["step"] == 1200  # array data is not read for metadata


def test_own_crc_catches_tampering_the_zip_cannot_see(saved):
    entries = raw_entries(saved)
    entries["embed.weight"] = entries["embed.weight"] + np.float32(1.0)  # zip CRCs are rewritten
    rewrite(saved, entries)
    with pytest.raises(CheckpointError, match="array 'embed.weight' fails its checksum"):
        load_checkpoint(saved)
    arrays, _ = load_checkpoint(saved, verify=False)
    assert np.array_equal(arrays["embed.weight"], sample_arrays()["embed.weight"] + 1)


@pytest.mark.parametrize("change, words", [
    (lambda e: e.pop("state.h"), "array 'state.h' is missing"),
    (lambda e: e.update(extra=np.zeros(1)), "array 'extra' is not in its metadata"),
    (lambda e: e.update({"embed.weight": e["embed.weight"].astype(np.float64)}),
     "array 'embed.weight' is <f8 (5, 3), its metadata says <f4 (5, 3)"),
    (lambda e: e.update({"embed.weight": e["embed.weight"].reshape(3, 5)}),
     "array 'embed.weight' is <f4 (3, 5), its metadata says <f4 (5, 3)"),
])
def test_arrays_must_match_the_table(saved, change, words):
    entries = raw_entries(saved)
    change(entries)
    rewrite(saved, entries)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved, verify=False)
    assert str(info.value) == f"'{saved}' is corrupted: {words}"
    with pytest.raises(CheckpointError) as info:  # names and .npy headers: no data read
        read_meta(saved)
    assert str(info.value) == f"'{saved}' is corrupted: {words}"


@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_compressed_checkpoint_is_refused(saved, reader):
    entries = raw_entries(saved)
    with open(saved, "wb") as f:
        np.savez_compressed(f, **entries)
    with pytest.raises(CheckpointError) as info:
        reader(saved)
    assert str(info.value) == (
        f"'{saved}' holds its metadata compressed; refused, since charlstm writes checkpoints "
        "uncompressed and a compressed entry can expand to any size")


@pytest.mark.parametrize("cut", [1, 3, 4, 10, 40, 300, -200, -22, -1])
@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_truncated_file_is_unreadable(saved, cut, reader):
    data = saved.read_bytes()
    saved.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"is not a readable checkpoint \(truncated"):
        reader(saved)


@pytest.mark.parametrize("content, words", [
    (b"", "the file is empty"),
    (bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)), "not a zip archive"),
    (b"PK\x03\x04" + bytes(np.random.default_rng(4).integers(0, 256, 5000, dtype=np.uint8)), ""),
])
@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_junk_is_unreadable(tmp_path, content, words, reader):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        reader(path)
    assert str(info.value).startswith(
        f"'{path}' is not a readable checkpoint (truncated or corrupted: ")
    assert words in str(info.value)


@pytest.mark.parametrize("entries, words", [
    ({"w": np.zeros(3)}, "no __meta__ entry"),
    ({"__meta__": np.zeros(3)}, "not JSON bytes"),
    ({"__meta__": np.frombuffer(b"\xff{", dtype=np.uint8)}, "not UTF-8 JSON"),
    ({"__meta__": meta_entry([1, 2])}, "not an object"),
    ({"__meta__": meta_entry({"format": "other", "format_version": 1, "arrays": {}})},
     "format 'other'"),
    ({"__meta__": meta_entry({"format": FORMAT, "format_version": "1", "arrays": {}})},
     "bad format_version"),
    ({"__meta__": meta_entry({"format": FORMAT, "format_version": 1, "arrays": []})},
     "'arrays' table"),
])
@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_foreign_npz_is_not_a_checkpoint(tmp_path, entries, words, reader):
    path = tmp_path / "foreign.npz"
    rewrite(path, entries)
    with pytest.raises(CheckpointError) as info:
        reader(path)
    assert str(info.value).startswith(f"'{path}' is not a charlstm checkpoint (")
    assert words in str(info.value)


def test_single_npy_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a charlstm checkpoint .*single .npy array"):
        load_checkpoint(path)


@pytest.mark.parametrize("with_meta", [False, True])
def test_object_array_is_refused_not_unpickled(saved, with_meta):
    entries = {"evil": np.array([{"a": 1}, None], dtype=object)}
    if with_meta:
        entries = {**raw_entries(saved), **entries}
    rewrite(saved, entries)  # np.savez pickles object arrays by default
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved)
    assert str(info.value) == (f"'{saved}' holds array 'evil' that would need pickle to load; "
                               "refused, since unpickling a file can run arbitrary code")


def test_object_meta_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    rewrite(path, {"__meta__": np.array([{}], dtype=object)})
    for reader in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match="its metadata that would need pickle"):
            reader(path)


@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_newer_format_version(saved, reader):
    entries = raw_entries(saved)
    meta = json.loads(entries["__meta__"].tobytes())
    meta["format_version"] = 2
    entries["__meta__"] = meta_entry(meta)
    rewrite(saved, entries)
    with pytest.raises(CheckpointError) as info:
        reader(saved)
    assert str(info.value) == (f"'{saved}' was written by a newer charlstm (format version 2, "
                               "this program reads up to 1); upgrade charlstm")


@pytest.mark.parametrize("reader", [load_checkpoint, read_meta])
def test_directory_and_missing_file(tmp_path, reader):
    with pytest.raises(CheckpointError) as info:
        reader(tmp_path)
    assert str(info.value) == f"'{tmp_path}' is a directory; pass a checkpoint file, not a folder"
    (tmp_path / "last.npz").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        reader(tmp_path)
    assert str(info.value) == (f"'{tmp_path}' is a directory; pass a checkpoint file such as "
                               f"{tmp_path / 'last.npz'}")
    with pytest.raises(CheckpointError) as info:
        reader(tmp_path / "nope.npz")
    assert str(info.value) == f"checkpoint '{tmp_path / 'nope.npz'}' not found"
    assert isinstance(info.value, CharlstmError)


# ---- corruption anywhere: the right answer or CheckpointError, nothing else ----

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("pristine") / "c.npz"
    save_checkpoint(path, sample_arrays(), sample_meta())
    return path.read_bytes(), load_checkpoint(path)[1]


def load_or_checkpoint_error(path, data, meta):
    path.write_bytes(data)
    try:
        arrays, got_meta = load_checkpoint(path)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return False
    # Only bytes the zip ignores (timestamps, the local copy of a CRC, ...) may change unnoticed.
    assert_same_arrays(arrays, sample_arrays())
    assert got_meta == meta
    return True


def test_every_single_byte_flip(pristine, tmp_path):
    data, meta = pristine
    path = tmp_path / "c.npz"
    survived = 0
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        survived += load_or_checkpoint_error(path, bytes(flipped), meta)
    assert 0 < survived < len(data) // 4


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_single_byte_corruption(pristine, tmp_path, data):
    original, meta = pristine
    i = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[i]))
    corrupted = bytearray(original)
    corrupted[i] = value
    load_or_checkpoint_error(tmp_path / "c.npz", bytes(corrupted), meta)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=2000),
                 st.binary(max_size=2000).map(lambda b: b"PK\x03\x04" + b)))
def test_random_bytes_never_crash(tmp_path, blob):
    path = tmp_path / "r.npz"
    path.write_bytes(blob)
    for reader in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError):
            reader(path)


def test_module_constants():
    assert ckpt.FORMAT_VERSION == 1 and ckpt.FORMAT == "charlstm-checkpoint"
