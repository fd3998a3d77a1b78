"""Every command through click's CliRunner, on configs/tiny.yaml and a corpus made here."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from charlstm import __version__
from charlstm.cli import cli
from charlstm.evaluate import evaluate
from charlstm.runstate import load_model
from charlstm.sample import generate

from helpers import invoke, one_line_error, synthetic_text


@pytest.fixture
def run_dir(tmp_path, corpus):
    out = tmp_path / "run"
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert f"charlstm sample {out / 'best.npz'}" in result.output
    return out


def test_version_and_help():
    assert __version__ in invoke("--version").output
    for cmd in ["train", "sample", "eval", "info"]:
        result = invoke(cmd, "--help")
        assert result.exit_code == 0 and "charlstm " + cmd in result.output   # has an example


def test_python_dash_m_works_like_the_command():
    out = subprocess.run([sys.executable, "-m", "charlstm", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert __version__ in out


def test_train_writes_the_run_folder(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "last.npz",
                                                   "best.npz"}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r for r in records)
    assert any("train_loss" in r for r in records) and any("val_loss" in r for r in records)


def test_train_set_overrides_and_resume(tmp_path, corpus):
    out = tmp_path / "r"
    result = invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out, "--no-progress",
                    "--set", "train.max_steps=10", "--set", "train.eval_every=5")
    assert result.exit_code == 0, result.output
    result = invoke("train", "--resume", out, "--set", "train.max_steps=20", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "step 20" in result.output
    one_line_error(invoke("train", "--resume", out, "--no-progress"), "already finished")
    one_line_error(invoke("train", "--resume", out, "--set", "model.num_layers=2"),
                   "model.num_layers")


def test_sample_streams_prime_then_text(run_dir):
    result = invoke("sample", run_dir / "best.npz", "--prime", "the ", "--length", 50,
                    "--seed", 3)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the ") and len(result.output.rstrip("\n")) >= 50
    again = invoke("sample", run_dir / "best.npz", "--prime", "the ", "--length", 50, "--seed", 3)
    assert again.output == result.output
    multi = invoke("sample", run_dir / "best.npz", "--length", 20, "--num-samples", 3,
                   "--top-k", 3, "--top-p", 0.9, "--temperature", 0.7)
    assert multi.exit_code == 0 and multi.output.count("-" * 40) == 2
    assert invoke("sample", run_dir / "last.npz", "--argmax", "--length", 5).exit_code == 0


def test_sample_errors(run_dir):
    ckpt = run_dir / "best.npz"
    one_line_error(invoke("sample", ckpt, "--prime", "Zeta#"), "'#Z'", "--skip-unknown")
    assert invoke("sample", ckpt, "--prime", "Zeta#", "--skip-unknown", "--length", 3
                  ).output.startswith("eta")
    one_line_error(invoke("sample", ckpt, "--temperature", 0), "--temperature")
    one_line_error(invoke("sample", ckpt, "--temperature", "1e309"),
                   "--temperature must be a finite number > 0, got inf")
    one_line_error(invoke("sample", ckpt, "--top-p", 2), "--top-p")
    one_line_error(invoke("sample", ckpt, "--top-k", -1), "--top-k")
    one_line_error(invoke("sample", ckpt, "--length", -1), "--length")
    one_line_error(invoke("sample", run_dir / "nope.npz"), "not found")
    for one in (["--beam", 2], ["--argmax"]):      # the same text N times over
        result = invoke("sample", ckpt, *one, "--num-samples", 3)
        assert result.exit_code == 2 and f"{one[0]} gives one text; drop --num-samples" in \
            result.output, result.output


def test_a_prime_refused_for_its_characters_is_named_by_where_it_came_from(run_dir, tmp_path):
    """Was "--prime has characters ..." for a --prime-file, and for the checkpoint's own
    sample.prime when no --prime was given."""
    from charlstm.checkpoint import load_checkpoint, save_checkpoint
    ckpt = run_dir / "best.npz"
    scene = tmp_path / "scene.txt"
    scene.write_bytes(b"the cat\r\n")
    one_line_error(invoke("sample", ckpt, "--prime-file", scene, "--length", 3),
                   f"--prime-file '{scene}' has characters not in the model's vocabulary: '\\r'",
                   "--skip-unknown")
    arrays, meta = load_checkpoint(ckpt)
    meta["config"]["sample"]["prime"] = "the #"
    save_checkpoint(tmp_path / "c.npz", arrays, meta)
    one_line_error(invoke("sample", tmp_path / "c.npz", "--length", 3),
                   f"sample.prime in the config of '{tmp_path / 'c.npz'}' (--prime replaces it) "
                   "has characters not in the model's vocabulary: '#'")
    result = invoke("sample", tmp_path / "c.npz", "--length", 3, "--prime", "the ")
    assert result.exit_code == 0 and result.output.startswith("the "), result.output


def test_a_prime_or_eval_file_saved_with_a_byte_order_mark(run_dir, tmp_path):
    """Was refused: "has characters not in the model's vocabulary: '\\ufeff'" (an editor's mark
    the user cannot see, and eval has no option to skip it)."""
    text = tmp_path / "bom.txt"
    text.write_bytes(b"\xef\xbb\xbfthe cat sat on the mat\n")
    result = invoke("eval", run_dir / "best.npz", "--text", text, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chars"] == len("the cat sat on the mat\n") - 1
    result = invoke("sample", run_dir / "best.npz", "--prime-file", text, "--length", 3)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the cat sat on the mat\n"), result.output


def test_eval_reports_loss_bpc_perplexity(run_dir, corpus):
    result = invoke("eval", run_dir / "best.npz", "--text", corpus, "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert set(r) == {"loss", "bpc", "perplexity", "chars"}
    assert r["chars"] == len(corpus.read_text()) - 1
    assert abs(r["bpc"] - r["loss"] / 0.6931471805599453) < 1e-9
    human = invoke("eval", run_dir / "best.npz", "--text", corpus)
    assert "bits/char" in human.output and "perplexity" in human.output


def test_sample_and_eval_start_from_the_state_the_checkpoint_carried(run_dir, corpus):
    """Not from the zero state, which a trained net has not met since its first step."""
    params, vocab, _, _, start = load_model(run_dir / "best.npz", with_start=True)
    assert start is not None and np.abs(start[1]).max() > 0
    shown = invoke("sample", run_dir / "best.npz", "--prime", "the ", "--length", 60,
                   "--seed", 4).output
    ours = "".join(generate(params, vocab, 60, np.random.default_rng(4), prime="the ",
                            start=start))
    zero = "".join(generate(params, vocab, 60, np.random.default_rng(4), prime="the "))
    assert shown == "the " + ours + "\n" and ours != zero
    measured = json.loads(invoke("eval", run_dir / "best.npz", "--text", corpus, "--json").output)
    tokens = vocab.encode(corpus.read_text())
    assert measured["loss"] == pytest.approx(evaluate(params, tokens, start=start)[0], rel=1e-6)
    assert measured["loss"] != pytest.approx(evaluate(params, tokens)[0], rel=1e-6)


def test_eval_split_refuses_a_text_changed_since_training(run_dir, corpus):
    assert invoke("eval", run_dir / "best.npz", "--split", "val").exit_code == 0
    corpus.write_text(corpus.read_text() + "more text, after the run")
    one_line_error(invoke("eval", run_dir / "best.npz", "--split", "val"),
                   f"'{corpus}' changed", "no longer the held-out text", "--text FILE")


def test_eval_split_from_another_folder_reads_the_recorded_files(tmp_path, corpus, monkeypatch):
    """A run trained on a relative --data: its checkpoint records the file's absolute path, so
    eval --split finds it from any folder (it said "data file 'corpus.txt' not found")."""
    config = Path("configs/tiny.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    assert invoke("train", config, "--data", corpus.name, "--out", "run",
                  "--no-progress").exit_code == 0
    here = json.loads(invoke("eval", "run", "--split", "val", "--json").output)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    there = invoke("eval", tmp_path / "run", "--split", "val", "--json")
    assert there.exit_code == 0, there.output
    assert json.loads(there.output) == here
    corpus.write_text(corpus.read_text() + "more")          # and a change is still refused
    one_line_error(invoke("eval", tmp_path / "run", "--split", "val"), "changed")


def test_sample_into_a_closed_pipe_ends_quietly(run_dir):
    """`charlstm sample ... | head -c 10`: no "Broken pipe" error and no traceback, as cat."""
    child = subprocess.Popen([sys.executable, "-m", "charlstm", "sample", str(run_dir / "best.npz"),
                              "--length", "200000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert len(child.stdout.read(10)) == 10
    child.stdout.close()
    assert child.wait(timeout=120) == 1
    assert child.stderr.read() == b""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_says_what_to_do(run_dir):
    """An OSError from the system says what happened, to which file, and for the errors a
    user's disk or files cause, what to do."""
    with open("/dev/full", "w") as full:
        child = subprocess.run([sys.executable, "-m", "charlstm", "sample",
                                str(run_dir / "best.npz"), "--length", "100"], stdout=full,
                               stderr=subprocess.PIPE, timeout=120)
    assert child.returncode == 1
    assert child.stderr.decode() == ("Error: No space left on device; free some disk space, or "
                                     "write elsewhere\n")


