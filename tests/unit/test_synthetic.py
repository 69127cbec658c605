"""The synthetic fictitious-author benchmark: determinism, splits, answer variants, files and manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obliviate.benchmarks import synthetic
from obliviate.benchmarks.synthetic import (
    FACT_KINDS,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    SPLIT_FILES,
    SyntheticBenchmark,
    generate_benchmark,
    load_manifest,
)
from obliviate.errors import DataError, ObliviateError

ALL_FILES = sorted([*SPLIT_FILES.values(), "benchmark.json"])


@pytest.fixture(scope="module")
def bench() -> SyntheticBenchmark:
    """20 authors, every fact kind, 3 forget authors: one benchmark shared by the read-only tests."""
    return generate_benchmark(authors=20, facts=len(FACT_KINDS), seed=7, forget_authors=3)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _fictitious(b: SyntheticBenchmark):
    return [*b.forget, *b.retain]


# --- determinism ----------------------------------------------------------------------------------------


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    a = generate_benchmark(authors=12, facts=6, seed=3).write(tmp_path / "a")
    b = generate_benchmark(authors=12, facts=6, seed=3).write(tmp_path / "b")
    assert sorted(p.name for p in a.iterdir()) == ALL_FILES
    for name in ALL_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_different_seeds_differ() -> None:
    a = generate_benchmark(authors=12, facts=6, seed=0)
    b = generate_benchmark(authors=12, facts=6, seed=1)
    assert [p.name for p in a.authors] != [p.name for p in b.authors]
    assert [r.answer for r in a.retain] != [r.answer for r in b.retain]


def test_generation_does_not_touch_the_global_rng() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_benchmark(authors=5, facts=3, seed=0)
    assert random.random() == expected


def test_more_facts_keeps_the_same_authors_and_forget_set() -> None:
    small = generate_benchmark(authors=15, facts=3, seed=11)
    large = generate_benchmark(authors=15, facts=14, seed=11)
    assert small.authors == large.authors
    assert small.forget_author_names == large.forget_author_names
    # Each author is asked about the first M kinds of their own order: the 3-fact questions are the
    # first 3 of the 14-fact ones, word for word.
    for name in small.forget_author_names + [p.name for p in small.authors[:3]]:
        few = [r.question for r in _fictitious(small) if r.name == name]
        many = [r.question for r in _fictitious(large) if r.name == name]
        assert few == many[:3]


def test_fact_order_differs_between_authors(bench: SyntheticBenchmark) -> None:
    orders = {p.fact_order for p in bench.authors}
    assert len(orders) > 1
    assert all(sorted(o) == sorted(k.key for k in FACT_KINDS) for o in orders)


# --- names and splits -----------------------------------------------------------------------------------


def test_names_unique_at_500_authors() -> None:
    b = generate_benchmark(authors=500, facts=1, seed=5)
    names = [p.name for p in b.authors]
    assert len(set(names)) == 500
    # The rows carry the same names, one fact each.
    assert sorted(r.name for r in _fictitious(b)) == sorted(names)


def test_split_is_by_author(bench: SyntheticBenchmark) -> None:
    forget_names = {r.name for r in bench.forget}
    retain_names = {r.name for r in bench.retain}
    assert forget_names.isdisjoint(retain_names)
    assert forget_names | retain_names == {p.name for p in bench.authors}
    assert forget_names == set(bench.forget_author_names)
    assert len(bench.forget) == 3 * len(FACT_KINDS)
    assert len(bench.retain) == 17 * len(FACT_KINDS)


def test_task_ids_are_one_author_each_in_order(bench: SyntheticBenchmark) -> None:
    assert [r.task_id for r in bench.forget] == [t for t in (1, 2, 3) for _ in FACT_KINDS]
    for task, name in enumerate(bench.forget_author_names, start=1):
        assert {r.name for r in bench.forget if r.task_id == task} == {name}
    assert all(r.task_id is None for r in bench.retain)


@pytest.mark.parametrize(("authors", "expected"), [(2, 1), (10, 1), (30, 3), (100, 10)])
def test_default_forget_authors_is_ten_percent(authors: int, expected: int) -> None:
    assert len(generate_benchmark(authors=authors, facts=1, seed=0).forget_author_names) == expected


def test_smaller_k_forgets_a_prefix_of_the_same_authors() -> None:
    two = generate_benchmark(authors=10, facts=2, seed=4, forget_authors=2)
    five = generate_benchmark(authors=10, facts=2, seed=4, forget_authors=5)
    assert five.forget_author_names[:2] == two.forget_author_names


# --- the rows themselves --------------------------------------------------------------------------------


def test_every_fictitious_field_is_a_non_empty_string(bench: SyntheticBenchmark) -> None:
    for r in _fictitious(bench):
        for value in (r.question, r.answer, r.paraphrased_answer, r.paraphrased_question, r.name,
                      *r.perturbed_answers):
            assert isinstance(value, str) and value.strip(), r


def test_five_distinct_perturbed_answers_none_true(bench: SyntheticBenchmark) -> None:
    for r in _fictitious(bench):
        assert len(r.perturbed_answers) == 5
        assert len(set(r.perturbed_answers)) == 5, r.perturbed_answers
        assert r.answer not in r.perturbed_answers
        assert r.paraphrased_answer not in r.perturbed_answers


def test_paraphrases_differ_from_originals(bench: SyntheticBenchmark) -> None:
    for r in _fictitious(bench):
        assert r.paraphrased_answer != r.answer
        assert r.paraphrased_question != r.question


def test_answers_are_one_short_sentence(bench: SyntheticBenchmark) -> None:
    for r in _fictitious(bench):
        for text in (r.answer, r.paraphrased_answer):
            assert 10 <= len(text.split()) <= 26, text
            assert text.endswith(".") and text.count(". ") == 0, text


def test_answer_and_perturbations_name_the_author(bench: SyntheticBenchmark) -> None:
    """Every sentence names its author, except the wrong answers to "what is the author's name?"."""
    for r in _fictitious(bench):
        assert r.name in r.answer and r.name in r.paraphrased_answer
        if r.name in r.question:
            assert all(r.name in p for p in r.perturbed_answers)
        else:
            assert all(r.name not in p for p in r.perturbed_answers)


def test_perturbed_answers_keep_the_paraphrase_template(bench: SyntheticBenchmark) -> None:
    """Birth-year perturbations change the paraphrase's year and nothing else (TOFU's construction: the truth
    ratio compares the paraphrase with its perturbations, so only the facts may differ)."""
    year_rows = [r for r in bench.retain if r.question.startswith("In which year was")]
    assert year_rows
    for r in year_rows:
        true_year = next(w for w in r.answer.rstrip(".").split() if w.isdigit())
        assert true_year in r.paraphrased_answer
        for p in r.perturbed_answers:
            wrong = [w.strip(",.") for w in p.split() if w.strip(",.").isdigit()]
            assert len(wrong) == 1 and wrong[0] != true_year
            assert p.replace(wrong[0], true_year) == r.paraphrased_answer


def test_wrong_names_are_not_benchmark_authors() -> None:
    b = generate_benchmark(authors=60, facts=len(FACT_KINDS), seed=2)
    names = {p.name for p in b.authors}
    name_rows = [r for r in _fictitious(b) if r.name not in r.question]
    assert len(name_rows) == 60
    for r in name_rows:
        assert r.answer.endswith(f" {r.name}.")
        rest = r.paraphrased_answer.removeprefix(r.name)
        assert rest != r.paraphrased_answer
        for p in r.perturbed_answers:
            assert p.endswith(rest)
            assert p.removesuffix(rest) not in names


def test_utility_sets_are_fixed_and_short(bench: SyntheticBenchmark) -> None:
    other = generate_benchmark(authors=3, facts=1, seed=99)
    assert bench.real_authors == other.real_authors
    assert bench.world_facts == other.world_facts
    for rows in (bench.real_authors, bench.world_facts):
        assert 18 <= len(rows) <= 25
        assert len({r.question for r in rows}) == len(rows)
        for r in rows:
            assert r.answer and len(r.answer.split()) <= 4
            assert len(r.perturbed_answers) == 3 and len(set(r.perturbed_answers)) == 3
            assert r.answer not in r.perturbed_answers
            assert r.task_id is None


def test_pride_and_prejudice_answer() -> None:
    row = next(r for r in generate_benchmark(authors=2, facts=1).real_authors if "Pride and Prejudice" in r.question)
    assert row.answer == "Jane Austen"


# --- argument errors ------------------------------------------------------------------------------------


def test_too_many_facts_names_the_maximum() -> None:
    n = len(FACT_KINDS)
    with pytest.raises(ObliviateError, match=rf"facts must be between 1 and {n}\b.*got {n + 1}"):
        generate_benchmark(authors=5, facts=n + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"authors": 1}, "authors must be between 2"),
        ({"facts": 0}, "facts must be between 1"),
        ({"authors": 5, "forget_authors": 0}, r"forget_authors must be at least 1 and less than authors \(5\)"),
        ({"authors": 5, "forget_authors": 5}, r"forget_authors must be at least 1 and less than authors \(5\)"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"authors": True}, "authors must be an integer"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ObliviateError, match=message):
        generate_benchmark(**kwargs)


def test_all_argument_errors_reported_at_once() -> None:
    with pytest.raises(ObliviateError) as info:
        generate_benchmark(authors=0, facts=99, seed="x")
    text = str(info.value)
    assert "authors must be" in text and "facts must be" in text and "seed must be" in text


# --- writing --------------------------------------------------------------------------------------------


def test_written_files_follow_the_tofu_layout(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    out = bench.write(tmp_path / "bench")
    forget = _read_jsonl(out / "forget.json")
    assert all(set(row) == {"question", "answer", "task_id", "name"} for row in forget)
    assert all(set(row) == {"question", "answer", "name"} for row in _read_jsonl(out / "retain.json"))
    full = {"question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question", "name"}
    assert all(set(row) == full | {"task_id"} for row in _read_jsonl(out / "forget_perturbed.json"))
    assert all(set(row) == full for row in _read_jsonl(out / "retain_perturbed.json"))
    for name in ("real_authors_perturbed.json", "world_facts_perturbed.json"):
        rows = _read_jsonl(out / name)
        assert all(set(row) == {"question", "answer", "perturbed_answer", "original_answer"} for row in rows)
        assert all(row["answer"].lower() in row["original_answer"].lower() for row in rows)
    first = _read_jsonl(out / "forget_perturbed.json")[0]
    record = bench.forget[0]
    assert first["perturbed_answer"] == list(record.perturbed_answers)
    assert first["task_id"] == 1 and first["name"] == record.name == bench.forget_author_names[0]


def test_files_are_utf8_with_characters_kept(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    out = bench.write(tmp_path / "bench")
    text = (out / "real_authors_perturbed.json").read_bytes().decode("utf-8")
    assert "Brontë" in text and "\\u00eb" not in text


def test_manifest_row_counts_match_files(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    out = bench.write(tmp_path / "bench")
    manifest = load_manifest(out)
    assert manifest["generator"] == GENERATOR_NAME and manifest["version"] == GENERATOR_VERSION
    assert (manifest["seed"], manifest["authors"], manifest["facts"]) == (7, 20, len(FACT_KINDS))
    assert manifest["forget_author_names"] == bench.forget_author_names
    assert sorted(manifest["files"]) == sorted(SPLIT_FILES.values())
    for file_name, count in manifest["files"].items():
        assert len((out / file_name).read_text(encoding="utf-8").splitlines()) == count, file_name
    assert manifest["files"]["forget.json"] == 3 * len(FACT_KINDS)


def test_write_refuses_non_empty_folder(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ObliviateError, match=r"non-empty folder .*bench.*overwrite=True"):
        bench.write(out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_write_into_empty_folder_and_overwrite(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    assert bench.write(out) == out
    (out / "stale.txt").write_text("old")
    other = generate_benchmark(authors=4, facts=2, seed=1)
    other.write(out, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert load_manifest(out)["authors"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]  # no staging or backup folder left behind


def test_write_refuses_a_file(tmp_path: Path, bench: SyntheticBenchmark) -> None:
    target = tmp_path / "bench"
    target.write_text("x")
    with pytest.raises(ObliviateError, match="not a folder"):
        bench.write(target, overwrite=True)


def _fail_on_third_file(monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic._write_jsonl
    calls = []

    def flaky(path, rows):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, rows)

    monkeypatch.setattr(synthetic, "_write_jsonl", flaky)


def test_failed_write_leaves_no_folder(tmp_path: Path, bench: SyntheticBenchmark,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_third_file(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        bench.write(tmp_path / "bench")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_folder(tmp_path: Path, bench: SyntheticBenchmark,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = generate_benchmark(authors=4, facts=2, seed=1).write(tmp_path / "bench")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_on_third_file(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        bench.write(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]


# --- reading the manifest back --------------------------------------------------------------------------


def test_load_manifest_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"benchmark\.json: no synthetic benchmark manifest"):
        load_manifest(tmp_path)


def test_load_manifest_malformed_json(tmp_path: Path) -> None:
    (tmp_path / "benchmark.json").write_text('{\n  "seed": 1,\n  oops\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: not valid JSON") as info:
        load_manifest(tmp_path)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("files"), "files"),
        (lambda m: m.update(seed="zero"), "seed"),
        (lambda m: m.update(generator="someone-else"), "generator"),
        (lambda m: m["files"].update({"forget.json": -1}), "files"),
    ],
)
def test_load_manifest_bad_fields(tmp_path: Path, edit, field: str) -> None:
    out = generate_benchmark(authors=3, facts=1).write(tmp_path / "bench")
    manifest = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    edit(manifest)
    (out / "benchmark.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_manifest(out)
    assert info.value.field == field


def test_splits_map_to_file_names(bench: SyntheticBenchmark) -> None:
    splits = bench.splits()
    assert set(splits) == set(SPLIT_FILES)
    assert splits["forget_perturbed"] == bench.forget and splits["retain"] == bench.retain
    splits["forget"].clear()  # a copy: the benchmark itself is unchanged
    assert bench.forget


# --- the holdout set ------------------------------------------------------------------------------------

# sha256 of the files generate_benchmark(authors=12, facts=6, seed=3) wrote before holdout authors existed
# (generator version 2): adding them must leave every one of these files byte for byte as it was.
_FILES_BEFORE_HOLDOUT = {
    "forget.json": "e41a442e6ac0d834160e6ead640ae49c63c4f791e6faa6c1b3524335d655a093",
    "forget_perturbed.json": "6be1317b5f5c39091c943853b76f540d83ef9b8de06a1ab825988383d0e9b2cb",
    "retain.json": "511924f35277a382204e7ea003b386ce45969ce29cc3314e55978f97c6b80e12",
    "retain_perturbed.json": "b5bd6df7ea71406b6759bee0cee6b9efb8bb16a3019fded6f68fcc88dd2295ba",
    "real_authors_perturbed.json": "d3f0d39196ea84adc6e7a6dafbde63da286d25995761fd3252667b6e9bf752b1",
    "world_facts_perturbed.json": "77f86d856fe531a54c1d07bc4594cbb971883afca016069680fe1996919f9b06",
}


def test_holdout_leaves_the_other_files_as_they_were(tmp_path: Path) -> None:
    import hashlib

    for holdout in (None, 0, 5):
        out = generate_benchmark(authors=12, facts=6, seed=3, holdout_authors=holdout).write(tmp_path / f"h{holdout}")
        for name, digest in _FILES_BEFORE_HOLDOUT.items():
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, (holdout, name)


def test_holdout_authors_are_in_no_other_set(bench: SyntheticBenchmark) -> None:
    # Default: as many holdout authors as forget authors, asked as many questions each.
    assert len(bench.holdout_author_names) == len(bench.forget_author_names) == 3
    assert len(bench.holdout) == 3 * len(FACT_KINDS)
    assert {r.name for r in bench.holdout} == set(bench.holdout_author_names)
    assert all(r.task_id is None and r.paraphrased_answer and len(r.perturbed_answers) == 5 for r in bench.holdout)
    # No holdout name is a benchmark author's, nor appears anywhere in a forget, retain or utility row (wrong
    # answers included): a model fine-tuned on the training files has never seen these authors.
    text = "\n".join(v for r in [*bench.forget, *bench.retain, *bench.real_authors, *bench.world_facts]
                     for v in (r.question, r.answer, r.paraphrased_answer or "", *r.perturbed_answers))
    for name in bench.holdout_author_names:
        assert name not in {p.name for p in bench.authors} and name not in text
    # Nor do their books belong to a benchmark author.
    held_titles = {t for r in bench.holdout if "books" in (r.source or "") for t in r.answer.split("'")[1::2]}
    assert held_titles and held_titles.isdisjoint({t for p in bench.authors for t in p.books})


def test_holdout_files_and_manifest(tmp_path: Path) -> None:
    b = generate_benchmark(authors=6, facts=3, seed=2, forget_authors=1, holdout_authors=2)
    out = b.write(tmp_path / "b")
    manifest = load_manifest(out)
    assert manifest["holdout_authors"] == 2 and manifest["holdout_author_names"] == b.holdout_author_names
    assert manifest["files"]["holdout.json"] == manifest["files"]["holdout_perturbed.json"] == 6
    training = _read_jsonl(out / "holdout.json")
    assert set(training[0]) == {"question", "answer", "name"}
    assert "perturbed_answer" in _read_jsonl(out / "holdout_perturbed.json")[0]
    none = generate_benchmark(authors=6, facts=3, seed=2, forget_authors=1, holdout_authors=0)
    out = none.write(tmp_path / "none")
    assert not (out / "holdout.json").exists() and load_manifest(out)["holdout_author_names"] == []
    again = generate_benchmark(authors=6, facts=3, seed=2, forget_authors=1, holdout_authors=2)
    assert again.holdout == b.holdout


def test_holdout_authors_must_be_a_count() -> None:
    with pytest.raises(ObliviateError, match="holdout_authors must be between 0"):
        generate_benchmark(authors=4, facts=2, seed=0, holdout_authors=-1)
    with pytest.raises(ObliviateError, match="holdout_authors must be an integer"):
        generate_benchmark(authors=4, facts=2, seed=0, holdout_authors=1.5)
