"""Reports from ``results.json`` records: the paper-style Markdown table and a self-contained HTML page.

Example::

    from obliviate.reporting import write_report
    write_report(["runs/target", "runs/me_gd"], "reports/forget05.html", markdown_out="reports/forget05.md")

See docs/reports.md for what each part of the report shows, and docs/results.md for the record it reads.
"""

from obliviate.reporting.html import html_report
from obliviate.reporting.results import label_for, load_results, validate_results
from obliviate.reporting.table import markdown_table
from obliviate.reporting.write import write_report

__all__ = ["html_report", "label_for", "load_results", "markdown_table", "validate_results", "write_report"]
