"""Errors the CLI reports as one clear message (exit 1) instead of a traceback."""

from typing import Any


class GanCoreError(RuntimeError):
    """Base class for failures with a message meant for the user."""


class DataError(GanCoreError):
    """Raw data missing, corrupted or unusable; the message names the file."""


class PreparedDataError(GanCoreError):
    """Prepared data missing or unreadable."""


class TrainingError(GanCoreError):
    """Training cannot start or continue (e.g. a non-finite loss, a mismatching checkpoint)."""


class EvaluationError(GanCoreError):
    """Evaluation inputs missing or invalid (e.g. classifier weights unavailable offline)."""


class PluginError(GanCoreError):
    """An installed architecture plugin breaks its contract (its build raises, returns something
    else than two networks, or its defaults name options its build does not take)."""


class WriteError(GanCoreError):
    """A result could not be written (e.g. the disk is full); the previous file is kept."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch.load's run to a page), for error messages."""
    text = str(exc).strip().splitlines()
    return (text[0][:limit] if text else "") or type(exc).__name__


class ParamsError(ValueError):
    """Invalid parameters. ``problems`` holds one ``(key_path, message)`` per problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "params"):
        self.problems = problems
        self.source = source
        lines = [f"invalid parameters in {source}:"] + [f"  {key}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable with its own arguments, so that it crosses process pools (Prefect, Dask) intact.
        return (type(self), (self.problems, self.source))
