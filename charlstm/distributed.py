"""Data-parallel training over MPI: `mpirun -n N charlstm train CONFIG`.

Every rank holds the whole model and a disjoint block of the batch's streams (rows); after each
backward pass the gradients are averaged with one in-place Allreduce over the flat float32
gradient buffer, so every rank applies the same update and the weights stay identical. Rank 0
alone evaluates, logs and writes checkpoints; what it decides each step (evaluate now, stop now)
is broadcast so that all ranks take the same path through the loop. Before the loop, the work a
rank may fail at alone (a data file one machine lacks, the run folder only rank 0 writes) is done
`together`: every rank learns of a failure on any, and all end with it, rank 0 saying what failed
where; a rank that left alone would leave the others waiting for it forever.

MPI is optional: mpi4py is imported only when the process was started by an MPI launcher.
With train.device=cuda each rank uses one GPU (rank modulo the GPUs it sees) and the collectives
copy through host memory, so any MPI works, CUDA-aware or not.
"""

import contextlib
import os
import pickle

import numpy as np

from .backend import is_gpu_array, to_host
from .errors import CharlstmError

# Variables that MPI launchers set in every process they start: Open MPI, then MPICH / PMIx.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


def launched_by_mpi():
    return any(v in os.environ for v in _LAUNCHER_VARS)


def launcher_rank():
    """This process's rank as the MPI launcher numbered it (0 when not under a launcher)."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def world():
    """The communicator when running under an MPI launcher with more than one rank, else None."""
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CharlstmError("started by mpirun, but mpi4py is not installed: pip install "
                            "'charlstm[mpi]' (and an MPI library, e.g. apt install "
                            "openmpi-bin libopenmpi-dev)") from None
    comm = MPI.COMM_WORLD
    return Comm(comm, MPI) if comm.Get_size() > 1 else None


class Comm:
    """The few collective operations training needs, on numpy arrays."""

    def __init__(self, comm, mpi):
        self.comm, self.MPI = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def rows(self, batch_size):
        """This rank's block of the batch rows. The global batch must split evenly."""
        if batch_size % self.size:
            fewer = max(k for k in range(1, self.size) if batch_size % k == 0)
            raise CharlstmError(f"train.batch_size {batch_size} does not divide evenly among "
                                f"{self.size} MPI ranks; use a multiple of {self.size}, or a "
                                f"number of ranks that divides {batch_size} (e.g. mpirun -n "
                                f"{fewer}; a resumed run keeps its batch size)")
        share = batch_size // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def average_(self, flat):
        """Average a flat array over ranks, in place: one Allreduce for the whole buffer."""
        if is_gpu_array(flat):                   # through the host: MPI may not read GPU memory
            host = flat.get()
            self.average_(host)
            flat.set(host)
            return
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        flat /= self.size

    def mean(self, value):
        return self.comm.allreduce(value, op=self.MPI.SUM) / self.size

    def broadcast_(self, array):
        """Overwrite `array` on every rank with rank 0's."""
        if is_gpu_array(array):
            host = array.get()
            self.comm.Bcast(host, root=0)
            array.set(host)
            return
        self.comm.Bcast(array, root=0)

    def decide(self, value):
        """Rank 0's value of a small Python object, on every rank."""
        return self.comm.bcast(value, root=0)

    def agree(self, failure, value=None):
        """Every rank's outcome of work that may fail on one rank alone (`failure`: the exception
        it raised there, or None): rank 0's `value` on every rank if none failed; else every rank
        raises the failure of the lowest rank that failed (rank 0's own exception as it is; a
        user error on another rank with that rank named)."""
        outcomes = self.comm.allgather((_portable(failure), self.MPI.Get_processor_name(), value))
        failed = [(rank, e, host) for rank, (e, host, _) in enumerate(outcomes) if e is not None]
        if not failed:
            return outcomes[0][2]
        rank, e, host = failed[0]
        if rank == self.rank:
            e = failure                           # this rank's own, with its traceback
        elif isinstance(e, CharlstmError):
            e = CharlstmError(f"MPI rank {rank} (on {host}): {e}")
        setattr(e, _AGREED, True)
        raise e

    def gather_rows(self, local, axis):
        """Concatenate every rank's block along `axis` (rank order); the result on rank 0 only."""
        blocks = self.comm.gather(np.ascontiguousarray(to_host(local)), root=0)
        return np.concatenate(blocks, axis=axis) if self.rank == 0 else None

    def abort(self, code=1):
        """End every rank of the job: one failing rank must not leave the others waiting."""
        self.comm.Abort(code)


_AGREED = "charlstm_agreed"   # set on a failure every rank has raised: no rank waits on it now


@contextlib.contextmanager
def together(comm):
    """Run the block on every rank (comm: world(), None for one process), then agree (Comm.agree)
    on whether it failed anywhere: a failure on any rank is raised on every rank. A failure that
    an agreement inside the block raised is not agreed on again."""
    if comm is None:
        yield
        return
    try:
        yield
    except Exception as e:
        if getattr(e, _AGREED, False):
            raise
        comm.agree(e)
    else:
        comm.agree(None)


def _portable(e):
    """`e` as it can travel to another rank (pickled): itself, or its text as a RuntimeError."""
    if e is None:
        return None
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
