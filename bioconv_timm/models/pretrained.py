"""Pretrained weights of every bioconv model: where ``pretrained=True`` loads them from (refusing unpublished tags
instead of falling back to random weights), the error for a corrupt file, and the state-dict filter timm's loader
calls, which adapts a locally connected stem to another ``in_chans`` and refuses LC weights of another input size.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn as nn
from timm.models import PretrainedCfg

from ..checks import PretrainedWeightsError
from ..layers import LocallyConnected2d
from . import registry  # PUBLISHED_TAGS read at call time: publishing (or a test) may rebind it

__all__ = ['TagCfg', 'pretrained_source', 'unreadable_weights_error', 'is_unreadable_weights_error',
           'adapt_lc_in_chans', 'adapt_pretrained_state_dict', 'pretrained_filter']

_logger = logging.getLogger(__name__)


class TagCfg(PretrainedCfg):
    """A pretrained cfg whose Hub repo counts as a weight source only once its tag is in ``PUBLISHED_TAGS``.

    The cfg names the repo its weights will have (``hf_hub_id``), but timm lists a tag as pretrained
    whenever it has one; ``has_weights`` is what timm's registry reads (on registration) for that.
    """

    @property
    def has_weights(self) -> bool:
        published = self.hf_hub_id is not None and f'{self.architecture}.{self.tag}' in registry.PUBLISHED_TAGS
        return bool(self.url or self.file or published)


def pretrained_source(variant: str, cfg: PretrainedCfg) -> str:
    """Where ``pretrained=True`` loads ``variant``'s weights from (a file, URL or 'hf-hub:ORG/NAME'); raises a
    RuntimeError saying how to train and load them when the cfg names our Hub repo but the tag is unpublished."""
    has_source = cfg.file or cfg.url or cfg.state_dict
    explicit_hub = cfg.source == 'hf-hub'  # timm.create_model('hf-hub:ORG/NAME'): the user named the repo
    if not has_source and not explicit_hub and cfg.hf_hub_id and cfg.hf_hub_id.startswith(registry.HUB_ORG + '/') \
            and f'{variant}.{cfg.tag}' not in registry.PUBLISHED_TAGS:
        raise RuntimeError(
            f'No pretrained weights are published for {variant}.{cfg.tag} yet ({cfg.hf_hub_id}). '
            f'Train it with `bioconv train --model {variant}`, then load the weights with '
            f"timm.create_model('{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors')).")
    return cfg.file or cfg.url or (f'hf-hub:{cfg.hf_hub_id}' if cfg.hf_hub_id else None) or 'state_dict'


def unreadable_weights_error(variant: str, source: str, exc: BaseException) -> RuntimeError:
    """The error for a truncated or corrupt weights file: what happened and what to do."""
    return RuntimeError(
        f'Could not read the pretrained weights of {variant} from {source}: {exc}. The safetensors file is '
        'truncated or corrupt (an interrupted download or copy). Delete it (for a Hub download: the '
        "'models--ORG--NAME' folder in the Hugging Face cache) and download or copy it again; no random "
        'weights were used.')


def is_unreadable_weights_error(exc: BaseException) -> bool:
    """True for the errors safetensors (or torch.load) raises on a truncated or corrupt weights file."""
    try:
        from safetensors import SafetensorError
        if isinstance(exc, SafetensorError):
            return True
    except ImportError:  # pragma: no cover
        pass
    text = str(exc).lower()
    return any(s in text for s in ('deserializ', 'header', 'invalid load key', 'pytorchstreamreader',
                                   'unexpected eof', 'incomplete'))


def adapt_lc_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a 6-D LC stem weight (out_h, out_w, Cout, kh, kw, Cin) to ``in_chans`` input channels.

    Ours, not timm's ``adapt_input_conv`` on the weight reshaped to 4-D: that one converts only from 3 channels,
    and the ``.digits`` tags have 1. Same rules otherwise, on the last dim. To 1 channel the channels are summed: a
    grayscale image gives exactly the output of the source model on that image repeated Cin times. To more channels
    the source channels are repeated cyclically (cut to ``in_chans``) and scaled by Cin / in_chans. When
    ``in_chans`` is a multiple of Cin, a grayscale image repeated ``in_chans`` times gives exactly the source
    model's output on the grayscale image; otherwise some source channels are repeated once more than others
    and that holds only approximately (the total weight is preserved only when the channels' sums agree).
    """
    src = weight.shape[-1]
    if src == in_chans:
        return weight
    dtype = weight.dtype
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=-1, keepdim=True)
    else:
        repeat = -(-in_chans // src)
        w = w.repeat(*([1] * (w.dim() - 1)), repeat)[..., :in_chans] * (src / in_chans)
    return w.to(dtype)


def _lc_stem_name(model: nn.Module, modules: Dict[str, nn.Module]) -> Optional[str]:
    """The name of ``model``'s LC stem: the cfg's ``first_conv`` when it is LC, else (a config that lost it) the
    first LC layer; None when the stem is a conv (timm adapts those itself)."""
    first_conv = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    if first_conv:
        return first_conv if isinstance(modules.get(first_conv), LocallyConnected2d) else None
    return next((name for name, m in modules.items() if isinstance(m, LocallyConnected2d)), None)


def _adapt_lc_stem(name: str, weight: torch.Tensor, stem: LocallyConnected2d, source_chans: int,
                   in_chans: int) -> torch.Tensor:
    """The pretrained weight of an LC stem, adapted from the ``source_chans`` input channels its cfg declares to
    the model's ``in_chans``; refuses a weight that contradicts the declaration, as timm does for conv stems."""
    if weight.dim() != 6 or tuple(weight.shape[:5]) != tuple(stem.weight.shape[:5]):
        return weight  # other locations or channels: the location check below or load_state_dict names it
    # The conv stems' consistency rule (timm's load_pretrained), on the LC weight's last (Cin / groups) dim.
    if weight.shape[-1] * in_chans * stem.groups != source_chans * stem.in_channels:
        raise PretrainedWeightsError(
            f'Pretrained {name} weight shape {tuple(weight.shape)} is inconsistent with input_size[0]={source_chans}: '
            f'an LC stem weight ends in its input channels, so it was trained with '
            f'{weight.shape[-1] * stem.groups} channel(s), not {source_chans}. Correct the source pretrained_cfg '
            f"(e.g. pretrained_cfg_overlay=dict(input_size=({weight.shape[-1] * stem.groups}, H, W))) before "
            f'adapting to {in_chans} channel(s).')
    if source_chans == in_chans:
        return weight
    adapted = adapt_lc_in_chans(weight, stem.in_channels // stem.groups)
    how = 'summed over channels' if in_chans == 1 else f'channels repeated, scaled by {source_chans}/{in_chans}'
    _logger.info(f'Adapted the pretrained LC stem {name} from {source_chans} to {in_chans} input channel(s) ({how}); '
                 f'weight {tuple(weight.shape)} -> {tuple(adapted.shape)}')
    return adapted


def adapt_pretrained_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module,
                                source_chans: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Make a pretrained state dict fit ``model``'s LC stem (and refuse LC weights of another input size).

    timm adapts only 4-D conv stems to another ``in_chans``; an LC stem weight is 6-D, so it is adapted here on its
    last (Cin) dim, and the adaptation is logged. ``source_chans``: the input channels the weights are declared to
    have (the pretrained cfg's ``input_size[0]``; what timm's loader passes, through :func:`pretrained_filter`): a
    stem weight that contradicts them is refused, as timm refuses such a conv stem. None (a direct call with a state
    dict you hold): the weight's own channels. LC weights are tied to the input size: a pretrained LC model cannot be
    loaded at another ``img_size``, which raises a clear error instead of a list of shape mismatches. The classifier
    (``fc``) for another ``num_classes`` is dropped by timm (pretrained_cfg['classifier']).
    """
    state_dict = dict(state_dict)
    modules = dict(model.named_modules())
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    stem_name = _lc_stem_name(model, modules)
    key = f'{stem_name}.weight'
    if stem_name is not None and key in state_dict and state_dict[key].dim() == 6:
        stem = modules[stem_name]
        weight = state_dict[key]
        if source_chans is None:
            source_chans = weight.shape[-1] * stem.groups
        in_chans = int(getattr(model, 'in_chans', stem.in_channels))
        state_dict[key] = _adapt_lc_stem(stem_name, weight, stem, int(source_chans), in_chans)
    for key, value in state_dict.items():
        module = modules.get(key.rsplit('.', 1)[0])
        if isinstance(module, LocallyConnected2d) and key.endswith('.weight') and value.dim() == 6 \
                and tuple(value.shape[:2]) != tuple(module.weight.shape[:2]):
            raise PretrainedWeightsError(
                f'pretrained LC weight {key} has {value.shape[0]}x{value.shape[1]} output locations but the model has '
                f'{module.weight.shape[0]}x{module.weight.shape[1]}: locally connected weights are tied to the input '
                f'size they were trained at ({cfg.get("input_size")}); create the model without img_size= (or with '
                'the pretrained size).')
    return state_dict


def pretrained_filter(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn`` of every bioconv model: :func:`adapt_pretrained_state_dict` with the input
    channels the pretrained cfg declares (timm calls it with the cfg of the weights on ``model``)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return adapt_pretrained_state_dict(state_dict, model, int((cfg.get('input_size') or (3,))[0]))

