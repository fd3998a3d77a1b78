"""Data at scale: folders, globs and lists, the token cache, test split, downloads, fine-tuning."""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charlstm
from charlstm.cli import cli
from charlstm.config import load_config
from charlstm.corpus import cache_dir, prepare
from charlstm.errors import DataError

from helpers import no_internal_error, one_line_error, synthetic_text


def data_cfg(path, **kw):
    cfg = load_config(None, [f"data.path={path}" if not isinstance(path, list) else
                             "data.path=" + json.dumps([str(p) for p in path])])
    for k, v in kw.items():
        setattr(cfg.data, k, v)
    return cfg.data


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "books"
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "b" / "c.md").write_text("gamma\n")
    (root / "b" / "b.txt").write_text("beta\n")
    (root / ".hidden.txt").write_text("HIDDEN")
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    return root


def text_of(corpus):
    return corpus.vocab.decode(np.asarray(corpus.tokens))


def test_folder_reads_text_files_in_sorted_order(folder):
    corpus = prepare(data_cfg(folder, separator="|"))
    assert text_of(corpus) == "alpha\n|beta\n|gamma\n"
    assert "3 files" in corpus.description


def test_glob_and_list_of_paths(folder):
    assert text_of(prepare(data_cfg(f"{folder}/**/*.txt"))) == "alpha\n\nbeta\n"
    both = prepare(data_cfg([folder / "b" / "c.md", folder / "a.txt"], separator=""))
    assert text_of(both) == "gamma\nalpha\n"
    with pytest.raises(DataError, match="no files match"):
        prepare(data_cfg(f"{folder}/*.nothing"))


