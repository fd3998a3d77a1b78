"""charlstm: character-level LSTM language models in NumPy, trained and sampled from the command
line or from Python (`charlstm.train`)."""

__version__ = "0.1.0"

from .api import Result, train  # noqa: E402  (after __version__, which the modules read)
from .errors import CharlstmError  # noqa: E402

__all__ = ["CharlstmError", "Result", "train", "__version__"]
