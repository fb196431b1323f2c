"""Turn the convolutions of any model (e.g. a timm CNN) into locally connected layers.

:func:`to_locally_connected` replaces every ``nn.Conv2d`` of a module by a :class:`LocallyConnected2d` that holds
the conv's kernel at every output location (``LocallyConnected2d.from_conv``), so right after conversion the
model computes exactly what it computed before, and the sleep phase (:mod:`bioconv_timm.sleep`) can train it
the way the paper trains its LC ResNets.

An LC layer has a fixed input size, so the conversion needs each conv's input (H, W) at the model's ``img_size``.
It finds them with one forward pass of a copy of the model on the meta device (no memory, no compute, and the
original's parameters and buffers, BatchNorm running statistics included, are not touched).

Grouped, depthwise and dilated convs become grouped/dilated LC layers (which kernels run them:
``bioconv_timm.layers.ops.KERNELS``). Not converted yet (refused, or kept convolutional with ``skip_unsupported=True``):
non-zero padding modes, string padding (``'same'``), timm's ``Conv2dSame`` and other Conv2d subclasses with their
own ``forward`` (their padding or weight depends on more than the kernel).
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import Conv2dSame

from .checks import MAX_CHANNELS, MAX_SIDE, ModelArgError, arg_error, check_arg, check_size, param_limit
from .layers import LocallyConnected2d, conv_output_size

__all__ = ['to_locally_connected', 'converted_num_params', 'conv_input_sizes', 'meta_copy', 'size_pair']


def size_pair(img_size: Union[int, Sequence[int]], where: str = 'to_locally_connected',
              name: str = 'img_size') -> Tuple[int, int]:
    """``img_size`` as an (H, W) pair of positive ints; ModelArgError (naming ``where`` and ``name``) otherwise."""
    return check_arg(where, name, img_size, 'pair', lo=1, hi=MAX_SIDE, fix='the (H, W) of the input images')


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device.

    The memo maps every tensor to its meta twin before copying, so the weights are never duplicated in memory
    (``copy.deepcopy(model).to('meta')`` would first copy them), and nothing of the copy aliases the original.
    """
    memo: Dict[int, object] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(torch.empty_like(param, device='meta'), requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device='meta')
    return copy.deepcopy(model, memo)


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def _default_in_chans(model: nn.Module) -> int:
    """The input channels: ``model.in_chans`` (timm), else the pretrained_cfg's, else the first conv's."""
    if isinstance(getattr(model, 'in_chans', None), int):
        return model.in_chans
    cfg_size = (getattr(model, 'pretrained_cfg', None) or {}).get('input_size')
    if cfg_size:
        return int(cfg_size[0])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ModelArgError('to_locally_connected: the model has no nn.Conv2d; pass in_chans= if it still needs one')
    return first.in_channels


