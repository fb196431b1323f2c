"""The layer shapes the benchmark times: one :class:`LayerCase` per convolution, grouped in shape sets; and the
implementations and modes each is timed in (by name: torch-free, for ``BenchConfig``'s flags)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ['LayerCase', 'resnet20_cases', 'tinyimagenet_cases', 'resnet18_half_cases', 'depthwise_dilated_cases',
           'SHAPE_SETS', 'PAPER_SHAPE_SETS', 'PUBLIC_SHAPE_SETS', 'shape_set', 'IMPLS', 'MODES']

IMPLS: Tuple[str, ...] = ('conv_nchw', 'conv_cl', 'lc', 'lc_torch', 'einsum')  # runners.make_runners builds each
MODES: Tuple[str, ...] = ('fwd', 'fwd+bwd')


@dataclass(frozen=True)
class LayerCase:
    """One layer shape: a ``kernel x kernel`` convolution (or its LC version) on a square input, with
    ``nn.Conv2d``'s ``groups`` (``groups == in_channels``: depthwise) and ``dilation``.

    Input (batch, in_channels, size, size) -> output (batch, out_channels, out_size, out_size).
    """
    group: str          # shape set, e.g. 'resnet20'
    name: str           # position in the network, e.g. 'stage1'
    batch: int
    in_channels: int
    out_channels: int
    size: int           # input height = width
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    groups: int = 1     # last, so that positional constructions of the ungrouped cases keep their meaning
    dilation: int = 1

    def __post_init__(self) -> None:
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f'groups={self.groups} must divide in_channels={self.in_channels} and '
                             f'out_channels={self.out_channels}')
        if self.dilation < 1 or self.out_size < 1:
            raise ValueError(f'invalid geometry: size={self.size}, kernel={self.kernel}, stride={self.stride}, '
                             f'padding={self.padding}, dilation={self.dilation}')

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) // self.stride + 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the forward pass (the same for conv, LC and einsum): each output sees
        ``in_channels / groups`` input channels."""
        return (self.batch * self.out_size ** 2 * self.out_channels
                * (self.in_channels // self.groups) * self.kernel ** 2)

    @property
    def label(self) -> str:
        # d/g only where they are not 1: the labels of the ungrouped, undilated cases (and the JSON and
        # docs that quote them) stay as they were
        extra = (f'd{self.dilation}' if self.dilation != 1 else '') + (f'g{self.groups}' if self.groups != 1 else '')
        return (f'{self.group} {self.name} {self.in_channels}->{self.out_channels} {self.size}x{self.size} '
                f'k{self.kernel}s{self.stride}{extra} B={self.batch}')


def resnet20_cases(batch: int = 128, size: int = 32, group: str = 'resnet20') -> List[LayerCase]:
    """The 3x3 convolutions of CIFAR ResNet20: the three stage bodies (16ch at ``size``, 32ch at size/2,
    64ch at size/4) and the two stride-2 stage transitions (16->32, 32->64)."""
    s2, s4 = (size + 1) // 2, (size + 3) // 4
    return [
        LayerCase(group, 'stage1', batch, 16, 16, size),
        LayerCase(group, 'stage2', batch, 32, 32, s2),
        LayerCase(group, 'stage3', batch, 64, 64, s4),
        LayerCase(group, 'down2', batch, 16, 32, size, stride=2),
        LayerCase(group, 'down3', batch, 32, 64, s2, stride=2),
    ]


def tinyimagenet_cases(batch: int = 128) -> List[LayerCase]:
    """ResNet20's stage bodies at TinyImageNet's 48x48 (16ch 48x48, 32ch 24x24, 64ch 12x12)."""
    return resnet20_cases(batch, 48, 'tinyimagenet48')[:3]


def resnet18_half_cases(batch: int = 32) -> List[LayerCase]:
    """0.5x ResNet18 at 224: the 7x7/2 stem (3->32 at 224) and one 3x3 body conv per stage
    (32ch 56x56, 64ch 28x28, 128ch 14x14, 256ch 7x7)."""
    g = 'resnet18_half224'
    return [
        LayerCase(g, 'stem', batch, 3, 32, 224, kernel=7, stride=2, padding=3),
        LayerCase(g, 'stage1', batch, 32, 32, 56),
        LayerCase(g, 'stage2', batch, 64, 64, 28),
        LayerCase(g, 'stage3', batch, 128, 128, 14),
        LayerCase(g, 'stage4', batch, 256, 256, 7),
    ]


def depthwise_dilated_cases(batch: int = 32) -> List[LayerCase]:
    """Grouped and dilated layers (issue 18), at 16x16 (a ConvNeXt stage-2-like grid on small images):
    3x3 depthwise (64ch, MobileNet-style), 7x7 depthwise (40ch and 80ch, ConvNeXt's token mixer), and a 3x3
    dilation-2 conv (32->32, padding 2 keeps the 16x16 grid), and a 3x3 conv with 4 groups of 16 channels
    (ResNeXt-style, 64->64). Not paper shapes: ``bioconv bench`` runs them
    only when asked (``--shapes depthwise_dilated``)."""
    g = 'depthwise_dilated'
    return [
        LayerCase(g, 'dw3', batch, 64, 64, 16, groups=64),
        LayerCase(g, 'dw7', batch, 40, 40, 16, kernel=7, padding=3, groups=40),
        LayerCase(g, 'dw7', batch, 80, 80, 16, kernel=7, padding=3, groups=80),
        LayerCase(g, 'dilated', batch, 32, 32, 16, padding=2, dilation=2),
        LayerCase(g, 'grouped', batch, 64, 64, 16, groups=4),
    ]


def _tiny_cases(batch: int = 2) -> List[LayerCase]:
    """Test-sized shapes (a stride-1 and a stride-2 layer): for unit tests and smoke runs, not for numbers."""
    return [LayerCase('tiny', 'body', batch, 4, 4, 8), LayerCase('tiny', 'down', batch, 4, 8, 7, stride=2)]


def _tiny_grouped_cases(batch: int = 2) -> List[LayerCase]:
    """Test-sized grouped and dilated shapes: depthwise 3x3, depthwise 5x5 stride 2, groups=2 (not
    depthwise) with dilation 2: for unit tests, not for numbers."""
    return [LayerCase('tiny_grouped', 'dw3', batch, 4, 4, 8, groups=4),
            LayerCase('tiny_grouped', 'dw5s2', batch, 4, 8, 9, kernel=5, stride=2, padding=2, groups=4),
            LayerCase('tiny_grouped', 'g2d2', batch, 4, 6, 8, padding=2, groups=2, dilation=2)]


# name -> (builder(batch) -> cases, the paper's batch size)
SHAPE_SETS: Dict[str, Tuple[Callable[[int], List[LayerCase]], int]] = {
    'resnet20': (resnet20_cases, 128),
    'tinyimagenet': (tinyimagenet_cases, 128),
    'resnet18_half': (resnet18_half_cases, 32),
    'depthwise_dilated': (depthwise_dilated_cases, 32),
    'tiny': (_tiny_cases, 2),                   # hidden from --help
    'tiny_grouped': (_tiny_grouped_cases, 2),   # hidden from --help
}
PAPER_SHAPE_SETS = ('resnet20', 'tinyimagenet', 'resnet18_half')   # what `bioconv bench` runs by default
PUBLIC_SHAPE_SETS = PAPER_SHAPE_SETS + ('depthwise_dilated',)


def shape_set(name: str, batch: Optional[int] = None) -> List[LayerCase]:
    """The cases of one shape set at its paper batch size (or ``batch``)."""
    if name not in SHAPE_SETS:
        raise ValueError(f'unknown shape set {name!r}; choose from {", ".join(PUBLIC_SHAPE_SETS)}')
    builder, default_batch = SHAPE_SETS[name]
    return builder(batch or default_batch)
