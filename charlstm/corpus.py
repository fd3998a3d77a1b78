"""Where the text comes from: files, folders, globs and downloads, encoded once into a token cache.

    corpus = prepare(cfg.data, progress=True)      # Corpus(tokens, vocab, description, sources)

`data.path` names a file, a folder (every text file below it, in sorted order), a glob, or a list
of these; the files are joined with `data.separator`. The first run streams the text in chunks:
one pass builds the vocabulary and a SHA-256 of every file, a second writes the tokens to a cache
file (uint8, uint16 or uint32 by vocabulary size) beside a small JSON sidecar. Later runs
memory-map the tokens, so memory does not grow with the corpus. A source whose size or
modification time changed is hashed again; if its content changed, the cache is rebuilt.
"""

import codecs
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import BUILTIN, Vocab, builtin_corpus
from .errors import DataError

try:
    import fcntl
except ImportError:                      # Windows: no locks, and no sweep of stale temporaries
    fcntl = None

CHUNK = 4 << 20            # bytes read at a time: bounds the memory of preparing any corpus
CACHE_FORMAT = 2          # 2: a file's byte order mark is no longer a character of the text


@dataclass
class Corpus:
    tokens: np.ndarray     # (N,) token ids, usually a read-only memory map
    vocab: Vocab
    description: str
    sources: list          # {"path", "size", "sha256"} of each source file, in order


