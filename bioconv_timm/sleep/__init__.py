"""The sleep phase: how the modules of an LC layer come to share their weights.

* ``instant``: the paper's sleep as used in training, every module set to the grid mean (``share_weights_``),
  and the weight SNR of eq. 6 that measures how far from shared a layer is.
* ``hebbian``: the same equalisation reached by the anti-Hebbian dynamics of section 4, on a whole network.
* ``dynamics``: the single-layer dynamics of section 4 in NumPy (eqs. 4, 8, 21), paper Figs. 4 and 5.
* ``hook``: ``SleepHook``, the optimizer post-step hook that puts the network to sleep every n steps.
"""
from .instant import grid_means, lc_layers, share_layer_, share_tensor_, share_weights_, weight_snr
from .hebbian import HebbianSleepConfig, distance_to_grid_means, hebbian_share_layer_, hebbian_share_weights_
from .hook import OPTIMIZER_POLICIES, SLEEP_MODES, SleepHook, register_sleep_mode

__all__ = ['grid_means', 'lc_layers', 'share_layer_', 'share_tensor_', 'share_weights_', 'weight_snr',
           'HebbianSleepConfig', 'distance_to_grid_means', 'hebbian_share_layer_', 'hebbian_share_weights_',
           'OPTIMIZER_POLICIES', 'SLEEP_MODES', 'SleepHook', 'register_sleep_mode']
