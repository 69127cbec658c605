"""Where obliviate writes, and how it makes sure it never writes over anyone's work (docs/reliability.md).

* :func:`resolve_output_path` makes an output path absolute and normalised once, when the config is read, so
  ``newdir/..`` is seen for what it is (the current folder) before anything exists.
* :func:`output_path_problems` refuses output folders whose replacement would destroy something: the current
  folder or one above it, the home folder, ``/``, a folder holding the run's own inputs, a file, and places
  where nothing can be created.
* :class:`OutputLock` takes an exclusive OS lock on a hidden ``.NAME.lock`` file beside an output, so a second
  process writing the same output stops at once, naming the first one's pid. The kernel releases the lock
  when its process ends, also when it is killed.
* :class:`RunFolder` is a run's output folder lifecycle: it is written as ``<output_dir>.partial`` (marked as
  obliviate's with :data:`MARKER`) and renamed to ``<output_dir>`` when complete. An existing folder is
  replaced (``overwrite=true``) only when obliviate wrote it.
* :func:`is_main_process`: in a multi-process run (torchrun, accelerate) only the global main process touches
  output folders.
* :func:`environment`: the versions and device a record was made with.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from filelock import FileLock, Timeout

from obliviate import __version__
from obliviate.allocator import current_allocator
from obliviate.errors import ObliviateError
from obliviate.files import replace_dir, write_json_atomic

__all__ = ["MARKER", "OutputBusyError", "OutputLock", "RunFolder", "check_output_file", "creation_problem", "environment",
           "is_main_process", "output_path_problems", "resolve_output_path", "written_by_obliviate"]

MARKER = ".obliviate"
"""File in every folder obliviate writes a run into; its presence marks the folder as safe to replace."""

# Files whose presence also marks a folder as obliviate's: what run folders and evaluations always hold.
_OWN_FILES = (MARKER, "run.json", "results.json", "continual.json")


# -- processes ------------------------------------------------------------------------------------------------
def is_main_process() -> bool:
    """True in the global main process (rank 0) of a distributed run, and in any single-process run.

    Uses torch.distributed's rank once the process group is up, else the launcher's ``RANK`` variable
    (torchrun and accelerate set it before the script starts).
    """
    try:
        # Deferred: torch takes seconds to import; this module serves commands that never need it.
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return os.environ.get("RANK", "0").strip() in ("", "0")


# -- paths ----------------------------------------------------------------------------------------------------
def resolve_output_path(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute against the current folder, with ``~`` expanded and ``.``/``..`` folded away.

    The folding is textual (``os.path.abspath``), as the user reads the path; symbolic links are looked at
    by :func:`output_path_problems`.
    """
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def creation_problem(folder: Path) -> str | None:
    """Why nothing could be created at ``folder`` (it is a file, lies under a file, or its nearest existing
    folder is read-only), or None when it can be. Probes by creating and removing a hidden folder: permission
    bits say nothing for root or on read-only mounts."""
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            return "none of its folders exists"  # pragma: no cover - '/' always exists
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file" if existing == folder else f"it lies under {existing}, which is a file"
    try:
        probe = Path(os.path.join(existing, f".obliviate-probe-{os.getpid()}-{os.urandom(4).hex()}"))
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        return f"nothing can be created in {existing} ({err.strerror or err})"
    return None


