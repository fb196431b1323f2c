"""``bioconv export``: a registered model as an ONNX file that a plain onnxruntime runs, checked against PyTorch."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..settings import registered_model_problem, setting, validate_settings
from .flags import add_setting_flags, settings_from_args


def _model_problem(name: str, config: Any) -> Optional[str]:
    if name.startswith(('hf-hub:', 'local-dir:')):  # timm resolves these; a bad one is reported when loaded
        return None
    return registered_model_problem(name)


def _kwargs_problem(kwargs: Dict[str, Any], config: Any) -> Optional[str]:
    bad = [k for k in kwargs if not k.isidentifier()]
    if bad:
        return f'has a key that is no argument name: {bad[0]!r}'
    return 'may not set img_size: use --img-size' if 'img_size' in kwargs else None


@dataclass
class ExportConfig:
    """What ``bioconv export`` writes (:func:`bioconv_timm.export.export_onnx`); every field declared once."""
    model: str = setting(help='a registered model, hf-hub:ORG/NAME or local-dir:PATH', flag='model',
                         metavar='MODEL', check=_model_problem, valid='a name `bioconv list` prints, hf-hub:, '
                         'local-dir:')
    output: str = setting(help='the .onnx file to write (large weights go to OUTPUT.data beside it)',
                          path='file_out', metavar='OUTPUT.onnx', flag='output')
    img_size: Optional[int] = setting(None, help='input side (LC models: the side they are built for)', ge=8,
                                      le=1024, default_help="the model's")
    batch_size: int = setting(1, help='batch of the example input', ge=1, le=1024)
    dynamic_batch: bool = setting(True, help='let the file take any batch size (the spatial size stays fixed)')
    opset: int = setting(18, help='ONNX opset', ge=18, le=23)
    verify: bool = setting(True, help='run the file in onnxruntime and compare with PyTorch')
    atol: float = setting(1e-4, help='tolerance of that comparison (times max(1, max |output|))', gt=0, le=1)
    model_kwargs: Dict[str, Any] = setting(default_factory=dict, help='extra timm.create_model arguments, e.g. '
                                           'num_classes=100', metavar='KEY=VALUE', check=_kwargs_problem,
                                           valid='KEY=VALUE items; not img_size (--img-size)')

    def __post_init__(self) -> None:
        validate_settings(self)


SETTINGS = {'export': ExportConfig}  # the settings class of each command (docs/flags.md, tests)


def run(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args, ExportConfig)
    from ..export import export_onnx  # imports onnx: once the flags are judged
    result = export_onnx(cfg.model, cfg.output, img_size=cfg.img_size, batch_size=cfg.batch_size,
                         dynamic_batch=cfg.dynamic_batch, opset=cfg.opset, verify=cfg.verify, atol=cfg.atol,
                         model_kwargs=cfg.model_kwargs)
    checked = (f'; onnxruntime matches PyTorch at batch {", ".join(map(str, result.checked_batches))} (max '
               f'|difference| {result.max_abs_diff:.1e})' if result.checked_batches else '; not checked')
    print(f'wrote {result.path} ({result.num_bytes / 1e6:.1f} MB, input {tuple(result.input_shape)}, opset '
          f'{result.opset}, {"any" if result.dynamic_batch else "fixed"} batch){checked}')
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser('export', help='export a model to ONNX (standard operators; runs in plain onnxruntime)',
                              description='Writes MODEL as an ONNX file of its eval-mode forward pass, then runs '
                                          'it in onnxruntime and compares with PyTorch (docs/export.md).')
    add_setting_flags(p, ExportConfig)
    p.set_defaults(func=run)
