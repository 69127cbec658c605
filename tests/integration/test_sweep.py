"""`obliviate sweep`: several configs, finished runs reused, one report over all of them."""

from __future__ import annotations

import pytest
import yaml

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main

pytestmark = pytest.mark.integration


def _config(path, tiny_model_dir, bench, method, out):
    path.write_text(yaml.safe_dump({
        "kind": "unlearn", "output_dir": str(out), "model": {"name": str(tiny_model_dir)},
        "data": {"forget": str(bench / "forget.json"), "retain": str(bench / "retain.json")},
        "method": {"name": method}, "train": {"max_steps": 1, "batch_size": 2, "warmup_epochs": 0.0},
        "eval": {"max_new_tokens": 4, "embedding_model": None, "nli_model": None}}))
    return str(path)


def test_sweep_runs_reuses_and_reports(tiny_model_dir, tmp_path, capsys):
    bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
    configs = [_config(tmp_path / f"{m}.yaml", tiny_model_dir, bench, m, tmp_path / "runs" / m)
               for m in ("GA+GD", "IDK+AP")]
    report = tmp_path / "report.html"
    assert main(["sweep", *configs, "--report", str(report)]) == 0
    html = report.read_text()
    assert "GA+GD" in html and "IDK+AP" in html
    assert (tmp_path / "report.md").read_text().count("|") > 10
    out = capsys.readouterr().out  # the compact summary, and where the full table is
    assert "| IDK+AP" in out and "forget ROUGE-L ↓" in out and "forget Prob" not in out
    assert f"Full table (every set × metric, with notes): {tmp_path / 'report.md'}" in out
    stamp = (tmp_path / "runs" / "GA+GD" / "run.json").stat().st_mtime_ns
    assert main(["sweep", *configs, "--report", str(report), "--full"]) == 0
    out = capsys.readouterr().out
    assert out.count("finished before: reused") == 2
    assert "forget Prob ↓" in out and "Full table" not in out  # --full prints the whole table
    assert (tmp_path / "runs" / "GA+GD" / "run.json").stat().st_mtime_ns == stamp


def test_sweep_validates_every_config_before_running(tiny_model_dir, tmp_path, capsys):
    bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
    good = _config(tmp_path / "good.yaml", tiny_model_dir, bench, "GA", tmp_path / "runs" / "good")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "unlearn", "data": {"forget": "f.json"}, "method": {"name": "GAA"}}))
    assert main(["sweep", good, str(bad)]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "good").exists()
