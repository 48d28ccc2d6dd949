"""The workbench's exception types.

Every error a user can cause by bad input is a :class:`WorkbenchError` with a
one-sentence message; the CLI prints that sentence and exits with status 2,
the UI shows it inline.
"""

from __future__ import annotations


class WorkbenchError(ValueError):
    """Bad input or an unusable resource, explained in one sentence.

    Example:
        >>> raise WorkbenchError("subject 'Paris' is not in the prompt")
        Traceback (most recent call last):
        workbench.errors.WorkbenchError: subject 'Paris' is not in the prompt
    """


class UnknownModelError(WorkbenchError):
    """A model name that is neither built in, a local folder, nor reachable offline."""


class DatasetError(WorkbenchError):
    """A dataset that cannot be read; the message names the record and field."""