def prepare(data_cfg, progress=False, echo=tqdm.write):
    """The corpus of a data config, from its token cache when that is up to date."""
    if data_cfg.path is None:
        text = builtin_corpus()
        vocab = Vocab.from_text(text)
        raw = text.encode()
        source = {"path": BUILTIN, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        return Corpus(vocab.encode(text), vocab, BUILTIN, [source])
    sources = resolve_sources(data_cfg, progress)
    cache = cache_dir(data_cfg)
    key = hashlib.sha256(json.dumps([[str(p) for p in sources], data_cfg.separator,
                                     data_cfg.errors, CACHE_FORMAT]).encode()).hexdigest()[:20]
    sidecar, token_file = cache / f"{key}.json", cache / f"{key}.tokens"
    _remove_stale_temporaries(cache)
    meta = _valid_cache(sidecar, token_file, sources, echo)
    if meta is None:
        meta = _build_cache(sources, data_cfg, sidecar, token_file, progress)
    vocab = Vocab(meta["vocab"])
    tokens = np.memmap(token_file, dtype=vocab.dtype, mode="r", shape=(meta["tokens"],))
    what = f"'{sources[0]}'" if len(sources) == 1 else f"{len(sources)} files"
    records = [{k: r[k] for k in ("path", "size", "sha256")} for r in meta["sources"]]
    return Corpus(tokens, vocab, what, records)


def cache_dir(data_cfg):
    if data_cfg.cache_dir:
        return Path(os.path.expanduser(data_cfg.cache_dir))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlstm"


# --- sources ------------------------------------------------------------------------------------


def resolve_sources(data_cfg, progress=False):
    """The files data.path names, in order, each once. Downloads a missing file that has a url."""
    specs = data_cfg.path if isinstance(data_cfg.path, list) else [data_cfg.path]
    files = []
    for spec in specs:
        path = os.path.expanduser(spec)
        if any(ch in path for ch in "*?["):
            found = sorted(set(_glob(path)))
            if not found:
                raise DataError(f"no files match data.path '{spec}'")
            files += found
        elif os.path.isdir(path):
            found = [p for p in sorted(Path(path).rglob("*")) if p.is_file()
                     and not any(part.startswith(".") for part in p.relative_to(path).parts)
                     and _looks_like_text(p)]
            if not found:
                raise DataError(f"folder '{spec}' has no text files; point data.path at a text "
                                "file or a folder that holds some")
            files += found
        elif os.path.exists(path):
            if not os.path.isfile(path):           # a pipe or a device: would block or never end
                raise DataError(f"data file '{spec}' is not a regular file (a device, pipe or "
                                "socket); point data.path at a text file")
            files.append(path)
        elif data_cfg.url and len(specs) == 1:
            download(data_cfg.url, path, data_cfg.sha256, progress)
            files.append(path)
        else:
            raise DataError(f"data file '{spec}' not found; check data.path (or --data)")
    return list(dict.fromkeys(Path(f).resolve() for f in files))


def _glob(pattern):
    """The files a glob names, as glob.glob(pattern, recursive=True) finds them, except that `**`
    does not follow a link back to a folder it is already inside: glob.glob goes round such a
    loop until the path is too long, and with two of them (a link to the folder above and one to
    the top) the paths it walks double at every turn: it never ends."""
    head, parts = pattern, []
    while any(ch in head for ch in "*?["):          # the plain folder the pattern starts from
        head, tail = os.path.split(head)
        parts.insert(0, tail)
    return _walk(head, parts, {os.path.realpath(head or ".")})


def _walk(folder, parts, inside):
    """Files below `folder` that `parts` (a pattern's components) match; `inside`: the real paths
    of the folders `**` went through to get here."""
    if not parts:
        if os.path.isfile(folder):
            yield folder
        return
    part, rest = parts[0], parts[1:]
    if not any(ch in part for ch in "*?["):
        yield from _walk(os.path.join(folder, part), rest, inside)
        return
    try:
        names = os.listdir(folder or ".")
    except OSError:                                 # not a folder, or not ours to read
        return
    if not part.startswith("."):                    # as glob: wildcards skip hidden names
        names = [n for n in names if not n.startswith(".")]
    if part != "**":
        for name in fnmatch.filter(names, part):
            yield from _walk(os.path.join(folder, name), rest, inside)
        return
    yield from _walk(folder, rest, inside)          # `**`: no folder, or one more, and again
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            real = os.path.realpath(path)
            if real not in inside:
                yield from _walk(path, parts, inside | {real})
        elif not rest:
            yield from _walk(path, rest, inside)


def read_text(path, errors="strict", what="data file"):
    """One UTF-8 text file as a string (`charlstm eval --text`, `sample --prime-file`), with the
    same checks as a training corpus: missing, a folder, empty, binary, or a bad byte's offset.
    `what` names the file in the messages ("text file", "prime file")."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{what} '{path}' not found; check the path")
    if p.is_dir():
        raise DataError(f"{what} '{path}' is a directory; point at a text file")
    if not p.is_file():
        raise DataError(f"{what} '{path}' is not a regular file (a device, pipe or socket); "
                        "point at a text file")
    text = "".join(chunk for _, chunk in _decoded_chunks(p, errors, what))
    if not text:
        raise DataError(f"{what} '{path}' is empty; give it some text")
    return text


def _looks_like_text(path):
    """Whether a folder's file is text to train on (not empty, no NUL in its first 8 KB). One
    that cannot be read is an error naming it: left out, the run would train on less than the
    folder holds and say nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise DataError(f"data file '{path}' cannot be read ({e.strerror or e}); check its "
                        "permissions, or move it out of the folder") from None
    return bool(head) and b"\x00" not in head


def download(url, dest, sha256=None, progress=False):
    """Fetch url to dest through a temporary file; verify sha256; leave nothing behind on failure
    (nor on Ctrl-C, or SIGTERM to the command line: cli.main makes it unwind as Ctrl-C does)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.download-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, disable=not progress,
                      desc=f"downloading {dest.name}") as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if sha256 and digest.hexdigest() != sha256.lower():
            raise DataError(f"download of {url} failed its checksum (sha256 {digest.hexdigest()},"
                            f" expected {sha256}); nothing was saved")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        raise DataError(f"could not download {url} to '{dest}': {reason}; nothing was saved "
                        "(check the address and your network, or fetch the file by hand)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- the cache ----------------------------------------------------------------------------------


def _file_record(path, digest=None):
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha256": digest if digest is not None else _sha256(path)}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _valid_cache(sidecar, token_file, sources, echo):
    """The sidecar's metadata if the cache matches the sources now, else None (said why)."""
    try:
        meta = json.loads(sidecar.read_text())
        itemsize = np.dtype(Vocab(meta["vocab"]).dtype).itemsize
        if (token_file.stat().st_size != meta["tokens"] * itemsize
                or len(meta["sources"]) != len(sources)):
            return None
        fresh = []
        for record, path in zip(meta["sources"], sources):
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) == (record["size"], record["mtime_ns"]):
                fresh.append(record)
                continue
            now = _file_record(path)                # touched: is the content different?
            if now["sha256"] != record["sha256"]:
                echo(f"'{path}' changed since its token cache was built; rebuilding the cache")
                return None
            fresh.append(now)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None                                 # no cache, or a damaged one: build it again
    if fresh != meta["sources"]:
        meta["sources"] = fresh
        try:
            _write_atomic(sidecar, json.dumps(meta).encode())
        except OSError as e:
            raise _unwritable(sidecar.parent, e) from None
    return meta


