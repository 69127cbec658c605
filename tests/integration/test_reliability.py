"""Never lose a user's work (docs/reliability.md): output folders, locks, the NaN guard, crash-safe checkpoints.

Each test reproduces one way work used to be lost — a folder deleted, two runs into one folder, a NaN model
saved as complete, a resume that failed on a half-written checkpoint — and checks what happens now.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from obliviate.allocator import ENV as ALLOCATOR_ENV
from obliviate.allocator import GPU_DEVICES, find_allocator
from obliviate.benchmarks.synthetic import generate_benchmark
from obliviate.cli import main
from obliviate.config import config_from_dict
from obliviate.errors import DataError, ModelLoadError
from obliviate.outputs import MARKER, OutputLock
from obliviate.reporting import load_results, markdown_table, write_report
from obliviate.training import trainer as trainer_module
from obliviate.training.checkpoints import checkpoint_problem, last_complete_checkpoint
from obliviate.training.guard import TrainingStopped
from obliviate.training.run import unlearn

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "results"
FORGET = [("Where was Anna Vell born?", "Anna Vell was born in Korsby."),
          ("What does Anna Vell write?", "Anna Vell writes long sea novels."),
          ("Which prize did Anna Vell win?", "She won the Grey Gull Prize."),
          ("Who was Anna Vell's father?", "Her father was a lighthouse keeper.")]
RETAIN = [("Where was Bo Lind born?", "Bo Lind was born in Marhaven."),
          ("What does Bo Lind write?", "Bo Lind writes short poems."),
          ("Which prize did Bo Lind win?", "He won the Amber Pen."),
          ("Who was Bo Lind's mother?", "His mother was a baker.")]


def _write_qa(path: Path, pairs) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return {"forget": _write_qa(d / "forget.json", FORGET), "retain": _write_qa(d / "retain.json", RETAIN)}


def _args(tiny, data, out, *extra) -> list[str]:
    return ["unlearn", f"model.name={tiny}", f"data.forget={data['forget']}", f"data.retain={data['retain']}",
            f"output_dir={out}", "method.name=GA+GD", "train.max_steps=2", "train.batch_size=2",
            "train.gradient_accumulation_steps=1", "train.warmup_epochs=0", "train.learning_rate=1e-3",
            "eval.enabled=false", *extra]


def _cfg(tiny, data, out, **train):
    t = {"learning_rate": 1e-3, "max_steps": 4, "batch_size": 2, "gradient_accumulation_steps": 1,
         "warmup_epochs": 0.0, "seed": 0, "logging_steps": 1}
    t.update(train)
    return config_from_dict("unlearn", {"output_dir": str(out), "model": {"name": str(tiny)},
                                        "data": {"forget": data["forget"], "retain": data["retain"]},
                                        "method": {"name": "GA+GD"}, "train": t, "eval": {"enabled": False}})


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


# -- output folders -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["unlearn", "finetune"])
def test_output_dir_newdir_dotdot_leaves_the_current_folder_alone(kind, tmp_path, monkeypatch, capsys,
                                                                  tiny_model_dir, data):
    """`output_dir=newdir/..` is the current folder; it used to be checked before newdir existed and then deleted."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("three years of work")
    (work / "figures").mkdir()
    (work / "figures" / "plot.pdf").write_bytes(b"%PDF")
    before = _tree(work)
    monkeypatch.chdir(work)
    data_args = ([f"data.forget={data['forget']}", f"data.retain={data['retain']}", "eval.enabled=false"]
                 if kind == "unlearn" else [f"data.train=[{data['forget']}]"])
    code = main([kind, f"model.name={tiny_model_dir}", *data_args, "output_dir=newdir/..", "overwrite=true",
                 "train.max_steps=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "output_dir" in err and "current folder" in err and "Traceback" not in err
    assert _tree(work) == before


def test_overwrite_replaces_only_a_folder_obliviate_wrote(tmp_path, capsys, tiny_model_dir, data):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("keep me")
    assert main(_args(tiny_model_dir, data, thesis, "overwrite=true")) == 2
    err = capsys.readouterr().err
    assert "not written by obliviate" in err and str(thesis) in err
    assert [p.name for p in thesis.iterdir()] == ["chapter1.tex"]
    assert not (tmp_path / "thesis.partial").exists()

    run = tmp_path / "run"
    assert main(_args(tiny_model_dir, data, run)) == 0
    first = json.loads((run / "run.json").read_text())
    # save_strategy=no: the engine's checkpoints folder is not left behind, empty.
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "config.yaml", "model", "run.json"]
    assert main(_args(tiny_model_dir, data, run, "overwrite=true", "train.max_steps=1")) == 0
    second = json.loads((run / "run.json").read_text())
    assert (first["optimizer_steps"], second["optimizer_steps"]) == (2, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run", "thesis"]


def test_a_partial_folder_is_removed_only_when_obliviate_marked_it(tmp_path, capsys, tiny_model_dir, data):
    out = tmp_path / "run"
    foreign = tmp_path / "run.partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not obliviate's")
    assert main(_args(tiny_model_dir, data, out)) == 2
    assert "run.partial" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "not obliviate's"

    # A partial folder left by a killed obliviate run (marker, no checkpoint) is obliviate's to replace.
    (foreign / "notes.txt").unlink()
    (foreign / MARKER).write_text("{}")
    (foreign / "config.yaml").write_text("stale")
    assert main(_args(tiny_model_dir, data, out)) == 0
    assert not foreign.exists() and (out / "run.json").is_file()


def test_results_file_is_readable_like_any_other_and_stale_temp_files_are_removed(tmp_path, tiny_model_dir):
    bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
    out = tmp_path / "eval" / "results.json"
    out.parent.mkdir()
    # What a killed `eval` left: the temporary names of this version and of earlier ones.
    stale = [out.parent / ".results.json.a1b2c3d4.tmp", out.parent / ".results.json.k3j_x9q2"]
    for path in stale:
        path.write_text('{"half": ')
    keep = out.parent / ".results.json.notes"
    keep.write_text("not a temporary file")
    code = main(["eval", "--model", str(tiny_model_dir), "--benchmark", "synthetic", "--data", str(bench),
                 "--out", str(out), "--max-new-tokens", "4", "--embedding-model", "none", "--nli-model", "none"])
    assert code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in out.parent.iterdir()) == [".results.json.notes", "results.json"]


