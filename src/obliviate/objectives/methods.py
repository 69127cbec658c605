"""Unlearning methods: a forget term, a regularizer, their coefficients, and the forget-term mask.

The 14 methods of Yuan et al. (2024, arXiv 2410.08109) are named here with the paper's defaults
(docs/methods.md). Any other ``<forget>+<regularizer>`` pair of registered terms is a valid method too, with the
default coefficients: ``forget_coeff = regularization_coeff = 1.0`` and ``mask = True``, except that a
pair whose forget term is ME takes ME+GD's defaults, ``forget_coeff = 0.1`` and ``mask = False``
(the paper's setting for ME; applying it to every ME pair means that swapping the regularizer changes
only the regularizer).

Newer methods are registered with :func:`register_method` next to their terms (``obliviate/objectives/recent/``),
with their papers' parameter defaults and the names open-unlearning gives them (``aliases``); :func:`all_methods`
lists them after the 14.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from obliviate.errors import ConfigError
from obliviate.objectives import terms  # noqa: F401  (registers the built-in terms)
from obliviate.objectives.registry import FORGET_TERMS, REGULARIZERS, get_forget, get_regularizer
from obliviate.objectives.types import INPUT_FIELDS


@dataclass(frozen=True)
class MethodSpec:
    """A runnable unlearning method.

    ``loss = forget_coeff · L_forget + regularization_coeff · L_reg``. ``mask``: True, the forget term
    sees answer tokens only; False, question and answer tokens (never padding). Regularizers always see
    answer tokens only. ``targeted``: the forget term trains towards a refusal answer (IDK, DPO) rather
    than only away from the forget answer (GA, NPO, ME, LLMU).
    """

    name: str
    forget: str
    regularizer: str
    forget_coeff: float = 1.0
    regularization_coeff: float = 1.0
    mask: bool = True
    targeted: bool = False
    description: str = ""
    paper: str = ""
    forget_params: Mapping[str, object] = field(default_factory=dict)
    regularizer_params: Mapping[str, object] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    formula: str = ""
    test: str = ""
    train: Mapping[str, object] = field(default_factory=dict)
    tofu_splits: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    check: Callable[[object, object], list[str]] | None = None   # (forget params, regularizer params) → problems


@dataclass(frozen=True)
class RequiredInputs:
    """What a (forget term, regularizer) pair reads, so that only those forward passes are run.

    ``fields``: the :class:`UnlearningInputs` fields to fill. ``ref_logps`` / ``ref_logits``: the fields
    whose reference-model log-probs / logits are read. All in :class:`UnlearningInputs` field order.
    """

    fields: tuple[str, ...]
    ref_logps: tuple[str, ...]
    ref_logits: tuple[str, ...]
    hidden: tuple[str, ...] = ()
    ref_hidden: tuple[str, ...] = ()

    @property
    def needs_reference_model(self) -> bool:
        """Whether a frozen reference model must be loaded (NPO, DPO, KL, LLMU, and terms reading its states)."""
        return bool(self.ref_logps or self.ref_logits or self.ref_hidden)


# ME+GD's defaults (docs/methods.md), also used for every other pair whose forget term is ME.
_ME_FORGET_COEFF = 0.1
_ME_MASK = False


def _is_targeted(forget: str) -> bool:
    # A targeted forget term trains towards a refusal, so it reads the (forget question, refusal) batch.
    return "forget_idk" in get_forget(forget).needs


def _named(
    name: str, forget: str, regularizer: str, description: str, paper: str, *,
    forget_coeff: float = 1.0, mask: bool = True,
) -> MethodSpec:
    return MethodSpec(
        name=name,
        forget=forget,
        regularizer=regularizer,
        forget_coeff=forget_coeff,
        regularization_coeff=1.0,
        mask=mask,
        targeted=_is_targeted(forget),
        description=description,
        paper=paper,
    )


_YUAN = terms.PAPER_YUAN
_NAMED_METHODS: tuple[MethodSpec, ...] = (
    _named("GA", "ga", "none", "gradient ascent on the forget set", terms.PAPER_GA),
    _named("GA+GD", "ga", "gd", "gradient ascent, gradient descent on retain", terms.PAPER_TOFU),
    _named("GA+KL", "ga", "kl", "gradient ascent, KL to the reference on retain", terms.PAPER_TOFU),
    _named("NPO", "npo", "none", "negative preference optimisation", terms.PAPER_NPO),
    _named("NPO+GD", "npo", "gd", "NPO, gradient descent on retain", terms.PAPER_NPO),
    _named("NPO+KL", "npo", "kl", "NPO, KL to the reference on retain", terms.PAPER_NPO),
    _named("DPO", "dpo", "none", "DPO preferring a refusal over the forget answer", terms.PAPER_TOFU),
    _named("DPO+GD", "dpo", "gd", "DPO, gradient descent on retain", terms.PAPER_TOFU),
    _named("DPO+KL", "dpo", "kl", "DPO, KL to the reference on retain", terms.PAPER_TOFU),
    _named("IDK+GD", "idk", "gd", "fine-tune on refusals, gradient descent on retain", terms.PAPER_TOFU),
    _named("IDK+KL", "idk", "kl", "fine-tune on refusals, KL to the reference on retain", terms.PAPER_TOFU),
    _named("LLMU", "llmu", "kl", "GA + mismatched retain answers on forget questions, KL on retain",
           terms.PAPER_LLMU),
    _named("ME+GD", "me", "gd", "maximise entropy on forget, gradient descent on retain", _YUAN,
           forget_coeff=_ME_FORGET_COEFF, mask=_ME_MASK),
    _named("IDK+AP", "idk", "ap", "fine-tune on refusals, answer preservation on retain", _YUAN),
)


#: open-unlearning's names of the 14 (its NPO and DPO include a retain term, so its names differ from ours there).
_ALIASES: dict[str, str] = {"gradascent": "GA", "graddiff": "GA+GD", "idknll": "IDK+GD", "idkdpo": "DPO+GD"}
_REGISTERED: list[MethodSpec] = []


def list_methods() -> list[MethodSpec]:
    """The 14 named methods of Yuan et al. (2024), in the paper's order."""
    return list(_NAMED_METHODS)


