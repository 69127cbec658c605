"""Write reports to disk: load every run, render, and replace the output files atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from obliviate.errors import ObliviateError
from obliviate.reporting.html import DEFAULT_TITLE, html_report
from obliviate.reporting.results import load_results
from obliviate.reporting.table import markdown_table


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place.

    A reader never sees a half-written report, and a failed write leaves the previous file (if any)
    untouched and no temporary file behind. The folder is created if missing.
    """
    target = Path(path)
    if target.is_dir():
        raise ObliviateError(f"{target}: is a folder; give a file name for the report")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same folder as the target: os.replace is only atomic within one file system.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise ObliviateError(f"{target}: cannot write the report: {err.strerror or err}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file as 0600; a report is meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ObliviateError(f"{target}: cannot write the report: {err.strerror or err}") from err
    except BaseException:
        # Interrupted (Ctrl-C) or a bug: still leave no temporary file behind, then let it propagate.
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_report(run_paths: Iterable[str | Path], out_html: str | Path, *, markdown_out: str | Path | None = None,
                 title: str = DEFAULT_TITLE) -> Path:
    """Load each run's ``results.json``, write the HTML report to ``out_html`` and return its path.

    ``run_paths`` are results files or run folders (see :func:`~obliviate.reporting.load_results`), in the
    order the report lists them. With ``markdown_out`` the Markdown table is written there too. Every
    record is loaded and rendered before anything is written, so a bad input leaves no partial output.
    """
    paths = list(run_paths)
    if not paths:
        raise ObliviateError("no results to report: give at least one results.json or run folder")
    results = [load_results(p) for p in paths]
    page = html_report(results, title=title)
    table = markdown_table(results) if markdown_out is not None else None
    out = write_text_atomic(out_html, page)
    if markdown_out is not None and table is not None:
        write_text_atomic(markdown_out, table)
    return out
