"""Write reports to disk: load every run, render, and replace the output files together."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from obliviate.errors import ObliviateError
from obliviate.files import remove_stale_temps, write_texts_atomic
from obliviate.outputs import OutputLock, check_output_file
from obliviate.reporting.html import DEFAULT_TITLE, html_report
from obliviate.reporting.results import load_results
from obliviate.reporting.table import markdown_table


def check_report_path(path: str | Path) -> Path:
    """Refuse a report path that cannot be written (a folder, under a file, a read-only folder), before work."""
    return check_output_file(path, what="", writing="the report")


def write_report_files(html_path: str | Path, page: str, markdown_path: str | Path | None = None,
                       table: str | None = None) -> Path:
    """Write the HTML page (and the Markdown table) so that both are new or both are old.

    The output is locked against a second process writing the same report, what a killed earlier write left
    is removed, and both texts are flushed to temporary files before either is renamed into place
    (:func:`obliviate.files.write_texts_atomic`).
    """
    html_path = check_report_path(html_path)
    items: list[tuple[Path, str]] = [(html_path, page)]
    if markdown_path is not None and table is not None:
        items.append((check_report_path(markdown_path), table))
    with OutputLock(html_path, what="report file"):
        for path, _ in items:
            remove_stale_temps(path)
        write_texts_atomic(items, what="the report")
    return html_path


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
    check_report_path(out_html)
    if markdown_out is not None:
        check_report_path(markdown_out)
    results = [load_results(p) for p in paths]
    page = html_report(results, title=title)
    table = markdown_table(results) if markdown_out is not None else None
    return write_report_files(out_html, page, markdown_out, table)