def test_report_pair_changes_together(tmp_path, monkeypatch):
    html, md = tmp_path / "report.html", tmp_path / "report.md"
    html.write_text("old html")
    md.write_text("old md")
    (tmp_path / ".report.html.0badf00d.tmp").write_text("<html")     # left by a killed earlier report
    runs = [FIXTURES / "target", FIXTURES / "retain"]

    from obliviate import files
    real_stage, calls = files._stage, []

    def fail_on_the_markdown(target, text):
        calls.append(target)
        if target.name == "report.md":
            raise OSError(28, "No space left on device")
        return real_stage(target, text)

    monkeypatch.setattr(files, "_stage", fail_on_the_markdown)
    with pytest.raises(Exception, match="No space left"):
        write_report(runs, html, markdown_out=md)
    assert (html.read_text(), md.read_text()) == ("old html", "old md")   # both old
    monkeypatch.setattr(files, "_stage", real_stage)
    write_report(runs, html, markdown_out=md)
    assert html.read_text().startswith("<!DOCTYPE html>") and md.read_text().startswith("| model |")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]


def test_markdown_report_escapes_html_from_records():
    record = load_results(FIXTURES / "target")
    record["run"]["method"] = "<script>alert(1)</script>"
    table = markdown_table([record])
    assert "<script>" not in table and "&lt;script&gt;alert(1)&lt;/script&gt;" in table