def test_a_recursive_glob_goes_round_no_symlink_loop(folder, tmp_path):
    """Two links back up (to the folder above, and to the top) made glob.glob's `**` walk paths
    that double at every turn: `prepare` never ended. A link elsewhere is still followed."""
    (folder / "b" / "up").symlink_to("..")
    (folder / "b" / "top").symlink_to(folder)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "d.txt").write_text("delta\n")
    (folder / "more").symlink_to(tmp_path / "more")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(charlstm.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-m", "charlstm", "prepare", "--no-progress", "--data",
                          f"{folder}/**/*.txt"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0 and "3 files" in out.stdout, out.stdout + out.stderr
    corpus = prepare(data_cfg(f"{folder}/**/*.txt"))
    assert text_of(corpus) == "alpha\n\nbeta\n\ndelta\n"


def test_folder_without_text_files_is_a_clear_error(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="has no text files"):
        prepare(data_cfg(tmp_path / "bin"))


def test_cache_is_built_once_then_memory_mapped(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text(synthetic_text(5000))
    cfg = data_cfg(src)
    first = prepare(cfg)
    tokens_file = next(cache_dir(cfg).glob("*.tokens"))
    built = tokens_file.stat().st_mtime_ns
    second = prepare(cfg)
    assert isinstance(second.tokens, np.memmap)
    assert tokens_file.stat().st_mtime_ns == built                 # not rebuilt
    np.testing.assert_array_equal(first.tokens, second.tokens)
    sidecar = json.loads(next(cache_dir(cfg).glob("*.json")).read_text())
    assert sidecar["sources"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sidecar["vocab"] == first.vocab.chars


@pytest.mark.parametrize("sources", [5, [1], [], [{"size": "x"}], [None, None], "deep"])
def test_a_damaged_cache_sidecar_is_built_again(tmp_path, sources):
    src = tmp_path / "t.txt"
    src.write_text(synthetic_text(2000))
    cfg = data_cfg(src)
    first = prepare(cfg)
    path = next(cache_dir(cfg).glob("*.json"))
    meta = json.loads(path.read_text())
    path.write_text("[" * 100_000 if sources == "deep" else json.dumps(dict(meta, sources=sources)))
    again = prepare(cfg)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert json.loads(path.read_text())["sources"] == meta["sources"]


def test_changed_source_rebuilds_and_says_so(tmp_path):
    src = tmp_path / "t.txt"
    src.write_text("hello world " * 100)
    cfg = data_cfg(src)
    prepare(cfg)
    said = []
    src.write_text("hello there " * 100)
    corpus = prepare(cfg, echo=said.append)
    assert "changed" in said[0] and text_of(corpus).startswith("hello there")
    src.touch()                                                    # same content, new mtime
    said.clear()
    prepare(cfg, echo=said.append)
    assert said == []


def test_wide_vocabulary_uses_uint16(tmp_path):
    src = tmp_path / "cjk.txt"
    src.write_text("".join(chr(0x4E00 + i % 400) for i in range(5000)), encoding="utf-8")
    corpus = prepare(data_cfg(src))
    assert corpus.tokens.dtype == np.uint16 and len(corpus.vocab) == 400


def test_bad_utf8_in_a_late_chunk_names_the_offset(tmp_path, monkeypatch):
    monkeypatch.setattr("charlstm.corpus.CHUNK", 64)
    src = tmp_path / "bad.txt"
    src.write_bytes(b"a" * 130 + b"\xff" + b"b" * 10)
    with pytest.raises(DataError, match="offset 130"):
        prepare(data_cfg(src))
    assert text_of(prepare(data_cfg(src, errors="replace"))).count("\ufffd") == 1


def test_multibyte_characters_split_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("charlstm.corpus.CHUNK", 7)
    src = tmp_path / "u.txt"
    text = "añ€😀" * 50
    src.write_text(text, encoding="utf-8")
    assert text_of(prepare(data_cfg(src))) == text


@pytest.mark.parametrize("chunk", [2, 4 << 20])      # 2: the mark split across two reads
def test_a_byte_order_mark_is_not_a_character_of_the_text(tmp_path, monkeypatch, chunk):
    """Was U+FEFF in the vocabulary, learned (and sampled) at the start of every file."""
    monkeypatch.setattr("charlstm.corpus.CHUNK", chunk)
    root = tmp_path / "bom"
    root.mkdir()
    (root / "a.txt").write_bytes(b"\xef\xbb\xbfalpha\n")
    (root / "b.txt").write_bytes(b"\xef\xbb\xbfbeta \xef\xbb\xbf\n")   # one inside: text
    corpus = prepare(data_cfg(root, separator="|"))
    assert text_of(corpus) == "alpha\n|beta \ufeff\n"
    assert corpus.sources[0]["sha256"] == hashlib.sha256(b"\xef\xbb\xbfalpha\n").hexdigest()
    (root / "only.txt").write_bytes(b"\xef\xbb\xbf")
    one_line_error(invoke("prepare", "--data", root / "only.txt"), "holds no text")


def test_preparing_a_large_corpus_keeps_memory_bounded(tmp_path):
    """40 MB of text: streaming keeps the peak far below what reading it whole would take."""
    big = tmp_path / "big.txt"
    block = synthetic_text(1 << 20).encode()
    with open(big, "wb") as f:
        for _ in range(40):
            f.write(block)
    # the peak of the child's own image (VmHWM): getrusage would include the parent's from fork
    code = ("import sys; from charlstm.cli import main; from charlstm.bench import peak_rss_mb\n"
            "sys.argv = ['charlstm'] + sys.argv[1:]\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert not e.code\nprint('PEAK', int(peak_rss_mb()))")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(charlstm.__file__).parents[1])}
    for args in (["prepare", "--data", big],
                 ["train", "configs/tiny.yaml", "--data", big, "--out", tmp_path / "r",
                  "--no-progress", "--set", "train.max_steps=2", "--set", "data.val_fraction=0.01"]):
        out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                             text=True, env=env, check=True).stdout
        peak = int(out.rsplit("PEAK", 1)[1])
        assert peak < 200, f"{args[0]} peaked at {peak} MB for a 40 MB corpus"


def test_test_split_and_eval_on_the_runs_own_data(tmp_path, corpus):
    out = tmp_path / "r"
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress",
                    "--set", "data.test_fraction=0.1")
    assert result.exit_code == 0, result.output
    val = json.loads(invoke("eval", out / "best.npz", "--split", "val", "--json").output)
    test = json.loads(invoke("eval", out / "best.npz", "--split", "test", "--json").output)
    n = len(corpus.read_text())
    assert val["chars"] == round(n * 0.1) - 1 and test["chars"] == round(n * 0.1) - 1
    assert val["loss"] != test["loss"]
    usage = invoke("eval", out / "best.npz")
    assert usage.exit_code == 2 and "--split" in usage.output


