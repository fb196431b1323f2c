"""The locally connected layer: the module and its functional form (``locally_connected``), its custom ops and
the table of which kernels compute which layer (``ops.KERNELS``), the two backends (``native_backend``, on the
native CPU kernels that ``native`` builds from ``csrc/``; ``torch_backend``) and the ONNX decomposition
(``lc_decomposition``)."""
from .._lazy import lazy_exports
from . import native  # torch-free: the CLI checks $BIOCONV_LC_BACKEND before any work

# loaded on first use (torch), so that importing the package (and `bioconv --help`) stays light
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(
    ('DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size', 'lc_backward_input',
     'lc_backward_weight', 'lc_forward', 'locally_connected2d', 'resolve_backend'), '.locally_connected'))

__all__ = ['native', 'DOUBLE_BACKWARD_ERROR', 'LocallyConnected2d', 'chunk_bytes', 'conv_output_size',
           'lc_backward_input', 'lc_backward_weight', 'lc_forward', 'locally_connected2d',
           'resolve_backend']
