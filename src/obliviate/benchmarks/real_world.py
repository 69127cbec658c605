"""The real-world scenario (Yuan et al., 2024, arXiv 2410.08109; docs/real_world.md): forget facts about real people.

Unlike TOFU, there is no fine-tuning step first: the model already knows these people from pre-training.
The forget set holds questions about the people to forget; the *neighbour* sets hold questions about other,
similar people: ``neighbor.json`` is the retain set during training, ``neighbor_perturbed.json`` the neighbour
set evaluation measures utility on. General ability (ARC, TruthfulQA, TriviaQA, MMLU, GSM8K) is measured
separately with lm-evaluation-harness.

A real-world folder holds four files (JSON lines or a JSON array, ``.json`` or ``.jsonl``):

* ``forget.json``: the training forget set, with ``name``, ``question``, ``answer``, ``golden_answer`` and
  ``task_id`` (one task per forgotten person in the paper's data; an integer or a string holding one);
* ``forget_perturbed.json``: the rows of ``forget.json`` in the same order, plus ``paraphrased_answer`` and
  ``perturbed_answer`` (a list of wrong answers);
* ``neighbor.json``: the training retain set, same fields (``task_id`` optional);
* ``neighbor_perturbed.json``: the evaluation neighbour set, with ``paraphrased_answer`` and
  ``perturbed_answer``, in one of two layouts (:data:`NEIGHBOR_LAYOUTS`): ``held_out`` — other people, none of
  them in ``neighbor.json``, so utility is measured on people the unlearning never trained on (the paper's
  released data: 20 neighbours to train on, 20 others to evaluate on) — or ``repeated`` — the rows of
  ``neighbor.json`` in the same order, so the neighbour set is both the retain and the evaluation set.

Nobody to forget may appear in either neighbour file.

``answer`` is what training sees (in the paper's data, the target model's own full answer); ``golden_answer``
is the short true answer that evaluation compares with (ROUGE, Probability, Truth ratio, Entailment). Cosine
similarity uses the full ``answer``, as the paper's released code does.

Evaluation (:func:`real_world_benchmark`): the forget set is evaluated as a forget set, the neighbour set as a
retain set — Probability ``P(golden|q)`` and the paraphrase-vs-perturbed Truth ratio, as the paper's released
code does — and the entailment premise is the generation on both sets. Aggregates
(:func:`real_world_aggregates`): MU is the harmonic mean of the six neighbour-set metrics, which is how the
paper computes it in this scenario; FE as usual from the forget set; Forget Quality is not defined, because
there is no model that never saw these facts to compare with.

The package ships a small example in the paper's layout (3 forgotten people × 4 facts, 6 neighbours × 4 facts
to train on, 6 held-out neighbours × 4 facts to evaluate on; public facts about scientists and writers born
before 1900): ``load_real_world()`` with no source reads it, and ``python -m obliviate.benchmarks.real_world
DIR`` writes it to a folder for configs to point at.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from obliviate.benchmarks.types import EvalSet, LoadedBenchmark
from obliviate.data.loading import QA_SUFFIXES, RawRows, format_problem, parse_records, raise_problems, read_rows
from obliviate.data.records import QARecord
from obliviate.errors import DataError, ObliviateError
from obliviate.evaluation.aggregates import MU_METRICS, Aggregate, forget_efficacy, harmonic_mean

__all__ = [
    "FILE_STEMS",
    "FORGET_SET",
    "NEIGHBOR_LAYOUTS",
    "NEIGHBOR_SET",
    "RealWorldSplits",
    "example_folder",
    "is_real_world_folder",
    "load_real_world",
    "real_world_aggregates",
    "real_world_benchmark",
    "write_example",
]

FILE_STEMS: dict[str, str] = {
    "forget": "forget",
    "neighbor": "neighbor",
    "forget_eval": "forget_perturbed",
    "neighbor_eval": "neighbor_perturbed",
}
"""The four files of a real-world folder (without suffix), by the :class:`RealWorldSplits` field they fill."""

# Set names in results.json; the neighbour set is evaluated with kind "retain".
FORGET_SET = "forget"
NEIGHBOR_SET = "neighbor"

NEIGHBOR_LAYOUTS: tuple[str, ...] = ("held_out", "repeated")
"""How ``neighbor_perturbed.json`` relates to ``neighbor.json``: other people (held-out neighbours, the paper's
released data), or the same rows in the same order."""

# Base file row fields that the perturbed file must repeat unchanged, row for row: the question, who it is
# about, and both answers (training uses the base file's, evaluation the perturbed file's). task_id is compared
# as parsed, so "3" in one file and 3 in the other agree.
_MATCHED_FIELDS: tuple[str, ...] = ("question", "name", "answer", "golden_answer", "task_id")

# Without these a perturbed row has no truth ratio: it compares the paraphrase with the wrong answers.
_PERTURBED_REQUIRED: tuple[str, ...] = ("paraphrased_answer", "perturbed_answer")

MU_NOTE = ("real-world scenario: harmonic mean of the six neighbour-set metrics, as the paper computes MU in "
           "this setting; the 18-number MU needs TOFU's retain, real-authors and world-facts sets, which this "
           "scenario does not have; general ability is measured with lm-evaluation-harness")
FQ_REASON = ("not defined in the real-world scenario: Forget Quality compares with a model never trained on "
             "the forget set, and no such model exists for facts learned in pre-training")
MU_TOFU_REASON = ("TOFU's 9-number MU needs the retain, real-authors and world-facts sets; the real-world "
                  "scenario has a neighbour set instead (see model_utility)")
MU_RETAIN_NOTE = ("equal to model_utility, as the paper's code computes it: the evaluated neighbour set "
                  "(neighbor_perturbed) is the real-world scenario's only non-forget set; it either repeats the "
                  "retain set (neighbor.json) or holds other, held-out neighbours (benchmark.neighbor_layout says "
                  "which)")


@dataclass
class RealWorldSplits:
    """The four sets of a real-world folder, validated against each other.

    ``forget`` and ``neighbor`` are the training forget and retain sets; ``forget_eval`` the forget rows with
    ``paraphrased_answer`` and ``perturbed_answers``; ``neighbor_eval`` the evaluation neighbour set, which is
    either other people than ``neighbor`` (``neighbor_layout`` ``"held_out"``) or the same rows
    (``"repeated"``). ``files`` maps each field name to the file it came from.
    """

    forget: list[QARecord]
    neighbor: list[QARecord]
    forget_eval: list[QARecord]
    neighbor_eval: list[QARecord]
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    neighbor_layout: str = "repeated"

    @property
    def forget_people(self) -> list[str]:
        """The people to forget, in order of first appearance."""
        return _people(self.forget)

    @property
    def neighbor_people(self) -> list[str]:
        """The neighbour people of the training retain set, in order of first appearance."""
        return _people(self.neighbor)

    @property
    def neighbor_eval_people(self) -> list[str]:
        """The neighbour people evaluation measures utility on, in order of first appearance."""
        return _people(self.neighbor_eval)


# -- the shipped example --------------------------------------------------------------------------------------
def _example_resource() -> Any:
    return resources.files("obliviate").joinpath("resources", "real_world")


def example_folder() -> Path:
    """The folder of the shipped example.

    An installed package is normally a folder on disk, and that folder is returned. When the package is
    imported from an archive, the files are first written to a fresh temporary folder.
    """
    ref = _example_resource()
    if isinstance(ref, Path) and ref.is_dir():
        return ref
    return write_example(Path(tempfile.mkdtemp(prefix="obliviate-real-world-")))


def write_example(folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write the shipped example's four files into ``folder`` (created if needed) and return it.

    Raises:
        ObliviateError: a file of that name already exists with other content and ``overwrite`` is False.
    """
    folder = Path(folder).expanduser()
    ref = _example_resource()
    contents = {f"{stem}.json": ref.joinpath(f"{stem}.json").read_text(encoding="utf-8")
                for stem in FILE_STEMS.values()}
    clashes = [name for name, text in contents.items()
               if (folder / name).is_file() and (folder / name).read_text(encoding="utf-8") != text]
    if clashes and not overwrite:
        raise ObliviateError(f"{folder} already holds {', '.join(clashes)} with other content; choose another "
                             f"folder or pass --force to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# -- loading --------------------------------------------------------------------------------------------------
def _find(folder: Path, stem: str) -> Path | None:
    for suffix in QA_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def is_real_world_folder(folder: str | Path) -> bool:
    """True when ``folder`` holds all four files of the real-world layout (any accepted suffix)."""
    folder = Path(folder)
    return folder.is_dir() and all(_find(folder, stem) is not None for stem in FILE_STEMS.values())


@dataclass
class _LoadedFile:
    """One validated file: its records and, aligned with them, each row's location for messages."""

    path: Path
    origin: str
    records: list[QARecord]
    wheres: list[str]
    values: list[Mapping[str, Any]]


def _load_file(path: Path, *, perturbed: bool) -> _LoadedFile:
    """Validate one file in the real-world layout; perturbed files must carry the evaluation fields too."""
    raw: RawRows = read_rows(path)
    # parse_records raises on any bad row, so after it the rows and records are aligned one to one.
    records = parse_records(raw, layout="real_world")
    if perturbed:
        problems = [format_problem(raw.origin, row.where, name,
                                   "required field is missing (a perturbed file needs paraphrased_answer and "
                                   "perturbed_answer for the truth ratio)")
                    for row in raw.rows for name in _PERTURBED_REQUIRED if row.value.get(name) is None]
        if problems:
            raise_problems(raw.origin, problems, what="real-world evaluation data")
    return _LoadedFile(path, raw.origin, records, [row.where for row in raw.rows],
                       [row.value for row in raw.rows])


def _compare(base: _LoadedFile, pert: _LoadedFile) -> list[str]:
    """Problems where a perturbed file is not its base file row for row (same rows, same order)."""
    problems: list[str] = []
    if len(base.records) != len(pert.records):
        problems.append(format_problem(pert.origin, None, None,
                                       f"has {len(pert.records)} rows but {base.path.name} has "
                                       f"{len(base.records)}: it must hold the same questions in the same order"))
    for i, (b, p) in enumerate(zip(base.records, pert.records)):
        for name in _MATCHED_FIELDS:
            bv, pv = getattr(b, name), getattr(p, name)
            if bv != pv:
                problems.append(format_problem(
                    pert.origin, pert.wheres[i], name,
                    f"{_short(pv)} differs from {base.path.name} {base.wheres[i]} ({_short(bv)}); a perturbed "
                    f"file repeats its base file's rows in the same order"))
    return problems


def _person_key(name: str) -> str:
    # The same person written with other spacing or case is still the same person.
    return " ".join(name.split()).casefold()


def _people(records: Sequence[QARecord]) -> list[str]:
    seen: dict[str, str] = {}
    for r in records:
        if r.name is not None:
            seen.setdefault(_person_key(r.name), r.name)
    return list(seen.values())


def _first_rows(loaded: _LoadedFile) -> dict[str, str]:
    """Each person of a file (by :func:`_person_key`) with the location of their first row."""
    first: dict[str, str] = {}
    for r, where in zip(loaded.records, loaded.wheres):
        first.setdefault(_person_key(r.name or ""), where)
    return first


def _overlap(forget: _LoadedFile, neighbors: Sequence[_LoadedFile]) -> list[str]:
    """One problem per forgotten person found in any neighbour file, naming every file they are found in."""
    firsts = [(n, _first_rows(n)) for n in neighbors]
    problems, reported = [], set()
    for r, where in zip(forget.records, forget.wheres):
        key = _person_key(r.name or "")
        found = [f"{n.origin}, {first[key]}" for n, first in firsts if key in first]
        if found and key not in reported:
            reported.add(key)
            problems.append(format_problem(
                forget.origin, where, "name",
                f"{r.name!r} is also a neighbour ({'; '.join(found)}); a person is either forgotten or kept, so "
                f"remove them from the neighbour files or from the forget files"))
    return problems


def _neighbor_layout(base: _LoadedFile, pert: _LoadedFile) -> tuple[str, list[str]]:
    """Which of :data:`NEIGHBOR_LAYOUTS` the neighbour files follow, and the problems if they follow neither.

    No person of ``neighbor_perturbed`` in ``neighbor``: held-out neighbours. Only people of ``neighbor``: the
    file must repeat ``neighbor`` row for row. Some of each: neither layout, one problem that says so.
    """
    base_people = _first_rows(base)
    pert_people = _first_rows(pert)
    shared = [key for key in pert_people if key in base_people]
    if not shared:
        return "held_out", []
    if len(shared) == len(pert_people):
        return "repeated", _compare(base, pert)
    names = {_person_key(r.name or ""): r.name for r in pert.records}
    first = shared[0]
    return "repeated", [format_problem(
        pert.origin, pert_people[first], "name",
        f"{len(shared)} of its {len(pert_people)} people {'is' if len(shared) == 1 else 'are'} also in "
        f"{base.path.name} (first: {names[first]!r}, "
        f"{base.path.name} {base_people[first]}), the others are not; the neighbour evaluation file either "
        f"holds only other people than {base.path.name} (held-out neighbours, as in the paper's data) or repeats "
        f"{base.path.name}'s rows in the same order")]


def load_real_world(source: str | Path | None = None) -> RealWorldSplits:
    """Load and cross-check a real-world folder; ``None`` loads the shipped example.

    Every row of every file is validated in the ``real_world`` layout (``name`` and ``golden_answer``
    required); the perturbed files must also give ``paraphrased_answer`` and ``perturbed_answer`` on every
    row; ``forget_perturbed`` repeats ``forget``'s rows in the same order; ``neighbor_perturbed`` holds either
    only other people than ``neighbor`` (held-out neighbours) or ``neighbor``'s rows in the same order; and no
    forgotten person is in either neighbour file.

    Raises:
        DataError: the folder or a file is missing, a row is invalid (file, line and field named; problems
            in several files are reported together), or the files disagree with each other.
    """
    folder = example_folder() if source is None else Path(source).expanduser()
    if not folder.exists():
        raise DataError("folder not found", path=str(source))
    if not folder.is_dir():
        raise DataError("is a file: pass the folder that holds forget.json, neighbor.json, "
                        "forget_perturbed.json and neighbor_perturbed.json", path=str(source))
    files = {key: _find(folder, stem) for key, stem in FILE_STEMS.items()}
    missing = [f"{FILE_STEMS[key]}.json" for key, path in files.items() if path is None]
    if missing:
        raise DataError(f"missing {', '.join(missing)}: a real-world folder holds forget.json, neighbor.json, "
                        f"forget_perturbed.json and neighbor_perturbed.json", path=str(folder))

    loaded: dict[str, _LoadedFile] = {}
    errors: list[DataError] = []
    for key, path in ((k, p) for k, p in files.items() if p is not None):
        try:
            loaded[key] = _load_file(path, perturbed=key.endswith("_eval"))
        except DataError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DataError(f"{len(errors)} files have problems:\n" + "\n".join(str(e) for e in errors),
                        path=str(folder))

    layout, neighbor_problems = _neighbor_layout(loaded["neighbor"], loaded["neighbor_eval"])
    problems = (_compare(loaded["forget"], loaded["forget_eval"]) + neighbor_problems
                + _overlap(loaded["forget"], [loaded["neighbor"], loaded["neighbor_eval"]]))
    if problems:
        raise_problems(str(folder), problems, what="the real-world files")
    return RealWorldSplits(forget=loaded["forget"].records, neighbor=loaded["neighbor"].records,
                           forget_eval=loaded["forget_eval"].records, neighbor_eval=loaded["neighbor_eval"].records,
                           folder=folder, files={key: f.path for key, f in loaded.items()}, neighbor_layout=layout)


# -- evaluation -----------------------------------------------------------------------------------------------
def real_world_benchmark(source: str | Path | RealWorldSplits | None = None) -> LoadedBenchmark:
    """The evaluation sets of a real-world folder, ready for ``obliviate.evaluation.runner.evaluate``.

    Two sets: ``forget`` (kind forget) from ``forget_perturbed`` and ``neighbor`` (kind retain) from
    ``neighbor_perturbed`` — the held-out neighbours, or the retain rows again (``info["neighbor_layout"]``);
    ``info["real_world"]`` is True, so the generation is the entailment premise on both. ``source`` is a
    folder, already loaded splits, or None for the shipped example.
    """
    splits = source if isinstance(source, RealWorldSplits) else load_real_world(source)
    sets = [EvalSet(FORGET_SET, splits.forget_eval, "forget"), EvalSet(NEIGHBOR_SET, splits.neighbor_eval, "retain")]
    info = {"name": "real_world", "source": str(splits.folder), "real_world": True,
            "neighbor_layout": splits.neighbor_layout, "forget_people": splits.forget_people,
            "neighbor_people": splits.neighbor_people, "neighbor_eval_people": splits.neighbor_eval_people}
    return LoadedBenchmark(sets, info, [splits.files[key] for key in FILE_STEMS], aggregate=real_world_aggregates)


def _neighbor_utility(name: str, metrics: Mapping[str, float | None] | None, note: str):
    """Harmonic mean of the six neighbour-set metrics as an Aggregate; unavailable ones are left out."""
    wanted = [f"{NEIGHBOR_SET}.{m}" for m in MU_METRICS]
    if metrics is None:
        return Aggregate(name, None, True, False, missing=wanted, reason="the neighbour set was not evaluated")
    used, values, missing = [], [], []
    for m in MU_METRICS:
        value = metrics.get(m)
        if value is None:
            missing.append(f"{NEIGHBOR_SET}.{m}")
        else:
            used.append(f"{NEIGHBOR_SET}.{m}")
            values.append(float(value))
    if not values:
        return Aggregate(name, None, True, False, missing=missing,
                         reason=f"none of the {len(wanted)} neighbour-set metrics is available")
    notes = [note]
    if missing:
        notes.append(f"computed over {len(values)} of {len(wanted)} numbers; unavailable: {', '.join(missing)}")
    zeros = [c for c, v in zip(used, values) if v == 0.0]
    if zeros:
        notes.append(f"{', '.join(zeros)} {'is' if len(zeros) == 1 else 'are'} 0, so the harmonic mean is 0")
    return Aggregate(name, harmonic_mean(values), True, True, partial=bool(missing), components=used,
                     missing=missing, note="; ".join(notes))


def real_world_aggregates(sets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """The ``aggregates`` section of ``results.json`` for the real-world sets (``forget``, ``neighbor``).

    Same keys as the TOFU aggregates, so reports read both: ``model_utility`` and ``model_utility_retain``
    are the harmonic mean of the six metrics of the evaluated neighbour set (partial, with the missing ones
    listed, when a metric is unavailable), the paper's code computing both from that one set, in either
    neighbour layout; ``model_utility_tofu`` and ``forget_quality`` are unavailable with the reason;
    ``forget_efficacy`` comes from the forget set as in every scenario.
    """
    values = {name: {m: s["metrics"][m]["value"] for m in MU_METRICS if m in s["metrics"]}
              for name, s in sets.items()}
    neighbor = values.get(NEIGHBOR_SET)
    out = {
        "model_utility": _neighbor_utility("model_utility", neighbor, MU_NOTE),
        "model_utility_tofu": Aggregate("model_utility_tofu", None, True, False, reason=MU_TOFU_REASON),
        "model_utility_retain": _neighbor_utility("model_utility_retain", neighbor, MU_RETAIN_NOTE),
        "forget_efficacy": forget_efficacy(values.get(FORGET_SET)),
        "forget_quality": Aggregate("forget_quality", None, True, False, components=["forget.truth_ratio_x"],
                                    reason=FQ_REASON),
    }
    return {name: a.to_dict() for name, a in out.items()}


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- command line ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m obliviate.benchmarks.real_world DIR``: write the shipped example into ``DIR``."""
    parser = argparse.ArgumentParser(prog="python -m obliviate.benchmarks.real_world",
                                     description="Write the shipped real-world example (forget.json, "
                                                 "neighbor.json and their _perturbed files, in the paper's "
                                                 "layout) into a folder.")
    parser.add_argument("folder", help="where to write the four files")
    parser.add_argument("--force", action="store_true", help="replace files of the same name")
    args = parser.parse_args(argv)
    try:
        folder = write_example(args.folder, overwrite=args.force)
    except ObliviateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    splits = load_real_world(folder)
    print(f"wrote {folder}: {len(splits.forget)} forget rows about {', '.join(splits.forget_people)}; "
          f"{len(splits.neighbor)} neighbour rows about {len(splits.neighbor_people)} people to train on; "
          f"{len(splits.neighbor_eval)} neighbour rows about {len(splits.neighbor_eval_people)} "
          f"{'held-out people' if splits.neighbor_layout == 'held_out' else 'of the same people'} to evaluate on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
