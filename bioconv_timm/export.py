"""ONNX export: any bioconv_timm model (conv or LC) as an ONNX file that a plain onnxruntime runs.

The LC layer is a ``torch.library`` custom operator, ``bioconv::lc_forward``, which no ONNX runtime knows. While
``torch.onnx.export`` runs (``torch.onnx.is_in_onnx_export()``), :func:`bioconv_timm.layers.locally_connected2d`
computes the layer with :func:`lc_forward_decomposition` instead: the same product written in standard operators
(``Pad``, one ``Gather`` that cuts out the patches, ``Transpose``/``Reshape``, one batched ``MatMul``; depthwise
layers a ``Mul`` and ``ReduceSum``), so the plain call works::

    onnx_program = torch.onnx.export(model.eval(), (x,), dynamo=True)

and :func:`export_onnx` wraps it: it builds the model by name, exports in eval mode with a dynamic batch
dimension, writes the file and checks it in onnxruntime against eager PyTorch. An ``ExportedProgram`` made
earlier with ``torch.export`` still holds the custom operator: ``ep.run_decompositions(lc_decompositions())``
rewrites it the same way before ``torch.onnx.export(ep)``.

What does not export: training (the file is the eval-mode forward pass: BatchNorm uses its running statistics,
dropout is off; nothing of the backward pass or the optimizer is in it) and so the sleep phase, which changes
the weights between optimizer steps (``SleepHook``) and is not part of the forward pass: the file holds the
weights as they are at export. LC models take exactly the input size they were built for (one kernel per
location), so only the batch dimension is dynamic. See docs/export.md.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .checks import check_arg, short_repr
from .errors import BioconvError, UserRuntimeError, UserValueError
from .layers.lc_decomposition import lc_decompositions, lc_forward_decomposition
from .output_paths import check_output_file

__all__ = ['DEFAULT_OPSET', 'MAX_OPSET', 'OnnxExport', 'export_onnx', 'lc_decompositions', 'lc_forward_decomposition',
           'onnx_session', 'run_onnx']

PathLike = Union[str, 'os.PathLike[str]']
IntPair = Union[int, Tuple[int, int], Sequence[int]]

# opset 18 is the dynamo exporter's own (torch.onnx's torchlib targets it); later ones are converted from it.
DEFAULT_OPSET = 18
MAX_OPSET = 23
_WHERE = 'export_onnx'


# --- export_onnx ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote. ``os.fspath(result)`` is ``result.path``, so the result opens as a path.

    Attributes:
        path: the ``.onnx`` file.
        data_path: the external weights file next to it (``<name>.onnx.data``), or None when the weights are inside.
        input_shape: the example input (B, C, H, W) it was traced with; with ``dynamic_batch`` any B runs.
        dynamic_batch: whether the batch dimension is dynamic (input dimension ``'batch'``).
        opset: the ONNX opset of the default domain.
        num_bytes: the size on disk, external data included.
        checked_batches: the batch sizes onnxruntime was compared with eager PyTorch at (empty: not checked).
        max_abs_diff: the largest ``|onnxruntime - eager|`` over those checks (None: not checked).
    """
    path: Path
    data_path: Optional[Path]
    input_shape: Tuple[int, int, int, int]
    dynamic_batch: bool
    opset: int
    num_bytes: int
    checked_batches: Tuple[int, ...] = ()
    max_abs_diff: Optional[float] = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def _require_packages(names: Sequence[str], why: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise UserRuntimeError(f'{_WHERE}: {why} needs {" and ".join(missing)}: pip install {" ".join(missing)} '
                               '(the [dev] extra installs them)')


def _build(name: str, img_size: Optional[Tuple[int, int]], model_kwargs: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model(name, img_size=..., **model_kwargs)``; a name timm does not know is a UserValueError."""
    import difflib

    import timm

    from .models import MODEL_NAMES

    if ':' not in name and not timm.is_model(name):  # 'hf-hub:...' and 'local-dir:...' go to timm as they are
        close = difflib.get_close_matches(name, MODEL_NAMES, n=3)
        hint = f'did you mean {", ".join(close)}? ' if close else ''
        raise UserValueError(f'{_WHERE}: unknown model {name!r}: {hint}`bioconv list` prints the registered names '
                             '(any timm model name works too)')
    kwargs = dict(model_kwargs)
    if img_size is not None:
        kwargs['img_size'] = img_size
    try:
        return timm.create_model(name, **kwargs)
    except BioconvError:
        raise
    except TypeError as exc:  # an argument the model's constructor does not take
        raise UserValueError(f'{_WHERE}: timm.create_model({name!r}, ...) rejected the arguments '
                             f'{short_repr(kwargs)}: {exc}') from exc


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under torch.compile and DDP/DataParallel wrappers."""
    while True:
        if hasattr(model, '_orig_mod') and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _has_lc(model: nn.Module) -> bool:
    from .layers import LocallyConnected2d
    return any(isinstance(m, LocallyConnected2d) for m in model.modules())


def _declared_input(model: nn.Module) -> Optional[Tuple[int, int, int]]:
    """(C, H, W) the model says it takes: timm's ``pretrained_cfg['input_size']``, else ``in_chans``/``img_size``."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    size = cfg.get('input_size') if isinstance(cfg, Mapping) else None
    if size and len(size) == 3:
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    img, chans = getattr(model, 'img_size', None), getattr(model, 'in_chans', None)
    if img is not None and chans is not None:
        h, w = (img, img) if isinstance(img, int) else img
        return int(chans), int(h), int(w)
    return None


def _input_shape(model: nn.Module, img_size: Optional[Tuple[int, int]]) -> Tuple[int, int, int]:
    """(C, H, W) of the input to export with: the model's own size, or ``img_size`` where the model allows it."""
    declared = _declared_input(model)
    fixed = bool(getattr(model, 'fixed_input_size', False)) or _has_lc(model)
    if declared is None:
        if img_size is None or fixed:
            raise UserValueError(
                f'{_WHERE}: cannot tell which input size this {type(model).__name__} takes (it has no '
                "pretrained_cfg['input_size'] nor img_size/in_chans attributes); build it with timm.create_model, "
                'or set model.pretrained_cfg = {"input_size": (C, H, W)}' + ('' if fixed else ' or pass img_size='))
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise UserValueError(f'{_WHERE}: cannot tell the input channels of this {type(model).__name__}: set '
                                 'model.pretrained_cfg = {"input_size": (C, H, W)}')
        return first.in_channels, img_size[0], img_size[1]
    chans, h, w = declared
    if img_size is not None and img_size != (h, w):
        if fixed:
            raise UserValueError(
                f'{_WHERE}: this model has locally connected layers built for {h}x{w} inputs (one kernel per '
                f'location), so it cannot be exported at img_size={img_size}: rebuild it with img_size={img_size} '
                f"(timm.create_model(name, img_size=...), or export_onnx('<name>', ..., img_size=...)), or leave "
                'img_size out')
        return chans, img_size[0], img_size[1]
    return chans, h, w


def _check_weights(model: nn.Module) -> torch.device:
    """The device of the model's tensors; UserValueError for meta, non-fp32 or sharded (DTensor) ones."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if not tensors:
        return torch.device('cpu')
    if any(t.is_meta for t in tensors):
        raise UserValueError(f'{_WHERE}: the model is on the meta device (no weights to export): materialize it '
                             'first (model.to_empty(device="cpu") then model.init_weights(), or load a checkpoint)')
    if any(type(t).__name__ == 'DTensor' or type(getattr(t, 'data', None)).__name__ == 'DTensor' for t in tensors):
        raise UserValueError(f'{_WHERE}: the model is sharded (FSDP DTensor parameters): export an unsharded copy '
                             '(load its full state dict into a model built with timm.create_model)')
    dtypes = sorted({str(t.dtype).replace('torch.', '') for t in tensors})
    if dtypes != ['float32']:
        raise UserValueError(f'{_WHERE}: the model holds {"/".join(dtypes)} tensors; the export is fp32 (the '
                             'onnxruntime check compares in fp32): convert it with model.float() first')
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise UserValueError(f'{_WHERE}: the model is spread over {sorted(map(str, devices))}: move it to one '
                             'device (model.cpu()) first')
    return devices.pop()


def onnx_session(path: PathLike, threads: Optional[int] = None):
    """An onnxruntime ``InferenceSession`` of ``path`` on the CPU provider, with ``threads`` intra-op threads
    (default ``torch.get_num_threads()``) and one inter-op thread."""
    _require_packages(['onnxruntime'], 'running an ONNX file')
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=['CPUExecutionProvider'])


def run_onnx(session_or_path: Any, x: torch.Tensor) -> List[torch.Tensor]:
    """The outputs of the ONNX model (a session from :func:`onnx_session`, or a path) on the batch ``x``
    (B, C, H, W), as CPU tensors in the order of the model's flattened outputs."""
    session = onnx_session(session_or_path) if isinstance(session_or_path, (str, os.PathLike)) else session_or_path
    feed = {session.get_inputs()[0].name: x.detach().cpu().float().numpy()}
    return [torch.from_numpy(out) for out in session.run(None, feed)]


def _flat_outputs(out: Any) -> List[torch.Tensor]:
    return [t.detach().float().cpu() for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _compare(session: Any, model: nn.Module, shape: Tuple[int, int, int], batches: Sequence[int],
             device: torch.device, atol: float) -> float:
    """Largest |onnxruntime - eager| over random batches of each size; UserRuntimeError when it exceeds
    ``atol * max(1, max |eager|)`` (an absolute tolerance for outputs of order 1, relative for larger ones)."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in batches:
        x = torch.randn(batch, *shape, generator=generator)
        with torch.no_grad():
            expected = _flat_outputs(model(x.to(device)))
        got = run_onnx(session, x)
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
            raise UserRuntimeError(
                f'{_WHERE}: the ONNX file gives outputs of shapes {[tuple(g.shape) for g in got]} at batch {batch}, '
                f'eager PyTorch {[tuple(e.shape) for e in expected]}')
        for g, e in zip(got, expected):
            diff = float((g - e).abs().max()) if e.numel() else 0.0
            scale = max(1.0, float(e.abs().max()) if e.numel() else 0.0)
            if not diff <= atol * scale:  # NaN fails too
                raise UserRuntimeError(
                    f'{_WHERE}: the ONNX file disagrees with eager PyTorch at batch {batch}: max |onnxruntime - '
                    f'eager| = {diff:.3g} > {atol:.3g} x {scale:.3g}; the file is kept for inspection; this is a bug '
                    'in the export (please report it), or pass verify=False to skip the check')
            worst = max(worst, diff)
    return worst


def _save(program: Any, path: Path, external_data: Optional[bool]) -> Optional[Path]:
    """Write ``program`` to ``path`` (and ``<name>.data`` when the weights go outside): saved in a temporary
    folder next to it and moved into place, the ``.onnx`` last, so a crash leaves no half-written model."""
    with tempfile.TemporaryDirectory(prefix=f'.{path.name}.', dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        program.save(staged, external_data=external_data)
        data = staged.with_name(staged.name + '.data')
        data_path = path.with_name(data.name) if data.exists() else None
        if data_path is not None:
            os.replace(data, data_path)
        else:
            path.with_name(path.name + '.data').unlink(missing_ok=True)  # an earlier export's weights
        os.replace(staged, path)
    return data_path


def export_onnx(model_or_name: Union[nn.Module, str], path: PathLike, img_size: Optional[IntPair] = None,
                batch_size: int = 1, dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, verify: bool = True,
                atol: float = 1e-4, external_data: Optional[bool] = None,
                model_kwargs: Optional[Mapping[str, Any]] = None) -> OnnxExport:
    """Export a model (conv or LC) to an ONNX file that a plain onnxruntime runs, and check it against PyTorch.

    Args:
        model_or_name: an ``nn.Module`` (a timm model, a ``to_locally_connected`` conversion, a torch.compile or
            DDP wrapper of one), or a model name for ``timm.create_model`` (``lc_resnet20``, ``hf-hub:...``,
            ``local-dir:...``), built with ``img_size`` and ``model_kwargs``.
        path: the ``.onnx`` file to write (its folder is created); large models (over 1.5 GiB of weights) get
            their weights in ``<path>.data`` next to it.
        img_size: input (H, W) (an int means square). For a name, the size to build the model for; for a module,
            only its own size where it has LC layers (one kernel per location), any size for conv models.
            Default: the model's ``pretrained_cfg['input_size']``.
        batch_size: the batch of the example input; with ``dynamic_batch=False``, the only batch the file takes.
        dynamic_batch: make the batch dimension dynamic (named ``'batch'``), so the file runs at any batch size.
            The spatial size is fixed either way.
        opset: ONNX opset of the default domain, ``DEFAULT_OPSET`` (18) to ``MAX_OPSET`` (23).
        verify: run the file in onnxruntime (CPU) on random inputs, at ``batch_size`` and, with a dynamic batch,
            at another batch size, and compare with eager PyTorch; a difference over
            ``atol * max(1, max |output|)`` raises :class:`UserRuntimeError` (the file is kept).
        atol: the tolerance of that check (fp32).
        external_data: True: weights always in ``<path>.data``; False: always inside the ``.onnx`` (fails over
            2 GiB, protobuf's limit); None: outside only when they are large.
        model_kwargs: more ``timm.create_model`` arguments when ``model_or_name`` is a name (``num_classes``,
            ``in_chans``, ``checkpoint_path``, ...).

    Returns:
        :class:`OnnxExport`: the path (``os.fspath(result)``), the input shape, the size on disk and what the
        check found. The graph has one input ``'input'`` of shape (B, C, H, W) and the model's outputs.

    The export is of the eval-mode forward pass: a module in training mode is put in eval mode for it (with a
    warning) and back afterwards. Training and the sleep phase are not in the file (docs/export.md).

    Raises:
        UserValueError: a bad argument, an unknown name, an ``img_size`` an LC module was not built for, a model on
            the meta device, sharded, not fp32, or whose input size cannot be told.
        UserRuntimeError: onnx/onnxscript (or, to verify, onnxruntime) not installed; ``torch.onnx.export``
            failed; the check found a difference.
    """
    img = None if img_size is None else check_arg(_WHERE, 'img_size', img_size, 'pair', lo=1, hi=65_536)
    batch_size = check_arg(_WHERE, 'batch_size', batch_size, 'int', lo=1, hi=65_536)
    dynamic_batch = check_arg(_WHERE, 'dynamic_batch', dynamic_batch, 'bool')
    opset = check_arg(_WHERE, 'opset', opset, 'int', lo=DEFAULT_OPSET, hi=MAX_OPSET,
                      fix="torch.onnx's dynamo exporter builds opset 18 and converts it to later ones")
    verify = check_arg(_WHERE, 'verify', verify, 'bool')
    atol = check_arg(_WHERE, 'atol', atol, 'real', lo=0.0, hi=1.0)
    if external_data is not None:
        external_data = check_arg(_WHERE, 'external_data', external_data, 'bool')
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise UserValueError(f'{_WHERE}: model_kwargs must be a dict of timm.create_model arguments, got '
                             f'{short_repr(model_kwargs)}')
    out_path = check_output_file(path, UserValueError, flag=f'{_WHERE}: path ', example='model.onnx')
    _require_exporter(verify)
    model, what, user_module = _model_to_export(model_or_name, img, model_kwargs)
    device = _check_weights(model)
    shape = _input_shape(model, img)
    # torch.export specializes a dimension of size 1, so a dynamic batch is traced with at least 2
    trace_batch = max(batch_size, 2) if dynamic_batch else batch_size
    example = torch.zeros(trace_batch, *shape, device=device)

    if model.training and user_module:  # a model built here from a name is in training mode too: no news
        _warn_training_mode()
    with _eval_mode(model):
        out_path.parent.mkdir(parents=True, exist_ok=True)
        program = _torch_onnx_export(model, example, what, opset, dynamic_batch)
        data_path = _save(program, out_path, external_data)
        num_bytes = out_path.stat().st_size + (data_path.stat().st_size if data_path else 0)
        checked: Tuple[int, ...] = ()
        worst = None
        if verify:
            checked = (batch_size, batch_size + 1) if dynamic_batch else (batch_size,)
            worst = _compare(onnx_session(out_path), model, shape, checked, device, atol)
    return OnnxExport(path=out_path, data_path=data_path, input_shape=(trace_batch, *shape),
                      dynamic_batch=dynamic_batch, opset=opset, num_bytes=num_bytes, checked_batches=checked,
                      max_abs_diff=worst)


def _require_exporter(verify: bool) -> None:
    """UserRuntimeError unless onnx, onnxscript, torch's dynamo exporter (and, to verify, onnxruntime) are here."""
    _require_packages(['onnx', 'onnxscript'], 'torch.onnx.export')
    if not {'dynamic_shapes', 'optimize'} <= set(inspect.signature(torch.onnx.export).parameters):
        raise UserRuntimeError(f'{_WHERE}: torch {torch.__version__} has no dynamo ONNX exporter with the options this '
                               'uses (dynamic_shapes, optimize: torch >= 2.6; tested with 2.14): upgrade torch')
    if verify:
        _require_packages(['onnxruntime'], 'verify=True (the onnxruntime check; or pass verify=False)')


def _model_to_export(model_or_name: Union[nn.Module, str], img: Optional[Tuple[int, int]],
                     model_kwargs: Optional[Mapping[str, Any]]) -> Tuple[nn.Module, str, bool]:
    """(the model, how messages name it, whether the user built it): built here from a name, or unwrapped."""
    if isinstance(model_or_name, str):
        return _build(model_or_name, img, model_kwargs or {}), model_or_name, False
    if isinstance(model_or_name, nn.Module):
        if model_kwargs:
            raise UserValueError(f'{_WHERE}: model_kwargs are timm.create_model arguments, for a model name; this '
                                 'is a built model (build it with them instead)')
        model = _unwrap(model_or_name)
        return model, type(model).__name__, True
    raise UserValueError(f'{_WHERE}: model_or_name must be an nn.Module or a model name, got '
                         f'{short_repr(model_or_name)}')


def _warn_training_mode() -> None:
    warnings.warn(
        f'{_WHERE}: the model is in training mode; it is exported in eval mode (BatchNorm with its running '
        'statistics, no dropout) and put back in training mode afterwards. Training, and so the sleep phase '
        '(SleepHook: weight sharing between optimizer steps), is not part of an exported forward pass: the '
        'file holds the weights as they are now', UserWarning, stacklevel=3)  # 3: export_onnx's caller


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode, then each module back in its own mode (a frozen BN stays in eval)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _torch_onnx_export(model: nn.Module, example: torch.Tensor, what: str, opset: int, dynamic_batch: bool) -> Any:
    """``torch.onnx.export`` (dynamo) of ``model`` on ``example``, its long errors cut to one UserRuntimeError line."""
    dynamic_shapes = ({0: torch.export.Dim('batch', min=1, max=65_536)},) if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', category=FutureWarning)  # torch.onnx's own deprecation notes
            return torch.onnx.export(model, (example,), dynamo=True, input_names=['input'], opset_version=opset,
                                     dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    except Exception as exc:  # the exporter's errors (TorchExportError, ConversionError, ...) are long
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise UserRuntimeError(
            f'{_WHERE}: torch.onnx.export could not export {what} ({type(exc).__name__}: {first[:300]}); '
            'export_onnx exports modules whose forward takes one (B, C, H, W) batch') from exc