def output_path_problems(key: str, path: str, inputs: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Why ``path`` (already resolved) must not be an output folder; an empty list when it may be.

    ``inputs`` are ``(name, path)`` pairs of what the run reads (config file, data, models); an output folder
    holding one of them would be deleted with it on ``overwrite``. Refused: the current folder or one above
    it, the home folder or one above it, the file system root, a folder holding an input, a path that is a file
    or lies under one, and a place where no folder can be created.
    """
    out = Path(path)
    real = _real(out)
    cwd, home = _real(os.getcwd()), _real(Path.home())
    why = None
    if real == Path(real.anchor):
        why = "is the root of the file system"
    elif real == cwd:
        why = "is the current folder"
    elif _is_within(cwd, real):
        why = "is a folder above the current folder"
    elif real == home:
        why = "is your home folder"
    elif _is_within(home, real):
        why = "is a folder above your home folder"
    if why:
        return [f"{key}: {path} {why}; obliviate replaces an output folder as a whole, so give it a folder of "
                f"its own, e.g. runs/NAME"]
    problems = []
    for name, spec in inputs:
        if spec and os.path.exists(os.path.expanduser(spec)) and _is_within(_real(spec), real):
            problems.append(f"{key}: {path} holds {name} ({spec}); the output folder is replaced as a whole, "
                            f"so give it a folder of its own")
    if out.exists() and not out.is_dir():
        problems.append(f"{key}: {path} is a file, not a folder")
    else:
        reason = creation_problem(out.parent)
        if reason:
            problems.append(f"{key}: cannot create {path}: {reason}")
    return problems


def written_by_obliviate(folder: Path) -> bool:
    """Whether ``folder`` is a folder obliviate wrote: it holds the marker, a run.json, results.json or
    continual.json."""
    return folder.is_dir() and not folder.is_symlink() and any((folder / name).is_file() for name in _OWN_FILES)


def _is_empty_dir(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())


def write_marker(folder: Path, kind: str) -> None:
    """Mark ``folder`` as written by obliviate (see :data:`MARKER`)."""
    write_json_atomic(folder / MARKER, {
        "written_by": "obliviate", "version": __version__, "kind": kind, "pid": os.getpid(),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})


# -- locks ----------------------------------------------------------------------------------------------------
class OutputBusyError(ObliviateError):
    """Another process holds the output's lock."""


class OutputLock:
    """An exclusive lock on the output ``target`` (a file or folder): an OS lock on ``.NAME.lock`` beside it.

    Taken without waiting: when another process holds it, :meth:`acquire` raises :class:`OutputBusyError`
    naming that process's pid. The lock file is removed on release; a killed holder's lock is released by
    the kernel, and its stale file is reused by the next process. Folders above ``target`` that the lock had to
    create are removed again on release when they are still empty (see :meth:`release`).
    """

    def __init__(self, target: str | Path, *, what: str = "output"):
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.lock"
        self.what = what
        self._lock = None
        self._created: list[Path] = []

    def _write_owner(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def _owner(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return "unknown"
        return text if text.isdigit() else "unknown"

    def acquire(self) -> OutputLock:
        folder = self.target.parent
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ObliviateError(f"{self.target}: cannot create its folder: {err.strerror or err}") from err
        self._created = missing
        for attempt in range(2):
            lock = FileLock(str(self.path), blocking=False, on_acquired=self._write_owner)
            try:
                lock.acquire()
            except Timeout:
                owner = self._owner()
                if owner == "unknown" and attempt == 0:
                    continue  # the holder was just releasing (and removing) the file: try once more
                self._remove_created()
                raise OutputBusyError(
                    f"{self.target} is being written by another obliviate process (pid {owner}); wait for it "
                    f"to finish, or choose another {self.what}") from None
            except OSError as err:
                self._remove_created()
                raise ObliviateError(f"{self.target}: cannot lock it ({self.path}): {err.strerror or err}") from err
            self._lock = lock
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, *, keep_folders: bool = True) -> None:
        """Release the lock and remove its file. Unless ``keep_folders``, folders the lock created for
        ``target`` are removed too when empty (a failed write leaves nothing behind)."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        try:
            # Removed while still held, so no process can take a lock on a file about to disappear;
            # filelock notices a removed file and retries on a new one.
            self.path.unlink(missing_ok=True)
        finally:
            lock.release()
        if not keep_folders:
            self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(keep_folders=exc_type is None)


# -- run folders ----------------------------------------------------------------------------------------------
class RunFolder:
    """A run's output: written in ``<out>.partial`` and renamed to ``<out>`` when complete.

    Only the main process (:func:`is_main_process`) creates, locks, renames or deletes anything; other ranks
    get the same paths and touch nothing.

    * :meth:`open` takes the lock, checks ``<out>`` (it must not exist, or with ``overwrite`` be a folder
      obliviate wrote, or empty) and ``<out>.partial`` (kept with ``resume``; otherwise removed, but only when
      it carries obliviate's marker), then creates and marks the partial folder.
    * :meth:`commit` renames the partial folder to ``<out>``, replacing a previous run only now.
    * :meth:`abandon` removes the partial folder unless it is to be kept (it holds a checkpoint to resume).
    """

    def __init__(self, out: str | Path, *, kind: str, overwrite: bool, resume: bool, main: bool | None = None):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.kind, self.overwrite, self.resume = kind, overwrite, resume
        self.main = is_main_process() if main is None else main
        self.lock = OutputLock(self.out, what="output_dir")

    def _check_existing(self) -> None:
        out = self.out
        if not (out.exists() or out.is_symlink()):
            return
        if not self.overwrite:
            raise ObliviateError(f"output folder {out} already exists; choose another output_dir or set "
                                 f"overwrite=true")
        if not out.is_dir() or out.is_symlink():
            raise ObliviateError(f"output_dir {out} is {'a link' if out.is_symlink() else 'a file'}, not a "
                                 f"folder obliviate wrote; overwrite=true replaces only obliviate's run folders")
        if not (written_by_obliviate(out) or _is_empty_dir(out)):
            raise ObliviateError(
                f"output folder {out} exists and was not written by obliviate (it has no {MARKER}, run.json or "
                f"results.json), so overwrite=true will not replace it; move it away or choose another output_dir")

    def _check_partial(self) -> bool:
        """Whether a partial folder is there to continue; removes a stale one of ours when not resuming."""
        partial = self.partial
        if not (partial.exists() or partial.is_symlink()):
            return False
        ours = partial.is_dir() and not partial.is_symlink() and (partial / MARKER).is_file()
        # Folders from versions before the marker: config.yaml beside checkpoints/ is a run folder too.
        legacy = partial.is_dir() and (partial / "config.yaml").is_file() and (partial / "checkpoints").is_dir()
        if self.resume and (ours or legacy):
            return True
        if ours:
            shutil.rmtree(partial)
            return False
        raise ObliviateError(
            f"{partial} exists and was not written by obliviate (it has no {MARKER} marker), so it is left as it "
            f"is; move it away or choose another output_dir")

    def open(self) -> Path:
        """Lock the output and prepare the partial folder; returns it. Raises ObliviateError with the reason."""
        if not self.main:
            return self.partial
        self.lock.acquire()
        try:
            self._check_existing()
            self._check_partial()
            self.partial.mkdir(parents=True, exist_ok=True)
            if not (self.partial / MARKER).is_file():
                write_marker(self.partial, self.kind)
        except BaseException:
            self.lock.release(keep_folders=False)
            raise
        return self.partial

    def commit(self) -> None:
        """Rename the finished partial folder to the output folder (a previous run there is replaced now)."""
        if not self.main:
            return
        try:
            self._check_existing()  # it may have changed while the run was training
            replace_dir(self.partial, self.out)
        finally:
            self.lock.release()

    def abandon(self, *, keep: bool) -> None:
        """Give up the run: keep the partial folder (``keep``, e.g. it holds checkpoints) or remove it."""
        if not self.main:
            return
        try:
            if not keep:
                shutil.rmtree(self.partial, ignore_errors=True)
        finally:
            self.lock.release(keep_folders=keep)


def check_output_file(path: str | Path, what: str = "--out", writing: str | None = None) -> Path:
    """Refuse an output file that cannot be written, before any work is done: a folder, or a place where
    nothing can be created (under a file, in a read-only folder). Messages start with ``what`` (the option, or
    nothing) and the path, and name the file as ``writing`` when given ("the report")."""
    path = Path(path)
    prefix = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise ObliviateError(f"{prefix}: is a folder; give a file name" + (f" for {writing}" if writing else ""))
    problem = creation_problem(path.parent)
    if problem:
        raise ObliviateError(f"{prefix}: cannot write {writing or 'it'}: {problem}")
    return path


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict:
    """What a record (``results.json``, ``run.json``) says it was made with: versions, device, git commit."""
    # Deferred: torch and transformers take seconds to import, and the report and config commands use this module.
    import torch
    import transformers

    return {"obliviate": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "allocator": current_allocator(), "git_commit": _git_commit()}
