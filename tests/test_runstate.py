"""A run's saved state: old checkpoints still load, resume refuses a changed data stream, one
writer per run folder, and `info` refuses what `sample` refuses. All through the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import charlstm
from charlstm import checkpoint
from charlstm.cli import cli
from charlstm.evaluate import evaluate, split_tokens
from charlstm.runstate import load_model

from helpers import synthetic_text

FIXTURES = Path(__file__).parent / "fixtures"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result, notes=0):
    """The one line of a user error (non-zero exit, no traceback, never an internal error),
    after `notes` lines of progress such as "rebuilding the cache"."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(lines) == 1 + notes and len(errors) == 1, result.output
    assert "internal error" not in errors[0] and "Traceback" not in result.output
    return errors[0]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(out, data, *sets):
    args = ["train", "configs/tiny.yaml", "--data", data, "--out", out, "--no-progress"]
    result = invoke(*args, *[x for s in ("train.max_steps=10", *sets) for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    return out


def resume(out, *sets):
    return invoke("train", "--resume", out, "--no-progress",
                  *[x for s in ("train.max_steps=20", *sets) for x in ("--set", s)])


# --- a checkpoint written by the code before runstate.py (tests/fixtures/make_v1_run.py) -------

@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "v1-run"
    shutil.copytree(FIXTURES / "v1-run", run)
    return run


def test_old_checkpoint_samples_evaluates_and_describes(old_run):
    expected = json.loads((FIXTURES / "v1-expected.json").read_text())
    ckpt = old_run / "last.npz"
    info = invoke("info", ckpt)
    assert info.exit_code == 0, info.output
    assert "step 6, epoch 0 + 6 windows," in info.output and "vocabulary (11)" in info.output
    sample = invoke("sample", ckpt, "--length", 30, "--seed", 1, "--prime", "bad ")
    assert sample.exit_code == 0, sample.output
    assert set(sample.output) <= set((FIXTURES / "v1-corpus.txt").read_text())
    result = invoke("eval", ckpt, "--text", FIXTURES / "v1-corpus.txt", "--json")
    assert result.exit_code == 0, result.output
    # the old code measured from the zero state; eval starts from the carried state it saved
    params, vocab, _, _, start = load_model(ckpt, with_start=True)
    tokens = vocab.encode((FIXTURES / "v1-corpus.txt").read_text())
    assert evaluate(params, tokens)[0] == pytest.approx(expected["text_loss"], rel=1e-6)
    assert json.loads(result.output)["loss"] == pytest.approx(
        evaluate(params, tokens, start=start)[0], rel=1e-6)
    assert invoke("eval", ckpt, "--split", "test").exit_code == 0


def test_old_checkpoint_resumes_the_run_it_was_part_of(old_run):
    """Steps 7-9 after resuming step 6 log the losses the old code's uninterrupted run logged."""
    expected = json.loads((FIXTURES / "v1-expected.json").read_text())
    result = invoke("train", "--resume", old_run, "--set", "train.max_steps=9", "--no-progress")
    assert result.exit_code == 0, result.output
    logged = metrics(old_run)
    train_loss = {str(m["step"]): m["train_loss"] for m in logged if "train_loss" in m}
    assert sorted(train_loss) == ["7", "8", "9"]
    for step, loss in train_loss.items():
        assert loss == pytest.approx(expected["train_loss"][step], rel=1e-5), step
    val = [m["val_loss"] for m in logged if "val_loss" in m]
    params, vocab, cfg, meta, start = load_model(old_run / "last.npz", with_start=True)
    tokens = split_tokens(cfg, vocab, "val", old_run / "last.npz", meta.get("stream"))
    assert evaluate(params, tokens)[0] == pytest.approx(expected["val_loss"]["9"], rel=1e-5)
    assert val == [pytest.approx(evaluate(params, tokens, start=start)[0], rel=1e-6)]


def test_old_checkpoint_without_fingerprint_still_has_its_settings_checked(old_run):
    line = error_line(invoke("train", "--resume", old_run, "--no-progress", "--set",
                             "train.max_steps=9", "--set", "data.test_fraction=0.3"))
    assert "data.test_fraction: 0.1 -> 0.3" in line


# --- resume refuses anything that changes the data stream ---------------------------------------

def test_resume_refuses_a_changed_split(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    line = error_line(resume(out, "data.test_fraction=0.3", "train.seq_len=8"))
    assert "data.test_fraction: 0.0 -> 0.3" in line and "train.seq_len: 16 -> 8" in line
    assert "--init-from" in line and "--out" in line
    assert not any(m["step"] > 10 for m in metrics(out))          # nothing was trained


def test_resume_refuses_a_text_file_appended_to(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    with open(corpus, "a") as f:
        f.write("the cat sat on the mat ")                           # same characters
    line = error_line(resume(out), notes=1)                        # the cache's rebuilt
    assert f"'{corpus.resolve()}' changed (20,000 -> 20,023 bytes)" in line
    assert "--init-from" in line


def test_resume_refuses_a_folder_that_gained_a_file(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text(synthetic_text(12_000, seed=1))
    (books / "b.txt").write_text(synthetic_text(12_000, seed=2))
    out = train(tmp_path / "r", books)
    (books / "c.txt").write_text("the cat sat on the mat\n")
    line = error_line(resume(out))
    assert f"'{(books / 'c.txt').resolve()}' added" in line and "b.txt" not in line
    (books / "c.txt").unlink()
    (books / "b.txt").unlink()
    assert f"'{(books / 'b.txt').resolve()}' removed" in error_line(resume(out))


def test_resume_takes_changes_that_leave_the_stream_alone(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    result = resume(out, "optim.lr=0.001", "train.eval_every=5", "train.max_minutes=5",
                    "data.cache_dir=" + str(tmp_path / "elsewhere"), "model.dropout=0.1")
    assert result.exit_code == 0, result.output
    assert "step 20" in result.output
    # the text moved to another folder, byte for byte the same: the same stream
    moved = tmp_path / "moved.txt"
    shutil.copy(corpus, moved)
    result = resume(out, "train.max_steps=25", f"data.path={moved}")
    assert result.exit_code == 0, result.output


def test_resume_refuses_a_new_seed_only_where_it_moves_the_windows(tmp_path, corpus):
    fixed = train(tmp_path / "fixed", corpus)
    assert resume(fixed, "train.seed=7").exit_code == 0
    shifted = train(tmp_path / "shifted", corpus, "train.windows=shifted")
    assert "train.seed: 1337 -> 7" in error_line(resume(shifted, "train.seed=7"))


def test_checkpoint_records_the_stream(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    stream = checkpoint.read_meta(out / "last.npz")["stream"]
    assert stream["sources"] == [{"path": str(corpus.resolve()), "size": corpus.stat().st_size,
                                  "sha256": __import__("hashlib").sha256(
                                      corpus.read_bytes()).hexdigest()}]
    assert stream["tokens"] == len(corpus.read_text())


# --- one writer per run folder ------------------------------------------------------------------

def test_a_run_folder_in_use_is_refused_until_its_holder_dies(tmp_path, corpus):
    out = train(tmp_path / "r", corpus, "train.eval_every=5")
    env = dict(os.environ, PYTHONPATH=str(Path(charlstm.__file__).parents[1]))
    holder = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", "--resume", str(out), "--no-progress",
         "--set", "train.max_steps=100000", "--set", "train.eval_every=5"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not any(m["step"] > 10 for m in metrics(out)) and time.time() < deadline:
            assert holder.poll() is None, holder.stderr.read().decode()
            time.sleep(0.05)
        # (were they let in, a time limit would end them soon)
        for result in (resume(out, "train.max_minutes=0.02"),
                       invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", out)):
            line = error_line(result)
            assert f"'{out}'" in line and f"pid {holder.pid}" in line, line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    step = checkpoint.read_meta(out / "last.npz")["step"]
    result = resume(out, f"train.max_steps={step + 2}")            # the kernel freed the lock
    assert result.exit_code == 0, result.output


def test_the_lock_is_taken_before_the_folder_is_written(tmp_path, corpus):
    """A second training on a folder in use writes nothing there: not config.yaml, not metrics."""
    from charlstm.runfolder import FolderLock
    out = tmp_path / "r"
    lock = FolderLock(out)
    lock.acquire()
    other = subprocess.run(
        [sys.executable, "-m", "charlstm", "train", "configs/tiny.yaml", "--data", str(corpus),
         "--out", str(out), "--no-progress"], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(charlstm.__file__).parents[1])))
    assert other.returncode == 1 and f"pid {os.getpid()}" in other.stderr, other.stderr
    assert [p.name for p in out.iterdir()] == [".lock"]
    lock.release()
    train(out, corpus)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/null"),
                    reason="needs FIFOs and /dev/null")
@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_lock_file_that_is_not_a_regular_file_is_one_line(tmp_path, corpus, kind):
    """Was "Error: File or stream is not seekable." (a FIFO) or "Error: Invalid argument" (a
    device): neither named the file."""
    out = train(tmp_path / "r", corpus)
    lock = out / ".lock"
    lock.unlink()
    make = {"fifo": os.mkfifo, "device": lambda p: os.symlink("/dev/null", p), "folder": os.mkdir}
    make[kind](lock)
    line = error_line(resume(out))
    assert f"'{lock}' is not a regular file" in line and "remove it" in line, line
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.mkfifo(fresh / ".lock")
    assert f"'{fresh / '.lock'}' is not a regular file" in error_line(
        invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", fresh, "--no-progress"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path, corpus):
    """Was "Error: File exists '...'" and "Error: Not a directory '...'", saying nothing to do."""
    os.mkfifo(tmp_path / "pipe")
    line = error_line(invoke("train", "configs/tiny.yaml", "--data", corpus, "--out",
                             tmp_path / "pipe", "--no-progress"))
    assert f"run folder '{tmp_path / 'pipe'}' is not a folder" in line and "--out" in line, line
    under = tmp_path / "file.txt" / "run"
    (tmp_path / "file.txt").write_text("x")
    line = error_line(invoke("train", "configs/tiny.yaml", "--data", corpus, "--out", under,
                             "--no-progress"))
    assert f"could not use run folder '{under}': Not a directory" in line, line


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    result = invoke("train", "configs/tiny.yaml", "--data", tmp_path / "missing.txt", "--out",
                    tmp_path / "r")
    assert "missing.txt" in error_line(result)
    assert not (tmp_path / "r").exists()


# --- info checks what it can without reading array data -----------------------------------------

def rewrite(path, change_meta=None, change_arrays=None):
    """Rewrite a checkpoint through the checkpoint writer: a valid file that says something else."""
    arrays, meta = checkpoint.load_checkpoint(path)
    if change_meta:
        change_meta(meta)
    if change_arrays:
        change_arrays(arrays)
    checkpoint.save_checkpoint(path, arrays, meta)


def refusals(ckpt, run_dir=None):
    lines = [error_line(invoke("info", ckpt)),
             error_line(invoke("sample", ckpt, "--length", 5, "--seed", 0))]
    if run_dir:
        lines.append(error_line(invoke("train", "--resume", run_dir)))
    assert len(set(lines)) == 1, lines                      # the same message from every command
    return lines[0]


def test_info_refuses_a_vocabulary_that_does_not_fit_the_head(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    rewrite(out / "last.npz", lambda m: m.update(vocab=m["vocab"][:-1]))
    line = refusals(out / "last.npz", out)
    assert "vocabulary" in line and "head.weight" in line


@pytest.mark.parametrize("key, value, array", [
    ("hidden_size", 16, "lstm.weight_ih_l0"),      # the wrong shape: the first such is named
    ("num_layers", 2, "lstm.weight_ih_l1"),        # missing
    ("embedding_size", 0, "embedding.weight"),     # one the config does not explain
])
def test_info_refuses_a_table_that_disagrees_with_its_config(tmp_path, corpus, key, value,
                                                              array):
    out = train(tmp_path / "r", corpus)
    rewrite(out / "best.npz", lambda m: m["config"]["model"].update({key: value}))
    line = refusals(out / "best.npz")
    assert "does not match its own config" in line and f"'{array}'" in line


def test_a_config_claiming_more_layers_than_the_file_holds_arrays_is_refused_at_once(tmp_path,
                                                                                   corpus):
    """Was: the names and shapes of every claimed layer were built first: 10**6 layers took 14
    seconds and 2 GB before the refusal, 10**9 ran out of memory."""
    out = train(tmp_path / "r", corpus)
    rewrite(out / "best.npz", lambda m: m["config"]["model"].update(num_layers=10 ** 6))
    line = refusals(out / "best.npz")
    assert "does not match its own config (1000000 x 32" in line, line
    assert "arrays in all, too few for 1,000,000 layers" in line, line


def test_info_refuses_a_run_checkpoint_with_a_wrong_optimizer_or_state_array(tmp_path, corpus):
    out = train(tmp_path / "r", corpus)
    rewrite(out / "last.npz", change_arrays=lambda a: a.update(
        {"optim.v.head.bias": np.zeros(3, np.float32)}))
    assert "'optim.v.head.bias'" in refusals(out / "last.npz", out)
    rewrite(out / "best.npz", change_arrays=lambda a: a.pop("state.c"))
    assert "'state.c'" in refusals(out / "best.npz")


@pytest.mark.parametrize("key", ["best_val_loss", "smooth_loss", "loss_floor"])
def test_a_nan_loss_in_the_metadata_is_refused(tmp_path, corpus, key):
    """Was read as is: a best_val_loss of NaN compares below no loss, so a resumed run never
    wrote best.npz again (and info showed "best val loss: nan")."""
    out = train(tmp_path / "r", corpus)
    rewrite(out / "last.npz", lambda m: m.update({key: float("nan")}))
    line = refusals(out / "last.npz", out)
    assert f"is damaged: its metadata's {key} is 'nan', not a number or null" in line, line


def test_the_keys_held_fixed_are_derived_from_the_config():
    """Derived from the config's structure: a data key added later is covered by default."""
    from charlstm.config import KEYS, load_config
    from charlstm.runstate import fixed_keys
    data = {k for k in KEYS if k.startswith("data.")}
    plain = set(fixed_keys(load_config(), fine_tuning=False))
    assert data - plain == {"data.path", "data.url", "data.sha256", "data.cache_dir",
                            "data.unknown"}
    assert data - set(fixed_keys(load_config(), fine_tuning=True)) == data - plain - {
        "data.unknown"}
    assert "train.seed" not in plain
    assert "train.seed" in fixed_keys(load_config(None, ["train.windows=shifted"]), False)


def test_a_checkpoint_of_weights_alone_is_described_and_sampled(tmp_path, corpus):
    """Optimizer, state and position are a run checkpoint's; sample and info need none of them."""
    out = train(tmp_path / "r", corpus)
    arrays, meta = checkpoint.load_checkpoint(out / "best.npz")
    weights = {k: a for k, a in arrays.items() if not k.startswith(("optim.", "state."))}
    checkpoint.save_checkpoint(tmp_path / "w.npz", weights, {k: meta[k] for k in ("config", "vocab")})
    info = invoke("info", tmp_path / "w.npz")
    assert info.exit_code == 0 and "progress" not in info.output, info.output
    assert invoke("sample", tmp_path / "w.npz", "--length", 5).exit_code == 0
    run = tmp_path / "w"
    run.mkdir()
    shutil.copy(tmp_path / "w.npz", run / "last.npz")
    assert "lacks step, epoch" in error_line(invoke("train", "--resume", run))


def test_a_vocabulary_holding_a_lone_surrogate_is_read_by_every_command(tmp_path, corpus):
    """Vocab encodes with surrogatepass; building it must too (was an internal error)."""
    out = train(tmp_path / "r", corpus)
    ckpt = out / "best.npz"
    rewrite(ckpt, lambda m: m.update(vocab=m["vocab"][:-1] + "\udfff"))   # still sorted
    info = invoke("info", ckpt)
    assert info.exit_code == 0 and "\\udfff" in info.output, info.output
    sample = invoke("sample", ckpt, "--length", 20, "--seed", 0, "--prime", "the ")
    assert sample.exit_code == 0 and sample.output.startswith("the "), sample.output
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on a mat\n")
    result = invoke("eval", ckpt, "--text", text, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["chars"] == 20, result.output


@pytest.mark.parametrize("name, value", [("head.weight", np.nan), ("lstm.weight_hh_l0", np.inf),
                                         ("state.h", -np.inf)])
def test_a_checkpoint_holding_nan_or_infinity_is_refused_by_every_reader(tmp_path, corpus, name,
                                                                         value):
    """Was: sample wrote its first character over and over, eval measured nan with exit 0, and
    --init-from / --resume stopped at their first step advising a lower learning rate."""
    out = train(tmp_path / "r", corpus)
    ckpt = out / "last.npz"
    rewrite(ckpt, change_arrays=lambda a: a[name].flat.__setitem__(0, value))
    words = f"'{ckpt}' is damaged: array '{name}' holds NaN or infinite values"
    for args in (["sample", ckpt, "--length", 5, "--seed", 0, "--prime", "the "],
                 ["eval", ckpt, "--text", corpus], ["eval", ckpt, "--split", "val"],
                 ["train", "--resume", out, "--set", "train.max_steps=20", "--no-progress"]):
        assert words in error_line(invoke(*args)), args
    init = ["train", "configs/tiny.yaml", "--data", corpus, "--init-from", ckpt, "--out",
            tmp_path / "ft", "--no-progress"]
    if name.startswith("state."):                 # fine-tuning starts from the weights alone
        assert invoke(*init, "--set", "train.max_steps=1").exit_code == 0
    else:
        assert words in error_line(invoke(*init))