def test_an_error_naming_a_file_with_a_line_break_is_one_line(tmp_path):
    one_line_error(invoke("train", "--data", tmp_path / "no\nsuch.txt"),
                   f"data file '{tmp_path}/no\\nsuch.txt' not found")


def invoke_apart(*args):
    """invoke, with stdout and stderr kept apart (click 8.2+ always does; 8.1 when asked)."""
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, [str(a) for a in args])


def test_eval_progress_bar_on_stderr_leaves_the_result_alone(run_dir, corpus):
    for form in ([], ["--json"]):
        args = ["eval", run_dir / "best.npz", "--text", corpus, *form]
        plain, bar, off = (invoke_apart(*args, *flag) for flag in
                           ([], ["--progress"], ["--no-progress"]))
        assert plain.exit_code == bar.exit_code == off.exit_code == 0, bar.output
        assert plain.stdout == bar.stdout == off.stdout != ""
        assert plain.stderr == off.stderr == ""            # a CliRunner stderr is no terminal
        chars = f"{(len(corpus.read_text()) - 1) / 1000:.1f}k"          # 19,999 -> 20.0k
        assert "eval:" in bar.stderr and f"/{chars}" in bar.stderr and "char/s" in bar.stderr
    assert json.loads(plain.stdout)["chars"] == len(corpus.read_text()) - 1