def test_eval_test_split_needs_one(tmp_path, corpus):
    out = tmp_path / "r"
    invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress")
    result = invoke("eval", out / "best.npz", "--split", "test")
    assert result.exit_code == 1 and "test_fraction" in result.output
    no_internal_error(result.output)


def test_a_token_cache_that_cannot_be_written_is_one_line(tmp_path, corpus, monkeypatch):
    """Was "Error: File exists '...'" or "Error: Not a directory '...'" (and, where the folder is
    read-only, "Permission denied" naming a temporary file), saying nothing to do."""
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    result = invoke("prepare", "--data", corpus, "--set", f"data.cache_dir={taken}")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0] == (f"Error: could not write the token cache in '{taken}': it is not a "
                        "folder; point data.cache_dir (or XDG_CACHE_HOME) at a folder you can "
                        "write to")
    out = tmp_path / "r"                  # eval --split rebuilds a cache lost since training
    invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress")
    monkeypatch.setenv("XDG_CACHE_HOME", str(taken))
    result = invoke("eval", out / "best.npz", "--split", "val")
    assert result.exit_code == 1, result.output
    assert f"could not write the token cache in '{taken / 'charlstm'}': " in result.output
    assert "XDG_CACHE_HOME" in result.output
    no_internal_error(result.output)


def test_prepare_command(folder):
    result = invoke("prepare", "--data", folder)
    assert result.exit_code == 0, result.output
    assert "3 files" in result.output and "vocabulary" in result.output
    missing = invoke("prepare", "--data", folder / "nope")
    assert missing.exit_code == 1 and "nope' not found" in missing.output
    no_internal_error(missing.output)


class Server:
    """A local HTTP server on 127.0.0.1 serving one folder, for download tests."""

    def __init__(self, root):
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
            *a, directory=str(root), **kw)
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "corpus.txt").write_text(synthetic_text(3000))
    s = Server(root)
    yield s, root
    s.close()


def test_download_verifies_and_moves_into_place(tmp_path, server):
    s, root = server
    digest = hashlib.sha256((root / "corpus.txt").read_bytes()).hexdigest()
    dest = tmp_path / "data" / "corpus.txt"
    corpus = prepare(data_cfg(dest, url=f"{s.url}/corpus.txt", sha256=digest))
    assert dest.read_bytes() == (root / "corpus.txt").read_bytes()
    assert len(corpus.tokens) == 3000
    assert [p.name for p in dest.parent.iterdir()] == ["corpus.txt"]


@pytest.mark.parametrize("case,words", [
    ("checksum", "failed its checksum"), ("missing", "404"), ("refused", "could not download")])
def test_failed_download_leaves_nothing(tmp_path, server, case, words):
    s, _ = server
    url = {"checksum": f"{s.url}/corpus.txt", "missing": f"{s.url}/nope.txt",
           "refused": "http://127.0.0.1:9/corpus.txt"}[case]
    dest = tmp_path / "data" / "corpus.txt"
    with pytest.raises(DataError, match=words):
        prepare(data_cfg(dest, url=url, sha256="0" * 64))
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []


