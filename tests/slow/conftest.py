"""What the slow tests share."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def only_when_selected(request: pytest.FixtureRequest) -> None:
    """Keep a plain ``pytest`` run fast: a module that uses this runs only when asked for with ``-m slow``."""
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("needs the real default model; run with -m slow")