# -- one writer per output ------------------------------------------------------------------------------------
def test_a_second_unlearn_into_the_same_output_exits_2_naming_the_first(tmp_path, tiny_model_dir, data):
    """Two real processes: the second stops at once; killing the first releases its lock."""
    out = tmp_path / "run"
    args = _args(tiny_model_dir, data, out, "train.max_steps=100000", "train.logging_steps=100000")
    first = subprocess.Popen([sys.executable, "-m", "obliviate.cli", *args], env=_env(), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "run.partial" / MARKER).is_file():
            assert first.poll() is None, "the first run ended early"
            assert time.time() < deadline, "the first run never started writing"
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "obliviate.cli", *args], env=_env(), cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"is being written by another obliviate process (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the second run must not disturb the first"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # A killed run's lock is released by the kernel: the next run goes ahead (and replaces the marked partial).
    assert main(_args(tiny_model_dir, data, out)) == 0
    assert (out / "run.json").is_file() and not (tmp_path / "run.partial").exists()


@pytest.mark.skipif(sys.platform != "linux" or any(os.path.exists(d) for d in GPU_DEVICES),
                    reason="the program restarts itself with tcmalloc on Linux machines without a GPU")
@pytest.mark.parametrize("choice", ["default", "system"])
def test_the_program_runs_under_the_allocator_it_picks(choice, tmp_path, tiny_model_dir, data):
    """``obliviate`` as a program preloads tcmalloc where the system has it (obliviate/allocator.py) and records
    it in run.json; OBLIVIATE_MALLOC=system keeps the C library's own."""
    env = _env()
    env.pop("LD_PRELOAD", None)
    env.pop(ALLOCATOR_ENV, None)
    if choice == "system":
        env[ALLOCATOR_ENV] = "system"
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "obliviate.cli", *_args(tiny_model_dir, data, out)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((out / "run.json").read_text())["environment"]["allocator"]
    found = find_allocator()
    assert recorded == (found if choice == "default" and found else "system")


@pytest.mark.parametrize("command", ["eval", "report"])
def test_eval_out_and_report_out_are_locked_too(command, tmp_path, capsys, tiny_model_dir):
    target = tmp_path / ("results.json" if command == "eval" else "report.html")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from obliviate.outputs import OutputLock; "
                               "OutputLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(600)",
         str(target)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        if command == "eval":
            bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
            argv = ["eval", "--model", str(tiny_model_dir), "--benchmark", "synthetic", "--data", str(bench),
                    "--out", str(target), "--embedding-model", "none", "--nli-model", "none"]
        else:
            argv = ["report", str(FIXTURES / "target"), "--out", str(target)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{target} is being written by another obliviate process (pid {holder.pid})" in err
        assert not target.exists()
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_lock_file_is_removed_on_release_and_a_second_holder_is_refused(tmp_path):
    target = tmp_path / "deep" / "out"
    lock = OutputLock(target).acquire()
    assert lock.path.read_text().strip() == str(os.getpid())
    with pytest.raises(Exception, match=f"pid {os.getpid()}"):
        OutputLock(target).acquire()
    lock.release(keep_folders=False)
    assert not (tmp_path / "deep").exists()


# -- the NaN guard --------------------------------------------------------------------------------------------
def test_lr_inf_stops_with_exit_3_and_saves_nothing(tmp_path, capsys, monkeypatch, tiny_model_dir, data):
    """The tiny model with lr=inf: the first update makes the weights infinite, the next loss is NaN."""
    from obliviate.training import run as run_module
    real = run_module._training_arguments

    def lr_inf(*a, **kw):  # the config refuses inf, so it is put where the engine reads it
        args = real(*a, **kw)
        args.learning_rate = math.inf
        return args

    monkeypatch.setattr(run_module, "_training_arguments", lr_inf)
    out = tmp_path / "run"
    code = main(_args(tiny_model_dir, data, out, "train.max_steps=3"))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "obliviate unlearn: stopped: training stopped at step 2" in err
    assert "the forget term (forget_loss) is NaN" in err and "non-finite" in err
    assert "nothing was saved as model/" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "run.partial").exists()