def test_eval_shows_the_bar_by_default_on_a_terminal(run_dir, corpus):
    termios = pytest.importorskip("termios", reason="needs a Unix terminal")
    import fcntl
    import os
    import pty
    import struct
    main, term = pty.openpty()
    # a terminal's size: in a 0 x 0 one, tqdm draws nothing
    fcntl.ioctl(term, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    here = str(Path(__file__).resolve().parents[1])        # this checkout's charlstm
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get(
        "PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-m", "charlstm", "eval", str(run_dir / "best.npz"),
                              "--text", str(corpus), "--json"], stdout=subprocess.PIPE,
                             stderr=term, env=env)
    os.close(term)                                          # the child holds the terminal now
    seen = b""
    try:
        while chunk := os.read(main, 4096):
            seen += chunk
    except OSError:                                         # the child closed it: all read
        pass
    finally:
        os.close(main)
    assert child.wait(timeout=60) == 0 and json.loads(child.stdout.read())["chars"] > 0
    assert b"eval:" in seen and b"char/s" in seen


def test_eval_errors(run_dir, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("QQQ unknown ###")
    one_line_error(invoke("eval", run_dir / "best.npz", "--text", other), "vocabulary")
    one_line_error(invoke("eval", run_dir / "best.npz", "--text", tmp_path / "missing.txt"),
                   "text file", "not found")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"the \xff cat")
    result = invoke("eval", run_dir / "best.npz", "--text", bad)
    one_line_error(result, f"text file '{bad}' is not valid UTF-8", "offset 4", "fix the file")
    assert "data.errors" not in result.output        # eval has no such key to set


def test_info_describes_the_checkpoint(run_dir):
    result = invoke("info", run_dir / "last.npz")
    assert result.exit_code == 0, result.output
    for words in ["step 40", "parameters", "best val loss", "vocabulary", "hidden_size: 32"]:
        assert words in result.output


