"""Errors a user can cause and fix.

Library code raises these with a message that names the file, key or value at fault and says what
to do; the CLI prints the message as one line and exits non-zero. Anything else is a bug.
"""


OUT_OF_MEMORY = ("out of memory: lower model.hidden_size, model.num_layers, train.batch_size or "
                 "train.seq_len")


class CharlstmError(Exception):
    """Base class: a problem with the user's input, shown without a traceback."""


class ConfigError(CharlstmError):
    """A bad config file, key, value or --set override."""


class DataError(CharlstmError):
    """A missing, unreadable or unsuitable text corpus."""


class CheckpointError(CharlstmError):
    """A missing, damaged, foreign or incompatible checkpoint file."""


class Diverged(CharlstmError):
    """The loss or gradient stopped being finite, or the loss went far above ln V (or exploded);
    the run stopped untouched."""


class Interrupted(Exception):
    """Training stopped by a signal after saving a checkpoint; the CLI exits with 128 + signum."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.signum = signum
