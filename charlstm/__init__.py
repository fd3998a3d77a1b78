"""charlstm: character-level LSTM language models in NumPy, trained and sampled from the command line."""

__version__ = "0.1.0"
