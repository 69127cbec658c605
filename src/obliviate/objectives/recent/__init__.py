"""The field's newer unlearning methods, one module each: its terms (function, parameters, what they read), and the
named method with its paper's defaults and the name open-unlearning gives it (docs/methods.md, "Newer methods").

Every module in this package is imported here, so a new method is one new module (plus its test, its row in
docs/methods.md and its configs, written by scripts/make_configs.py).
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