def all_methods() -> list[MethodSpec]:
    """The 14 named methods, then every method registered with :func:`register_method`, in registration order."""
    return [*_NAMED_METHODS, *_REGISTERED]


def register_method(name: str, forget: str, regularizer: str, *, description: str, paper: str,
                    forget_coeff: float = 1.0, regularization_coeff: float = 1.0, mask: bool = True,
                    forget_params: Mapping[str, object] | None = None,
                    regularizer_params: Mapping[str, object] | None = None, aliases: tuple[str, ...] = (),
                    formula: str = "", test: str = "", train: Mapping[str, object] | None = None,
                    tofu_splits: Mapping[str, Mapping[str, object]] | None = None,
                    check: Callable[[object, object], list[str]] | None = None) -> MethodSpec:
    """Name a method: its terms, coefficients, mask and parameter defaults (its paper's), the names other toolkits
    give it, its formula and the test that pins it. ``train``: the paper's training settings where they differ from
    the TOFU defaults of the config generator; ``tofu_splits``: per TOFU split, method settings the paper tuned for
    it (``{"forget10": {"forget_params": {...}, "regularization_coeff": ...}}``), written into that split's shipped
    config; ``check(forget_params, regularizer_params)`` returns the problems of a combination of the two (checked at
    config time). ValueError on a name or alias already taken (a mistake in code)."""
    forget_spec, reg_spec = get_forget(forget), get_regularizer(regularizer)
    taken = {m.name.lower() for m in all_methods()} | set(_ALIASES)
    for key in (name, *aliases):
        if "".join(key.split()).lower() in taken:
            raise ValueError(f"method name or alias {key!r} is already taken")
    spec = MethodSpec(name=name, forget=forget, regularizer=regularizer, forget_coeff=forget_coeff,
                      regularization_coeff=regularization_coeff, mask=mask, targeted=_is_targeted(forget),
                      description=description, paper=paper, forget_params=dict(forget_params or {}),
                      regularizer_params=dict(regularizer_params or {}), aliases=tuple(aliases),
                      formula=formula or f"{forget_spec.formula} + {reg_spec.formula}", test=test,
                      train=dict(train or {}), tofu_splits={k: dict(v) for k, v in (tofu_splits or {}).items()},
                      check=check)
    _REGISTERED.append(spec)
    for alias in aliases:
        _ALIASES["".join(alias.split()).lower()] = name
    return spec


