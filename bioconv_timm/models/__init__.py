"""The bioconv models, registered with timm when timm is imported (``bioconv_timm`` arranges it; laid out as timm's
own ``timm.models`` package). Importing this package reads only the registry: the model modules load on first use.

* :mod:`.registry`: what every registered name stands for (:data:`MODEL_SPECS`), the architectures and timm
  families with their card descriptions, pretrained tags, and :func:`model_table` (``bioconv list``), as data;
* :mod:`.bioresnet`: the paper's ResNets (``BioResNet``), their cfgs and entrypoints
  (:mod:`.bioresnet_args`: their argument checks and parameter count);
* :mod:`.timm_cnns`: timm's resnet18, convnext_atto and mobilenetv3_small_050 as conv / LC / LC + sleep models,
  built by timm's ``build_model_with_cfg``;
* :mod:`.pretrained`: where pretrained weights load from, and the LC stem's adaptation to other input channels;
* :mod:`.builder_args`: checks of timm's builder arguments (pool, features) that both families share.
"""
from .registry import (BIORESNET_NAMES, GLOBAL_POOLS, HUB_ORG, MODEL_NAMES, MODEL_SPECS, PAPER, PAPER_ARCHS,
                       PUBLISHED_TAGS, TIMM_ARCHS, TIMM_FAMILIES, TIMM_IMG_SIZE, LayerType, ModelSpec, PaperArch,
                       TimmFamily, default_sleep_every, model_spec, model_table)
from .._lazy import lazy_exports

# The names whose modules import torch and timm, loaded on first use (the registry above is plain data).
_EXPORTS = {
    **dict.fromkeys(('BUILDER_KWARGS', 'FEATURE_CLASSES', 'FEATURE_KWARGS', 'check_feature_args', 'check_known_kwargs',
                     'check_pool'), '.builder_args'),
    'MAX_BLOCKS': '.bioresnet_args',
    'bioresnet_num_params': '.bioresnet_params',
    **dict.fromkeys(('adapt_lc_in_chans', 'adapt_pretrained_state_dict', 'is_unreadable_weights_error',
                     'pretrained_filter', 'pretrained_source', 'unreadable_weights_error'), '.pretrained'),
    **dict.fromkeys(('BasicBlock', 'BioResNet', 'TORCHSCRIPT_ERROR', 'checked_input', 'make_conv'), '.bioresnet'),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


def register_models() -> None:
    """Register every name of :data:`MODEL_SPECS` with timm (``import bioconv_timm`` arranges it for when timm is
    imported); importing the entrypoint modules registers them, once."""
    from . import bioresnet, timm_cnns  # noqa: F401  (14 BioResNet names, 15 converted timm CNNs)


__all__ = ['BioResNet', 'BasicBlock', 'PUBLISHED_TAGS', 'MODEL_NAMES', 'MODEL_SPECS', 'BIORESNET_NAMES', 'TIMM_ARCHS',
           'TIMM_FAMILIES', 'PAPER_ARCHS', 'ModelSpec', 'PaperArch', 'TimmFamily', 'model_spec', 'model_table',
           'default_sleep_every', 'TORCHSCRIPT_ERROR', 'adapt_pretrained_state_dict', 'adapt_lc_in_chans',
           'checked_input', 'pretrained_filter', 'pretrained_source', 'bioresnet_num_params', 'register_models']
