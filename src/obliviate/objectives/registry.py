"""Registries of forget terms and regularizers.

A term is registered with a decorator at its definition, which records what it reads, so the trainer can
run only the forward passes a method needs. Users add their own terms the same way::

    @register_forget("my_term", needs={"forget"}, params=MyParams, description="...", paper="...")
    def my_term(inputs: UnlearningInputs, params: MyParams) -> Tensor: ...

after which ``"my_term+gd"`` is a valid method name and ``method.forget_params`` sets ``MyParams``' fields
(:mod:`obliviate.objectives.params`). Names are lower case and may not contain ``+``, which separates the forget
term from the regularizer in a method name.

What a term may declare besides its batches (``needs``) and the reference log-probs / logits it reads:

- ``params``: its parameters dataclass (default: none);
- ``hidden`` / ``ref_hidden``: the batches whose hidden states of the model / the frozen reference model it reads,
  and ``hidden_layers(params) → layer indices`` which blocks (the trainer hooks exactly those);
- ``trainable(params) → (parameter name → bool)``: which model parameters may train (all others are frozen);
- ``state``: a class whose instance the term carries across steps (``fn(inputs, params, state)``): it has
  ``state_dict()`` / ``load_state_dict(d)`` (JSON values, saved in every checkpoint so resuming is exact) and may
  have ``end_step()``, called once after every optimizer step, and ``synchronise(mean)``, called just before it
  on every process of a multi-process run (``mean(values)``: the element-wise mean of a list of floats over the
  processes), so that every process's state moves alike.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor

from obliviate.errors import ConfigError
from obliviate.objectives.params import NoParams
from obliviate.objectives.types import INPUT_FIELDS, UnlearningInputs

TermFn = Callable[..., Tensor]


@dataclass(frozen=True)
class TermSpec:
    """A registered forget term or regularizer.

    ``needs``: the :class:`UnlearningInputs` fields the term reads. ``needs_ref_logps`` /
    ``needs_ref_logits``: those of them whose ``ref_logps`` / ``ref_logits`` it reads (a reference model
    is needed exactly when either is non-empty). ``fn(inputs, params)`` (``fn(inputs, params, state)`` for a
    term with ``state``) returns a scalar tensor. The other fields: see the module docstring.
    """

    name: str
    fn: TermFn
    needs: frozenset[str]
    needs_ref_logps: frozenset[str]
    needs_ref_logits: frozenset[str]
    description: str
    paper: str
    params: type = NoParams
    hidden: frozenset[str] = frozenset()
    ref_hidden: frozenset[str] = frozenset()
    hidden_layers: Callable[[object], Iterable[int]] | None = None
    trainable: Callable[[object], Callable[[str], bool]] | None = None
    state: type | None = None
    formula: str = ""
    test: str = ""

    def layers(self, params: object) -> tuple[int, ...]:
        """The decoder blocks whose outputs this term reads under ``params`` (its defaults when None; sorted, no
        repeats)."""
        if self.hidden_layers is None:
            return ()
        return tuple(sorted(set(int(x) for x in self.hidden_layers(coerce_params(self.params, params)))))


def coerce_params(cls: type, params: object | None) -> object:
    """``params`` as an instance of the term's parameters class ``cls``.

    None gives the defaults. Any other object (the method-level :class:`~obliviate.objectives.ObjectiveParams`)
    gives the defaults with the fields ``cls.SHARED`` names taken from it (``beta`` for NPO, DPO and AP,
    ``me_direction`` for ME): what ``method.beta`` / ``method.me_direction`` have always set.
    """
    if isinstance(params, cls):
        return params
    if params is None:
        return cls()
    return cls(**{k: getattr(params, k) for k in getattr(cls, "SHARED", ()) if hasattr(params, k)})


def _calling(fn: TermFn, params_cls: type, state_cls: type | None) -> TermFn:
    """``fn`` as the registry calls it: ``spec.fn(inputs, params=None, state=None)`` whatever the term declares
    (a term without parameters or state is called as it is)."""
    if params_cls is NoParams and state_cls is None:
        return fn

    def call(inputs: UnlearningInputs, params: object | None = None, state: object | None = None) -> Tensor:
        p = coerce_params(params_cls, params)
        if state_cls is None:
            return fn(inputs, p)
        return fn(inputs, p, state if state is not None else state_cls())

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    call.__name__, call.__qualname__, call.__module__ = fn.__name__, fn.__qualname__, fn.__module__
    call.__doc__ = fn.__doc__
    return call


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
        params: type = NoParams,
        hidden: Iterable[str] = (),
        ref_hidden: Iterable[str] = (),
        hidden_layers: Callable[[object], Iterable[int]] | None = None,
        trainable: Callable[[object], Callable[[str], bool]] | None = None,
        state: type | None = None,
        formula: str = "",
        test: str = "",
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
        hidden_set, ref_hidden_set = frozenset(hidden), frozenset(ref_hidden)
        unknown = sorted((need_set | logps_set | logits_set | hidden_set | ref_hidden_set) - set(INPUT_FIELDS))
        if unknown:
            raise ValueError(
                f"{self.kind} '{name}' declares unknown input fields {unknown}; valid: {', '.join(INPUT_FIELDS)}"
            )
        not_read = sorted((logps_set | logits_set | hidden_set | ref_hidden_set) - need_set)
        if not_read:
            raise ValueError(
                f"{self.kind} '{name}' needs reference outputs of {not_read} but not the fields themselves"
            )
        if bool(hidden_set or ref_hidden_set) != (hidden_layers is not None):
            raise ValueError(f"{self.kind} '{name}': hidden / ref_hidden and hidden_layers go together")
        if not dataclasses.is_dataclass(params):
            raise ValueError(f"{self.kind} '{name}': params must be a dataclass, got {params!r}")

        def decorator(fn: TermFn) -> TermFn:
            call = _calling(fn, params, state)
            if name in self._specs:
                previous = getattr(self._specs[name].fn, "__wrapped__", self._specs[name].fn)
                raise ValueError(
                    f"{self.kind} '{name}' is already registered by {previous.__module__}.{previous.__qualname__}; "
                    f"cannot register {fn.__module__}.{fn.__qualname__} under the same name"
                )
            self._specs[name] = TermSpec(
                name=name,
                fn=call,
                needs=need_set,
                needs_ref_logps=logps_set,
                needs_ref_logits=logits_set,
                description=description,
                paper=paper,
                params=params,
                hidden=hidden_set,
                ref_hidden=ref_hidden_set,
                hidden_layers=hidden_layers,
                trainable=trainable,
                state=state,
                formula=formula,
                test=test,
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
