"""Exceptions a user can act on. The CLI turns them into exit codes in one place."""
from __future__ import annotations


class SparkshipError(Exception):
    """Base class: the message says what is wrong and, where possible, what to do."""

    exit_code = 1


class UsageError(SparkshipError):
    """Bad input from the user: a flag, a spec key, a reference, a path."""

    exit_code = 2


class SchemaMismatchError(SparkshipError):
    """Data does not match a table's or a model's schema; the message names the columns."""


class ConcurrentWriteError(SparkshipError):
    """Another writer committed first; the operation can be retried."""


class NotFoundError(SparkshipError):
    """A table, model, version or alias does not exist."""


class IntegrityError(SparkshipError):
    """A stored file was changed, truncated or removed after it was written."""


class InvalidDataError(SparkshipError):
    """Values a table cannot hold (a partition value no file system can name); the message names the column."""
