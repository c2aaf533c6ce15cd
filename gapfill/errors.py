"""Errors that end a run with one line for the user (a leaf module: it imports nothing of ours).

`runs.run_cli` turns `DataError` (bad input, a refused run) into exit code 2 and `RunError` (a run that
cannot go on, such as a numerical failure) into exit code 3.
"""
from __future__ import annotations


class DataError(ValueError):
    """Bad input or a refused command: the message is one line naming the file or option and the problem."""


class RunError(RuntimeError):
    """A run that cannot go on, with a one-line reason for the user (numerical failure...): exit code 3."""