def test_info_counts_epochs_as_training_logs_them(tmp_path):
    """At the end of an epoch the stored epoch index is one less than the epochs trained."""
    text = tmp_path / "short.txt"
    text.write_text(synthetic_text(1500))       # 1,350 train chars: 10 windows of 8 x 16
    out = tmp_path / "run"
    result = invoke("train", "configs/tiny.yaml", "--data", text, "--out", out, "--no-progress",
                    "--set", "train.max_steps=20", "--set", "train.eval_every=10")
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 20 and logged[-1]["epoch"] == 2.0
    info = invoke("info", out / "last.npz")
    assert info.exit_code == 0, info.output
    assert "progress: step 20, epoch 2.00," in info.output


def test_info_escapes_a_combining_mark_in_the_vocabulary(tmp_path):
    """Printed raw, U+0301 joins the character before it ('y'): two would read as one (ý)."""
    text = tmp_path / "accents.txt"
    text.write_text(synthetic_text(5000).replace("cat", "cafe\u0301"), encoding="utf-8")
    out = tmp_path / "run"
    result = invoke("train", "configs/tiny.yaml", "--data", text, "--out", out, "--no-progress",
                    "--set", "train.max_steps=2", "--set", "train.eval_every=2")
    assert result.exit_code == 0, result.output
    info = invoke("info", out)
    assert info.exit_code == 0, info.output
    line = next(ln for ln in info.output.splitlines() if ln.startswith("vocabulary"))
    assert line.endswith("y\\u0301'") and "\u0301" not in line


def test_info_and_eval_take_a_run_folder_as_sample_does(run_dir, tmp_path):
    best = run_dir / "best.npz"
    for command, extra in (("info", []), ("eval", ["--split", "val", "--json"])):
        folder, file = invoke(command, run_dir, *extra), invoke(command, best, *extra)
        assert folder.exit_code == 0 and folder.output == file.output, folder.output
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("info", tmp_path / "empty"), "holds no checkpoint")


@pytest.mark.parametrize("args,words", [
    (["train", "missing.yaml"], ["missing.yaml"]),
    (["train", "configs/tiny.yaml", "--set", "model.hiden_size=3"], ["model.hidden_size"]),
    (["train", "configs/tiny.yaml", "--set", "optim.lr=-1"], ["optim.lr"]),
    (["train", "configs/tiny.yaml", "--set", "nonsense"], ["KEY=VALUE"]),
    (["train", "configs/tiny.yaml", "--data", "/no/such/file.txt"], ["/no/such/file.txt"]),
    (["info", "configs/tiny.yaml"], ["configs/tiny.yaml"]),
    (["train", "--resume", "/no/such/run"], ["/no/such/run"]),
])
def test_user_errors_are_one_line(args, words, tmp_path):
    one_line_error(invoke(*args, "--out", tmp_path / "o") if args[0] == "train" and "--resume"
                   not in args else invoke(*args), *words)


@pytest.mark.parametrize("option, value, key", [("--minutes", "5", "train.max_minutes=3"),
                                                ("--data", "x.txt", "data.path=y.txt"),
                                                ("--device", "cpu", " train.device = cpu")])
def test_an_option_and_a_set_of_its_key_are_refused_together(tmp_path, option, value, key):
    """Both were taken, one silently: --minutes 5 --set train.max_minutes=3 trained 5."""
    one_line_error(invoke("train", option, value, "--set", key, "--out", tmp_path / "o"),
                   f"both {option} and --set {key.split('=')[0].strip()} given; keep one")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["train", "--out", ""], ["train", "--resume", ""],
                                  ["train", "--init-from", ""], ["train", "--data", ""],
                                  ["prepare", "--data", ""]])