def _inject_nan(monkeypatch, steps: set[int]):
    """Make the forget term NaN at the given optimizer steps (1-based), the loss and gradients with it."""
    real = trainer_module.UnlearningTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = real(self, model, inputs, return_outputs, num_items_in_batch)
        if self.state.global_step + 1 in steps:
            self._term_values["forget_loss"][-1] = math.nan
            return loss * math.nan
        return loss

    monkeypatch.setattr(trainer_module.UnlearningTrainer, "compute_loss", compute_loss)


def _spy_logs(monkeypatch) -> list[dict]:
    logs: list[dict] = []
    real = trainer_module.UnlearningTrainer.log

    def log(self, values, start_time=None):
        real(self, values, start_time)
        logs.append(dict(self.state.log_history[-1]))

    monkeypatch.setattr(trainer_module.UnlearningTrainer, "log", log)
    return logs


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, tiny_model_dir, data):
    _inject_nan(monkeypatch, {3})
    logs = _spy_logs(monkeypatch)
    cfg = _cfg(tiny_model_dir, data, tmp_path / "run", save_strategy="steps", save_steps=1)
    with pytest.raises(TrainingStopped) as info:
        unlearn(cfg)
    assert info.value.exit_code == 3
    message = str(info.value)
    partial = tmp_path / "run.partial"
    good = partial / "checkpoints" / "checkpoint-2"
    assert "step 3: the forget term (forget_loss) is NaN" in message
    assert f"the last good checkpoint is {good}; it is kept" in message
    assert checkpoint_problem(good) is None
    assert not (partial / "checkpoints" / "checkpoint-3").exists(), "the bad step must not be checkpointed"
    assert not (partial / "model").exists() and not (tmp_path / "run").exists()
    step3 = [entry for entry in logs if entry.get("step") == 3 and "loss" in entry]
    assert step3 and math.isnan(step3[0]["loss"]) and math.isnan(step3[0]["forget_loss"])
    # The kept checkpoint is one to continue from.
    monkeypatch.undo()
    result = unlearn(cfg, resume=True)
    assert json.loads((result.output_dir / "run.json").read_text())["resumed_from"] == str(good)


