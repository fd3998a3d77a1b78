"""Data-parallel training on MPI: 2 ranks against 1 process, resume across rank counts, faults.

These run `mpirun -n 2` on this machine. `.ci/run` installs Open MPI and mpi4py and sets
CHARLSTM_REQUIRE_MPI=1, so in CI a missing MPI fails these tests instead of skipping them.
"""

import json
import subprocess
import sys

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
