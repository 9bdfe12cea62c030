"""Errors the CLI reports as one clear message (exit 1) instead of a traceback."""


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
