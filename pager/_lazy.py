"""Package attributes imported on first use (PEP 562 module ``__getattr__``), so that importing a package (e.g. for
a command line's ``--help``) does not load torch through it."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``name`` is taken from the module ``table[name]``, imported on first
    use; any other name raises ``AttributeError`` as for a plain module."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
