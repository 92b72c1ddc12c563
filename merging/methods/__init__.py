"""Built-in merge methods: every module here registers its methods when imported (one file
per method family), so adding a method is adding a file."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