def test_fine_tuning_keeps_the_vocabulary_and_reports_new_characters(tmp_path, corpus):
    base = tmp_path / "base"
    assert invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", base,
                  "--no-progress").exit_code == 0
    new = tmp_path / "new.txt"
    new.write_text("the cat sat on the mat. ZQ! " * 200)
    out = tmp_path / "tuned"
    args = ["train", "configs/tiny.yaml", "--data", new, "--out", out, "--no-progress",
            "--init-from", base, "--set", "train.max_steps=10",       # a run folder: its best.npz
            "--set", "train.eval_every=10"]
    # a --set that would change the checkpoint's net is refused, not ignored
    one_line_error(invoke(*args, "--set", "model.hidden_size=64", "--set", "model.cell=gru"),
                   f"--init-from '{base / 'best.npz'}' trains its own net (1 x 32 lstm, embedding 16)",
                   "--set model.hidden_size=64 --set model.cell=gru would change; drop them")
    assert not out.exists()
    # a config file's other net is named in a line, and the checkpoint's trains
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(Path("configs/tiny.yaml").read_text().replace("hidden_size: 32",
                                                                    "hidden_size: 64"))
    result = invoke(*args[:1], bigger, *args[2:])
    assert result.exit_code == 0, result.output
    assert "fine-tuning keeps the net of" in result.output
    assert "not the config's model.hidden_size 64" in result.output
    assert "not in the checkpoint's vocabulary and are skipped" in result.output
    assert "'!.QZ'" in result.output
    from charlstm import checkpoint
    base_meta = checkpoint.read_meta(base / "best.npz")
    tuned_meta = checkpoint.read_meta(out / "last.npz")
    assert tuned_meta["vocab"] == base_meta["vocab"]
    assert tuned_meta["config"]["model"]["hidden_size"] == 32     # the checkpoint's, not 64
    assert tuned_meta["step"] == 10 and tuned_meta["init_from"]
    # resuming the fine-tuning run maps the text the same way
    more = invoke("train", "--resume", out, "--set", "train.max_steps=20", "--no-progress")
    assert more.exit_code == 0, more.output


def test_fine_tuning_on_a_text_of_none_of_the_checkpoint_characters_says_so(tmp_path, corpus):
    """Every character skipped: the split used to say the text had 0 characters and to raise
    data.val_fraction or use more text, neither of which can help."""
    base = tmp_path / "base"
    assert invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", base,
                  "--no-progress").exit_code == 0
    new = tmp_path / "new.txt"
    new.write_text("ZQXJ#" * 2000)
    result = invoke("train", "configs/tiny.yaml", "--data", new, "--out", tmp_path / "t",
                    "--no-progress", "--init-from", base)
    assert result.exit_code == 1
    no_internal_error(result.output)
    assert result.output.splitlines().count(
        "Error: none of the new text's characters are in the checkpoint's vocabulary, so "
        "data.unknown: skip leaves nothing to train on; fine-tune on a text in its characters "
        "('\\n acdefghmnorstwy'), or train afresh without --init-from") == 1
    assert not (tmp_path / "t" / "last.npz").exists()


def test_fine_tuning_replacement_character(tmp_path, corpus):
    base = tmp_path / "base"
    invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", base, "--no-progress")
    new = tmp_path / "new.txt"
    new.write_text("the cat sat on the mat, ZQ " * 200)
    result = invoke("train", "configs/tiny.yaml", "--data", new, "--out", tmp_path / "t",
                    "--no-progress", "--init-from", base / "best.npz", "--set",
                    "data.unknown= ", "--set", "train.max_steps=2")
    assert result.exit_code == 0, result.output
    assert "replaced by ' '" in result.output
    bad = invoke("train", "configs/tiny.yaml", "--data", new, "--out", tmp_path / "u",
                 "--init-from", base / "best.npz", "--set", "data.unknown=#")
    assert bad.exit_code == 1 and "not in the checkpoint's vocabulary" in bad.output
    no_internal_error(bad.output)
    both = invoke("train", "--resume", base, "--init-from", base / "best.npz")
    assert both.exit_code == 1 and "--init-from" in both.output
    no_internal_error(both.output)


def test_an_unreadable_file_in_a_data_folder_is_named(tmp_path):
    """It was left out without a word (as if binary): the run trained on less than the folder."""
    import os
    import shutil
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("the cat sat on the mat\n" * 50)
    (folder / "b.txt").write_text("the dog sat on the log\n" * 50)
    (folder / "b.txt").chmod(0)
    command = [sys.executable, "-m", "charlstm", "prepare", "--data", str(folder), "--no-progress"]
    if os.geteuid() == 0:                 # root reads any file: drop that power for the child
        if not shutil.which("setpriv"):
            pytest.skip("runs as root without setpriv")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search"] + command
    child = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert child.returncode == 1, child
    assert child.stderr == (f"Error: data file '{folder / 'b.txt'}' cannot be read (Permission "
                            "denied); check its permissions, or move it out of the folder\n")


