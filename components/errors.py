"""Errors that mean "the user gave us something wrong", as opposed to a bug.

The command layer turns a :class:`UserError` into one line on stderr and exit code 2; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "AssetError", "DataError", "CheckpointError"]


class UserError(Exception):
    """Bad input from the user: a file, key or value that is not what was expected.

    Args:
        message: what was wrong, naming the file, key or value.
        hint: how to fix it (optional, printed on a second line).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class AssetError(UserError):
    """A pinned asset could not be fetched or failed its checksum."""


class DataError(UserError):
    """A dataset is malformed: wrong shapes, NaN, empty splits, unknown labels."""


class CheckpointError(UserError):
    """A checkpoint is corrupt, unsafe, or was written for another configuration."""