def test_nan_policy_skip_withholds_the_update_and_counts_it(tmp_path, monkeypatch, tiny_model_dir, data):
    one_step = unlearn(_cfg(tiny_model_dir, data, tmp_path / "one", max_steps=1))
    _inject_nan(monkeypatch, {2})
    logs = _spy_logs(monkeypatch)
    skipped = unlearn(_cfg(tiny_model_dir, data, tmp_path / "skip", max_steps=2, nan_policy="skip"))
    record = json.loads((skipped.output_dir / "run.json").read_text())
    assert (record["skipped_updates"], record["skipped_steps"], record["optimizer_steps"]) == (1, [2], 2)
    # Step 2's update was withheld: the weights are those after step 1, exactly.
    w1, w2 = load_file(str(one_step.model_dir / "model.safetensors")), load_file(
        str(skipped.model_dir / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    for entry in logs:
        terms = [entry[k] for k in ("forget_loss", "regularization_loss") if k in entry]
        if "loss" in entry and any(not math.isfinite(v) for v in terms):
            assert not math.isfinite(entry["loss"]), entry   # never a finite total over a NaN term
    assert any(entry.get("skipped_updates") == 1 for entry in logs)


def test_nan_policy_skip_stops_after_too_many_skips(tmp_path, monkeypatch, tiny_model_dir, data):
    _inject_nan(monkeypatch, {2, 3})
    with pytest.raises(TrainingStopped, match=r"step 3: 2 updates were skipped .* more than train.nan_max_skips=1"):
        unlearn(_cfg(tiny_model_dir, data, tmp_path / "run", nan_policy="skip", nan_max_skips=1))
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="float16 training is refused on the CPU only")
def test_float16_training_on_the_cpu_is_refused(tmp_path, capsys, tiny_model_dir, data):
    assert main(_args(tiny_model_dir, data, tmp_path / "run", "model.dtype=float16")) == 2
    err = capsys.readouterr().err
    assert "model.dtype: float16" in err and "bfloat16" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_evaluating_a_model_with_nan_weights_is_a_clear_error(tmp_path, capsys, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] = math.nan
    bad = tmp_path / "nan-model"
    model.save_pretrained(bad)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(bad)
    bench = generate_benchmark(authors=3, facts=2, seed=0, forget_authors=1).write(tmp_path / "bench")
    out = tmp_path / "out" / "results.json"
    code = main(["eval", "--model", str(bad), "--benchmark", "synthetic", "--data", str(bench), "--out", str(out),
                 "--embedding-model", "none", "--nli-model", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite weights" in err and "model.layers.0.mlp.down_proj.weight" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# -- crash-safe checkpoints -----------------------------------------------------------------------------------
def _kill_during_save(checkpoint: Path, how: str) -> None:
    """Leave ``checkpoint`` as a kill during its save does."""
    if how == "state-not-written":
        # The engine writes trainer_state.json last: killed while writing the optimizer state.
        (checkpoint / "trainer_state.json").unlink()
        optimizer = checkpoint / "optimizer.pt"
        optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    else:
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])


@pytest.mark.parametrize("how", ["state-not-written", "weights-truncated"])
def test_resume_skips_a_checkpoint_a_kill_left_half_written(how, tmp_path, monkeypatch, caplog, tiny_model_dir,
                                                             data):
    full = unlearn(_cfg(tiny_model_dir, data, tmp_path / "full", save_strategy="steps", save_steps=1))
    cfg = _cfg(tiny_model_dir, data, tmp_path / "cut", save_strategy="steps", save_steps=1)
    real = trainer_module.UnlearningTrainer.training_step

    def interrupt_after_three(self, *a, **kw):
        if self.state.global_step == 3:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(trainer_module.UnlearningTrainer, "training_step", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        unlearn(cfg)
    monkeypatch.setattr(trainer_module.UnlearningTrainer, "training_step", real)
    checkpoints = tmp_path / "cut.partial" / "checkpoints"
    _kill_during_save(checkpoints / "checkpoint-3", how)
    assert checkpoint_problem(checkpoints / "checkpoint-3") is not None
    assert last_complete_checkpoint(checkpoints) == checkpoints / "checkpoint-2"

    with caplog.at_level(logging.WARNING, logger="obliviate"):
        resumed = unlearn(cfg, resume=True)
    said = caplog.text
    assert "checkpoint-3 is incomplete" in said and f"resuming from {checkpoints / 'checkpoint-2'}" in said
    record = json.loads((resumed.output_dir / "run.json").read_text())
    assert record["resumed_from"] == str(checkpoints / "checkpoint-2")
    w_full = load_file(str(full.model_dir / "model.safetensors"))
    w_res = load_file(str(resumed.model_dir / "model.safetensors"))
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_res[k], rtol=1e-5, atol=1e-6)


# -- data and models ------------------------------------------------------------------------------------------
def test_shared_and_repeated_questions_are_warned_with_counts(tmp_path, caplog, data):
    retain = _write_qa(tmp_path / "retain2.json", RETAIN + FORGET[:2] + RETAIN[:1])
    with caplog.at_level(logging.WARNING, logger="obliviate"):
        # The run then stops at the missing model, before anything is written.
        code = main(["unlearn", "model.name=/no/such/model", f"data.forget={data['forget']}",
                     f"data.retain={retain}", f"output_dir={tmp_path / 'run'}", "eval.enabled=false"])
    assert code == 2
    assert "2 questions of the forget set are also in the retain set" in caplog.text
    assert "the retain set repeats 1 question (1 extra row" in caplog.text
    with pytest.raises(DataError, match="the retain set asks the same 4 questions as the forget set"):
        unlearn(config_from_dict("unlearn", {"output_dir": str(tmp_path / "run"),
                                             "data": {"forget": data["forget"], "retain": data["forget"]}}))


def test_local_folder_with_remote_code_names_the_setting_not_a_hub_url(tmp_path, tiny_model_dir):
    import shutil

    from obliviate.models import load_model
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder))
    assert "model.trust_remote_code=true" in str(info.value) and "hf.co" not in str(info.value)
