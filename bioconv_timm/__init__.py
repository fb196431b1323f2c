"""bioconv-timm: the locally connected networks of "Towards Biologically Plausible Convolutional
Networks" (Pogodin et al., NeurIPS 2021) as timm models.

``import bioconv_timm`` registers the models with timm, e.g.
``timm.create_model('lc_resnet18_half_ws10')``.
"""
from .layers import LocallyConnected2d, locally_connected2d, conv_output_size
from .sleep import share_weights_, share_layer_, grid_means, weight_snr, lc_layers
from .sleep import hebbian_share_weights_, hebbian_share_layer_, HebbianSleepConfig
from . import models  # registers the models with timm
from .models import BioResNet, MODEL_NAMES, PUBLISHED_TAGS
from .convert import to_locally_connected
from .checks import ModelArgError, allow_params
from .errors import BioconvError

__version__ = '0.1.0'

__all__ = [
    'LocallyConnected2d', 'locally_connected2d', 'conv_output_size',
    'share_weights_', 'share_layer_', 'grid_means', 'weight_snr', 'lc_layers',
    'hebbian_share_weights_', 'hebbian_share_layer_', 'HebbianSleepConfig',
    'BioResNet', 'MODEL_NAMES', 'PUBLISHED_TAGS', 'to_locally_connected',
    'ModelArgError', 'allow_params', 'BioconvError',
]
