"""The HTML report's template engine: one jinja2 environment over the package's ``templates`` folder.

Autoescaping is on for every ``.html`` template, so each value a template prints (labels, reasons, generations,
questions, run names, titles) is escaped by the engine; a fragment built in Python (the SVG charts) is an
:class:`Html` made with :meth:`Html.format`, which escapes its arguments the same way. A variable a template
names but is not given raises (``StrictUndefined``) instead of printing nothing.
"""

from __future__ import annotations

import html
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


class Html(Markup):
    """Safe markup whose escaping is the standard library's :func:`html.escape` (quotes included).

    Same safety as :class:`markupsafe.Markup`; only the entity spelling differs (``&quot;`` and ``&#x27;``
    rather than ``&#34;`` and ``&#39;``), which keeps the page's text byte for byte what earlier versions wrote.
    ``Html.format``, ``Html.join`` and ``+`` escape every argument that is not already markup.
    """

    __slots__ = ()

    @classmethod
    def escape(cls, s: Any) -> Html:
        if hasattr(s, "__html__"):
            return cls(s.__html__())
        return cls(html.escape(str(s), quote=True))


def _finalize(value: Any) -> Any:
    # Runs on every printed value before autoescaping: escaped here, it is markup, which autoescaping keeps.
    return Html.escape(value)


ENV = Environment(
    loader=PackageLoader("obliviate.reporting", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    finalize=_finalize,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(name: str, **context: Any) -> Html:
    """Render the template ``name`` with ``context``; the result is markup, safe to insert into another page."""
    return Html(ENV.get_template(name).render(**context))
