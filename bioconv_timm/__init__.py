"""bioconv-timm: the locally connected networks of "Towards Biologically Plausible Convolutional
Networks" (Pogodin et al., NeurIPS 2021) as timm models.

``import bioconv_timm`` registers the models with timm, e.g.
``timm.create_model('lc_resnet18_half_ws10')``.

The import itself is light (no torch, no timm: the ``bioconv`` command starts at once): the public names below
load on first use, and the models register with timm as soon as timm is imported, before or after this package.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any, Optional

from ._lazy import lazy_exports

__version__ = '0.1.0'

_EXPORTS = {
    'LocallyConnected2d': '.layers', 'locally_connected2d': '.layers', 'conv_output_size': '.layers',
    'share_weights_': '.sleep', 'share_layer_': '.sleep', 'grid_means': '.sleep', 'weight_snr': '.sleep',
    'lc_layers': '.sleep', 'hebbian_share_weights_': '.sleep', 'hebbian_share_layer_': '.sleep',
    'HebbianSleepConfig': '.sleep', 'BioResNet': '.models', 'MODEL_NAMES': '.models', 'PUBLISHED_TAGS': '.models',
    'to_locally_connected': '.convert', 'ModelArgError': '.checks', 'allow_params': '.checks',
    'BioconvError': '.errors',
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def _register_models() -> None:
    from .models import register_models
    register_models()


class _RegisterAfterTimm(importlib.abc.Loader):
    """timm's own loader, then our registration (timm 1.0 has no plugin entry points to find our models by)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Optional[Any]:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # timm sees its own loader
        self.loader.exec_module(module)
        _register_models()


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Wraps the loader of the first ``import timm`` so that our models register as soon as timm is loaded."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if fullname != 'timm':
            return None
        sys.meta_path.remove(self)  # once: the other finders locate timm itself
        spec = importlib.util.find_spec('timm')
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterTimm(spec.loader)
        return spec


# A timm-only user (`import bioconv_timm; timm.create_model('lc_resnet20')`) must find the models registered.
if 'timm' in sys.modules:
    _register_models()
elif not any(isinstance(finder, _TimmImportHook) for finder in sys.meta_path):
    sys.meta_path.insert(0, _TimmImportHook())
