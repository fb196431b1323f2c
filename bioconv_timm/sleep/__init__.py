"""The sleep phase: how the modules of an LC layer come to share their weights.

* ``instant``: the paper's sleep as used in training, every module set to the grid mean (``share_weights_``),
  and the weight SNR of eq. 6 that measures how far from shared a layer is.
* ``hebbian``: the same equalisation reached by the anti-Hebbian dynamics of section 4, on a whole network.
* ``dynamics``: the single-layer dynamics of section 4 in NumPy (eqs. 4, 8, 21), paper Figs. 4 and 5.
* ``hook``: ``SleepHook``, the optimizer post-step hook that puts the network to sleep every n steps.
* ``modes``: the sleep modes' and optimizer policies' names, without torch (for the settings).
"""
from .._lazy import lazy_exports
from .modes import BUILTIN_SLEEP_MODES, OPTIMIZER_POLICIES

# loaded on first use: these modules import torch, and the settings read only .modes (the CLI starts at once)
_EXPORTS = {
    **dict.fromkeys(('grid_means', 'lc_layers', 'share_layer_', 'share_tensor_', 'share_weights_', 'weight_snr'),
                    '.instant'),
    **dict.fromkeys(('HebbianSleepConfig', 'distance_to_grid_means', 'hebbian_share_layer_',
                     'hebbian_share_weights_'), '.hebbian'),
    **dict.fromkeys(('SLEEP_MODES', 'SleepHook', 'register_sleep_mode'), '.hook'),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ['grid_means', 'lc_layers', 'share_layer_', 'share_tensor_', 'share_weights_', 'weight_snr',
           'HebbianSleepConfig', 'distance_to_grid_means', 'hebbian_share_layer_', 'hebbian_share_weights_',
           'OPTIMIZER_POLICIES', 'BUILTIN_SLEEP_MODES', 'SLEEP_MODES', 'SleepHook', 'register_sleep_mode']
