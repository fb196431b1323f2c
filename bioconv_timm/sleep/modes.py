"""The sleep phase's options by name, importable without torch: the settings (and the command line's flags) list
them at once. What each does lives with the hook (:mod:`.hook`)."""
from __future__ import annotations

__all__ = ['BUILTIN_SLEEP_MODES', 'OPTIMIZER_POLICIES']

# The built-in sleep modes, keys of hook.SLEEP_MODES (register_sleep_mode adds more): 'instant' sets modules to
# their mean (what the paper trained with); 'hebbian' reaches it by the anti-Hebbian dynamics of eq. 4.
BUILTIN_SLEEP_MODES = ('hebbian', 'instant')

# What a sleep does to the optimizer's per-parameter moments of LC weights:
#   keep:    leave them (the authors' choice)
#   average: average them over the same k x k modules as the weights
#   reset:   zero them
OPTIMIZER_POLICIES = ('keep', 'average', 'reset')
