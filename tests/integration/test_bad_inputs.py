"""Every user mistake, through the command line: exit status 2, one message naming the key, file or row, no
traceback, and nothing left on disk (docs/reliability.md).

Each case builds its own inputs in a fresh folder (the current folder while it runs), takes a snapshot, runs
``obliviate ...`` in-process and compares the folder with the snapshot afterwards. Shared inputs (the tiny
model, data files, model folders that must be refused) live outside it and are never written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"


@dataclass
class World:
    """What a case can refer to: ``tmp`` is its own folder (and the current folder); the rest is shared."""

    tmp: Path
    shared: Path
    tiny: Path

    @property
    def forget(self) -> str:
        return str(self.shared / "forget.json")

    @property
    def retain(self) -> str:
        return str(self.shared / "retain.json")

    @property
    def bench(self) -> str:
        return str(self.shared / "bench")

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def run_folder(self, name: str, run_json: str, config_yaml: str | None = None) -> str:
        """A finished-looking run folder (run.json + model/) with the given run.json and config.yaml text."""
        folder = self.tmp / name
        (folder / "model").mkdir(parents=True)
        (folder / "run.json").write_text(run_json)
        if config_yaml is not None:
            (folder / "config.yaml").write_text(config_yaml)
        return str(folder)

    def read_only(self) -> str:
        """A folder nothing can be created in: chmod 555 for a normal user; under /sys when running as root."""
        if getattr(os, "geteuid", lambda: 1)() == 0:
            if not Path("/sys/kernel").is_dir():
                pytest.skip("no read-only folder available to root here")
            return "/sys/kernel/obliviate-test"
        folder = self.tmp / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)

    def unlearn(self, *overrides: str) -> list[str]:
        """A valid unlearning command (tiny model, shared data, output in the case folder) plus ``overrides``."""
        return ["unlearn", f"model.name={self.tiny}", f"data.forget={self.forget}", f"data.retain={self.retain}",
                f"output_dir={self.tmp / 'run'}", "train.max_steps=1", "eval.enabled=false", *overrides]

    def finetune(self, *overrides: str) -> list[str]:
        return ["finetune", f"model.name={self.tiny}", f"data.train=[{self.retain}]",
                f"output_dir={self.tmp / 'run'}", "train.max_steps=1", *overrides]

    def eval(self, *extra: str, model: str | None = None) -> list[str]:
        out = [] if any(a == "--out" for a in extra) else ["--out", str(self.tmp / "results.json")]
        return ["eval", "--model", model or str(self.tiny), "--benchmark", "synthetic", "--data", self.bench,
                "--embedding-model", "none", "--nli-model", "none", "--max-new-tokens", "4", *out, *extra]


@dataclass
class Case:
    id: str
    build: Callable[[World], list[str]]
    expect: tuple[str, ...]          # substrings of the one error message: the key, file or row it names
    skip: str | None = None


def _config(w: World, text: str) -> str:
    return w.file("config.yaml", text)


def _probe_run(w: World, *, results: bool = True) -> str:
    """A finished-looking unlearning run of the tiny model on the shared forget/retain files, whose results.json
    holds nothing (the probes refuse before they read it)."""
    config = (f"kind: unlearn\nmodel:\n  name: {w.tiny}\ndata:\n  forget: {w.forget}\n  retain: {w.retain}\n"
              f"output_dir: {w.tmp / 'run'}\neval:\n  embedding_model: null\n  nli_model: null\n")
    folder = w.run_folder("run", '{"status": "complete", "kind": "unlearn"}', config)
    if results:
        Path(folder, "results.json").write_text('{"schema_version": 1, "sets": {}, "aggregates": {}}')
    return folder


CUDA = torch.cuda.is_available()
TEXT_THEN_BAD_TEXT = json.dumps({"text": "An article."}) + "\n" + json.dumps({"text": 5}) + "\n"
ROW_THEN_BAD_ROW = json.dumps({"question": "Q?", "answer": "A."}) + "\n" + json.dumps({"question": "Q2?"}) + "\n"

CASES = [
    # -- unlearn: output folders ------------------------------------------------------------------------------
    Case("unlearn-output-newdir-dotdot", lambda w: w.unlearn("output_dir=newdir/..", "overwrite=true"),
         ("output_dir", "current folder")),
    Case("unlearn-output-dot-overwrite", lambda w: w.unlearn("output_dir=.", "overwrite=true"),
         ("output_dir", "current folder")),
    Case("unlearn-output-parent", lambda w: w.unlearn("output_dir=..", "overwrite=true"),
         ("output_dir", "above the current folder")),
    Case("unlearn-output-root", lambda w: w.unlearn("output_dir=/"), ("output_dir", "root of the file system")),
    Case("unlearn-output-home", lambda w: w.unlearn("output_dir=~/", "overwrite=true"),
         ("output_dir", "home folder")),
    Case("unlearn-output-is-a-file", lambda w: w.unlearn(f"output_dir={w.file('notes.txt', 'x')}"),
         ("output_dir", "notes.txt", "is a file")),
    Case("unlearn-output-under-a-file", lambda w: w.unlearn(f"output_dir={w.file('notes.txt', 'x')}/run"),
         ("output_dir", "notes.txt", "is a file")),
    Case("unlearn-output-read-only", lambda w: w.unlearn(f"output_dir={w.read_only()}/run"),
         ("output_dir", "cannot create")),
    Case("unlearn-output-holds-the-data",
         lambda w: w.unlearn(f"data.forget={w.file('data/forget.json', open(w.forget).read())}",
                             f"output_dir={w.tmp / 'data'}", "overwrite=true"),
         ("output_dir", "holds data.forget")),
    Case("unlearn-output-holds-the-config",
         lambda w: ["unlearn", "-c",
                    w.file("cfg/c.yaml", f"output_dir: {w.tmp / 'cfg'}\ndata:\n  forget: {w.forget}\n"),
                    "overwrite=true"],
         ("output_dir", "holds the config file")),
    Case("unlearn-overwrite-a-foreign-folder",
         lambda w: (w.file("run/thesis.tex", "years of work"), w.unlearn("overwrite=true"))[1],
         ("run", "not written by obliviate")),
    Case("unlearn-existing-output", lambda w: (w.file("run/run.json", "{}"), w.unlearn())[1],
         ("run", "already exists")),
    Case("unlearn-foreign-partial-folder", lambda w: (w.file("run.partial/notes.txt", "mine"), w.unlearn())[1],
         ("run.partial", "not written by obliviate")),
    # -- unlearn: config values -------------------------------------------------------------------------------
    Case("unlearn-lr-nan", lambda w: w.unlearn("train.learning_rate=nan"), ("train.learning_rate", "finite")),
    Case("unlearn-lr-inf", lambda w: w.unlearn("train.learning_rate=.inf"), ("train.learning_rate", "finite")),
    Case("unlearn-warmup-nan", lambda w: w.unlearn("train.warmup_epochs=nan"), ("train.warmup_epochs", "finite")),
    Case("unlearn-epochs-inf", lambda w: w.unlearn("train.num_epochs=inf", "train.max_steps=-1"),
         ("train.num_epochs", "finite")),
    Case("unlearn-weight-decay-nan", lambda w: w.unlearn("train.weight_decay=.nan"), ("train.weight_decay", "finite")),
    Case("unlearn-forget-coeff-nan", lambda w: w.unlearn("method.forget_coeff=nan"), ("method.forget_coeff", "finite")),
    Case("unlearn-reg-coeff-inf", lambda w: w.unlearn("method.regularization_coeff=inf"),
         ("method.regularization_coeff", "finite")),
    Case("unlearn-beta-nan", lambda w: w.unlearn("method.beta=nan"), ("method.beta", "finite")),
    Case("unlearn-scheduler-typo", lambda w: w.unlearn("train.lr_scheduler=linearr"),
         ("train.lr_scheduler", "did you mean 'linear'")),
    Case("unlearn-optimizer-typo", lambda w: w.unlearn("train.optim=adamw_torchh"),
         ("train.optim", "did you mean 'adamw_torch'")),
    Case("unlearn-fsdp-typo", lambda w: w.unlearn("train.fsdp=full_shardd"), ("train.fsdp", "full_shard")),
    Case("unlearn-deepspeed-missing-file", lambda w: w.unlearn("train.deepspeed=ds_config.json"),
         ("train.deepspeed", "ds_config.json", "file not found")),
    Case("unlearn-deepspeed-bad-json", lambda w: w.unlearn(f"train.deepspeed={w.file('ds.json', '{oops')}"),
         ("train.deepspeed", "ds.json", "not a valid JSON")),
    Case("unlearn-nan-policy", lambda w: w.unlearn("train.nan_policy=ignore"), ("train.nan_policy", "stop, skip")),
    Case("unlearn-nan-max-skips", lambda w: w.unlearn("train.nan_max_skips=0"), ("train.nan_max_skips", ">= 1")),
    Case("unlearn-unknown-key", lambda w: w.unlearn("train.learning_rte=1e-5"),
         ("train.learning_rte", "did you mean 'train.learning_rate'")),
    Case("unlearn-type", lambda w: w.unlearn("train.batch_size=four"), ("train.batch_size", "expected int")),
    Case("unlearn-method-typo", lambda w: w.unlearn("method.name=NOP+GD"), ("method.name", "NPO")),
    Case("unlearn-eval-set-size-0", lambda w: w.unlearn("eval.enabled=true", "eval.set_size=0"),
         ("eval.set_size", ">= 1")),
    Case("unlearn-eval-batch-0", lambda w: w.unlearn("eval.enabled=true", "eval.batch_size=0"),
         ("eval.batch_size", ">= 1")),
    Case("unlearn-eval-bootstrap-negative", lambda w: w.unlearn("eval.enabled=true", "eval.bootstrap=-1"),
         ("eval.bootstrap", ">= 0")),
    Case("unlearn-eval-holdout-missing",
         lambda w: w.unlearn("eval.enabled=true", f"eval.holdout={w.tmp / 'held.json'}"),
         ("held.json", "file not found")),
    Case("unlearn-lora-dropout", lambda w: w.unlearn("lora.dropout=1.5"), ("lora.dropout",)),
    Case("unlearn-override-without-value", lambda w: w.unlearn("learning_rate"), ("learning_rate", "key=value")),
    Case("unlearn-config-missing", lambda w: ["unlearn", "-c", str(w.tmp / "nope.yaml")],
         ("config file not found", "nope.yaml")),
    Case("unlearn-config-bad-yaml", lambda w: ["unlearn", "-c", _config(w, "train:\n  lr: [1,\n")],
         ("config.yaml", "line", "not valid YAML")),
    Case("unlearn-config-of-another-kind", lambda w: ["unlearn", "-c", _config(w, "kind: finetune\n")],
         ("config.yaml", "kind is 'finetune'")),
    # -- unlearn: data and models -----------------------------------------------------------------------------
    Case("unlearn-data-missing", lambda w: w.unlearn(f"data.forget={w.tmp / 'missing.json'}"),
         ("missing.json", "file not found")),
    Case("unlearn-data-bad-row",
         lambda w: w.unlearn(f"data.forget={w.file('f.json', ROW_THEN_BAD_ROW)}"),
         ("f.json", "line 2", "'answer'")),
    Case("unlearn-data-not-json", lambda w: w.unlearn(f"data.forget={w.file('f.json', '{not json')}"),
         ("f.json", "line 1", "invalid JSON")),
    Case("unlearn-retain-is-the-forget-set", lambda w: w.unlearn(f"data.retain={w.forget}"),
         ("retain set", "same", "forget set")),
    Case("unlearn-refusals-missing", lambda w: w.unlearn("method.name=IDK+GD", f"data.refusals={w.tmp / 'idk.txt'}"),
         ("idk.txt",)),
    Case("unlearn-model-missing", lambda w: w.unlearn("model.name=/no/such/model"), ("/no/such/model",)),
    Case("unlearn-model-pickle-only", lambda w: w.unlearn(f"model.name={w.shared / 'pickle-model'}"),
         ("pickle-model", "pickle", "safetensors")),
    Case("unlearn-model-remote-code", lambda w: w.unlearn(f"model.name={w.shared / 'remote-code-model'}"),
         ("remote-code-model", "model.trust_remote_code")),
    Case("unlearn-float16-on-cpu", lambda w: w.unlearn("model.dtype=float16"), ("model.dtype", "bfloat16"),
         skip="float16 is refused on the CPU only" if CUDA else None),
    Case("unlearn-lora-target", lambda w: w.unlearn("lora.enabled=true", "lora.target_modules=[nope_proj]"),
         ("lora.target_modules",)),
    Case("unlearn-retain-results-missing",
         lambda w: w.unlearn("eval.enabled=true", f"data.forget={w.bench}/forget.json",
                             f"data.retain={w.bench}/retain.json", f"eval.retain_results={w.tmp / 'r.json'}"),
         ("r.json", "retain results not found")),
    Case("unlearn-retain-model-missing",
         lambda w: w.unlearn("eval.enabled=true", f"data.forget={w.bench}/forget.json",
                             f"data.retain={w.bench}/retain.json", "eval.retain_model=/no/retain/model"),
         ("/no/retain/model",)),
    # -- finetune ---------------------------------------------------------------------------------------------
    Case("finetune-output-newdir-dotdot", lambda w: w.finetune("output_dir=newdir/..", "overwrite=true"),
         ("output_dir", "current folder")),
    Case("finetune-data-missing", lambda w: w.finetune(f"data.train=[{w.tmp / 'missing.json'}]"),
         ("missing.json", "file not found")),
    Case("finetune-optimizer-typo", lambda w: w.finetune("train.optim=sgdd"), ("train.optim", "did you mean 'sgd'")),
    Case("finetune-finetune-on", lambda w: w.finetune("data.train=[]", "data.tofu=x", "data.finetune_on=forget"),
         ("data.finetune_on",)),
    Case("finetune-lr-nan", lambda w: w.finetune("train.learning_rate=nan"), ("train.learning_rate", "finite")),
    # -- eval -------------------------------------------------------------------------------------------------
    Case("eval-batch-size-0", lambda w: w.eval("--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("eval-set-size-negative", lambda w: w.eval("--set-size", "-1"), ("--set-size", ">= 1")),
    Case("eval-set-size-0", lambda w: w.eval("--set-size", "0"), ("--set-size", ">= 1")),
    Case("eval-max-new-tokens-0", lambda w: w.eval("--max-new-tokens", "0"), ("--max-new-tokens", ">= 1")),
    Case("eval-bootstrap-negative", lambda w: w.eval("--bootstrap", "-1"), ("--bootstrap", ">= 0")),
    Case("eval-holdout-missing", lambda w: w.eval("--holdout", str(w.tmp / "held.json")),
         ("held.json", "file not found")),
    Case("eval-holdout-bad-row", lambda w: w.eval("--holdout", w.file("held.json", ROW_THEN_BAD_ROW)),
         ("held.json", "line 2", "'answer'")),
    Case("eval-batch-size-not-a-number", lambda w: w.eval("--batch-size", "many"), ("--batch-size", "invalid int")),
    Case("eval-out-read-only", lambda w: w.eval("--out", f"{w.read_only()}/results.json"),
         ("--out", "results.json", "cannot write")),
    Case("eval-out-under-a-file", lambda w: w.eval("--out", f"{w.file('notes.txt', 'x')}/results.json"),
         ("--out", "notes.txt", "is a file")),
    Case("eval-no-out", lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "synthetic", "--data", w.bench],
         ("--out is required",)),
    Case("eval-run-json-truncated",
         lambda w: w.eval(model=w.run_folder("r", '{"status": "complete", "kind": "unl')),
         ("run.json", "line 1", "not valid JSON")),
    Case("eval-run-json-not-an-object", lambda w: w.eval(model=w.run_folder("r", "[1, 2]")),
         ("run.json", "JSON object")),
    Case("eval-run-config-invalid", lambda w: w.eval(model=w.run_folder("r", "{}", "model: [unclosed\n")),
         ("config.yaml", "line", "not valid YAML")),
    Case("eval-run-config-model-is-a-string", lambda w: w.eval(model=w.run_folder("r", "{}", "model: smollm\n")),
         ("config.yaml", "field 'model'")),
    Case("eval-run-method-not-an-object", lambda w: w.eval(model=w.run_folder("r", '{"method": "GA"}')),
         ("run.json", "field 'method'")),
    Case("eval-model-missing", lambda w: w.eval(model="/no/such/model"), ("/no/such/model",)),
    Case("eval-model-pickle-only", lambda w: w.eval(model=str(w.shared / "pickle-model")),
         ("pickle-model", "pickle")),
    Case("eval-lora-adapter-pickle-only", lambda w: w.eval(model=str(w.shared / "pickle-adapter")),
         ("pickle-adapter", "adapter_model.bin", "pickle")),
    Case("eval-nli-model-pickle-only", lambda w: w.eval("--nli-model", str(w.shared / "pickle-nli")),
         ("pickle-nli", "pytorch_model.bin", "pickle")),
    Case("eval-embedding-model-pickle-only", lambda w: w.eval("--embedding-model", str(w.shared / "pickle-embedder")),
         ("pickle-embedder", "pytorch_model.bin", "pickle")),
    Case("eval-model-nan-weights", lambda w: w.eval(model=str(w.shared / "nan-model")),
         ("nan-model", "non-finite weights")),
    Case("eval-model-overflowing-outputs", lambda w: w.eval(model=str(w.shared / "overflow-model")),
         ("log-probabilities are not finite", "forget_perturbed.json:1", "--dtype float32")),
    Case("eval-dtype", lambda w: w.eval("--dtype", "float8"), ("dtype", "float8")),
    Case("eval-file-without-name", lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "files", "--file",
                                              "forget.json", "--out", str(w.tmp / "r.json")],
         ("--file", "NAME=PATH")),
    Case("eval-file-bad-row",
         lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "files", "--file",
                    f"forget={w.file('f.json', json.dumps({'question': 'Q?'}))}", "--out", str(w.tmp / "r.json")],
         ("f.json", "line 1", "'answer'")),
    Case("eval-synthetic-missing", lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "synthetic", "--data",
                                              str(w.tmp / "nobench"), "--out", str(w.tmp / "r.json")],
         ("nobench",)),
    Case("eval-tofu-without-data", lambda w: ["eval", "--model", str(w.tiny), "--out", str(w.tmp / "r.json")],
         ("tofu", "source")),
    Case("eval-retain-results-missing", lambda w: w.eval("--retain-results", str(w.tmp / "retain.json")),
         ("retain.json", "retain results not found")),
    Case("eval-benchmark-choice", lambda w: w.eval("--benchmark", "tofuu"), ("--benchmark", "invalid choice")),
    # -- report -----------------------------------------------------------------------------------------------
    Case("report-run-missing", lambda w: ["report", str(w.tmp / "nothing"), "--out", str(w.tmp / "r.html")],
         ("nothing", "no such file or folder")),
    Case("report-out-is-a-folder", lambda w: ["report", str(FIXTURES / "target"), "--out", str(w.tmp)],
         ("is a folder",)),
    Case("report-out-under-a-file", lambda w: ["report", str(FIXTURES / "target"), "--out",
                                               f"{w.file('notes.txt', 'x')}/r.html"],
         ("notes.txt", "is a file")),
    Case("report-markdown-read-only", lambda w: ["report", str(FIXTURES / "target"), "--out", str(w.tmp / "r.html"),
                                                 "--markdown", f"{w.read_only()}/r.md"],
         ("r.md", "cannot write")),
    Case("report-bad-results", lambda w: ["report", w.file("bad/results.json", '{"schema_version": 1}'), "--out",
                                          str(w.tmp / "r.html")],
         ("results.json", "'sets'")),
    Case("report-results-not-json", lambda w: ["report", w.file("bad/results.json", '{"schema'), "--out",
                                               str(w.tmp / "r.html")],
         ("results.json", "JSON")),
    # -- sweep ------------------------------------------------------------------------------------------------
    Case("sweep-config-missing", lambda w: ["sweep", str(w.tmp / "none.yaml")], ("config file not found", "none.yaml")),
    Case("sweep-config-kind", lambda w: ["sweep", _config(w, "kind: continual\n")], ("config.yaml", "continual")),
    Case("sweep-output-dot",
         lambda w: ["sweep", _config(w, f"kind: unlearn\noutput_dir: .\ndata:\n  forget: {w.forget}\n")],
         ("output_dir", "current folder")),
    Case("sweep-report-is-a-folder", lambda w: ["sweep", _config(w, f"kind: unlearn\ndata:\n  forget: {w.forget}\n"),
                                                "--report", str(w.tmp)],
         ("is a folder",)),
    Case("sweep-bad-override", lambda w: ["sweep", _config(w, f"kind: unlearn\ndata:\n  forget: {w.forget}\n"),
                                          "--set", "train.optim=adamw"],
         ("train.optim",)),
    # -- continual --------------------------------------------------------------------------------------------
    Case("continual-steps-0", lambda w: ["continual", f"data.forget={w.bench}/forget.json",
                                         f"data.retain={w.bench}/retain.json", "continual.steps=0",
                                         f"output_dir={w.tmp / 'c'}"],
         ("continual.steps",)),
    Case("continual-too-many-steps", lambda w: ["continual", f"data.forget={w.bench}/forget.json",
                                                f"data.retain={w.bench}/retain.json", "continual.steps=9",
                                                f"output_dir={w.tmp / 'c'}"],
         ("continual.steps", "9")),
    Case("continual-output-dot", lambda w: ["continual", f"data.forget={w.bench}/forget.json", "output_dir=.",
                                            "overwrite=true"],
         ("output_dir", "current folder")),
    Case("continual-lr-nan", lambda w: ["continual", f"data.forget={w.bench}/forget.json", "train.learning_rate=nan",
                                        f"output_dir={w.tmp / 'c'}"],
         ("train.learning_rate", "finite")),
    # -- general ----------------------------------------------------------------------------------------------
    Case("general-no-tasks", lambda w: ["general", "--model", str(w.tiny), "--tasks", ",", "--out",
                                        str(w.tmp / "g.json")],
         ("--tasks",)),
    Case("general-limit-0", lambda w: ["general", "--model", str(w.tiny), "--tasks", "arc_easy", "--limit", "0",
                                       "--out", str(w.tmp / "g.json")],
         ("limit", ">= 1")),
    Case("general-no-out", lambda w: ["general", "--model", str(w.tiny)], ("--out is required",)),
    # -- synth, methods, models, demo -------------------------------------------------------------------------
    Case("synth-authors-0", lambda w: ["synth", "--authors", "0", "--out", str(w.tmp / "b")], ("authors",)),
    Case("synth-facts-too-many", lambda w: ["synth", "--facts", "99", "--out", str(w.tmp / "b")], ("facts",)),
    Case("synth-out-is-a-file", lambda w: ["synth", "--out", w.file("notes.txt", "x"), "--overwrite"],
         ("notes.txt", "not a folder")),
    Case("synth-overwrite-a-foreign-folder",
         lambda w: (w.file("b/thesis.tex", "mine"), ["synth", "--out", str(w.tmp / "b"), "--overwrite"])[1],
         ("b", "not a benchmark folder")),
    Case("synth-out-dot", lambda w: ["synth", "--out", ".", "--overwrite"], ("--out", "current folder")),
    # `methods NAME` describes one method, so the extra argument is the one after the name.
    Case("methods-extra-argument", lambda w: ["methods", "NPO", "everything"],
         ("unrecognized arguments", "everything")),
    Case("methods-unknown-name", lambda w: ["methods", "SimNPX"], ("unknown method 'SimNPX'", "did you mean 'SIMNPO'")),
    Case("models-force-without-convert", lambda w: ["models", "--force"], ("--force", "--convert")),
    Case("demo-out-is-a-file", lambda w: ["demo", "--out", w.file("notes.txt", "x")], ("--out", "notes.txt")),
    Case("demo-model-missing", lambda w: ["demo", "--out", str(w.tmp / "demo"), "--model", "/no/such/model"],
         ("/no/such/model",)),
    # -- raw text, MUSE, WMDP ---------------------------------------------------------------------------------
    Case("unlearn-data-format-unknown", lambda w: w.unlearn("data.format=csv"), ("data.format", "csv")),
    Case("unlearn-text-empty-file", lambda w: w.unlearn(f"data.forget={w.file('forget.txt', '  ')}"),
         ("forget.txt", "empty")),
    Case("unlearn-text-bad-row",
         lambda w: w.unlearn(f"data.forget={w.file('corpus.jsonl', TEXT_THEN_BAD_TEXT)}", "data.format=text"),
         ("corpus.jsonl", "line 2", "field 'text'")),
    Case("unlearn-text-with-refusals",
         lambda w: w.unlearn(f"data.forget={w.file('forget.txt', 'Velmouth opened its tidal bridge on Tuesday.')}",
                             "method.name=IDK+GD"),
         ("raw text", "forget_idk")),
    Case("unlearn-text-eval-without-benchmark",
         lambda w: w.unlearn(f"data.forget={w.file('forget.txt', 'Velmouth opened its tidal bridge on Tuesday.')}",
                             "eval.enabled=true"),
         ("eval.benchmark", "raw text")),
    Case("unlearn-eval-tasks-without-wmdp", lambda w: w.unlearn("eval.tasks=[wmdp_bio]"),
         ("eval.tasks", "wmdp")),
    Case("unlearn-eval-benchmark-unknown", lambda w: w.unlearn("eval.benchmark=mmlu"), ("eval.benchmark", "mmlu")),
    Case("eval-muse-data-is-a-file",
         lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "muse", "--data", w.file("notes.txt", "x"),
                    "--out", str(w.tmp / "r.json")],
         ("notes.txt", "MUSE folder")),
    Case("eval-muse-folder-without-sets",
         lambda w: (w.file("muse/raw/forget.txt", "text"),
                    ["eval", "--model", str(w.tiny), "--benchmark", "muse", "--data", str(w.tmp / "muse"),
                     "--out", str(w.tmp / "r.json")])[1],
         ("muse", "not a MUSE folder")),
    Case("eval-muse-row-without-gt",
         lambda w: (w.file("muse/verbmem/forget.json", json.dumps([{"prompt": "The harbour town of"}])),
                    ["eval", "--model", str(w.tiny), "--benchmark", "muse", "--data", str(w.tmp / "muse"),
                     "--out", str(w.tmp / "r.json")])[1],
         ("forget.json", "element 0", "field 'gt'")),
    Case("eval-wmdp-options-on-another-benchmark", lambda w: w.eval("--tasks", "wmdp_bio"),
         ("--tasks", "--benchmark wmdp")),
    Case("eval-wmdp-limit-0",
         lambda w: ["eval", "--model", str(w.tiny), "--benchmark", "wmdp", "--limit", "0", "--out",
                    str(w.tmp / "r.json")],
         ("--limit", ">= 1")),
    # -- attack -----------------------------------------------------------------------------------------------
    Case("attack-relearn-not-a-run", lambda w: ["attack", "relearn", str(w.tmp / "nothing"), "--steps", "1",
                                                "--count", "1"],
         ("nothing", "not a finished run folder")),
    Case("attack-relearn-no-results", lambda w: ["attack", "relearn", _probe_run(w, results=False), "--steps", "1",
                                                 "--count", "1"],
         ("results.json", "evaluate the run first")),
    Case("attack-relearn-steps-0", lambda w: ["attack", "relearn", _probe_run(w), "--steps", "0", "--count", "1"],
         ("--steps", ">= 1")),
    Case("attack-relearn-data-and-count",
         lambda w: ["attack", "relearn", _probe_run(w), "--steps", "1", "--count", "1", "--data", w.forget],
         ("--data", "--count")),
    Case("attack-relearn-count-too-big", lambda w: ["attack", "relearn", _probe_run(w), "--steps", "1",
                                                    "--count", "2"],
         ("--count", "between 1 and 1")),
    Case("attack-relearn-rows-not-forgotten",
         lambda w: ["attack", "relearn", _probe_run(w), "--steps", "1", "--data", w.retain],
         ("retain.json", "not in the run's forget set")),
    Case("attack-relearn-control-holds-forget-rows",
         lambda w: ["attack", "relearn", _probe_run(w), "--steps", "1", "--count", "1", "--control", w.forget],
         ("forget.json", "forget rows")),
    Case("attack-paraphrase-no-rephrasings", lambda w: ["attack", "paraphrase", _probe_run(w)],
         ("no rephrased questions",)),
    Case("attack-quantize-bits-3", lambda w: ["attack", "quantize", _probe_run(w), "--bits", "3"],
         ("--bits", "8 and 4")),
    Case("attack-quantize-bitsandbytes-on-cpu",
         lambda w: ["attack", "quantize", _probe_run(w), "--backend", "bitsandbytes"],
         ("bitsandbytes", "CUDA"), skip="this machine has CUDA" if CUDA else None),
    Case("attack-quantize-a-finetune-run",
         lambda w: ["attack", "quantize", w.run_folder("ft", '{"kind": "finetune"}', "kind: finetune\n")],
         ("finetune run",)),
    Case("no-command", lambda w: [], ("required",)),
    Case("unknown-command", lambda w: ["unlern"], ("invalid choice", "unlern")),
]


# -- shared inputs --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("shared-inputs")
    pairs = [("Where was Anna Vell born?", "In Korsby."), ("What does Anna Vell write?", "Sea novels.")]
    others = [("Where was Bo Lind born?", "In Marhaven."), ("What does Bo Lind write?", "Short poems.")]
    for name, rows in (("forget.json", pairs), ("retain.json", others)):
        (root / name).write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(root / "bench")

    def copy_without_weights(name: str) -> Path:
        folder = root / name
        shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        return folder

    # Refused before anything is loaded, so the pickle files need not hold real weights.
    (copy_without_weights("pickle-model") / "pytorch_model.bin").write_bytes(b"pickle")
    remote = copy_without_weights("remote-code-model")
    shutil.copy(tiny_model_dir / "model.safetensors", remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (remote / "config.json").write_text(json.dumps(config))
    adapter = root / "pickle-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir),
                                                             "peft_type": "LORA"}))
    (adapter / "adapter_model.bin").write_bytes(b"pickle")
    nli = copy_without_weights("pickle-nli")
    config = json.loads((nli / "config.json").read_text())
    config["id2label"] = {"0": "entailment", "1": "neutral", "2": "contradiction"}
    (nli / "config.json").write_text(json.dumps(config))
    (nli / "pytorch_model.bin").write_bytes(b"pickle")
    embedder = root / "pickle-embedder"
    embedder.mkdir()
    (embedder / "modules.json").write_text("[]")
    (embedder / "pytorch_model.bin").write_bytes(b"pickle")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = math.nan
    model.save_pretrained(root / "nan-model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "nan-model")
    # Finite weights whose logits overflow: one output row at float32's limit makes its logit inf.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight[5].fill_(3e38)
    model.save_pretrained(root / "overflow-model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "overflow-model")
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def test_there_are_at_least_60_cases_covering_every_command():
    from obliviate.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    covered = {case.id.split("-")[0] for case in CASES}  # ids start with the command they run
    assert commands <= covered, sorted(commands - covered)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_message_and_leaves_nothing(case, tmp_path, shared, tiny_model_dir,
                                                               monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    world = World(work, shared, Path(tiny_model_dir))
    argv = case.build(world)
    before, shared_before = _snapshot(work), _snapshot(shared)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse reports its own errors by exiting
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    if Path(work / "read-only").exists():
        (work / "read-only").chmod(0o755)
    assert code == 2, f"exit {code}\nstdout:\n{captured.out}\nstderr:\n{err}"
    assert "Traceback" not in err and "Traceback" not in captured.out
    assert len([line for line in err.splitlines() if ": error: " in line]) == 1, err
    for needle in case.expect:
        assert needle in err, f"{needle!r} not in:\n{err}"
    assert _snapshot(work) == before, "the failed command changed the folder"
    assert _snapshot(shared) == shared_before
