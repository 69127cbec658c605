"""User-facing errors.

Anything a user can cause (a bad file, a bad config value, a missing model) raises a subclass of
:class:`ObliviateError`. The CLI prints these as one clear message and exits non-zero, without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ObliviateError(Exception):
    """An error caused by user input or environment, reported without a traceback."""


class DataError(ObliviateError):
    """A data file or row is malformed. The message names the file, the line (1-based) and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path, self.line, self.field = path, line, field


class ConfigError(ObliviateError):
    """One or more configuration values are invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        head = f"invalid configuration{f' in {source}' if source else ''}"
        body = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"{head} ({len(self.errors)} error{'s' if len(self.errors) != 1 else ''}):\n{body}")


class ModelLoadError(ObliviateError):
    """A model or tokenizer could not be loaded; the message says which and why."""


class PickleWeightsError(ModelLoadError):
    """A model folder holds only pickle weights, which obliviate refuses to load (they can run code)."""
