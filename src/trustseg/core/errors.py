"""Exceptions with messages a user can act on."""

from __future__ import annotations

from pathlib import Path


class TrustsegError(Exception):
    """Base class of every error trustseg raises on purpose."""


class DataError(TrustsegError, ValueError):
    """Bad input data. The message always names the file (when there is one) and the problem.

    Args:
        problem: What is wrong, in words a user understands.
        path: The offending file or folder, if any.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class ConfigError(TrustsegError, ValueError):
    """Bad configuration: unknown option, wrong type, out-of-range value."""


class TrainingError(TrustsegError, FloatingPointError):
    """Training diverged (a non-finite loss or non-finite weights), naming the member, epoch and step."""


class UnknownNameError(TrustsegError, KeyError):
    """An unknown registered name (method, measure, metric, ...), with a "did you mean" suggestion."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