def test_an_empty_path_option_is_refused_by_name(args, tmp_path, corpus, monkeypatch):
    """An empty path (--out "$DIR" with DIR unset) named the current folder: train --out '' wrote
    a run's files into it, prepare --data '' prepared the built-in corpus instead."""
    monkeypatch.chdir(tmp_path)
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    extra = [] if "--resume" in args else ["--no-progress"] + (
        [tiny, "--data", corpus, "--set", "train.max_steps=2"] if args[0] == "train" and
        "--data" not in args else [])
    result = invoke(*args, *extra)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '{args[1]}': an empty path; give one (is a shell variable "
        "unset?)"), result.output
    assert list(tmp_path.iterdir()) == [corpus], list(tmp_path.iterdir())


@pytest.fixture
def remote_config(tmp_path, corpus, monkeypatch):
    """configs/tiny.yaml on a corpus the config downloads (url + sha256); a download fails the test
    unless a test sets downloads["allow"]."""
    import charlstm.corpus
    cfg = tmp_path / "remote.yaml"
    cfg.write_text(f"data:\n  path: {corpus}\n  url: https://example.invalid/input.txt\n"
                   f"  sha256: {'ab' * 32}\n" + open("configs/tiny.yaml").read())
    downloads = {"allow": False, "calls": []}

    def download(url, dest, sha256=None, progress=False):
        assert downloads["allow"], f"downloaded {url} to {dest}"
        downloads["calls"].append((url, str(dest), sha256))
        Path(dest).write_text(corpus.read_text())
    monkeypatch.setattr(charlstm.corpus, "download", download)
    return cfg, downloads


@pytest.mark.parametrize("how", ["--data", "--set"])
def test_data_replaces_the_configs_source_and_never_downloads(tmp_path, remote_config, how):
    cfg, downloads = remote_config
    typo = tmp_path / "mytxet.txt"
    args = ["--data", typo] if how == "--data" else ["--set", f"data.path={typo}"]
    one_line_error(invoke("train", cfg, *args, "--out", tmp_path / "o"), f"'{typo}' not found")
    one_line_error(invoke("prepare", cfg, *args), f"'{typo}' not found")
    assert not typo.exists() and not downloads["calls"]


def test_data_with_its_own_url_downloads_that(tmp_path, remote_config, corpus):
    cfg, downloads = remote_config
    downloads["allow"] = True
    other = tmp_path / "other.txt"
    result = invoke("prepare", cfg, "--data", other, "--set", "data.url=https://example.invalid/o")
    assert result.exit_code == 0, result.output
    assert downloads["calls"] == [("https://example.invalid/o", str(other), None)]


def test_resume_with_data_drops_the_saved_url_too(tmp_path, remote_config):
    cfg, downloads = remote_config
    out = tmp_path / "r"
    result = invoke("train", cfg, "--out", out, "--no-progress", "--set", "train.max_steps=5")
    assert result.exit_code == 0, result.output          # the config's own file: no download
    typo = tmp_path / "mytxet.txt"
    one_line_error(invoke("train", "--resume", out, "--data", typo, "--set", "train.max_steps=10"),
                   f"'{typo}' not found")
    assert not typo.exists() and not downloads["calls"]


def test_too_short_text_is_a_clear_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("hello world " * 5)
    one_line_error(invoke("train", "configs/tiny.yaml", "--data", short, "--out", tmp_path / "o"),
                   "train.batch_size", "data.val_fraction (or data.test_fraction)")


@pytest.mark.parametrize("key,recipe", [("model.hidden_size=99999999999", "off"),
                                        ("model.hidden_size=200000", "off"),
                                        ("model.embedding_size=99999999999", "auto"),
                                        ("model.num_layers=1000000000", "off"),
                                        ("model.num_layers=1000000000", "auto"),
                                        ("model.hidden_size=1e308", "off")])
def test_a_net_too_big_for_memory_is_a_clear_error(tmp_path, corpus, key, recipe):
    """Before any allocation: not NumPy's "Maximum allowed dimension exceeded" (an internal
    error) nor its allocation message from the recipe's timing process; a billion layers are
    counted, not listed (a billion-entry table of shapes ran for minutes and out of memory)."""
    one_line_error(invoke("train", "--data", corpus, "--set", key, "--set",
                          f"train.recipe={recipe}", "--set", "train.max_minutes=1",
                          "--dry-run" if recipe == "auto" else "--no-progress",
                          "--out", tmp_path / "o"), key.split("=")[0], "GiB")


