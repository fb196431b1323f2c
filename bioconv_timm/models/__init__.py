"""The bioconv models, registered with timm on import (as timm's own ``timm.models`` package is laid out):

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
from .builder_args import (BUILDER_KWARGS, FEATURE_CLASSES, FEATURE_KWARGS, check_feature_args, check_known_kwargs,
                           check_pool)
from .bioresnet_args import MAX_BLOCKS
from .bioresnet_params import bioresnet_num_params
from .pretrained import (adapt_lc_in_chans, adapt_pretrained_state_dict, is_unreadable_weights_error,
                         pretrained_filter, pretrained_source, unreadable_weights_error)
from .bioresnet import BasicBlock, BioResNet, TORCHSCRIPT_ERROR, checked_input, make_conv  # registers 14 names
from . import timm_cnns  # registers the 15 names of the converted timm CNNs

__all__ = ['BioResNet', 'BasicBlock', 'PUBLISHED_TAGS', 'MODEL_NAMES', 'MODEL_SPECS', 'BIORESNET_NAMES', 'TIMM_ARCHS',
           'TIMM_FAMILIES', 'PAPER_ARCHS', 'ModelSpec', 'PaperArch', 'TimmFamily', 'model_spec', 'model_table',
           'default_sleep_every', 'TORCHSCRIPT_ERROR', 'adapt_pretrained_state_dict', 'adapt_lc_in_chans',
           'checked_input', 'pretrained_filter', 'pretrained_source', 'bioresnet_num_params']
