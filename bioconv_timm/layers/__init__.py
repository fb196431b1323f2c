"""The locally connected layer: the module, its functional form and custom ops (``locally_connected``), and the
native CPU kernels behind them (``native``, C source in ``csrc/``)."""
from . import native
from .locally_connected import (DOUBLE_BACKWARD_ERROR, LocallyConnected2d, chunk_bytes, conv_output_size,
                                lc_backward_input, lc_backward_weight, lc_forward, locally_connected2d,
                                resolve_backend)

__all__ = ['native', 'DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size',
           'lc_backward_input', 'lc_backward_weight', 'lc_forward', 'locally_connected2d',
           'resolve_backend']
