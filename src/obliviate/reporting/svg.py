"""Small inline-SVG plots for the HTML report: a linear scale, ticks, grid lines with labels, points with
tooltips, bars, error bars, polylines and a legend, shared by the MU/FE scatter, the bar charts and the continual
line plot (docs/reports.md).

Everything is built as :class:`~obliviate.reporting.render.Html` through :func:`element`, which escapes every
attribute value and every text child, so a label holding markup is shown as text. Coordinates are formatted by
the caller (one decimal, ``f"{x:.1f}"``, as the charts have always written them); integers print as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from obliviate.reporting.render import Html

INK = "#1f2328"
MUTED = "#59636e"
FAINT = "#8c959f"
GRID = "#eaeef2"
FRAME_FILL, FRAME_STROKE = "#fbfcfd", "#d8dee4"


def element(tag: str, attrs: Mapping[str, Any] | None = None, *children: Any) -> Html:
    """``<tag a="v" ...>children</tag>``, or ``<tag a="v" .../>`` without children.

    Attributes keep their order; one whose value is None is left out. Values and text children are escaped,
    children that are already :class:`Html` are inserted as they are.
    """
    attributes = Html("").join(Html(' {}="{}"').format(name, value) for name, value in (attrs or {}).items()
                               if value is not None)
    if not children:
        return Html("<{}{}/>").format(tag, attributes)
    return Html("<{0}{1}>{2}</{0}>").format(tag, attributes, Html("").join(children))


def f1(value: float) -> str:
    """A coordinate with one decimal, the precision every chart writes."""
    return f"{value:.1f}"


@dataclass(frozen=True)
class LinearScale:
    """Maps the domain ``[lo, hi]`` linearly onto ``[start, end]`` (``end < start`` for a y axis pointing up)."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def ticks(lo: float, hi: float, step: float) -> list[float]:
    """The multiples of ``step`` within ``[lo, hi]`` (1e-9 of slack at both ends), rounded to 6 decimals."""
    start = round(lo / step) * step
    out, t = [], start
    while t <= hi + 1e-9:
        if t >= lo - 1e-9:
            out.append(round(t, 6))
        t += step
    return out


def svg(cls: str, width: int, height: int, label: str, children: Iterable[Html]) -> Html:
    """The ``<svg>`` root: scales with its container (``width="100%"``), an image with an accessible name."""
    return element("svg", {"class": cls, "viewBox": f"0 0 {width} {height}", "width": "100%", "role": "img",
                           "aria-label": label}, *children)


def frame(left: float, top: float, width: float, height: float) -> Html:
    """The plot area's background and border."""
    return element("rect", {"x": left, "y": top, "width": width, "height": height, "fill": FRAME_FILL,
                            "stroke": FRAME_STROKE})


def text(x: Any, y: Any, content: Any, *, size: float = 12, fill: str = INK, anchor: str | None = None,
         **extra: Any) -> Html:
    """A ``<text>``; ``extra`` attributes follow (underscores in their names become dashes)."""
    attrs = {"x": x, "y": y, "font-size": size, "fill": fill, "text-anchor": anchor}
    attrs.update({k.replace("_", "-"): v for k, v in extra.items()})
    return element("text", attrs, content)


def x_grid(scale: LinearScale, values: Sequence[float], *, y0: Any, y1: Any, label_y: Any,
           label: Callable[[float], str], size: float = 12, fill: str = MUTED,
           stroke: Callable[[float], str] = lambda _: GRID,
           stroke_width: Callable[[float], Any] = lambda _: None) -> list[Html]:
    """A vertical grid line from ``y0`` to ``y1`` at every tick, each with its label centred below at ``label_y``."""
    out = []
    for tick in values:
        x = f1(scale(tick))
        out.append(element("line", {"x1": x, "y1": y0, "x2": x, "y2": y1, "stroke": stroke(tick),
                                    "stroke-width": stroke_width(tick)}))
        out.append(text(x, label_y, label(tick), size=size, fill=fill, anchor="middle"))
    return out


