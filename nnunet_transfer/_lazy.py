"""Lazy flat APIs: a package's public names, imported from their modules on first use.

Example:
    >>> __getattr__, __dir__, __all__ = lazy_api("nnunet_transfer.evaluation", {"dice": ".metrics"})
    >>> __getattr__("dice").__name__
    'dice'
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple


def lazy_api(package: str, api: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]], List[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for ``package`` exporting ``api`` (name -> module).

    A module starting with "." is relative to ``package``.
    """
    def __getattr__(name: str):
        module = api.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> List[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(api))

    return __getattr__, __dir__, list(api)