def _decoded_chunks(path, errors, what="data file"):
    """Yield (raw bytes, text) chunks of a UTF-8 file, without the byte order mark some editors
    put at its start (else the model learns an invisible U+FEFF at every file's start, and a
    prime or eval file saved with one holds a character no model trained without it knows);
    DataError names the offset of a bad byte (and, for a data file, the key that replaces bad
    bytes)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict" if errors == "strict" else "replace")
    offset, at_start = 0, True
    with open(path, "rb") as f:
        while True:
            raw = f.read(CHUNK)
            if offset == 0 and b"\x00" in raw[:8192]:
                raise DataError(f"{what} '{path}' looks binary (it contains NUL bytes); "
                                "charlstm reads UTF-8 text")
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - pending + e.start
                fix = " or set data.errors=replace" if what == "data file" else ""
                raise DataError(f"{what} '{path}' is not valid UTF-8: a bad byte at offset "
                                f"{at}; fix the file{fix}") from None
            if at_start and text:        # the first character, whichever chunk completes it
                at_start = False
                if text[0] == "\ufeff":
                    text = text[1:]      # a byte order mark: how the file is written, not its text
            offset += len(raw)
            yield raw, text
            if not raw:
                return


def _build_cache(sources, data_cfg, sidecar, token_file, progress):
    """Two streaming passes: vocabulary and hashes, then tokens. Returns the sidecar's metadata."""
    total = sum(p.stat().st_size for p in sources)
    chars, records, n = set(data_cfg.separator if len(sources) > 1 else ""), [], 0
    # delay: small corpora encode in a blink, and then no bar is drawn at all
    with tqdm(total=2 * total, unit="B", unit_scale=True, disable=not progress,
              desc="preparing tokens", delay=0.5) as bar:
        for path in sources:
            h = hashlib.sha256()
            for raw, text in _decoded_chunks(path, data_cfg.errors):
                h.update(raw)
                chars.update(text)
                n += len(text)
                bar.update(len(raw))
            records.append(_file_record(path, h.hexdigest()))
        n += len(data_cfg.separator) * (len(sources) - 1)
        if n == 0:
            raise DataError(f"data.path '{data_cfg.path}' holds no text; give it some text to "
                            "learn from")
        vocab = Vocab(sorted(chars))
        tmp = token_file.with_name(token_file.name + f".tmp-{os.getpid()}")
        try:
            token_file.parent.mkdir(parents=True, exist_ok=True)
            out = open(tmp, "wb")
        except OSError as e:
            raise _unwritable(token_file.parent, e) from None
        if fcntl is not None:                       # ours while we live: not stale
            with contextlib.suppress(OSError):
                fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            with out:
                for k, path in enumerate(sources):
                    if k and data_cfg.separator:
                        out.write(vocab.encode(data_cfg.separator).tobytes())
                    for raw, text in _decoded_chunks(path, data_cfg.errors):
                        out.write(vocab.encode(text).tobytes())
                        bar.update(len(raw))
            os.replace(tmp, token_file)
        finally:
            if tmp.exists():
                tmp.unlink()
    meta = {"format": CACHE_FORMAT, "vocab": vocab.chars, "tokens": n, "sources": records,
            "separator": data_cfg.separator}
    try:
        _write_atomic(sidecar, json.dumps(meta).encode())
    except OSError as e:
        raise _unwritable(sidecar.parent, e) from None
    return meta


