"""The run folder: its files' names, one writer at a time, and the chores on its files that
resuming relies on.

    out = free_folder(Path("runs") / run_name(config_path, cfg))   # runs/notes, runs/notes-2, ...
    with holding(out) as lock: ...                   # FolderLock, by rank 0, before any read/write
    truncate_metrics(out, step)                      # on (re)start: lines past the checkpoint go
    append_metrics(out, {"step": 10, "train_loss": 2.3})
    keep_step_checkpoint(out, step, keep=3)          # last.npz kept as step_NNNNNNNN.npz too

A run folder holds config.yaml, metrics.jsonl, last.npz, best.npz, step_NNNNNNNN.npz (see
runstate.py for what a checkpoint holds) and .lock, the lock's file. This module is the one place
that names them.
"""

import contextlib
import json
import os
from pathlib import Path

from . import checkpoint
from .distributed import launcher_rank, together, world
from .errors import CharlstmError

LAST, BEST = "last.npz", "best.npz"     # the latest checkpoint, and the best validated one
CONFIG, METRICS = "config.yaml", "metrics.jsonl"

try:
    import fcntl
except ImportError:                      # Windows has no fcntl: run folders there go unguarded
    fcntl = None


class FolderLock:
    """An exclusive advisory lock (flock) on RUN_DIR/.lock, which holds the holder's process id.

    The kernel drops the lock when its holder ends, however it ends, so a killed run never leaves
    a stale one. acquire() refuses, in one line, a folder that another process holds.
    """

    NAME = ".lock"

    def __init__(self, folder):
        self.folder, self.file, self.made = Path(folder), None, False

    def acquire(self):
        self.made = not self.folder.exists()
        if self.folder.exists() and not self.folder.is_dir():
            raise CharlstmError(f"run folder '{self.folder}' is not a folder (a file, device or "
                                "pipe); choose another one with --out")
        path = self.folder / self.NAME
        # A pipe or a device there would never hold a pid (nor truncate): refused by name.
        if path.exists() and not path.is_file():
            raise CharlstmError(f"'{path}' is not a regular file (a folder, device or pipe); it "
                                "is the lock file charlstm train keeps in a run folder: remove it")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                return self
            f = open(path, "a+")
        except OSError as e:
            raise self._unusable(e, path) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read(20).strip() or "unknown"
            f.close()
            raise CharlstmError(f"run folder '{self.folder}' is in use by another training (pid "
                                f"{holder}); wait for it to end, or choose another folder with "
                                "--out") from None
        except OSError:                  # a file system without locks: carry on unguarded
            pass
        try:
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError as e:
            f.close()
            raise self._unusable(e, path) from None
        self.file = f
        return self

    def _unusable(self, e, path):
        return CharlstmError(f"could not use run folder '{self.folder}': {e.strerror or e} "
                             f"('{e.filename or path}'); check the path and its permissions")

    def release(self, tidy=False):
        """Let go; tidy: also remove the folder if acquire() made it and nothing else is there."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if tidy and self.made:
            with contextlib.suppress(OSError):
                (self.folder / self.NAME).unlink()
                self.folder.rmdir()


@contextlib.contextmanager
def holding(folder):
    """The folder's lock, taken by rank 0 alone (None on other ranks) while a run is set up in it;
    let go again, and a folder made only to hold it removed, if that fails. Under mpirun the
    setup is done `together`: if it fails on any rank (the lock on rank 0, a data file one
    machine lacks), it fails on every rank."""
    lock = None
    try:
        with together(world()):
            lock = FolderLock(folder).acquire() if launcher_rank() == 0 else None
            yield lock
    except BaseException:
        if lock is not None:
            lock.release(tidy=True)
        raise


def tidy(folder, step):
    """Before a run (re)starts writing: no temporaries of a killed write, no metrics past the
    checkpoint's step."""
    remove_stale_temporaries(folder)
    truncate_metrics(folder, step)


def remove_stale_temporaries(folder):
    """Temporary checkpoint files left by a run killed mid-write (never a complete checkpoint)."""
    for tmp in Path(folder).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def checkpoint_in(path):
    """`path` if it is a file; for a run folder, its best.npz (else its last.npz)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in (BEST, LAST):
        if (path / name).is_file():
            return path / name
    raise CharlstmError(f"'{path}' holds no checkpoint ({BEST} or {LAST}); pass a checkpoint "
                        "file, or a run folder written by charlstm train")


def holds_run(folder):
    """Whether `folder` holds a run (a checkpoint to resume)."""
    return (Path(folder) / LAST).exists()


def run_name(config_path, cfg):
    """A new run's folder name: the config file's, else the data's (its file or folder name)."""
    if config_path:
        return Path(config_path).stem
    path = cfg.data.path
    if path is None:
        return "python-stdlib"                    # the built-in corpus
    first = path[0] if isinstance(path, list) else path
    plain = []                                    # the path up to its first glob pattern
    for part in Path(first).parts:
        if any(ch in part for ch in "*?["):
            break
        plain.append(part)
    name = Path(*plain).stem if plain else ""
    return name if name not in ("", ".", "..", "/") else "data"


def free_folder(folder):
    """`folder`, or folder-2, folder-3, ... : the first that holds no run yet."""
    folder = Path(folder)
    candidate, k = folder, 1
    while holds_run(candidate):
        k += 1
        candidate = folder.with_name(f"{folder.name}-{k}")
    return str(candidate)


def append_metrics(folder, record):
    with open(Path(folder) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def metrics_records(folder):
    """(line, record) for each line of a run folder's metrics.jsonl that holds a JSON object.
    Lines cut short by a kill, damaged (the file is ASCII as written) or foreign are left out."""
    path = Path(folder) / METRICS
    if path.exists() and not path.is_file():            # reading a pipe would wait forever
        kind = "a folder" if path.is_dir() else "a device, pipe or socket"
        raise CharlstmError(f"'{path}' is not a regular file ({kind}); a run folder's "
                            "metrics.jsonl is the file charlstm train writes")
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):     # also: an integer of over 4,300 digits, or
            continue                             # brackets nested past Python's recursion limit
        if isinstance(record, dict):
            out.append((line, record))
    return out


def truncate_metrics(folder, step):
    """Drop logged lines past the checkpoint's step (a killed run logged them, then lost them),
    so a resumed run's metrics read as if it had never stopped."""
    path = Path(folder) / METRICS
    if not path.exists():
        return
    kept = []
    for line, record in metrics_records(folder):
        try:
            if record.get("step", 0) <= step:
                kept.append(line)
        except TypeError:                                  # not a record we wrote
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def keep_step_checkpoint(folder, step, keep):
    """Keep last.npz as step_<N>.npz too (a hard link: no second write), then drop all but the
    newest `keep` of them (train.keep_last; 0 keeps none)."""
    if keep <= 0:
        return
    folder = Path(folder)
    target = folder / f"step_{step:08d}.npz"
    target.unlink(missing_ok=True)
    try:
        os.link(folder / LAST, target)
    except OSError:                       # a file system without hard links
        checkpoint.save_checkpoint(target, *checkpoint.load_checkpoint(folder / LAST))
    for old in sorted(folder.glob("step_*.npz"))[:-keep]:
        old.unlink(missing_ok=True)
