"""The parameters a term declares next to its function: a small frozen dataclass of typed fields with defaults and
valid ranges, built from a config mapping with every problem reported at once (and a "did you mean" for a misspelt
key).

A field is declared with :func:`param`::

    @dataclass(frozen=True)
    class SimNPOParams:
        beta: float = param(2.5, gt=0, doc="inverse temperature")
        gamma: float = param(0.0, ge=0, doc="reward margin")

Types are ``float``, ``int``, ``bool``, ``str`` (with ``choices``) and ``tuple[int, ...]`` (a YAML list of
integers). :func:`build_params` returns the instance and the list of problems; :func:`describe_params` gives one
line per field for ``obliviate methods NAME``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any


def param(default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
          le: float | None = None, choices: tuple[str, ...] | None = None, doc: str = "") -> Any:
    """A dataclass field with a default, a valid range (``gt``/``ge``/``lt``/``le``) or ``choices``, and a doc."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": choices, "doc": doc}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoParams:
    """A term without parameters."""


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            parts.append(f"{op} {meta[key]:g}")
    return " and ".join(parts) if parts else "any"


def _check_value(name: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``value`` converted to the field's type, or an error message."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            items = tuple(value)
            for v in items:
                _, problem = _check_value(name, v, int, meta)
                if problem:
                    return value, problem
            return items, None
        return value, f"expected a list of integers, got {value!r}"
    if hint is bool:
        if not isinstance(value, bool):
            return value, f"expected true or false, got {value!r}"
        return value, None
    if hint is str:
        if not isinstance(value, str):
            return value, f"expected a string, got {value!r}"
        choices = meta.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            did = f" (did you mean '{close[0]}'?)" if close else ""
            return value, f"'{value}' is not one of {', '.join(choices)}{did}"
        return value, None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"expected an integer, got {value!r}"
    elif hint is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 1e-5 as a string
            except ValueError:
                return value, f"expected a number, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"expected a number, got {value!r}"
        value = float(value)
        if not math.isfinite(value):
            return value, f"must be a finite number, got {value!r}"
    for key, ok in (("gt", lambda a, b: a > b), ("ge", lambda a, b: a >= b), ("lt", lambda a, b: a < b),
                    ("le", lambda a, b: a <= b)):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            return value, f"must be {_range_text(meta)}, got {value!r}"
    return value, None


def build_params(cls: type, values: Mapping[str, Any] | None, prefix: str) -> tuple[Any, list[str]]:
    """``cls(**values)`` checked field by field: unknown keys (with a close match), wrong types, out-of-range values.

    ``prefix`` names where the values came from in messages (``"method.forget_params"``). On any problem the
    defaults are returned with the list of problems.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors: list[str] = []
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            did = f" (did you mean '{prefix}.{close[0]}'?)" if close else ""
            valid = ", ".join(fields) if fields else "none (this term has no parameters)"
            errors.append(f"{prefix}.{key}: unknown parameter{did}; valid parameters: {valid}")
            continue
        converted, problem = _check_value(key, value, hints[key], fields[key].metadata)
        if problem:
            errors.append(f"{prefix}.{key}: {problem}")
            continue
        kwargs[key] = converted
    if errors:
        return cls(), errors
    try:
        return cls(**kwargs), []
    except ValueError as exc:  # a check across fields in the class's __post_init__
        return cls(), [f"{prefix}: {exc}"]


def params_as_dict(obj: Any) -> dict[str, Any]:
    """The fields of a parameters instance as plain YAML-able values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def describe_params(cls: type) -> list[str]:
    """One line per field: ``name (type, default D, range R): doc``."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        hint = hints[f.name]
        type_name = "list of int" if typing.get_origin(hint) is tuple else getattr(hint, "__name__", str(hint))
        shown = list(default) if isinstance(default, tuple) else default
        lines.append(f"{f.name} ({type_name}, default {shown!r}, {_range_text(f.metadata)}): "
                     f"{f.metadata.get('doc', '')}")
    return lines
