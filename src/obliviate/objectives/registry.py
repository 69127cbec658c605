"""Registries of forget terms and regularizers.

A term is registered with a decorator at its definition, which records what it reads, so the trainer can
run only the forward passes a method needs. Users add their own terms the same way::

    @register_forget("my_term", needs={"forget"}, description="...", paper="...")
    def my_term(inputs: UnlearningInputs, params: ObjectiveParams) -> Tensor: ...

after which ``"my_term+gd"`` is a valid method name. Names are lower case and may not contain ``+``,
which separates the forget term from the regularizer in a method name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor

from obliviate.errors import ConfigError
from obliviate.objectives.types import INPUT_FIELDS, ObjectiveParams, UnlearningInputs

TermFn = Callable[[UnlearningInputs, ObjectiveParams], Tensor]


@dataclass(frozen=True)
class TermSpec:
    """A registered forget term or regularizer.

    ``needs``: the :class:`UnlearningInputs` fields the term reads. ``needs_ref_logps`` /
    ``needs_ref_logits``: those of them whose ``ref_logps`` / ``ref_logits`` it reads (a reference model
    is needed exactly when either is non-empty). ``fn(inputs, params)`` returns a scalar tensor.
    """

    name: str
    fn: TermFn
    needs: frozenset[str]
    needs_ref_logps: frozenset[str]
    needs_ref_logits: frozenset[str]
    description: str
    paper: str


class TermRegistry:
    """Name → :class:`TermSpec`, with a duplicate check and "did you mean" on a miss."""

    def __init__(self, kind: str):
        self.kind = kind  # "forget term" or "regularizer", used in messages
        self._specs: dict[str, TermSpec] = {}

    def register(
        self,
        name: str,
        *,
        needs: Iterable[str],
        needs_ref_logps: Iterable[str] = (),
        needs_ref_logits: Iterable[str] = (),
        description: str,
        paper: str,
    ) -> Callable[[TermFn], TermFn]:
        """Decorator registering ``fn`` under ``name``; returns ``fn`` unchanged.

        Raises ValueError on a duplicate name, a malformed name, or an unknown input field: these are
        mistakes in code, found when the module defining the term is imported.
        """
        if not name or name != name.lower() or "+" in name or any(c.isspace() for c in name):
            raise ValueError(f"{self.kind} name {name!r} must be non-empty, lower case, without spaces or '+'")
        need_set = frozenset(needs)
        logps_set = frozenset(needs_ref_logps)
        logits_set = frozenset(needs_ref_logits)
        unknown = sorted((need_set | logps_set | logits_set) - set(INPUT_FIELDS))
        if unknown:
            raise ValueError(
                f"{self.kind} '{name}' declares unknown input fields {unknown}; valid: {', '.join(INPUT_FIELDS)}"
            )
        not_read = sorted((logps_set | logits_set) - need_set)
        if not_read:
            raise ValueError(
                f"{self.kind} '{name}' needs reference outputs of {not_read} but not the fields themselves"
            )

        def decorator(fn: TermFn) -> TermFn:
            if name in self._specs:
                previous = self._specs[name].fn
                raise ValueError(
                    f"{self.kind} '{name}' is already registered by {previous.__module__}.{previous.__qualname__}; "
                    f"cannot register {fn.__module__}.{fn.__qualname__} under the same name"
                )
            self._specs[name] = TermSpec(
                name=name,
                fn=fn,
                needs=need_set,
                needs_ref_logps=logps_set,
                needs_ref_logits=logits_set,
                description=description,
                paper=paper,
            )
            return fn

        return decorator

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._specs

    def unknown_name_message(self, name: str) -> str:
        """The message for an unknown ``name``: a close match if there is one, and every valid name."""
        close = difflib.get_close_matches(name.strip().lower(), self.names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown {self.kind} '{name}'; {hint}valid {self.kind}s: {', '.join(self.names())}"

    def get(self, name: str) -> TermSpec:
        """The spec registered under ``name`` (case-insensitive); ConfigError with suggestions if none."""
        spec = self._specs.get(name.strip().lower())
        if spec is None:
            raise ConfigError([self.unknown_name_message(name)])
        return spec


FORGET_TERMS = TermRegistry("forget term")
REGULARIZERS = TermRegistry("regularizer")

register_forget = FORGET_TERMS.register
register_regularizer = REGULARIZERS.register


def get_forget(name: str) -> TermSpec:
    """The registered forget term ``name`` (case-insensitive); ConfigError with "did you mean" if unknown."""
    return FORGET_TERMS.get(name)


def get_regularizer(name: str) -> TermSpec:
    """The registered regularizer ``name`` (case-insensitive); ConfigError with "did you mean" if unknown."""
    return REGULARIZERS.get(name)
