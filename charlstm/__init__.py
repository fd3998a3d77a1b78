"""charlstm: character-level LSTM language models in NumPy, trained and sampled from the command
line or from Python (`charlstm.train`)."""

__version__ = "0.1.0"

from .api import Model, Result, Score, train  # noqa: E402  (after __version__: modules read it)
from .errors import CharlstmError  # noqa: E402

__all__ = ["CharlstmError", "Model", "Result", "Score", "train", "__version__"]
