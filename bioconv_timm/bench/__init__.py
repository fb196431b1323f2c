"""Benchmark harness: the LC layer against ``nn.Conv2d`` and the authors' unfold + einsum layout, and whole
LC vs conv models in training (``bioconv bench``, ``scripts/bench_lc.py``, ``python -m bioconv_timm.bench``).

What one run measures, on the same inputs and interleaved (repeat r times every implementation, rotating
the order, so that all of them see the same machine load):

- **layers** (:func:`bench_layers`): at each shape (:data:`SHAPE_SETS`: the paper's ResNet20 stages at B=128,
  the same at 48x48 for TinyImageNet, the 0.5x ResNet18 at 224 with B=32, the default; on request
  ``depthwise_dilated``: 3x3 and 7x7 depthwise, a 3x3 dilation-2 and a 4-group 3x3 layer at 16x16, B=32), five
  implementations of the same layer: ``conv_nchw`` (``nn.Conv2d``, NCHW), ``conv_cl`` (``nn.Conv2d``,
  channels-last input and weight), ``lc`` (:class:`bioconv_timm.layers.LocallyConnected2d`, imported, not copied; channels-last input as
  in the LC models; on CPU fp32 its native kernels, :mod:`bioconv_timm.layers.native`), ``lc_torch`` (the same
  layer forced onto its torch backend: what CUDA, bf16/fp16 and machines without a C compiler run) and
  ``einsum`` (:class:`UnfoldEinsumLC`, the authors' layout, the same weights as ``lc``), each in two modes:
  ``fwd`` (under ``torch.no_grad``) and ``fwd+bwd`` (forward, then backward of a fixed random output gradient
  into the input and the weight). Per record: median and spread (min, max, quartiles) over the repeats, GFLOP/s
  (2 x the MACs of the conv-equivalent op; fwd+bwd counts 3x fwd), the time ratio to ``conv_cl`` and to ``lc``
  in the same mode, the peak memory of one call, and for ``lc`` / ``lc_torch`` the LC backend that ran
  (``lc_backend``; which kernels each backend runs for a grouped or depthwise layer:
  ``bioconv_timm.layers.ops.KERNELS``; under ``BIOCONV_LC_BACKEND=native`` on a machine whose kernels do not
  build, an ``lc`` row is skipped with that reason). Every implementation handles groups and dilation
  (``einsum``: one einsum with the group as a batch dimension).
- **models** (:func:`bench_models`): images/s of a whole training step (forward, cross-entropy, backward,
  timm ``create_optimizer_v2('adamw')`` step, fused or foreach) for ``conv_resnet20`` vs ``lc_resnet20``
  and ``conv_resnet18_half`` vs ``lc_resnet18_half``, and the peak memory of a step.

Peak memory, what it measures:

- CUDA: ``torch.cuda.max_memory_allocated()`` over one call after ``reset_peak_memory_stats()``. Layers: minus
  what was allocated before the call (the inputs, weights and output gradient), i.e. the extra memory the
  call needs (outputs, saved tensors, weight gradient, workspaces). Models: the absolute peak of a step
  (parameters, AdamW state and batch included).
- CPU: the increase of the process's peak resident set (``VmHWM``, reset by writing 5 to
  ``/proc/self/clear_refs``) during one call, over the resident set just before it; freed memory is first
  returned to the OS (``malloc_trim``, or tcmalloc's ``ReleaseFreeMemory``) so that pages the allocator kept
  from earlier calls cannot hide the call's own. Layers run this in a fresh subprocess per shape (after one
  warm-up call): the same "extra memory of one call" as on CUDA, but counted in touched pages, so it
  includes allocator overhead and whatever is not a tensor (oneDNN scratch space). Models measure it
  in-process after the timed steps, and add the bytes of the tensors resident at the start of a step
  (parameters, buffers, AdamW state, batch) to report the absolute peak like CUDA does.

Before each case the memory it needs is estimated (:func:`estimate_case_bytes`, :func:`estimate_model_bytes`)
and a case that would not fit (in 80% of the available memory, or ``max_memory_gib``) is skipped with the
reason in the table and the JSON instead of crashing the run.

Nothing here asserts speed: the tests check the records' shape and the numerics, never the timings.

The modules, one concept each:

* ``cases``: :class:`LayerCase` and the shape sets (:data:`SHAPE_SETS`, :func:`shape_set`).
* ``baseline``: :class:`UnfoldEinsumLC` (the authors' layout) and ``TorchBackendLC``.
* ``runners``: the implementations and modes, one layer call on its own inputs, sync, autocast, statistics.
* ``memory``: the estimates, the skip rule, the peak RSS of one call and its subprocess (CPU).
* ``timing``: :func:`bench_layers` (with the CUDA peak of one call), :func:`add_ratios`, :func:`summarize_layers`.
* ``steps``: :func:`bench_models` (training steps of :data:`MODEL_PAIRS`).
* ``report``: :func:`check_targets` against :data:`TARGETS`, the tables, :func:`format_report`.
* ``config``: :class:`BenchConfig` (torch-free: the command's flags load at once).
* ``run``: :func:`run_benchmark`.
"""
from .._lazy import lazy_exports
from .cases import (IMPLS, MODES, PAPER_SHAPE_SETS, PUBLIC_SHAPE_SETS, SHAPE_SETS, LayerCase, depthwise_dilated_cases,
                    resnet18_half_cases, resnet20_cases, shape_set, tinyimagenet_cases)
from .config import BenchConfig

# loaded on first use: these import torch, and `bioconv bench --help` reads only the torch-free .cases and .config
_EXPORTS = {
    'estimate_model_bytes': '..sharding',
    'TorchBackendLC': '.baseline', 'UnfoldEinsumLC': '.baseline',
    **dict.fromkeys(('CPU_MEM_METHOD', 'CPU_MEM_METHOD_INPROCESS', 'CUDA_MEM_METHOD', 'estimate_case_bytes'),
                    '.memory'),
    **dict.fromkeys(('STEP_TARGET_SETTINGS', 'TARGETS', 'check_targets', 'format_layer_table', 'format_model_table',
                     'format_report', 'format_summary_table'), '.report'),
    'run_benchmark': '.run',
    'AMP_DTYPES': '.runners', 'lc_backend': '.runners',
    **dict.fromkeys(('MODEL_PAIRS', 'bench_models', 'default_model_batch'), '.steps'),
    **dict.fromkeys(('add_ratios', 'bench_layers', 'summarize_layers'), '.timing'),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    'IMPLS', 'MODES', 'SHAPE_SETS', 'MODEL_PAIRS', 'TARGETS', 'LayerCase', 'BenchConfig', 'UnfoldEinsumLC',
    'resnet20_cases', 'tinyimagenet_cases', 'resnet18_half_cases', 'depthwise_dilated_cases', 'shape_set',
    'estimate_case_bytes', 'estimate_model_bytes', 'bench_layers', 'summarize_layers', 'bench_models',
    'check_targets', 'run_benchmark', 'format_layer_table', 'format_summary_table', 'format_model_table',
    'format_report',
    # also public, used by the CLI and the tests
    'PUBLIC_SHAPE_SETS', 'PAPER_SHAPE_SETS', 'lc_backend', 'AMP_DTYPES', 'STEP_TARGET_SETTINGS', 'CPU_MEM_METHOD',
    'CPU_MEM_METHOD_INPROCESS', 'CUDA_MEM_METHOD', 'TorchBackendLC', 'default_model_batch', 'add_ratios',
]
