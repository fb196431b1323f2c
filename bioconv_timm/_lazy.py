"""Public names of a package that load on first use (PEP 562), so that importing the package imports no torch.

Why: ``bioconv --help`` and a bad flag must answer at once, but importing torch takes ~5 s and timm ~10 s; the
command line imports the package (``bioconv_timm.cli`` is inside it), so the package itself must stay light.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, Callable, List, Mapping, Tuple

__all__ = ['lazy_exports', 'lazy_function']


def lazy_exports(package: str,
                 exports: Mapping[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each public name to the module that defines it,
    relative as in a ``from`` import (``'.layers'``, ``'..sharding'``), imported when the name is first read. A
    submodule (``pkg.layers``) is also an attribute before anything imported it, as when the package imported it
    eagerly."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name], package), name)
        if not name.startswith('_') and importlib.util.find_spec(f'{package}.{name}') is not None:
            return importlib.import_module(f'{package}.{name}')
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


def lazy_function(module: str, name: str) -> Callable[..., Any]:
    """``module.name`` (absolute module name), imported when first called: a command's work (torch, timm) loads
    only when the command runs, and the name stays an attribute of the caller's module (tests patch it there)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f'``{module}.{name}``, imported when called.'
    return call
