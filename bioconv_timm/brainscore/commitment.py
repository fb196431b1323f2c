"""brainscore_vision's side: the activations wrapper around a bioconv timm model and the ``ModelCommitment``
(regions -> layers, behavioral readout, visual field). brainscore_vision is imported only when they are called."""
from __future__ import annotations

import functools
import importlib.util
from typing import Any, Mapping, Optional, Sequence

from .errors import BrainScoreError
from .naming import BEHAVIORAL_READOUT_LAYER

__all__ = ['VISUAL_DEGREES', 'INSTALL_HINT', 'activations_model', 'model_commitment']

VISUAL_DEGREES = 8  # brainscore_vision's default for ModelCommitment: the model's field of view
INSTALL_HINT = 'pip install "bioconv-timm[brainscore]"  (from a checkout: pip install -e ".[brainscore]")'


def require_brainscore() -> None:
    if importlib.util.find_spec('brainscore_vision') is None:
        raise BrainScoreError(f'brainscore_vision is not installed. Install the Brain-Score extra: {INSTALL_HINT}')


@functools.lru_cache(maxsize=None)
def _wrapper_class() -> type:
    """PytorchWrapper whose 'logits' layer is the classifier.

    brainscore_vision finds 'logits' by walking to the last registered submodule; in BioResNet that is
    ``head_drop`` (applied before ``fc``), which would hand back the pooled features instead of the logits.
    """
    from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper

    class BioconvPytorchWrapper(PytorchWrapper):
        def _output_layer(self):  # noqa: D401 - brainscore_vision's hook name
            return self._model.get_classifier()

    return BioconvPytorchWrapper


def activations_model(model: Any, identifier: str, batch_size: int = 64) -> Any:
    """brainscore_vision ``PytorchWrapper`` around a bioconv timm model, preprocessing from its pretrained cfg.

    Images are resized to the cfg's input size (224 for the ResNet18-half family, 32 for ResNet20) and
    normalized with its mean/std (ImageNet / CIFAR-10), as brainscore_vision's ``load_preprocess_images`` does.
    """
    require_brainscore()
    from brainscore_vision.model_helpers.activations.pytorch import load_preprocess_images

    cfg = model.pretrained_cfg
    _, height, width = cfg['input_size']
    if height != width:
        raise BrainScoreError(f'brainscore_vision preprocessing needs a square input, the model has {height}x{width}')
    preprocessing = functools.partial(load_preprocess_images, image_size=height,
                                      normalize_mean=tuple(cfg['mean']), normalize_std=tuple(cfg['std']))
    wrapper = _wrapper_class()(identifier=identifier, model=model.eval(), preprocessing=preprocessing,
                               batch_size=batch_size)
    wrapper.image_size = height
    return wrapper


def model_commitment(identifier: str, wrapper: Any, layers: Sequence[str],
                     region_layer_map: Optional[Mapping[str, str]] = None,
                     readout_layer: str = BEHAVIORAL_READOUT_LAYER) -> Any:
    """brainscore_vision ``ModelCommitment``: regions -> layers (given, or chosen on the public benchmarks),
    ``readout_layer`` (the average pool, the last of ``candidate_layers``) as behavioral readout, 8 degrees of
    visual field."""
    require_brainscore()
    from brainscore_vision.model_helpers.brain_transformation import ModelCommitment
    return ModelCommitment(identifier=identifier, activations_model=wrapper, layers=list(layers),
                           behavioral_readout_layer=readout_layer,
                           region_layer_map=dict(region_layer_map) if region_layer_map else None,
                           visual_degrees=VISUAL_DEGREES)
