"""Scenarios built from single unlearning runs (docs/continual.md, docs/real_world.md).

``continual``: the tasks of a split are forgotten one after another, each step starting from the previous
step's model; see :mod:`obliviate.scenarios.continual` and docs/continual.md.
"""

from obliviate.config import ContinualConfig, ContinualSettings, load_continual_config
from obliviate.scenarios.continual import ContinualResult, plan_continual, run_continual

__all__ = ["ContinualConfig", "ContinualResult", "ContinualSettings", "load_continual_config", "plan_continual",
           "run_continual"]
