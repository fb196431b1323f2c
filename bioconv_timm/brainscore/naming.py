"""Names: the bioconv models' Brain-Score identifiers, and the layers Brain-Score may commit to a region."""
from __future__ import annotations

from typing import Any, List, Tuple

from .errors import BrainScoreError

__all__ = ['PLUGIN_MODELS', 'BEHAVIORAL_READOUT_LAYER', 'plugin_identifier', 'model_name_from_identifier',
           'candidate_layers']

# The five models of the paper's Table 3, one plugin folder each.
PLUGIN_MODELS: Tuple[str, ...] = (
    'conv_resnet18_half', 'lc_resnet18_half', 'lc_resnet18_half_ws1', 'lc_resnet18_half_ws10',
    'lc_resnet18_half_ws100')
IDENTIFIER_PREFIX = 'bioconv_'
BEHAVIORAL_READOUT_LAYER = 'global_pool'  # the average pool, as in the paper's ResNets ("avgpool")


def plugin_identifier(model_name: str) -> str:
    """'lc_resnet18_half_ws10' -> 'bioconv_lc_resnet18_half_ws10' (Brain-Score identifiers have no hyphens)."""
    check_model_name(model_name)
    return IDENTIFIER_PREFIX + model_name


def model_name_from_identifier(identifier: str) -> str:
    """'bioconv_lc_resnet18_half_ws10' -> 'lc_resnet18_half_ws10'."""
    if not identifier.startswith(IDENTIFIER_PREFIX):
        raise BrainScoreError(f'{identifier!r} is not a bioconv Brain-Score identifier ({IDENTIFIER_PREFIX}<model>)')
    name = identifier[len(IDENTIFIER_PREFIX):]
    check_model_name(name)
    return name


def check_model_name(model_name: str) -> None:
    from ..models import MODEL_NAMES
    if model_name not in MODEL_NAMES:
        raise BrainScoreError(f'unknown model {model_name!r}; registered models: {", ".join(MODEL_NAMES)}')


def candidate_layers(model_or_name: Any) -> List[str]:
    """Layers Brain-Score may commit to a region: the stem output, every residual block's output, the avgpool.

    The stem output is the max-pool of the ImageNet stem (the ReLU ``act1`` for the CIFAR stem); a block's
    output (``layer2.1``) is its final ReLU; ``global_pool`` is the average pool that also serves as the
    behavioral readout (always the last layer of the list). The converted timm CNNs (``lc_convnext_atto``, ...)
    offer their timm ``feature_info`` modules (stem and stage outputs) and their average pool (``global_pool``,
    ``head.global_pool`` for ConvNeXt). Accepts a model or a registered name (built on the meta device: no memory).
    """
    model = model_or_name
    if isinstance(model_or_name, str):
        import timm
        import torch
        check_model_name(model_or_name)
        with torch.device('meta'):
            model = timm.create_model(model_or_name)
    import torch.nn as nn
    if not hasattr(model, 'stage_names'):  # a converted timm CNN, not a BioResNet
        pool = 'global_pool' if isinstance(getattr(model, 'global_pool', None), nn.Module) else 'head.global_pool'
        return [info['module'] for info in model.feature_info] + [pool]
    stem = 'act1' if isinstance(getattr(model, 'maxpool', None), (nn.Identity, type(None))) else 'maxpool'
    layers = [stem]
    for stage in model.stage_names:
        layers.extend(f'{stage}.{i}' for i in range(len(getattr(model, stage))))
    layers.append(BEHAVIORAL_READOUT_LAYER)
    return layers