def test_a_download_stopped_by_sigterm_leaves_nothing_behind(tmp_path):
    """SIGTERM ended the process where it stood, and the partial file stayed (hidden, as large
    as what had come)."""
    import signal
    import time

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):                                   # 64 KB, then a trickle for 20 s
            self.send_response(200)
            self.send_header("Content-Length", str(10 ** 9))
            self.end_headers()
            self.wfile.write(b"a" * 65536)
            for _ in range(200):
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.1)

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    dest = tmp_path / "data" / "corpus.txt"
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "charlstm", "prepare", "--data", str(dest), "--no-progress",
             "--set", f"data.url=http://127.0.0.1:{httpd.server_address[1]}/corpus.txt"],
            stderr=subprocess.PIPE, text=True)
        for _ in range(200):                                # the partial file, at most 10 s
            if dest.parent.exists() and any(p.stat().st_size for p in dest.parent.iterdir()):
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
        assert child.stderr.read() == "SIGTERM received: exiting now\n"
        assert list(dest.parent.iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


# Runs `charlstm prepare`; its second pass (the tokens) says so through a marker file and hangs.
HANGS_WRITING_TOKENS = r"""
import sys, time
from pathlib import Path
from charlstm import data
marker = Path(sys.argv[1])
def encode(self, text):
    marker.touch()
    time.sleep(30)
data.Vocab.encode = encode
from charlstm.cli import main
sys.argv = ["charlstm"] + sys.argv[2:]
main()
"""


def test_sigterm_while_the_token_cache_is_built_leaves_nothing_and_says_so(tmp_path):
    """SIGTERM ended `prepare` (and train's first step) where it stood: no line, exit -15, and
    the half-written token file stayed in the cache folder, never to be used or removed."""
    import signal
    import time

    text, cache, marker = tmp_path / "text.txt", tmp_path / "cache", tmp_path / "marker"
    text.write_text(synthetic_text(5000))
    child = subprocess.Popen(
        [sys.executable, "-c", HANGS_WRITING_TOKENS, str(marker), "prepare", "--data", str(text),
         "--set", f"data.cache_dir={cache}", "--no-progress"],
        stderr=subprocess.PIPE, text=True, env=_env_of_the_charlstm_under_test())
    try:
        for _ in range(200):                                # at most 10 s
            if marker.exists():
                break
            time.sleep(0.05)
        assert [p.name for p in cache.iterdir()][0].endswith(f".tokens.tmp-{child.pid}")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 128 + signal.SIGTERM
        assert child.stderr.read() == "SIGTERM received: exiting now\n"
        assert list(cache.iterdir()) == []
    finally:
        child.kill()
        child.wait()


def test_the_temporaries_of_a_killed_build_are_removed_by_the_next(tmp_path):
    """SIGKILL (or the OOM killer) mid-build left a temporary as large as the tokens written so
    far, under a name no later build reuses: each killed build added one, for good."""
    import fcntl

    text, cache = tmp_path / "text.txt", tmp_path / "cache"
    text.write_text(synthetic_text(5000))
    cfg = load_config(None, [f"data.path={text}", f"data.cache_dir={cache}"])
    fresh = np.array(prepare(cfg.data).tokens)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=10)
    dead = int(gone.stdout)                                 # the pid of a process now ended
    key = next(cache.glob("*.tokens")).stem
    (cache / f"{key}.json").unlink()                        # killed before its sidecar was saved
    stale = [cache / f"{key}.tokens.tmp-{dead}", cache / f"other.json.tmp-{dead}"]
    live = [cache / f"{key}.tokens.tmp-{os.getppid()}", cache / f"held.tokens.tmp-{dead}"]
    for p in stale + live:
        p.write_bytes(b"\x01" * 100)
    with open(live[1], "rb") as held:                       # a build on another machine
        fcntl.flock(held, fcntl.LOCK_EX)
        again = prepare(cfg.data)
    assert np.array_equal(np.array(again.tokens), fresh)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in live)


def _env_of_the_charlstm_under_test():
    return dict(os.environ, PYTHONPATH=str(Path(charlstm.__file__).parents[1]))