def _pair_name(forget: str, regularizer: str) -> str:
    return forget.upper() if regularizer == "none" else f"{forget.upper()}+{regularizer.upper()}"


def _unknown_method(name: str) -> ConfigError:
    candidates = [m.name.lower() for m in all_methods()] + list(_ALIASES) + [
        _pair_name(f, r).lower() for f in FORGET_TERMS.names() for r in REGULARIZERS.names()
    ]
    close = difflib.get_close_matches(name.strip().lower(), list(dict.fromkeys(candidates)), n=1)
    hint = f"did you mean '{close[0].upper()}'? " if close else ""
    return ConfigError([
        f"unknown method '{name}'; {hint}named methods: {', '.join(m.name for m in all_methods())}; "
        f"or any '<forget>+<regularizer>' with forget terms {', '.join(FORGET_TERMS.names())} "
        f"and regularizers {', '.join(REGULARIZERS.names())}"
    ])


def resolve_method(name: str) -> MethodSpec:
    """The method called ``name`` (case-insensitive, spaces ignored).

    A named method (:func:`list_methods`) is returned as defined. Otherwise ``name`` is read as
    ``"<forget>"`` (no regularizer) or ``"<forget>+<regularizer>"`` of registered terms, with the
    default coefficients described in the module docstring; a pair that equals a named method's
    (``"ga+none"``, ``"llmu+kl"``) returns that method. An unknown name raises ConfigError with the
    closest valid name and the valid choices.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError([f"method must be a non-empty string such as 'NPO+GD', got {name!r}"])
    key = "".join(name.split()).lower()
    key = "".join(_ALIASES.get(key, key).split()).lower()
    for method in all_methods():
        if method.name.lower() == key:
            return method
    parts = key.split("+")
    if len(parts) == 1:
        parts.append("none")
    if len(parts) != 2 or parts[0] not in FORGET_TERMS or parts[1] not in REGULARIZERS:
        raise _unknown_method(name)
    forget, regularizer = parts
    for method in all_methods():
        if (method.forget, method.regularizer) == (forget, regularizer):
            return method
    forget_spec, reg_spec = get_forget(forget), get_regularizer(regularizer)
    is_me = forget == "me"
    return MethodSpec(
        name=_pair_name(forget, regularizer),
        forget=forget,
        regularizer=regularizer,
        forget_coeff=_ME_FORGET_COEFF if is_me else 1.0,
        regularization_coeff=1.0,
        mask=_ME_MASK if is_me else True,
        targeted=_is_targeted(forget),
        description=f"{forget_spec.description}; regularizer: {reg_spec.description}",
        paper=forget_spec.paper,
    )


def required_inputs(forget: str, regularizer: str) -> RequiredInputs:
    """The inputs read by forget term ``forget`` and regularizer ``regularizer`` together.

    Unknown names raise ConfigError (both reported if both are unknown).
    """
    errors = []
    if forget not in FORGET_TERMS:
        errors.append(FORGET_TERMS.unknown_name_message(forget))
    if regularizer not in REGULARIZERS:
        errors.append(REGULARIZERS.unknown_name_message(regularizer))
    if errors:
        raise ConfigError(errors)
    specs = (get_forget(forget), get_regularizer(regularizer))
    needs = set().union(*(s.needs for s in specs))
    logps = set().union(*(s.needs_ref_logps for s in specs))
    logits = set().union(*(s.needs_ref_logits for s in specs))
    hidden = set().union(*(s.hidden for s in specs))
    ref_hidden = set().union(*(s.ref_hidden for s in specs))
    return RequiredInputs(
        fields=tuple(f for f in INPUT_FIELDS if f in needs),
        ref_logps=tuple(f for f in INPUT_FIELDS if f in logps),
        ref_logits=tuple(f for f in INPUT_FIELDS if f in logits),
        hidden=tuple(f for f in INPUT_FIELDS if f in hidden),
        ref_hidden=tuple(f for f in INPUT_FIELDS if f in ref_hidden),
    )
