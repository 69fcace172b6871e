"""Collectors, one module each. Importing this package registers all of them.

Adding a collector is one new module here that calls ``base.register``: it is found by
``pkgutil`` and imported, so no list elsewhere needs editing.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "procfs"):
        importlib.import_module(f"{__name__}.{_module.name}")
