"""The HTML report's template engine and SVG plots: hostile text from records comes out as text, the scale and
ticks on hand-worked numbers, a missing template variable fails, and the templates ship with the package."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest

import obliviate
from obliviate.reporting import html_report, load_results
from obliviate.reporting import svg
from obliviate.reporting.render import ENV, Html, render

from test_report import small_record, write_json
from test_report_uncertainty import with_uncertainty

# A script element, both quotes (to leave an attribute), an ampersand and an SVG close followed by an image.
HOSTILE = "<script>alert('x')</script> R&D \"q\" 'a' </svg><img src=x onerror=alert(1)>"


class Elements(HTMLParser):
    """Every element and attribute of a page, and its text and attribute values (entities decoded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def elements(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def hostile_records_plain(tmp_path: Path) -> list[dict[str, Any]]:
    """:func:`hostile_records` with plain text in place of the hostile string."""
    return hostile_records(tmp_path, "plain text")


def hostile_records(tmp_path: Path, hostile: str = HOSTILE) -> list[dict[str, Any]]:
    """A record per place text comes from: a run name (the folder), a method, a generation, a reason, a
    question, a benchmark, and three steps of a continual run whose task and labels are hostile."""
    named = small_record("")
    named["run"] = {}
    by_folder = load_results(write_json(tmp_path / hostile.replace("/", "|") / "results.json", named))
    with_privacy = with_uncertainty(hostile, mu=0.5, mu_ci=[0.4, 0.6])
    with_privacy["sets"]["forget"]["items"][0]["generation"] = hostile
    with_privacy["sets"]["forget"]["items"][0]["question"] = "Who wrote it?" + hostile
    with_privacy["aggregates"]["forget_quality"]["reason"] = hostile
    with_privacy["sets"]["retain"]["metrics"]["entailment"]["reason"] = hostile
    with_privacy["model"] = {"spec": hostile}
    other = small_record("GD", generation=hostile)
    other["sets"]["forget"]["items"][0]["question"] = "Who wrote it?" + hostile
    steps = []
    for k in (1, 2, 3):
        step = small_record(f"{hostile} step {k}", mu=0.4 + k / 10, fe=0.2 + k / 10)
        step["run"]["continual"] = {"step": k, "tasks_forgotten": [f"{hostile}{i}" for i in range(k)],
                                    "run_dir": "runs/continual"}
        step["benchmark"] = {"name": "TOFU", "forget_split": "forget01", "task": hostile}
        steps.append(step)
    return [by_folder, with_privacy, other, *steps]


def test_hostile_text_from_records_comes_out_as_text(tmp_path: Path) -> None:
    page = html_report(hostile_records(tmp_path), title=HOSTILE)
    found = elements(page)
    assert "script" not in found.tags and "img" not in found.tags
    assert not {name for name, _ in found.attrs} & {"onerror", "src", "q", "a"}
    # The same records with plain text: the hostile page has no element or attribute name that page lacks.
    plain = elements(html_report(hostile_records_plain(tmp_path / "plain"), title="T"))
    assert set(found.tags) == set(plain.tags)
    assert {name for name, _ in found.attrs} == {name for name, _ in plain.attrs}
    # Every section that shows record text was drawn, and each svg closes where it should.
    for section in ("results", "tradeoff", "privacy", "uncertainty", "continual", "metrics", "generations", "notes"):
        assert f'<section id="{section}">' in page
    assert page.count("<svg") == page.count("</svg>") == found.tags.count("svg")
    # The text is shown as written: in titles, table cells, generations, tooltips and attribute values.
    assert found.text.count(HOSTILE) >= 5
    assert f"{HOSTILE} step 2" in found.text
    assert ("data-model", f"{HOSTILE} step 1") in found.attrs
    assert ("title", HOSTILE) in found.attrs  # the unavailable forget quality's reason
    assert any(HOSTILE in text for text in found.text if text.startswith("Benchmark"))
    assert "<script>" not in page and "</svg><img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; R&amp;D &quot;q&quot;" in page


def test_scale_maps_the_domain_linearly_onto_pixels() -> None:
    x = svg.LinearScale(0.0, 1.0, 0.0, 200.0)
    assert [x(v) for v in (0.0, 0.25, 0.5, 1.0)] == [0.0, 50.0, 100.0, 200.0]
    y = svg.LinearScale(0.0, 1.0, 200.0, 0.0)  # a y axis: 0 at the bottom
    assert [y(v) for v in (0.0, 0.25, 1.0)] == [200.0, 150.0, 0.0]
    plot = svg.LinearScale(0.0, 1.0, 64.0, 636.0)  # the scatter's x axis: 572 px from x = 64
    assert plot(0.5) == 350.0
    centred = svg.LinearScale(-100.0, 100.0, 130.0, 490.0)  # the leakage chart: 0 in the middle
    assert (centred(-100.0), centred(0.0), centred(50.0)) == (130.0, 310.0, 400.0)


def test_ticks_are_the_multiples_of_the_step_in_the_domain() -> None:
    assert svg.ticks(0.0, 1.0, 0.2) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.ticks(-0.3, 1.2, 0.5) == [0.0, 0.5, 1.0]
    assert svg.ticks(0.0, 3.0, 0.5) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert svg.ticks(0.1, 0.3, 0.2) == [0.2]


def test_grid_lines_and_labels_sit_on_the_scale() -> None:
    scale = svg.LinearScale(0.0, 1.0, 0.0, 200.0)
    marks = Html("").join(svg.x_grid(scale, svg.ticks(0.0, 1.0, 0.5), y0=0, y1=100, label_y=118,
                                     label=lambda t: f"{t:.1f}"))
    assert marks == ('<line x1="0.0" y1="0" x2="0.0" y2="100" stroke="#eaeef2"/>'
                     '<text x="0.0" y="118" font-size="12" fill="#59636e" text-anchor="middle">0.0</text>'
                     '<line x1="100.0" y1="0" x2="100.0" y2="100" stroke="#eaeef2"/>'
                     '<text x="100.0" y="118" font-size="12" fill="#59636e" text-anchor="middle">0.5</text>'
                     '<line x1="200.0" y1="0" x2="200.0" y2="100" stroke="#eaeef2"/>'
                     '<text x="200.0" y="118" font-size="12" fill="#59636e" text-anchor="middle">1.0</text>')
    rows = Html("").join(svg.y_grid(svg.LinearScale(0.0, 1.0, 200.0, 0.0), [0.25], x0=40, x1=240,
                                    label=lambda t: f"{t:.2f}"))
    assert rows == ('<line x1="40" y1="150.0" x2="240" y2="150.0" stroke="#eaeef2"/>'
                    '<text x="32" y="154.0" font-size="12" fill="#59636e" text-anchor="end">0.25</text>')


def test_error_bars_points_and_lines() -> None:
    assert svg.error_bar(10, 50, 20, horizontal=True, color="#000", width=1.2) == (
        '<path class="errorbar" d="M10.0 20.0H50.0M10.0 16.0v8M50.0 16.0v8" stroke="#000" stroke-width="1.2" '
        'fill="none"/>')
    assert svg.error_bar(80, 40, 30, horizontal=False, color="#000", width=2, cap=5, tooltip="a < b") == (
        '<path class="errorbar" d="M30.0 80.0V40.0M25.0 80.0h10M25.0 40.0h10" stroke="#000" stroke-width="2" '
        'fill="none"><title>a &lt; b</title></path>')
    assert svg.point(1, 2.25, r=4.5, fill="#fff", tooltip="MU & FE", cls="point", data={"series": "MU"}) == (
        '<circle class="point" data-series="MU" cx="1.0" cy="2.2" r="4.5" fill="#fff"><title>MU &amp; FE</title>'
        "</circle>")
    assert svg.polyline([(0, 0), (10, 5.55)], color="#f00", data={"series": "FE"}) == (
        '<polyline class="line" data-series="FE" points="0.0,0.0 10.0,5.5" fill="none" stroke="#f00" '
        'stroke-width="2"/>')


def test_elements_escape_attribute_values_and_text() -> None:
    made = svg.element("text", {"x": '1" onload="alert(1)', "y": None}, "<b>&", svg.element("title", None, "'"))
    assert made == '<text x="1&quot; onload=&quot;alert(1)">&lt;b&gt;&amp;<title>&#x27;</title></text>'
    assert elements(made).attrs == [("x", '1" onload="alert(1)')]
    assert Html("<p>{}</p>").format("<i>") == "<p>&lt;i&gt;</p>"


def test_templates_escape_and_a_missing_variable_raises() -> None:
    figure = render("bar_figure.html", title="<T>", direction="↑ higher is better", svg=Html("<svg></svg>"))
    assert figure == ('<figure class="bar"><figcaption>&lt;T&gt; <span class="dir">↑ higher is better</span>'
                      "</figcaption><svg></svg></figure>")
    with pytest.raises(jinja2.UndefinedError, match="svg"):
        render("bar_figure.html", title="T", direction="↑")
    assert ENV.autoescape("report.html")


def test_templates_are_found_from_another_working_directory(tmp_path: Path) -> None:
    src = Path(obliviate.__file__).resolve().parents[1]
    record = write_json(tmp_path / "run" / "results.json", small_record("GA"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import sys; from obliviate.reporting import html_report, load_results; "
            "sys.stdout.write(html_report([load_results(sys.argv[1])], title='T'))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", code, str(record.parent)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == html_report([load_results(record.parent)], title="T")
    assert done.stdout.count("<section id=") == 5 and "<style>" in done.stdout