_TEMPORARY = re.compile(r".+\.(tokens|json)\.tmp-(\d+)")


def _remove_stale_temporaries(cache):
    """Remove the temporary files of cache writes killed outright (SIGKILL, out of memory): a
    half-built token file is as large as the tokens written so far, and no later build reuses its
    name (the writer's pid). One is stale when no process of its pid lives and none locks it (a
    build on another machine sharing the folder)."""
    if fcntl is None:
        return
    with contextlib.suppress(OSError):
        for path in cache.iterdir():
            match = _TEMPORARY.fullmatch(path.name)
            if match and not _pid_alive(int(match.group(2))):
                with contextlib.suppress(OSError), open(path, "rb") as f:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # BlockingIOError: in use
                    path.unlink()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):                # another user's process (EPERM), ...
        return True
    return True


def _unwritable(folder, e):
    why = "it is not a folder" if folder.exists() and not folder.is_dir() else e.strerror or e
    return DataError(f"could not write the token cache in '{folder}': {why}; point "
                     "data.cache_dir (or XDG_CACHE_HOME) at a folder you can write to")


def _write_atomic(path, data):
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def remap(tokens, source_vocab, target_vocab, unknown):
    """Re-encode tokens of one vocabulary into another (fine-tuning on new text).

    Characters missing from target_vocab are dropped (`unknown` = "skip") or become the character
    `unknown`. Returns (tokens in target_vocab's dtype, sorted list of the missing characters).
    """
    missing = target_vocab.missing(source_vocab.chars)
    lut = np.zeros(len(source_vocab), np.int64)
    keep = np.ones(len(source_vocab), bool)
    for i, ch in enumerate(source_vocab.chars):
        if ch in missing:
            keep[i] = unknown != "skip"
            lut[i] = target_vocab.chars.index(unknown) if unknown != "skip" else 0
        else:
            lut[i] = target_vocab.chars.index(ch)
    parts = []
    for lo in range(0, len(tokens), CHUNK):
        chunk = np.asarray(tokens[lo:lo + CHUNK])
        if not keep.all():
            chunk = chunk[keep[chunk]]
        parts.append(lut[chunk].astype(target_vocab.dtype))
    out = np.concatenate(parts) if parts else np.zeros(0, target_vocab.dtype)
    return out, missing


def fine_tune_tokens(corpus, vocab, unknown, echo):
    """The corpus in a checkpoint's vocabulary, reporting the characters it does not have."""
    if unknown != "skip" and unknown not in vocab.chars:
        raise DataError(f"data.unknown: {unknown!r} is not in the checkpoint's vocabulary; "
                            "use 'skip' or one of its characters")
    tokens, missing = remap(corpus.tokens, corpus.vocab, vocab, unknown)
    if missing:
        action = "skipped" if unknown == "skip" else f"replaced by {unknown!r}"
        echo(f"{len(missing)} characters of the new text are not in the checkpoint's vocabulary"
             f" and are {action}: {''.join(missing)[:40]!r}")
    if len(tokens) == 0 < len(corpus.tokens):   # else the split asks for more of the same text
        raise DataError(f"none of the new text's characters are in the checkpoint's vocabulary, "
                        f"so data.unknown: skip leaves nothing to train on; fine-tune on a text "
                        f"in its characters ({vocab.chars[:40]!r}), or train afresh without "
                        "--init-from")
    return tokens
