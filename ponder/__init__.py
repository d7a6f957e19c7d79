"""ponder: a language model that thinks before it speaks."""

__version__ = "0.1.0"


class PonderError(ValueError):
    """Bad input from a user: the CLI prints its message on one line and exits non-zero."""
