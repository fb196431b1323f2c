"""``BenchConfig``: what one ``bioconv bench`` run does, declared without torch so that the command's flags (and
``--help``) load at once; :mod:`.run` runs it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

from ..settings import device_problem, setting, validate_settings
from .cases import IMPLS, MODES, PAPER_SHAPE_SETS, SHAPE_SETS

__all__ = ['BenchConfig']


def _without_none(shapes: Sequence[str]) -> Tuple[str, ...]:
    """Shape sets as given; 'none' (the command line's way to time no layers) drops out."""
    if isinstance(shapes, str):
        shapes = (shapes,)
    return tuple(s for s in shapes if s != 'none')


def _something_to_time(models: str, cfg: Any) -> Optional[str]:
    if models == 'none' and cfg.shapes == ():
        return 'leaves nothing to time with --shapes none: name a shape set or a model pair'
    return None


@dataclass
class BenchConfig:
    """Everything ``bioconv bench`` does; None fields take the defaults of ``quick`` / ``full`` / the device.
    Every field is declared once (``bioconv_timm.settings``), so its flag, range and help come from here.

    quick: ResNet20 shapes at B=64 with 15 repeats (medians that hold on a noisy shared machine), and the
        ResNet20 training step (a few minutes on 2 cores).
    full: also the 0.5x ResNet18 training step on CPU (B=32; its LC model has 483M parameters); on CUDA
    it runs by default (B=256).
    """
    quick: bool = setting(False, help='ResNet20 shapes at B=64, 15 repeats, and the ResNet20 training step (a few '
                          'minutes on 2 CPU cores)')
    full: bool = setting(False, help='also the 0.5x ResNet18 training step on CPU (B=32; the LC model has 483M '
                         'parameters)')
    device: str = setting('cpu', help='the torch device', check=device_problem,
                          valid='cpu, cuda, cuda:N')
    amp: Optional[str] = setting(None, help='torch.autocast dtype', choices=('bf16', 'fp16'), default_help='fp32')
    shapes: Optional[Sequence[str]] = setting(
        None, help='layer shape sets (none: no layers; depthwise_dilated: grouped/dilated layers, B=32)',
        choices=tuple(SHAPE_SETS), convert=_without_none, metavar='SET', empty=True,
        default_help="resnet20 with --quick, else the paper's " + ', '.join(PAPER_SHAPE_SETS))
    batch_size: Optional[int] = setting(None, help='layer batch size for every shape set', ge=1, le=4096,
                                        default_help="the paper's, 128 / 128 / 32; depthwise_dilated 32; 64 with "
                                        '--quick')
    repeats: Optional[int] = setting(None, help='timed repeats per measurement', ge=1, le=10_000,
                                     default_help='7; CUDA 10; --quick 15')
    warmup: int = setting(1, help='untimed calls before timing', ge=0, le=1000)
    impls: Sequence[str] = setting(IMPLS, help='implementations to time', choices=IMPLS)
    modes: Sequence[str] = setting(MODES, help='fwd and/or fwd+bwd', choices=MODES)
    memory: str = setting('auto', help='peak memory: auto = CUDA allocator peak, or CPU peak RSS in a subprocess '
                          'per shape', choices=('auto', 'subprocess', 'inprocess', 'none'))
    max_memory_gib: Optional[float] = setting(None, help='skip cases estimated to need more', gt=0,
                                              default_help='80% of the available memory')
    min_repeat_ms: Optional[float] = setting(None, help='back-to-back calls per timed repeat until this long', ge=0,
                                             le=60_000, default_help='20 on CUDA, 0 on CPU')
    models: str = setting('auto', help='training-step pairs (auto: resnet20; all on CUDA or with --full)',
                          choices=('auto', 'none', 'resnet20', 'resnet18_half', 'all'), check=_something_to_time)
    model_batch_size: Optional[int] = setting(None, help='training-step batch', ge=1, le=4096,
                                              default_help='ResNet20 128; ResNet18-half 256 on CUDA, 32 on CPU')
    model_img_size: Optional[int] = setting(None, help='training-step input side (smoke tests)', ge=8, le=512,
                                            default_help="the model's")
    model_steps: Optional[int] = setting(None, help='timed training steps', ge=1, le=10_000, flag='--steps',
                                         default_help='10')
    model_warmup: int = setting(2, help='untimed training steps before timing', ge=0, le=1000)
    optimizer: str = setting('auto', help='AdamW implementation (auto: fused where available, else foreach)',
                             choices=('auto', 'fused', 'foreach'))
    threads: Optional[int] = setting(None, help='torch.set_num_threads', ge=1, le=4096,
                                     default_help="torch's (= OMP_NUM_THREADS)")
    seed: int = setting(0, help='seed of the inputs and weights', ge=0, le=2 ** 31 - 1)
    json_path: Optional[str] = setting(None, help='also write all records as JSON', path='file_out', flag='--json',
                                       metavar='PATH.json')

    def __post_init__(self) -> None:
        validate_settings(self)
