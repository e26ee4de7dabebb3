"""``python -m flows.cli``: the ``recraft`` commands without the supervising parent."""

from flows.cli import app

app()