def y_grid(scale: LinearScale, values: Sequence[float], *, x0: Any, x1: Any, label: Callable[[float], str],
           size: float = 12, fill: str = MUTED) -> list[Html]:
    """A horizontal grid line from ``x0`` to ``x1`` at every tick, each labelled at its left, right-aligned."""
    out = []
    for tick in values:
        y = scale(tick)
        out.append(element("line", {"x1": x0, "y1": f1(y), "x2": x1, "y2": f1(y), "stroke": GRID}))
        out.append(text(x0 - 8, f1(y + 4), label(tick), size=size, fill=fill, anchor="end"))
    return out


def axis_titles(x_title: str, y_title: str, *, center_x: float, x_title_y: Any, y_title_x: Any,
                center_y: float) -> list[Html]:
    """The x axis title centred under the plot and the y axis title rotated along the left edge."""
    return [text(f1(center_x), x_title_y, x_title, size=13, anchor="middle"),
            element("text", {"transform": f"translate({y_title_x} {f1(center_y)}) rotate(-90)", "font-size": 13,
                             "fill": INK, "text-anchor": "middle"}, y_title)]


def point(cx: float, cy: float, *, r: float, fill: str, tooltip: str, cls: str | None = None,
          data: Mapping[str, Any] | None = None, stroke: str | None = None, stroke_width: float | None = None) -> Html:
    """A ``<circle>`` with a ``<title>`` tooltip; ``data`` becomes ``data-*`` attributes, in order."""
    attrs: dict[str, Any] = {"class": cls}
    attrs.update({f"data-{k}": v for k, v in (data or {}).items()})
    attrs.update({"cx": f1(cx), "cy": f1(cy), "r": r, "fill": fill, "stroke": stroke, "stroke-width": stroke_width})
    return element("circle", attrs, element("title", None, tooltip))


def error_bar(a: float, b: float, at: float, *, horizontal: bool, color: str, width: float, cap: float = 4,
              tooltip: str | None = None) -> Html:
    """An interval from ``a`` to ``b`` (screen coordinates) across ``at``, with a cap at each end."""
    span = f1(2 * cap).removesuffix(".0")
    if horizontal:
        d = f"M{f1(a)} {f1(at)}H{f1(b)}M{f1(a)} {f1(at - cap)}v{span}M{f1(b)} {f1(at - cap)}v{span}"
    else:
        d = f"M{f1(at)} {f1(a)}V{f1(b)}M{f1(at - cap)} {f1(a)}h{span}M{f1(at - cap)} {f1(b)}h{span}"
    attrs = {"class": "errorbar", "d": d, "stroke": color, "stroke-width": width, "fill": "none"}
    if tooltip is None:
        return element("path", attrs)
    return element("path", attrs, element("title", None, tooltip))


def bar(x: Any, y: float, length: float, height: float, *, color: str, hollow: bool = False) -> Html:
    """A horizontal bar of ``length`` px from ``x``; hollow (outlined) for a value to read with care."""
    return element("rect", {"x": x, "y": f1(y), "width": f1(length), "height": height, "rx": 2,
                            "fill": "#ffffff" if hollow else color, "stroke": color,
                            "stroke-width": 1.5 if hollow else 0})


def polyline(points: Sequence[tuple[float, float]], *, color: str, cls: str = "line",
             data: Mapping[str, Any] | None = None) -> Html:
    """A line through ``points`` (screen coordinates)."""
    attrs: dict[str, Any] = {"class": cls}
    attrs.update({f"data-{k}": v for k, v in (data or {}).items()})
    attrs.update({"points": " ".join(f"{f1(x)},{f1(y)}" for x, y in points), "fill": "none", "stroke": color,
                  "stroke-width": 2})
    return element("polyline", attrs)


def legend(entries: Sequence[tuple[str, str]], *, x: float, y: float, row: float = 20) -> list[Html]:
    """One row per (colour, text): a short line in the colour, then the text; the first row's baseline at ``y``."""
    out = []
    for i, (color, label) in enumerate(entries):
        ly = y + i * row
        out.append(element("line", {"x1": x, "y1": ly - 4, "x2": x + 20, "y2": ly - 4, "stroke": color,
                                    "stroke-width": 2}))
        out.append(text(x + 26, ly, label))
    return out