def test_train_without_config_uses_the_builtin_corpus(tmp_path):
    """The offline default: no config, no data file, no network."""
    out = tmp_path / "default"
    result = invoke("train", "--out", out, "--no-progress", "--set", "train.max_steps=2",
                    "--set", "train.sample_length=20")
    assert result.exit_code == 0, result.output
    assert "standard library" in result.output and "--- sample ---" in result.output
    assert "charlstm sample" in result.output


@pytest.mark.parametrize("name", ["tiny", "shakespeare"])
def test_shipped_configs_are_valid(name):
    from charlstm.config import load_config
    cfg = load_config(f"configs/{name}.yaml")
    if name == "shakespeare":
        assert cfg.data.url and cfg.data.sha256 == (
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
        assert cfg.train.max_minutes == 10


# --- the first run on your own text --------------------------------------------------------

def test_runs_are_named_after_their_data_and_never_collide(tmp_path, monkeypatch, corpus):
    monkeypatch.chdir(tmp_path)
    for folder in ("runs/corpus", "runs/corpus-2"):        # the second run does not fail
        result = invoke("train", "--data", corpus, "--set", "train.max_steps=3",
                        "--set", "train.sample_length=0", "--no-progress")
        assert result.exit_code == 0, result.output
        assert f"run folder: {folder}\n" in result.output
        assert (tmp_path / folder / "best.npz").exists()
    assert "step 3 (epoch 0.43): val loss" in result.output   # 3 of 7 windows of 50 x 50


@pytest.mark.parametrize("dropout, warned", [(0.0, True), (0.1, False)])
def test_a_run_that_will_overfit_says_so(tmp_path, dropout, warned):
    text = tmp_path / "short.txt"
    text.write_text(synthetic_text(2_000))              # 14 windows of 8 x 16: 200 steps = 14 epochs
    result = invoke("train", "configs/tiny.yaml", "--data", text, "--out", tmp_path / "r",
                    "--set", "train.max_steps=200", "--set", f"model.dropout={dropout}",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    said = "warning: this run will read its 1,800-character training text about 14 times"
    assert (said in result.output) == warned, result.output


@pytest.mark.parametrize("path, name", [("notes.txt", "notes"), ("books/", "books"),
                                        ("code/**/*.py", "code"), ("*.txt", "data"),
                                        ("/tmp/x/lyrics.md", "lyrics"), (["a/b.txt", "c"], "b"),
                                        (None, "python-stdlib")])
def test_a_run_folder_is_named_after_the_data_even_a_glob(path, name):
    from types import SimpleNamespace
    from charlstm.runfolder import run_name
    assert run_name(None, SimpleNamespace(data=SimpleNamespace(path=path))) == name
    assert run_name("configs/shakespeare.yaml", None) == "shakespeare"


def test_help_examples_ask_only_for_splits_their_runs_have():
    """eval --help showed `eval runs/shakespeare --split test`, and configs/shakespeare.yaml (as
    every shipped config) holds out no test split: the example ended in an error."""
    import re

    from charlstm.config import load_config
    for line in invoke("eval", "--help").output.splitlines():
        split = re.search(r"--split (\w+)", line)
        run = re.search(r"charlstm eval runs/([\w-]+)", line)
        if split and run and split[1] == "test":
            cfg = load_config(f"configs/{run[1]}.yaml")
            assert cfg.data.test_fraction > 0, line


def test_bench_help_shows_its_own_defaults_and_that_a_config_replaces_them():
    """bench --help said "--layers [default: 2]" and `bench configs/shakespeare.yaml` took the
    config's 1 layer: a default shown must say which one holds when."""
    import re

    from charlstm.bench import bench_config
    from charlstm.cli import _BENCH_KEYS
    cfg = bench_config()
    text = " ".join(invoke("bench", "--help").output.split("Options:")[1].split())
    for option, key in _BENCH_KEYS.items():
        flag = "--" + option.replace("_", "-")
        shown = re.search(rf"{flag} \S+(?: RANGE)? [^[]*\[default: ([^]]+)\]", text)
        if shown:
            section, name = key.split(".")
            assert shown[1] == f"{getattr(getattr(cfg, section), name)}, or the CONFIG's", option
