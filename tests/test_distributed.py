"""Data-parallel training on MPI: 2 ranks against 1 process, resume across rank counts, faults.

These run `mpirun -n 2` on this machine. `.ci/run` installs Open MPI and mpi4py and sets
CHARLSTM_REQUIRE_MPI=1, so in CI a missing MPI fails these tests instead of skipping them.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import (MPI_SETTINGS, assert_losses_close, mpi_env, needs_mpi,
                     no_internal_error, step_losses, train_ranks)


@needs_mpi
@pytest.mark.parametrize("mask", ["step", "window"])
def test_two_ranks_equal_one_process(tmp_path, corpus, mask):
    sets = MPI_SETTINGS + [f"model.dropout_mask={mask}"]
    train_ranks(2, tmp_path / "two", corpus, sets=sets)
    train_ranks(None, tmp_path / "one", corpus, sets=sets)
    assert_losses_close(step_losses(tmp_path / "two"), step_losses(tmp_path / "one"))
    # rank 0 alone wrote the run folder; the checkpoint is the one a single process writes
    from charlstm import checkpoint
    meta = checkpoint.read_meta(tmp_path / "two" / "last.npz")
    assert meta["step"] == 20 and meta["arrays"]["state.h"]["shape"][1] == 8


@needs_mpi
def test_resume_with_another_number_of_ranks(tmp_path, corpus):
    train_ranks(2, tmp_path / "r", corpus)                                   # steps 1..20 on 2 ranks
    done = train_ranks(None, tmp_path / "r", corpus, sets=["train.max_steps=30"])   # 21..30 on 1
    assert "resuming" in done.stdout
    train_ranks(None, tmp_path / "ref", corpus, sets=MPI_SETTINGS + ["train.max_steps=30"])
    assert_losses_close(step_losses(tmp_path / "r"), step_losses(tmp_path / "ref"))


@needs_mpi
def test_rank_0_alone_logs_and_reports_skipped_steps(tmp_path, corpus):
    """lr 1e30: from step 2 on every step diverges and is skipped, on both ranks alike."""
    sets = MPI_SETTINGS + ["train.max_steps=6", "optim.lr=1e30", "optim.grad_clip=0",
                       "train.on_divergence=skip"]
    result = train_ranks(2, tmp_path / "r", corpus, sets=sets)
    printed = [ln for ln in result.stdout.splitlines() if "step skipped" in ln]
    assert [ln.split(":")[0] for ln in printed] == [f"step {k}" for k in range(2, 7)]
    records = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "skipped" in r] == [2, 3, 4, 5, 6]
    assert [r["lr_scale"] for r in records if "skipped" in r] == [0.5 ** k for k in range(1, 6)]


@needs_mpi
def test_batch_must_divide_among_ranks(tmp_path, corpus):
    result = train_ranks(2, tmp_path / "r", corpus, sets=MPI_SETTINGS + ["train.batch_size=7"], check=False)
    assert result.returncode != 0
    assert "does not divide evenly among 2 MPI ranks" in result.stderr
    no_internal_error(result.stderr)


@needs_mpi
def test_a_dying_rank_takes_the_job_down(tmp_path, corpus):
    """Rank 1 is killed mid-run: the job ends (no hang) and the last checkpoint resumes."""
    runner = tmp_path / "die.py"
    runner.write_text(
        "import os, signal, sys\n"
        "import charlstm.run as t\n"
        "real = t.Run.train_step\n"
        "def step(self):\n"
        "    if self.comm and self.comm.rank == 1 and self.step == 14:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(self)\n"
        "t.Run.train_step = step\n"
        "from charlstm.cli import main\n"
        "sys.argv = ['charlstm'] + sys.argv[1:]\n"
        "main()\n")
    args = ["train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "r",
            "--no-progress"] + [x for s in MPI_SETTINGS for x in ("--set", s)]
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable,
           str(runner), *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=mpi_env(), timeout=120)
    assert result.returncode != 0
    done = train_ranks(None, tmp_path / "r", corpus, sets=[])
    assert "resuming" in done.stdout and "step 10" in done.stdout


def test_mpirun_without_mpi4py_is_a_one_line_error(tmp_path, corpus):
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, *a):\n"
            "        if name.startswith('mpi4py'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from charlstm.cli import main\n"
            "sys.argv = ['charlstm'] + sys.argv[1:]\n"
            "main()\n")
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "configs/tiny.yaml", "--data", str(corpus),
         "--out", str(tmp_path / "r"), "--no-progress"],
        capture_output=True, text=True, env=dict(mpi_env(), OMPI_COMM_WORLD_SIZE="2",
                                                 OMPI_COMM_WORLD_RANK="0"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'charlstm[mpi]'" in lines[0]
    no_internal_error(result.stderr)


# --- a failure on one rank alone: every rank ends, rank 0 says what failed where ----------------

# Runs the CLI; on MPI rank 1 alone, the environment variables in RANK1_ENV (JSON) are set and
# the arguments in RANK1_SWAP (JSON {old: new}) replaced: a file or folder one machine lacks.
RANK1_RUNNER = (
    "import json, os, sys\n"
    "if os.environ.get('OMPI_COMM_WORLD_RANK') == '1':\n"
    "    os.environ.update(json.loads(os.environ.get('RANK1_ENV', '{}')))\n"
    "    swap = json.loads(os.environ.get('RANK1_SWAP', '{}'))\n"
    "    sys.argv = [swap.get(a, a) for a in sys.argv]\n"
    "from charlstm.cli import main\n"
    "sys.argv = ['charlstm'] + sys.argv[1:]\n"
    "main()\n")


def mpirun_2(tmp_path, args, env=None, swap=None, timeout=120):
    """`charlstm ARGS` on 2 MPI ranks, rank 1 with `env` and `swap` (RANK1_RUNNER); returns
    (returncode, stderr). A job still running after `timeout` seconds (a rank waiting for one
    that left) is stopped, and fails the test."""
    runner = tmp_path / "rank1.py"
    runner.write_text(RANK1_RUNNER)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable,
           str(runner), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(mpi_env(), RANK1_ENV=json.dumps(env or {}),
                                     RANK1_SWAP=json.dumps(swap or {})))
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()                       # mpirun ends its ranks on SIGTERM
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise AssertionError(f"the job hung: still running after {timeout} s") from None
    return proc.returncode, err


def one_error_line(err, *words):
    """stderr of a failed job holds exactly one charlstm error line, with all of `words`."""
    no_internal_error(err)
    lines = [ln for ln in err.splitlines() if ln.startswith(("Error:", "charlstm rank"))]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, lines[0])


@needs_mpi
def test_a_token_cache_one_rank_cannot_write_is_one_line_from_rank_0(tmp_path, corpus):
    """Rank 1's cache folder lies under a file: it failed there alone, said nothing, and mpirun
    ended rank 0 with it (only mpirun's note that a process exited with status 1)."""
    bad = tmp_path / "a-file"
    bad.write_text("")
    args = ["train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "r",
            "--no-progress"] + [x for s in MPI_SETTINGS for x in ("--set", s)]
    code, err = mpirun_2(tmp_path, args, env={"XDG_CACHE_HOME": str(bad / "cache")})
    assert code != 0
    one_error_line(err, "Error: MPI rank 1", "could not write the token cache", str(bad))
    assert not (tmp_path / "r").exists()                 # the folder rank 0 made is gone again


@needs_mpi
def test_a_config_one_rank_lacks_is_one_line_while_rank_0_runs_the_recipe(tmp_path, corpus):
    """--minutes: rank 0 times nets for the recipe while rank 1 fails reading its config; both
    learn of it when rank 0 has chosen (nothing was said before)."""
    config = tmp_path / "tiny.yaml"
    config.write_text(Path("configs/tiny.yaml").read_text())
    missing = tmp_path / "elsewhere" / "tiny.yaml"
    args = ["train", config, "--data", corpus, "--minutes", "0.2", "--out", tmp_path / "r",
            "--no-progress", "--set", "train.threads=1"]
    code, err = mpirun_2(tmp_path, args, swap={str(config): str(missing)})
    assert code != 0
    one_error_line(err, "Error: MPI rank 1", f"config file '{missing}' not found")
    assert not (tmp_path / "r").exists()


@needs_mpi
def test_a_run_folder_rank_0_cannot_write_ends_every_rank(tmp_path, corpus):
    """config.yaml is a folder: rank 0 failed writing it after the others had begun training,
    and the job hung (rank 0 waiting in MPI's finalize, rank 1 for rank 0's gradients)."""
    (tmp_path / "r" / "config.yaml").mkdir(parents=True)
    args = ["train", "configs/tiny.yaml", "--data", corpus, "--out", tmp_path / "r",
            "--no-progress"] + [x for s in MPI_SETTINGS for x in ("--set", s)]
    code, err = mpirun_2(tmp_path, args)
    assert code != 0
    one_error_line(err, "Error: cannot write config file", str(tmp_path / "r" / "config.yaml"))


@needs_mpi
def test_resuming_a_run_folder_one_rank_lacks_is_one_line_from_rank_0(tmp_path, corpus):
    train_ranks(None, tmp_path / "r", corpus)
    missing = tmp_path / "not-shared" / "r"
    code, err = mpirun_2(tmp_path, ["train", "--resume", tmp_path / "r", "--set",
                                    "train.max_steps=30", "--no-progress"],
                         swap={str(tmp_path / "r"): str(missing)})
    assert code != 0
    one_error_line(err, "Error: MPI rank 1", f"run folder '{missing}' not found")
    from charlstm import checkpoint
    assert checkpoint.read_meta(tmp_path / "r" / "last.npz")["step"] == 20     # not trained on


@needs_mpi
def test_dry_run_under_mpirun_prints_the_config_once(tmp_path, corpus):
    """Each rank printed it: N copies of the config, interleaved."""
    result = train_ranks(2, tmp_path / "r", corpus, "--dry-run")
    assert result.stdout.count("# the run's config") == 1, result.stdout
    assert result.stdout.count("\ntrain:\n") == 1 and not (tmp_path / "r").exists()


def test_a_batch_that_does_not_divide_names_rank_counts_that_do():
    """Resuming a batch-8 run on 3 ranks said only "use a multiple of 3", which the resume then
    refuses (a resumed run keeps its batch size)."""
    from types import SimpleNamespace

    from charlstm.distributed import Comm
    from charlstm.errors import CharlstmError
    comm = Comm(SimpleNamespace(Get_rank=lambda: 0, Get_size=lambda: 3), None)
    with pytest.raises(CharlstmError) as e:
        comm.rows(8)
    assert "train.batch_size 8 does not divide evenly among 3 MPI ranks" in str(e.value)
    assert "mpirun -n 2" in str(e.value) and "a multiple of 3" in str(e.value)
    assert comm.rows(9) == slice(0, 3)
