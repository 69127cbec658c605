"""The writers, output-folder rules and checkpoint checks behind docs/reliability.md, one by one."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from obliviate.errors import ObliviateError
from obliviate.files import new_temp_dir, remove_stale_temps, replace_dir, write_json_atomic, write_text_atomic
from obliviate.outputs import (MARKER, OutputBusyError, OutputLock, RunFolder, is_main_process, output_path_problems,
                               resolve_output_path, written_by_obliviate)
from obliviate.training.checkpoints import checkpoint_problem, last_complete_checkpoint


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- files ----------------------------------------------------------------------------------------------------
def test_atomic_write_creates_folders_replaces_and_honours_the_umask(tmp_path):
    target = tmp_path / "a" / "b" / "results.json"
    write_json_atomic(target, {"x": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": "é"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


def test_atomic_write_into_a_folder_path_is_a_user_error(tmp_path):
    with pytest.raises(ObliviateError, match="is a folder"):
        write_text_atomic(tmp_path, "x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ObliviateError, match="cannot write the file"):
        write_text_atomic(tmp_path / "file" / "below.json", "x")


def test_stale_temporaries_of_one_target_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "results.json"
    stale = [".results.json.a1b2c3d4.tmp", ".results.json.k3j_x9q2", ".results.json.tmp-0a1b2c3d4e5f",
             ".results.json.old-0a1b2c3d4e5f"]
    kept = [".results.json.notes", ".other.json.a1b2c3d4.tmp", "results.json", ".results.json.lock"]
    for name in stale + kept:
        if "-" in name:
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    removed = remove_stale_temps(target)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_replace_dir_swaps_and_keeps_the_old_folder_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = new_temp_dir(target)
    (staging / "new.txt").write_text("new")
    real_rename = os.rename

    def fail_second(src, dst):
        if Path(src) == staging:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_second)
    with pytest.raises(OSError):
        replace_dir(staging, target)
    assert (target / "old.txt").read_text() == "old"
    monkeypatch.setattr(os, "rename", real_rename)
    replace_dir(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# -- output paths ---------------------------------------------------------------------------------------------
def test_output_paths_are_resolved_and_dangerous_ones_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "forget.json").write_text("{}")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    assert resolve_output_path("newdir/..") == str(work)
    assert resolve_output_path("~/runs/x") == str(home / "runs" / "x")

    def problems(path, inputs=()):
        return " ".join(output_path_problems("output_dir", resolve_output_path(path), inputs))

    assert "current folder" in problems("newdir/..")
    assert "above the current folder" in problems("..")
    assert "home folder" in problems("~")
    assert "root of the file system" in problems("/")
    assert "holds data.forget" in problems("data", [("data.forget", "data/forget.json")])
    assert problems("runs/x", [("data.forget", "data/forget.json"), ("model.name", "some/hub-id")]) == ""
    (work / "notes.txt").write_text("x")
    assert "is a file" in problems("notes.txt") and "is a file" in problems("notes.txt/run")


def test_written_by_obliviate_recognises_markers_and_run_files(tmp_path):
    for name in (MARKER, "run.json", "results.json", "continual.json"):
        folder = tmp_path / name.strip(".")
        folder.mkdir()
        (folder / name).write_text("{}")
        assert written_by_obliviate(folder)
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "run.json.bak").write_text("{}")
    assert not written_by_obliviate(thesis) and not written_by_obliviate(tmp_path / "missing")


def test_is_main_process_reads_the_launchers_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.setenv("RANK", "3")
    assert not is_main_process()


def test_other_ranks_touch_no_output_folder(tmp_path):
    folder = RunFolder(tmp_path / "run", kind="unlearn", overwrite=False, resume=False, main=False)
    assert folder.open() == tmp_path / "run.partial"
    folder.abandon(keep=False)
    folder.commit()
    assert list(tmp_path.iterdir()) == []


def test_run_folder_lifecycle_and_lock(tmp_path):
    folder = RunFolder(tmp_path / "run", kind="unlearn", overwrite=False, resume=False, main=True)
    partial = folder.open()
    assert (partial / MARKER).is_file() and (tmp_path / ".run.lock").is_file()
    with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
        RunFolder(tmp_path / "run", kind="unlearn", overwrite=False, resume=False, main=True).open()
    (partial / "run.json").write_text("{}")
    folder.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(ObliviateError, match="already exists"):
        RunFolder(tmp_path / "run", kind="unlearn", overwrite=False, resume=False, main=True).open()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_lock_removes_the_folders_it_created_when_released_after_a_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputLock(tmp_path / "a" / "b" / "results.json"):
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with OutputLock(tmp_path / "a" / "b" / "results.json"):
        pass
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


# -- checkpoints ----------------------------------------------------------------------------------------------
def _checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64, 64)}, str(folder / "model.safetensors"))
    torch.save({"state": torch.zeros(16)}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_checkpoint_checks_name_what_a_kill_left(tmp_path):
    good = _checkpoint(tmp_path / "checkpoint-2", 2)
    assert checkpoint_problem(good) is None
    cut = _checkpoint(tmp_path / "checkpoint-4", 4)
    (cut / "trainer_state.json").unlink()
    assert "trainer_state.json is missing" in checkpoint_problem(cut)
    (cut / "trainer_state.json").write_text('{"global_st')
    assert "truncated or unreadable" in checkpoint_problem(cut)
    (cut / "trainer_state.json").write_text('{"global_step": 4}')
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert checkpoint_problem(cut) == "model.safetensors is truncated"
    save_file({"w": torch.ones(64, 64)}, str(weights))
    optimizer = cut / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:40])
    assert not zipfile.is_zipfile(optimizer) and checkpoint_problem(cut) == "optimizer.pt is truncated"
    assert last_complete_checkpoint(tmp_path, remove_incomplete=True) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