def conv_input_sizes(model: nn.Module, img_size: Union[int, Tuple[int, int]],
                     in_chans: Optional[int] = None) -> Dict[str, Tuple[int, ...]]:
    """{name: input shape (B, C, H, W) as seen by the conv} of every ``nn.Conv2d`` the forward pass reaches.

    One forward pass of a batch of 1 (1, in_chans, H, W) on a meta-device copy of ``model``, in eval mode; the
    original model (parameters, buffers, train/eval mode, hooks) is left exactly as it was. A conv called more
    than once with different input shapes maps to the tuple ``()`` (no single input size).
    """
    h, w = size_pair(img_size, 'conv_input_sizes')
    in_chans = _default_in_chans(model) if in_chans is None else check_arg(
        'conv_input_sizes', 'in_chans', in_chans, 'int', lo=1, hi=MAX_CHANNELS)
    twin = meta_copy(model).eval()  # eval: batch statistics of a 1-image batch are not needed (nor possible)
    seen: Dict[str, Tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            shape = tuple(args[0].shape) if args and torch.is_tensor(args[0]) else ()
            seen[name] = shape if seen.get(name, shape) == shape else ()
        return hook

    for name, module in twin.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(record(name))
    x = torch.empty(1, in_chans, h, w, device='meta', dtype=_float_dtype(model))
    try:
        with torch.no_grad():
            twin(x)
    except Exception as exc:  # the model's own error, with the context of why we ran it
        raise InputSizeError(f'to_locally_connected: the model cannot run at img_size=({h}, {w}) with '
                             f'in_chans={in_chans}: the meta-device forward pass that finds each conv\'s input size '
                             f'failed ({type(exc).__name__}: {" ".join(str(exc).split())}); pass the img_size and '
                             'in_chans the model takes') from exc
    return seen


class InputSizeError(ModelArgError, RuntimeError):
    """The model cannot run at the requested input size (or channels); a RuntimeError too, as it was before."""


def _unsupported(conv: nn.Conv2d, input_shape: Optional[Tuple[int, ...]]) -> Optional[str]:
    """Why ``conv`` cannot become an LC layer (None when it can)."""
    if isinstance(conv, Conv2dSame):
        return ('timm Conv2dSame pads dynamically: its padding depends on the input size at run time '
                '(TF "SAME", possibly asymmetric), which an LC layer\'s fixed zero padding does not reproduce')
    if type(conv).forward is not nn.Conv2d.forward or type(conv)._conv_forward is not nn.Conv2d._conv_forward:
        return (f'{type(conv).__name__} overrides the Conv2d forward (e.g. dynamic padding or a standardized '
                'weight), so a copy of its kernel would not compute the same function')
    if isinstance(conv.padding, str):
        return f'padding={conv.padding!r}: string padding is not supported, only numeric zero padding'
    if conv.padding_mode != 'zeros':
        return f'padding_mode={conv.padding_mode!r}: only zero padding is supported'
    if input_shape is None:
        return 'the forward pass never calls it, so its input size is unknown'
    if len(input_shape) != 4:
        return (f'input shapes {input_shape or "of several sizes"}: an LC layer needs one fixed (B, C, H, W) '
                'input size')
    return None


def _lc_numel(conv: nn.Conv2d, input_hw: Tuple[int, int]) -> int:
    """Parameters of ``LocallyConnected2d.from_conv(conv, input_hw)``, from the shapes alone."""
    out_h, out_w = (conv_output_size(n, k, s, p, d)
                    for n, k, s, p, d in zip(input_hw, conv.kernel_size, conv.stride, conv.padding, conv.dilation))
    locations = max(out_h, 0) * max(out_w, 0)
    kernel = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * (conv.in_channels // conv.groups)
    return locations * (kernel + (conv.out_channels if conv.bias is not None else 0))


def _millions(n: int) -> str:
    return f'{n / 1e6:,.2f}M' if n >= 10_000 else f'{n:,}'


def _plural(n: int, word: str) -> str:
    return f'{n} {word}' + ('' if n == 1 else 's')


def _one_line_list(items: List[str], most: int = 4) -> str:
    shown = '; '.join(items[:most])
    return shown + (f'; and {len(items) - most} more' if len(items) > most else '')


def _plan(convs: List[Tuple[str, nn.Conv2d]], shapes: Dict[str, Tuple[int, ...]], keep_conv: List[str],
          skip_unsupported: bool) -> Tuple[List[Tuple[str, nn.Conv2d, Tuple[int, int]]], List[str], List[str]]:
    """Which convs become LC (name, conv, input (H, W)), which ``keep_conv`` keeps, which are skipped as not
    convertible yet; raises one ModelArgError line listing the refused ones unless ``skip_unsupported``."""
    to_convert: List[Tuple[str, nn.Conv2d, Tuple[int, int]]] = []
    kept, skipped, refused = [], [], []
    for name, conv in convs:
        if any(fnmatch.fnmatchcase(name, p) for p in keep_conv):
            kept.append(name)
            continue
        reason = _unsupported(conv, shapes.get(name))
        if reason is None:
            to_convert.append((name, conv, tuple(shapes[name][-2:])))
        elif skip_unsupported:
            skipped.append(f'{name} ({reason})')
        else:
            refused.append(f"'{name}': {reason}")
    if refused:
        raise ModelArgError(f'to_locally_connected cannot convert {_one_line_list(refused)}. Keep such convs '
                         'convolutional with keep_conv=[...] or skip_unsupported=True')
    return to_convert, kept, skipped


def _new_weights(layer: LocallyConnected2d, conv: nn.Conv2d,
                 init: Union[str, Callable[[torch.Tensor, nn.Conv2d], None]]) -> LocallyConnected2d:
    """``layer`` (holding ``conv``'s kernel) with its weight drawn afresh unless ``init == 'copy'``; the bias stays
    the conv's."""
    with torch.no_grad():
        if init == 'independent':
            bias = None if layer.bias is None else layer.bias.clone()
            layer.reset_parameters()
            if bias is not None:
                layer.bias.copy_(bias)
        elif init != 'copy':
            init(layer.weight, conv)
    return layer


def _swap(model: nn.Module, replacement: Dict[int, nn.Module]) -> None:
    """Put ``replacement[id(child)]`` in place of every such child, so a conv registered under several names
    (shared) becomes one shared LC layer."""
    for parent in model.modules():
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in replacement:
                setattr(parent, key, replacement[id(child)])


@dataclass
class _Conversion:
    """What converting a model would do, planned from the shapes alone (nothing allocated)."""
    img_hw: Tuple[int, int]
    in_chans: int
    to_convert: List[Tuple[str, nn.Conv2d, Tuple[int, int]]]
    kept: List[str]
    skipped: List[str]
    params_before: int
    lc_numel: Dict[str, int]

    @property
    def params_after(self) -> int:
        conv_numel = sum(p.numel() for _, conv, _ in self.to_convert for p in conv.parameters())
        return self.params_before - conv_numel + sum(self.lc_numel.values())

    def check_size(self, max_params: int) -> None:
        """ModelSizeError (one line: the estimate, the limit, what to change) above ``max_params``."""
        largest = sorted(self.lc_numel, key=self.lc_numel.get, reverse=True)[:3]
        check_size('to_locally_connected', self.params_after, max_params, 'the converted model',
                   f'pass a smaller img_size (now {self.img_hw}), or keep the largest layers convolutional with '
                   'keep_conv= (largest: ' + ', '.join(f'{n} {_millions(self.lc_numel[n])}' for n in largest) + ')')


def _keep_conv_patterns(keep_conv: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(keep_conv, str):
        return [keep_conv]
    if isinstance(keep_conv, (list, tuple)) and all(isinstance(p, str) for p in keep_conv):
        return list(keep_conv)
    raise arg_error('to_locally_connected', 'keep_conv', keep_conv, "a module name pattern or a list of them, "
                    "e.g. keep_conv=['conv1', 'layer4.*']")


def _plan_conversion(model: nn.Module, img_size: Union[int, Tuple[int, int]], in_chans: Optional[int],
                     keep_conv: Union[str, Sequence[str]], skip_unsupported: bool) -> _Conversion:
    """Check the arguments and plan the conversion from the convs' input shapes (a meta-device forward pass)."""
    where = 'to_locally_connected'
    if isinstance(model, nn.Conv2d) or not isinstance(model, nn.Module):
        raise arg_error(where, 'model', model, 'an nn.Module containing nn.Conv2d layers',
                        'wrap a single conv in nn.Sequential, or use LocallyConnected2d.from_conv(conv, input_size)')
    img_hw = size_pair(img_size, where)
    in_chans = _default_in_chans(model) if in_chans is None else check_arg(
        where, 'in_chans', in_chans, 'int', lo=1, hi=MAX_CHANNELS)
    patterns = _keep_conv_patterns(keep_conv)
    check_arg(where, 'skip_unsupported', skip_unsupported, 'bool')

    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name, _ in convs)]
    if unmatched:
        raise ModelArgError(f'{where}: keep_conv patterns {unmatched} match no nn.Conv2d; the convs are named like '
                            f'{[name for name, _ in convs[:4]]}')
    shapes = conv_input_sizes(model, img_hw, in_chans)
    to_convert, kept, skipped = _plan(convs, shapes, patterns, skip_unsupported)
    return _Conversion(img_hw, in_chans, to_convert, kept, skipped, sum(p.numel() for p in model.parameters()),
                       {name: _lc_numel(conv, hw) for name, conv, hw in to_convert})


def converted_num_params(model: nn.Module, img_size: Union[int, Tuple[int, int]], in_chans: Optional[int] = None,
                         keep_conv: Union[str, Sequence[str]] = (), skip_unsupported: bool = False) -> int:
    """The parameter count ``to_locally_connected(model, img_size, ...)`` would give, from the shapes alone.

    Allocates nothing and leaves ``model`` as it is (``model`` may live on the meta device): the estimate the size
    limit is checked against before converting.
    """
    return _plan_conversion(model, img_size, in_chans, keep_conv, skip_unsupported).params_after


def to_locally_connected(
        model: nn.Module,
        img_size: Union[int, Tuple[int, int]],
        in_chans: Optional[int] = None,
        keep_conv: Sequence[str] = (),
        sleep_every: Optional[int] = None,
        max_params: Optional[int] = None,
        verbose: bool = True,
        skip_unsupported: bool = False,
        init: Union[str, Callable[[torch.Tensor, nn.Conv2d], None]] = 'copy',
) -> nn.Module:
    """Replace every ``nn.Conv2d`` of ``model`` by a ``LocallyConnected2d`` holding its kernel at every location.

    In place: the convs are swapped inside ``model``, which is returned. Right after conversion the model computes
    the same function as before (each LC layer is ``LocallyConnected2d.from_conv(conv, input_size)``), for inputs
    of exactly ``(B, in_chans, *img_size)``; other sizes raise, as an LC layer's input size is fixed.

    Args:
        model: any module containing ``nn.Conv2d`` layers, e.g. ``timm.create_model('resnet18')``. It must not be
            an ``nn.Conv2d`` itself (wrap it in ``nn.Sequential``).
        img_size: input (H, W) (an int means square); sets each LC layer's size.
        in_chans: input channels of the forward pass that sizes the layers; default ``model.in_chans``, else the
            pretrained_cfg's, else the first conv's ``in_channels``.
        keep_conv: module names (fnmatch patterns, e.g. ``'conv1'``, ``'stem.*'``) that stay convolutional, like
            the conv-stem variant of the paper (Table 13). Each pattern must match at least one conv.
        sleep_every: sleep period N (optimizer steps) stored as ``model.sleep_every`` for ``bioconv train``'s
            sleep hook; None: no sleep.
        max_params: refuse (``bioconv_timm.checks.ModelSizeError``, a ValueError, before allocating anything) when
            the converted model would have more parameters than this; default the limit of
            :mod:`bioconv_timm.checks` (1e9, or the enclosing ``allow_params``).
        verbose: print the parameter counts before and after, and the convs kept.
        skip_unsupported: keep the convs that cannot be converted yet (dynamic, string or non-zero padding)
            convolutional instead of refusing; they are listed in the printed summary.
        init: the LC weights. ``'copy'``: the conv's kernel at every location (the model computes what it did;
            it starts at the sleep phase's fixed point). ``'independent'``: a fresh kernel at every location,
            Kaiming normal with fan_out = (Cout / groups) * kh * kw (``LocallyConnected2d.reset_parameters``, the
            paper's LC init; also what timm's ResNets and MobileNets draw for their convs), for training from
            scratch as the paper's LC networks are. A callable ``init(weight, conv)`` fills each new layer's weight
            (out_h, out_w, Cout, kh, kw, Cin / groups) in place, e.g. with the conv's own init at every location.
            Biases are copied in every case.

    Returns:
        ``model``, with ``model.sleep_every``, ``model.img_size`` (H, W) and, where it has one, a copy of its
        ``pretrained_cfg`` with ``input_size=(in_chans, H, W)`` and ``fixed_input_size=True``.

    Raises:
        bioconv_timm.checks.ModelArgError (a ValueError): a bad argument (one line naming it), an unsupported conv
            (naming it and why), a ``keep_conv`` pattern matching no conv, or (``ModelSizeError``) a converted
            model over ``max_params``.
    """
    where = 'to_locally_connected'
    if sleep_every is not None:
        sleep_every = check_arg(where, 'sleep_every', sleep_every, 'int', lo=1, hi=10 ** 9,
                                fix='optimizer steps between sleep phases, or None')
    if not (callable(init) or (isinstance(init, str) and init in ('copy', 'independent'))):
        raise arg_error(where, 'init', init, "'copy', 'independent' or a callable init(weight, conv)")
    check_arg(where, 'verbose', verbose, 'bool')
    max_params = param_limit() if max_params is None else check_arg(where, 'max_params', max_params, 'count')

    # Plan everything from the shapes first: nothing is allocated before the checks pass.
    plan = _plan_conversion(model, img_size, in_chans, keep_conv, skip_unsupported)
    img_hw, in_chans, to_convert, kept, skipped = plan.img_hw, plan.in_chans, plan.to_convert, plan.kept, plan.skipped
    if sleep_every is not None and not to_convert:
        raise ModelArgError(f'{where}: sleep_every={sleep_every} but no conv is converted, so sleep would do nothing')
    params_before, params_after = plan.params_before, plan.params_after
    plan.check_size(max_params)

    replacement = {}
    for _, conv, hw in to_convert:  # layer by layer: a layer's draws do not depend on the layers after it
        replacement[id(conv)] = _new_weights(LocallyConnected2d.from_conv(conv, hw, max_params), conv, init)
    _swap(model, replacement)

    model.sleep_every = int(sleep_every) if sleep_every is not None else None
    model.img_size = img_hw
    if hasattr(model, 'fixed_input_size'):  # BioResNet checks its input size against img_size when this is set
        model.fixed_input_size = bool(replacement) or model.fixed_input_size
    cfg = getattr(model, 'pretrained_cfg', None)
    if isinstance(cfg, dict):
        # A new dict: timm's cfg objects may be shared by every model of the same architecture.
        model.pretrained_cfg = dict(cfg, input_size=(in_chans, *img_hw), fixed_input_size=True)
        if hasattr(model, 'default_cfg'):
            model.default_cfg = model.pretrained_cfg
    if verbose:
        print(f'to_locally_connected: {_millions(params_before)} -> {_millions(params_after)} parameters '
              f'({_plural(len(to_convert), "conv")} -> LC, {_plural(len(kept) + len(skipped), "kept conv")})')
        if kept:
            print(f'  kept by keep_conv: {", ".join(kept)}')
        if skipped:
            print(f'  kept, not convertible yet: {_one_line_list(skipped, most=len(skipped))}')
    return model
