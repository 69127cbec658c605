"""Writing files and folders so that a kill at any moment leaves either the old version or the new one.

Every file obliviate writes for a user (``results.json``, ``run.json``, ``config.yaml``, ``continual.json``,
reports) goes through :func:`write_text_atomic`: the text is written to a hidden temporary file beside the
target (``.NAME.XXXXXXXX.tmp``, same folder so the final rename stays on one file system), flushed to disk, and
renamed over the target. The temporary file is created like any other file (mode ``0666`` less the umask), so
a result is as readable as the files around it. A kill before the rename leaves the old file and a temporary
file that :func:`remove_stale_temps` deletes on the next write of the same target, which callers do while
holding the target's lock (:class:`obliviate.outputs.OutputLock`).

Whole folders (a saved model, a synthetic benchmark, a finished run) are built under a hidden sibling name
(:func:`new_temp_dir`) and moved into place with :func:`replace_dir`. The JSON records are read back with
:func:`read_json_object`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.errors import DataError, ObliviateError

__all__ = ["new_temp_dir", "read_json_object", "remove_stale_temps", "replace_dir", "write_json_atomic",
           "write_text_atomic", "write_texts_atomic"]

TEMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage(target: Path, text: str) -> Path:
    """Write ``text`` to a new hidden temporary file beside ``target``, flushed to disk; return its path."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            # O_EXCL: never reuse a name; 0o666 less the umask, as open(path, "w") would create the file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"no free temporary name beside {target}")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_texts_atomic(items: Sequence[tuple[str | Path, str]], *, what: str = "the file") -> list[Path]:
    """Write several files, each atomically, renaming them into place one right after the other.

    Every text is written and flushed to its temporary file before the first rename, so the files change
    together: a failure while writing leaves all the old files; only a kill between two renames (a few
    microseconds) can leave some new and some old. The folders are created if missing. ``what`` names the
    files in error messages ("cannot write the report: …").

    Raises:
        ObliviateError: a target is a folder, or the files cannot be written (the message gives the reason).
    """
    targets = [Path(path) for path, _ in items]
    for target in targets:
        if target.is_dir():
            raise ObliviateError(f"{target}: is a folder; give a file name for {what}")
    staged: list[Path] = []
    current = targets[0] if targets else None
    try:
        for target, (_, text) in zip(targets, items):
            current = target
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.append(_stage(target, text))
        for target, tmp in zip(targets, staged):
            current = target
            os.replace(tmp, target)
    except OSError as err:
        raise ObliviateError(f"{current}: cannot write {what}: {err.strerror or err}") from err
    finally:
        # After a successful rename the temporary name no longer exists; anything left is removed.
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    for folder in {t.parent for t in targets}:
        _fsync_dir(folder)
    return targets


def write_text_atomic(path: str | Path, text: str, *, what: str = "the file") -> Path:
    """Replace ``path`` with ``text`` atomically (see the module docstring); create its folder if missing."""
    return write_texts_atomic([(path, text)], what=what)[0]


def write_json_atomic(path: str | Path, data: Any, *, what: str = "the file") -> Path:
    """:func:`write_text_atomic` of ``data`` as indented JSON (UTF-8, non-ASCII kept), ending with a newline."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", what=what)


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Delete what an interrupted write of ``target`` left beside it; return what was removed.

    That is temporary files ``.NAME.XXXXXXXX.tmp`` (and ``.NAME.XXXXXXXX``, the names earlier versions used)
    and temporary or backup folders ``.NAME.tmp-…`` / ``.NAME.old-…`` of :func:`new_temp_dir`. Call it only
    while holding ``target``'s lock, so that no live writer's temporary file is taken.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    name = re.escape(target.name)
    file_pattern = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}(\.tmp)?")
    dir_pattern = re.compile(rf"\.{name}\.(tmp|old)-[0-9a-f]+")
    removed = []
    for entry in target.parent.iterdir():
        if entry.is_file() and not entry.is_symlink() and file_pattern.fullmatch(entry.name):
            entry.unlink(missing_ok=True)
            removed.append(entry)
        elif entry.is_dir() and not entry.is_symlink() and dir_pattern.fullmatch(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def new_temp_dir(target: str | Path, kind: str = "tmp") -> Path:
    """Create a hidden folder ``.NAME.<kind>-<random>`` beside ``target`` and return it.

    Made with ``os.mkdir``, not ``tempfile.mkdtemp``: the folder is renamed into place later and should have
    the user's usual permissions, not mkdtemp's 0700.
    """
    target = Path(target)
    for _ in range(100):
        candidate = target.parent / f".{target.name}.{kind}-{secrets.token_hex(6)}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise ObliviateError(f"could not create a working folder next to {target}")  # pragma: no cover


def replace_dir(staging: str | Path, target: str | Path) -> None:
    """Move the finished folder ``staging`` to ``target``, replacing an existing ``target``.

    The old ``target`` is first renamed aside (``.NAME.old-…``) and deleted only once the new one is in place;
    if the second rename fails the old one is put back. A kill between the two renames leaves the old folder
    intact under its hidden name. ``staging`` must be on the same file system (a sibling of ``target``).
    """
    staging, target = Path(staging), Path(target)
    backup = None
    if target.exists() or target.is_symlink():
        backup = target.parent / f".{target.name}.old-{secrets.token_hex(6)}"
        os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        if backup is not None:
            os.rename(backup, target)
        raise
    _fsync_dir(target.parent)
    if backup is not None:
        if backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            backup.unlink(missing_ok=True)


def read_json_object(path: str | Path, *, strict: bool = False, missing: str = "no such file") -> dict | None:
    """The JSON object in ``path``.

    By default None when the file is missing, unreadable, not JSON or not an object (a record that may not be
    there yet). ``strict``: a DataError naming the file (and the line of a JSON error) instead, with
    ``missing`` as the message when there is no file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if strict:
            raise DataError(missing, path=str(path)) from None
        return None
    except json.JSONDecodeError as exc:
        if strict:
            raise DataError(f"not valid JSON ({exc.msg})", path=str(path), line=exc.lineno) from None
        return None
    except UnicodeDecodeError:
        if strict:
            raise DataError("not UTF-8 text", path=str(path)) from None
        return None
    except OSError as exc:
        if strict:
            raise DataError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
        return None
    if not isinstance(data, dict):
        if strict:
            raise DataError("expected a JSON object", path=str(path))
        return None
    return data
