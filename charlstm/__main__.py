"""`python -m charlstm` works like the `charlstm` command."""

from .cli import main

main()
