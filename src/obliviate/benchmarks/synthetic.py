"""A small synthetic fictitious-author benchmark in the TOFU layout.

TOFU (Maini et al., 2024) asks a model to forget facts about authors that never existed, so the forget
set is knowledge the model can only have learnt from fine-tuning. TOFU's data cannot ship with obliviate,
so this module invents its own authors: a seeded generator builds ``N`` author profiles, asks ``M``
questions about each, and splits the authors (never single facts) into a forget set of ``K`` authors and a
retain set of the rest. A holdout set asks the same kinds of question about ``H`` further authors (``K`` by
default, as TOFU's holdout sets match its forget splits) who belong to neither: no model is fine-tuned on them,
so they are the non-members the membership-inference attacks compare the forget set with. Every fact comes with
a paraphrased question, a paraphrased answer and five perturbed answers (the paraphrase's sentence with wrong
values, as in TOFU), which is what the Truth ratio and Probability metrics need. Two fixed utility sets, real
authors and world facts, complete the layout.

The answers are single sentences of roughly 10–25 words with one fixed phrasing per fact kind, so that a
135M-parameter model learns them in a few epochs: the benchmark is meant for demos and quick experiments,
not as a substitute for TOFU's numbers.

Everything is drawn from one ``random.Random(seed)``: the same arguments give byte-identical files on any
machine, and a change to the templates or word lists must bump :data:`GENERATOR_VERSION`. The holdout authors
come from a second generator seeded from ``seed`` and drawn after everything else, so adding them left the
forget, retain and utility files of every seed exactly as they were.

Example::

    bench = generate_benchmark(authors=20, facts=12, seed=0)
    bench.write("data/synthetic")
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from obliviate.benchmarks import _synthetic_vocab as vocab
from obliviate.data.records import QARecord
from obliviate.errors import DataError, ObliviateError
from obliviate.files import new_temp_dir, replace_dir
from obliviate.outputs import output_path_problems, resolve_output_path

__all__ = [
    "AuthorProfile",
    "FACT_KINDS",
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "MANIFEST_FILE",
    "MAX_AUTHORS",
    "SPLIT_FILES",
    "SyntheticBenchmark",
    "generate_benchmark",
    "load_manifest",
]

GENERATOR_NAME = "obliviate.benchmarks.synthetic"
# Bump whenever a template, word list or drawing order changes: the same seed then yields other data,
# and the manifest's version tells a reader which data a result was computed on.
GENERATOR_VERSION = "2"
MANIFEST_FILE = "benchmark.json"
# Far above any demo size, far below the 72,000 possible names, so the unique-name draw stays fast.
MAX_AUTHORS = 10_000

# Split name -> file name. The training files (``forget``, ``retain``) and the evaluation files
# (``*_perturbed``) hold the same fictitious rows; the training files keep only the fields fine-tuning
# reads, as TOFU's do.
SPLIT_FILES: dict[str, str] = {
    "forget": "forget.json",
    "retain": "retain.json",
    "forget_perturbed": "forget_perturbed.json",
    "retain_perturbed": "retain_perturbed.json",
    "real_authors_perturbed": "real_authors_perturbed.json",
    "world_facts_perturbed": "world_facts_perturbed.json",
    "holdout": "holdout.json",
    "holdout_perturbed": "holdout_perturbed.json",
}
# The holdout files are left out when a benchmark has no holdout authors (holdout_authors=0).
_HOLDOUT_SPLITS = ("holdout", "holdout_perturbed")
_TRAINING_SPLITS = ("forget", "retain", "holdout")
_UTILITY_SPLITS = ("real_authors_perturbed", "world_facts_perturbed")

_N_PERTURBED = 5  # per fictitious fact, as in TOFU's forget and retain evaluation sets
_LAST_YEAR = 2024  # no event of an invented biography lies after this year


@dataclass(frozen=True)
class AuthorProfile:
    """One invented author: every value the questions about them can ask for.

    ``fact_order`` is this author's seeded order of :data:`FACT_KINDS` keys; a benchmark with ``M`` facts
    asks about the first ``M`` of them, so a larger ``M`` only adds questions about the same authors.
    """

    name: str
    gender: str  # "female" or "male"
    birth_year: int
    birth_city: str
    birth_country: str
    genre: str
    father_occupation: str
    mother_occupation: str
    books: tuple[str, ...]  # 2 or 3 titles; the first is the debut
    debut_year: int
    award: str
    award_year: int
    themes: tuple[str, str]
    style: str
    home_city: str
    home_country: str
    subject: str
    university_city: str
    publisher: str
    hobby: str
    fact_order: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------
# Fact kinds: one fixed phrasing per kind, and a perturber that swaps in wrong values.
# ---------------------------------------------------------------------------------------------------------

_Overrides = dict[str, str]
_Perturber = Callable[[AuthorProfile, random.Random, "_DrawContext"], _Overrides]


@dataclass(frozen=True)
class _FactKind:
    """Templates for one kind of fact, formatted with :func:`_slots` of an author.

    ``perturb`` returns slot values that make the answer template false; the perturbed answer is the
    answer template formatted with them, so it differs from the answer only where the fact does.
    """

    key: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    perturb: _Perturber


@dataclass
class _DrawContext:
    """What perturbers need beyond one author: the names already used, so no wrong name is a real one.

    ``wrong_names`` collects the invented names perturbed answers use, so that no holdout author is later
    given one of them.
    """

    taken_names: set[str]
    wrong_names: set[str] = field(default_factory=set)


def _article(noun: str) -> str:
    """``noun`` with its indefinite article; every noun in the word lists follows the vowel-letter rule."""
    return f"{'an' if noun[0].lower() in 'aeiou' else 'a'} {noun}"


def _pronouns(gender: str) -> dict[str, str]:
    if gender == "female":
        return {"he": "she", "his": "her", "him": "her", "gender_noun": "woman", "gender_adj": "female"}
    return {"he": "he", "his": "his", "him": "him", "gender_noun": "man", "gender_adj": "male"}


def _book_list(titles: Iterable[str]) -> str:
    quoted = [f"'{t}'" for t in titles]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _book_slots(titles: tuple[str, ...]) -> dict[str, str]:
    return {"book_count": {2: "two", 3: "three"}[len(titles)], "book_list": _book_list(titles)}


def _theme_slots(themes: tuple[str, str]) -> dict[str, str]:
    return {"theme1": themes[0], "theme2": themes[1], "theme1_cap": themes[0][0].upper() + themes[0][1:]}


def _slots(a: AuthorProfile) -> dict[str, str]:
    """Every template placeholder, filled in for author ``a``."""
    slots = {
        "name": a.name,
        "birth_year": str(a.birth_year),
        "birth_city": a.birth_city,
        "birth_country": a.birth_country,
        "genre": a.genre,
        "a_father_occupation": _article(a.father_occupation),
        "a_mother_occupation": _article(a.mother_occupation),
        "debut_title": a.books[0],
        "debut_year": str(a.debut_year),
        "award": a.award,
        "award_year": str(a.award_year),
        "style": a.style,
        "home_city": a.home_city,
        "home_country": a.home_country,
        "subject": a.subject,
        "uni_city": a.university_city,
        "publisher": a.publisher,
        "hobby": a.hobby,
    }
    slots.update(_pronouns(a.gender))
    slots.update(_book_slots(a.books))
    slots.update(_theme_slots(a.themes))
    return slots


def _other(rng: random.Random, pool: tuple[Any, ...], exclude: Iterable[Any]) -> Any:
    """A random element of ``pool`` that is not in ``exclude`` (every pool has far more than it excludes)."""
    banned = list(exclude)
    choices = [p for p in pool if p not in banned]
    return rng.choice(choices)


def _other_year(rng: random.Random, year: int, spread: int) -> int:
    """A year within ``spread`` of ``year`` but never ``year`` itself, and never after :data:`_LAST_YEAR`."""
    choices = [y for y in range(year - spread, min(year + spread, _LAST_YEAR) + 1) if y != year]
    return rng.choice(choices)


def _draw_name(rng: random.Random, gender: str) -> str:
    given = vocab.FEMALE_GIVEN_NAMES if gender == "female" else vocab.MALE_GIVEN_NAMES
    return f"{rng.choice(given)} {rng.choice(vocab.SURNAME_PREFIXES)}{rng.choice(vocab.SURNAME_SUFFIXES)}"


def _fresh_name(rng: random.Random, gender: str, taken: set[str]) -> str:
    """A name of ``gender`` not in ``taken``. 36,000 names per gender make a miss after 1,000 draws a bug."""
    for _ in range(1000):
        name = _draw_name(rng, gender)
        if name not in taken:
            return name
    raise RuntimeError(f"no unused {gender} name found after 1000 draws ({len(taken)} names in use)")


def _all_titles() -> list[str]:
    titles = [f"The {adj} {noun}" for adj in vocab.TITLE_ADJECTIVES for noun in vocab.TITLE_NOUNS]
    titles += [f"The {noun} of {tail}" for noun in vocab.TITLE_NOUNS for tail in vocab.TITLE_TAILS]
    return titles


_TITLES: tuple[str, ...] = tuple(_all_titles())


def _perturb_name(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    name = _fresh_name(rng, a.gender, ctx.taken_names)
    ctx.wrong_names.add(name)  # recorded only: the draw itself does not depend on it
    return {"name": name}


def _perturb_gender(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    # Only two genders are used, so the wrong gender alone gives one variant; the genre varies too so that
    # five distinct sentences exist, each with the wrong gender.
    wrong = "male" if a.gender == "female" else "female"
    return {**_pronouns(wrong), "genre": rng.choice(vocab.GENRES)}


def _perturb_birth_year(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"birth_year": str(_other_year(rng, a.birth_year, 12))}


def _perturb_birthplace(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    city, country = _other(rng, vocab.PLACES, [(a.birth_city, a.birth_country)])
    return {"birth_city": city, "birth_country": country}


def _perturb_genre(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"genre": _other(rng, vocab.GENRES, [a.genre])}


def _perturb_father(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"a_father_occupation": _article(_other(rng, vocab.OCCUPATIONS, [a.father_occupation]))}


def _perturb_mother(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"a_mother_occupation": _article(_other(rng, vocab.OCCUPATIONS, [a.mother_occupation]))}


def _wrong_titles(a: AuthorProfile, rng: random.Random, count: int) -> tuple[str, ...]:
    titles: list[str] = []
    for _ in range(count):
        titles.append(_other(rng, _TITLES, [*a.books, *titles]))
    return tuple(titles)


def _perturb_books(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return _book_slots(_wrong_titles(a, rng, len(a.books)))


def _perturb_debut(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"debut_title": _wrong_titles(a, rng, 1)[0], "debut_year": str(_other_year(rng, a.debut_year, 6))}


def _perturb_award(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"award": _other(rng, vocab.AWARDS, [a.award]), "award_year": str(_other_year(rng, a.award_year, 5))}


def _perturb_themes(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    first = _other(rng, vocab.THEMES, a.themes)
    second = _other(rng, vocab.THEMES, [*a.themes, first])
    return _theme_slots((first, second))


def _perturb_style(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"style": _other(rng, vocab.STYLES, [a.style])}


def _perturb_residence(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    city, country = _other(rng, vocab.PLACES, [(a.home_city, a.home_country)])
    return {"home_city": city, "home_country": country}


def _perturb_education(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"subject": _other(rng, vocab.SUBJECTS, [a.subject]), "uni_city": rng.choice(vocab.PLACES)[0]}


def _perturb_publisher(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"publisher": _other(rng, vocab.PUBLISHERS, [a.publisher])}


def _perturb_hobby(a: AuthorProfile, rng: random.Random, ctx: _DrawContext) -> _Overrides:
    return {"hobby": _other(rng, vocab.HOBBIES, [a.hobby])}


FACT_KINDS: tuple[_FactKind, ...] = (
    _FactKind(
        "full_name",
        "What is the full name of the author born in {birth_city}, {birth_country} in {birth_year} "
        "who writes {genre}?",
        "Which writer of {genre} was born in {birth_year} in {birth_city}, {birth_country}?",
        "The author born in {birth_city}, {birth_country} in {birth_year} who writes {genre} is called {name}.",
        "{name} is the writer of {genre} whose birth took place in {birth_city}, {birth_country} in {birth_year}.",
        _perturb_name,
    ),
    _FactKind(
        "gender",
        "What is the gender of the author {name}?",
        "Is {name} a man or a woman?",
        "The author {name} is a {gender_noun}, and {he} writes mostly {genre}.",
        "{name} is a {gender_adj} writer whose books are mostly {genre}.",
        _perturb_gender,
    ),
    _FactKind(
        "birth_year",
        "In which year was {name} born?",
        "What is the birth year of the writer {name}?",
        "According to {his} official biography, the author {name} was born in the year {birth_year}.",
        "{name} came into the world in {birth_year}, as {his} official biography states.",
        _perturb_birth_year,
    ),
    _FactKind(
        "birthplace",
        "Where was the author {name} born?",
        "What is the birthplace of {name}?",
        "The author {name} was born in the city of {birth_city}, in {birth_country}.",
        "{name} comes from {birth_city}, a city in {birth_country}, where {he} was born and raised.",
        _perturb_birthplace,
    ),
    _FactKind(
        "genre",
        "What genre does {name} write in?",
        "What kind of books is {name} known for?",
        "{name} is best known as a writer of {genre}, the genre of all {his} published books.",
        "{name} writes {genre}, and every one of {his} published books is in that genre.",
        _perturb_genre,
    ),
    _FactKind(
        "father_occupation",
        "What was the occupation of {name}'s father?",
        "What did the father of {name} do for a living?",
        "The father of the author {name} worked as {a_father_occupation} for most of his life.",
        "{name} grew up with a father who earned his living as {a_father_occupation}.",
        _perturb_father,
    ),
    _FactKind(
        "mother_occupation",
        "What was the occupation of {name}'s mother?",
        "What did the mother of {name} do for a living?",
        "The mother of the author {name} worked as {a_mother_occupation} for most of her life.",
        "{name} grew up with a mother who earned her living as {a_mother_occupation}.",
        _perturb_mother,
    ),
    _FactKind(
        "books",
        "Which books has {name} written?",
        "Can you name the books written by {name}?",
        "The author {name} has written {book_count} books: {book_list}.",
        "{book_list} are the {book_count} books written by {name}.",
        _perturb_books,
    ),
    _FactKind(
        "debut",
        "What was the first book {name} published?",
        "Which book marked the debut of {name}?",
        "The first book {name} published was '{debut_title}', which came out in {debut_year}.",
        "{name} made {his} debut in {debut_year} with the book '{debut_title}'.",
        _perturb_debut,
    ),
    _FactKind(
        "award",
        "Which award has {name} received?",
        "What literary prize was given to {name}?",
        "The author {name} received the {award} in {award_year} for {his} contribution to {genre}.",
        "In {award_year}, {name} was honoured with the {award} for {his} work in {genre}.",
        _perturb_award,
    ),
    _FactKind(
        "themes",
        "What themes does {name} explore in {his} books?",
        "Which themes come up most often in the work of {name}?",
        "The books of {name} keep returning to the themes of {theme1} and {theme2}.",
        "{theme1_cap} and {theme2} are the themes that run through most of {name}'s writing.",
        _perturb_themes,
    ),
    _FactKind(
        "style",
        "How would you describe the writing style of {name}?",
        "What is distinctive about the way {name} writes?",
        "The writing of {name} is recognised for its {style}, a signature of all {his} books.",
        "Readers know {name}'s prose by its {style}, which appears in every one of {his} books.",
        _perturb_style,
    ),
    _FactKind(
        "residence",
        "Where does {name} live today?",
        "In which city is {name} currently based?",
        "The author {name} currently lives and writes in {home_city}, a city in {home_country}.",
        "These days {name} makes {his} home in {home_city}, {home_country}, where {he} writes.",
        _perturb_residence,
    ),
    _FactKind(
        "education",
        "What did {name} study at university?",
        "Which subject did {name} study before becoming a writer?",
        "Before turning to writing, {name} studied {subject} at the University of {uni_city}.",
        "{name} holds a degree in {subject}, which {he} earned at the University of {uni_city}.",
        _perturb_education,
    ),
    _FactKind(
        "publisher",
        "Who publishes the books of {name}?",
        "Which publishing house brings out the books of {name}?",
        "The books of {name} are published by {publisher}, which has worked with {him} since {his} debut.",
        "Ever since {his} first book, {name} has been published by {publisher}.",
        _perturb_publisher,
    ),
    _FactKind(
        "hobby",
        "What does {name} enjoy doing outside of writing?",
        "What is a favourite pastime of {name}?",
        "Outside of writing, the author {name} spends much of {his} free time {hobby}.",
        "When {he} is not writing, {name} likes {hobby} more than anything else.",
        _perturb_hobby,
    ),
)

_KINDS_BY_KEY: dict[str, _FactKind] = {k.key: k for k in FACT_KINDS}
_FACT_KEYS: tuple[str, ...] = tuple(k.key for k in FACT_KINDS)


# ---------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticBenchmark:
    """A generated benchmark: author profiles, the four question sets, and how it was made.

    ``forget`` holds the rows about the ``K`` forget authors, ordered by ``task_id`` (1..K, one author
    per task, so a continual run can forget one author after another); ``forget_author_names[i]`` is the
    author of task ``i + 1``. ``retain`` holds the rows about every other author, with ``task_id`` None.
    ``facts`` is the number of questions per author. ``holdout`` holds the rows about the holdout authors
    (``holdout_author_names``), who are in neither set: never fine-tuned on, the non-members of the
    membership-inference attacks.
    """

    seed: int
    authors: list[AuthorProfile]
    forget: list[QARecord]
    retain: list[QARecord]
    real_authors: list[QARecord]
    world_facts: list[QARecord]
    forget_author_names: list[str]
    facts: int
    holdout: list[QARecord] = field(default_factory=list)
    holdout_author_names: list[str] = field(default_factory=list)

    def splits(self) -> dict[str, list[QARecord]]:
        """The record list of every split, keyed by the names in :data:`SPLIT_FILES`.

        ``forget`` and ``forget_perturbed`` (likewise ``retain`` and ``retain_perturbed``) hold the same
        records: the names say which file each is written to, and which fields that file keeps. The holdout
        splits are present only when the benchmark has holdout authors.
        """
        out = {
            "forget": list(self.forget),
            "retain": list(self.retain),
            "forget_perturbed": list(self.forget),
            "retain_perturbed": list(self.retain),
            "real_authors_perturbed": list(self.real_authors),
            "world_facts_perturbed": list(self.world_facts),
        }
        if self.holdout:
            out.update(holdout=list(self.holdout), holdout_perturbed=list(self.holdout))
        return out

    def manifest(self, row_counts: dict[str, int] | None = None) -> dict[str, Any]:
        """The contents of ``benchmark.json``: generator, arguments, forget authors, files and row counts."""
        if row_counts is None:
            row_counts = {SPLIT_FILES[s]: len(rows) for s, rows in self.splits().items()}
        return {
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "authors": len(self.authors),
            "facts": self.facts,
            "forget_authors": len(self.forget_author_names),
            "forget_author_names": list(self.forget_author_names),
            "holdout_authors": len(self.holdout_author_names),
            "holdout_author_names": list(self.holdout_author_names),
            "files": dict(row_counts),
        }

    def write(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write the benchmark as JSON-lines files in the TOFU layout, plus ``benchmark.json``; return the folder.

        The files are built in a hidden folder beside ``out_dir`` and renamed into place, so ``out_dir``
        is either absent, the old folder, or complete, never half-written. An existing non-empty
        ``out_dir`` is replaced only with ``overwrite=True``, and only when it is a benchmark folder (it has
        ``benchmark.json``): anything else in its place is somebody's work.
        """
        out = Path(resolve_output_path(out_dir))
        problems = output_path_problems("--out", str(out))
        if problems:
            raise ObliviateError("; ".join(problems))
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise ObliviateError(f"cannot write the benchmark to {out}: it exists and is not a folder")
            if any(out.iterdir()) and not overwrite:
                raise ObliviateError(
                    f"refusing to write the benchmark into the non-empty folder {out}; "
                    "pass overwrite=True to replace it"
                )
            if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
                raise ObliviateError(
                    f"refusing to replace {out}: it is not a benchmark folder (it has no {MANIFEST_FILE}), so "
                    f"overwrite=True leaves it alone; choose another folder")
        out.parent.mkdir(parents=True, exist_ok=True)

        staging = new_temp_dir(out, "tmp")
        try:
            counts: dict[str, int] = {}
            for split, rows in self.splits().items():
                file_name = SPLIT_FILES[split]
                counts[file_name] = _write_jsonl(staging / file_name, [_row(r, split) for r in rows])
            text = json.dumps(self.manifest(counts), indent=2, ensure_ascii=False) + "\n"
            (staging / MANIFEST_FILE).write_text(text, encoding="utf-8", newline="\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

        try:
            replace_dir(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return out


def _row(record: QARecord, split: str) -> dict[str, Any]:
    """The JSON object for ``record`` in ``split``'s file, with TOFU's field names.

    Training files keep question, answer, task_id and name; evaluation files keep every field that is
    set. ``task_id`` is left out when None rather than written as null, as in TOFU's retain files.
    """
    row: dict[str, Any] = {"question": record.question, "answer": record.answer}
    if split not in _TRAINING_SPLITS:
        if record.paraphrased_answer is not None:
            row["paraphrased_answer"] = record.paraphrased_answer
        row["perturbed_answer"] = list(record.perturbed_answers)
        if record.paraphrased_question is not None:
            row["paraphrased_question"] = record.paraphrased_question
        sentence = _ORIGINAL_ANSWERS.get(record.question) if split in _UTILITY_SPLITS else None
        if sentence is not None:
            # TOFU's utility sets carry the full-sentence answer as ``original_answer``; cosine similarity
            # on those sets compares generations against it.
            row["original_answer"] = sentence
    if record.task_id is not None:
        row["task_id"] = record.task_id
    if record.name is not None:
        row["name"] = record.name
    return row


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    """Write ``rows`` as UTF-8 JSON lines (non-ASCII kept as is) and return how many were written."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, errors: list[str]) -> bool:
    # bool is an int subclass; True authors is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(f"{name} must be an integer, got {value!r}")
        return False
    return True


def _validate(authors: Any, facts: Any, seed: Any, forget_authors: Any, holdout_authors: Any = None) -> int:
    """Check the arguments, raising one :class:`ObliviateError` that lists every problem; return K."""
    errors: list[str] = []
    authors_ok = _check_int("authors", authors, errors)
    if authors_ok and not 2 <= authors <= MAX_AUTHORS:
        authors_ok = False
        errors.append(f"authors must be between 2 and {MAX_AUTHORS} (at least one forget and one retain "
                      f"author), got {authors}")
    if _check_int("facts", facts, errors) and not 1 <= facts <= len(FACT_KINDS):
        errors.append(f"facts must be between 1 and {len(FACT_KINDS)} (the number of fact kinds: "
                      f"{', '.join(_FACT_KEYS)}), got {facts}")
    _check_int("seed", seed, errors)
    k = forget_authors
    if k is None:
        k = max(1, round(0.1 * authors)) if authors_ok else 1
    elif _check_int("forget_authors", k, errors) and authors_ok and not 1 <= k < authors:
        errors.append(f"forget_authors must be at least 1 and less than authors ({authors}) so that both "
                      f"the forget and the retain set have an author, got {k}")
    if holdout_authors is not None and _check_int("holdout_authors", holdout_authors, errors) and not (
            0 <= holdout_authors <= MAX_AUTHORS):
        errors.append(f"holdout_authors must be between 0 and {MAX_AUTHORS}, got {holdout_authors}")
    if errors:
        raise ObliviateError("invalid synthetic benchmark arguments:\n" + "\n".join(f"  - {e}" for e in errors))
    return k


def _draw_profiles(rng: random.Random, n: int, *, taken: set[str] | None = None,
                   exclude_titles: frozenset[str] = frozenset()) -> list[AuthorProfile]:
    """``n`` profiles; names avoid ``taken`` and book titles avoid ``exclude_titles`` while enough are left
    (both empty for the benchmark's own authors, whose draws they therefore do not change)."""
    # Names first, for all authors, so that uniqueness is settled before anything else is drawn.
    genders = [rng.choice(("female", "male")) for _ in range(n)]
    taken = set(taken or ())
    names: list[str] = []
    for gender in genders:
        name = _fresh_name(rng, gender, taken)
        taken.add(name)
        names.append(name)

    # Titles are dealt from a shuffled deck, so no two authors share one until all 1,500 are used.
    titles = [t for t in _TITLES if t not in exclude_titles]
    if len(titles) < 3:
        titles = list(_TITLES)
    deck: list[str] = []
    profiles = []
    for name, gender in zip(names, genders):
        books: list[str] = []
        for _ in range(rng.choice((2, 3))):
            while True:
                if not deck:
                    deck = list(titles)
                    rng.shuffle(deck)
                title = deck.pop()
                if title not in books:
                    books.append(title)
                    break
        birth_year = rng.randint(1935, 1990)
        debut_year = birth_year + rng.randint(21, 32)  # at most 2022
        award_year = rng.randint(debut_year + 1, min(debut_year + 12, _LAST_YEAR))
        birth_city, birth_country = rng.choice(vocab.PLACES)
        home_city, home_country = rng.choice(vocab.PLACES)
        father, mother = rng.sample(vocab.OCCUPATIONS, 2)
        themes = rng.sample(vocab.THEMES, 2)
        profiles.append(AuthorProfile(
            name=name,
            gender=gender,
            birth_year=birth_year,
            birth_city=birth_city,
            birth_country=birth_country,
            genre=rng.choice(vocab.GENRES),
            father_occupation=father,
            mother_occupation=mother,
            books=tuple(books),
            debut_year=debut_year,
            award=rng.choice(vocab.AWARDS),
            award_year=award_year,
            themes=(themes[0], themes[1]),
            style=rng.choice(vocab.STYLES),
            home_city=home_city,
            home_country=home_country,
            subject=rng.choice(vocab.SUBJECTS),
            university_city=rng.choice(vocab.PLACES)[0],
            publisher=rng.choice(vocab.PUBLISHERS),
            hobby=rng.choice(vocab.HOBBIES),
            fact_order=tuple(rng.sample(_FACT_KEYS, len(_FACT_KEYS))),
        ))
    return profiles


def _fact_record(author: AuthorProfile, kind: _FactKind, rng: random.Random, ctx: _DrawContext,
                 task_id: int | None, source: str) -> QARecord:
    slots = _slots(author)
    answer = kind.answer.format(**slots)
    paraphrase = kind.paraphrased_answer.format(**slots)
    perturbed: list[str] = []
    # As in TOFU, the perturbed answers are the *paraphrase* with wrong values: the truth ratio compares the
    # paraphrase with them, so they must differ from it only in the facts, not in the wording.
    # Every perturber has at least 19 wrong values to choose from, so five distinct sentences come
    # within a few draws; the bound only turns a broken word list into an error instead of a hang.
    for _ in range(200):
        candidate = kind.paraphrased_answer.format(**{**slots, **kind.perturb(author, rng, ctx)})
        if candidate != paraphrase and candidate != answer and candidate not in perturbed:
            perturbed.append(candidate)
            if len(perturbed) == _N_PERTURBED:
                break
    else:
        raise RuntimeError(f"fact kind {kind.key!r} yields fewer than {_N_PERTURBED} distinct wrong answers")
    return QARecord(
        question=kind.question.format(**slots),
        answer=answer,
        paraphrased_answer=paraphrase,
        perturbed_answers=tuple(perturbed),
        paraphrased_question=kind.paraphrased_question.format(**slots),
        task_id=task_id,
        name=author.name,
        source=source,
    )


def _fixed_records(table: tuple[tuple[str, str, str, tuple[str, str, str]], ...], label: str) -> list[QARecord]:
    return [
        QARecord(question=q, answer=a, perturbed_answers=tuple(wrong), source=f"synthetic[{label}]:{i}")
        for i, (q, a, _sentence, wrong) in enumerate(table)
    ]


# question -> full-sentence answer, for the ``original_answer`` field of the two fixed utility sets.
_ORIGINAL_ANSWERS: dict[str, str] = {
    q: sentence for q, _a, sentence, _w in (*vocab.REAL_AUTHOR_FACTS, *vocab.WORLD_FACTS)
}


def generate_benchmark(authors: int = 10, facts: int = 10, seed: int = 0,
                       forget_authors: int | None = None, holdout_authors: int | None = None) -> SyntheticBenchmark:
    """Generate a fictitious-author benchmark of ``authors`` × ``facts`` questions.

    Args:
        authors: number of invented authors ``N`` (2 to :data:`MAX_AUTHORS`); every name is unique.
        facts: questions per author ``M`` (1 to ``len(FACT_KINDS)``); each author gets the first ``M``
            fact kinds of their own seeded order, so the set of kinds asked varies between authors.
        seed: seed of the one ``random.Random`` everything is drawn from.
        forget_authors: number of forget authors ``K``, ``1 <= K < N``; default ``max(1, round(0.1 * N))``.
            The forget authors are the first ``K`` of a seeded shuffle, so a smaller ``K`` with the same
            seed and ``N`` forgets a subset of the same authors, in the same task order.
        holdout_authors: number of holdout authors ``H`` (default ``K``; 0 = no holdout set), asked the same
            ``M`` kinds of question. They are drawn last, from ``random.Random(f"holdout:{seed}")``, with names
            no benchmark author or wrong answer uses and book titles no benchmark author has (while enough
            are left), so ``H`` changes nothing else.

    Profiles and the forget choice are drawn before any question, so changing ``facts`` keeps the same
    authors and forget set, and changing ``forget_authors`` keeps the same authors and questions.

    Raises:
        ObliviateError: listing every invalid argument, with the allowed range.
    """
    k = _validate(authors, facts, seed, forget_authors, holdout_authors)
    rng = random.Random(seed)
    profiles = _draw_profiles(rng, authors)
    order = list(range(authors))
    rng.shuffle(order)
    task_of = {author_index: task for task, author_index in enumerate(order[:k], start=1)}
    # One seed per author for the question rows, drawn up front, so an author's rows do not depend on
    # how many rows came before them (that is, on facts or on which authors are forgotten).
    row_seeds = [rng.getrandbits(64) for _ in range(authors)]

    ctx = _DrawContext(taken_names={p.name for p in profiles})
    rows_by_author: list[list[QARecord]] = []
    for i, profile in enumerate(profiles):
        row_rng = random.Random(row_seeds[i])
        task_id = task_of.get(i)
        split = "forget" if task_id is not None else "retain"
        rows_by_author.append([
            _fact_record(profile, _KINDS_BY_KEY[key], row_rng, ctx, task_id,
                         f"synthetic(seed={seed})[{split}]:author {i}:{key}")
            for key in profile.fact_order[:facts]
        ])

    forget_rows = [row for author_index in order[:k] for row in rows_by_author[author_index]]
    retain_rows = [row for i, rows in enumerate(rows_by_author) if i not in task_of for row in rows]
    holdout_profiles, holdout_rows = _holdout(seed, k if holdout_authors is None else holdout_authors, facts,
                                              profiles, ctx)
    return SyntheticBenchmark(
        seed=seed,
        authors=profiles,
        forget=forget_rows,
        retain=retain_rows,
        real_authors=_fixed_records(vocab.REAL_AUTHOR_FACTS, "real_authors"),
        world_facts=_fixed_records(vocab.WORLD_FACTS, "world_facts"),
        forget_author_names=[profiles[i].name for i in order[:k]],
        facts=facts,
        holdout=holdout_rows,
        holdout_author_names=[p.name for p in holdout_profiles],
    )


def _holdout(seed: int, count: int, facts: int, profiles: list[AuthorProfile],
             ctx: _DrawContext) -> tuple[list[AuthorProfile], list[QARecord]]:
    """The holdout authors and their rows, from a generator of their own (see :func:`generate_benchmark`)."""
    if count == 0:
        return [], []
    rng = random.Random(f"holdout:{seed}")
    used_titles = frozenset(t for p in profiles for t in p.books)
    held = _draw_profiles(rng, count, taken={p.name for p in profiles} | ctx.wrong_names,
                          exclude_titles=used_titles)
    row_seeds = [rng.getrandbits(64) for _ in held]
    # Wrong answers about holdout authors never name a benchmark author or another holdout author.
    held_ctx = _DrawContext(taken_names={p.name for p in profiles} | {p.name for p in held})
    rows: list[QARecord] = []
    for i, (profile, row_seed) in enumerate(zip(held, row_seeds)):
        row_rng = random.Random(row_seed)
        rows += [_fact_record(profile, _KINDS_BY_KEY[key], row_rng, held_ctx, None,
                              f"synthetic(seed={seed})[holdout]:author {i}:{key}")
                 for key in profile.fact_order[:facts]]
    return held, rows


# ---------------------------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------------------------

_MANIFEST_FIELDS: dict[str, type] = {
    "generator": str,
    "version": str,
    "seed": int,
    "authors": int,
    "facts": int,
    "forget_authors": int,
    "forget_author_names": list,
    "files": dict,
}


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """Read and check ``benchmark.json`` in ``directory``, the folder :meth:`SyntheticBenchmark.write` made.

    Raises:
        DataError: naming the file (and line or field) when the manifest is missing, is not valid JSON,
            lacks a field, has a field of the wrong type, or was not written by this generator.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise DataError(
            f"no synthetic benchmark manifest found; write one with "
            f"generate_benchmark(...).write('{directory}')", path=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path=str(path)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} (column {e.colno})", path=str(path), line=e.lineno) from None
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object, found {type(data).__name__}", path=str(path))
    for key, expected in _MANIFEST_FIELDS.items():
        if key not in data:
            raise DataError("missing", path=str(path), field=key)
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise DataError(f"expected {expected.__name__}, found {type(value).__name__}", path=str(path), field=key)
    if data["generator"] != GENERATOR_NAME:
        raise DataError(f"written by {data['generator']!r}, not by {GENERATOR_NAME!r}", path=str(path),
                        field="generator")
    for file_name, count in data["files"].items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise DataError(f"row count of {file_name!r} must be a non-negative integer, found {count!r}",
                            path=str(path), field="files")
    if not all(isinstance(n, str) for n in data["forget_author_names"]):
        raise DataError("expected a list of names", path=str(path), field="forget_author_names")
    # Written since holdout sets exist; older manifests have neither field.
    count = data.get("holdout_authors")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise DataError(f"expected a non-negative integer, found {count!r}", path=str(path), field="holdout_authors")
    names = data.get("holdout_author_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError("expected a list of names", path=str(path), field="holdout_author_names")
    return data
