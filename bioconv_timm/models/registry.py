"""What every registered bioconv model name stands for, as data: the one table the rest of the package reads.

Nothing here builds a model, and the module imports nothing of the package (nor torch or timm), so anything may
read it without an import cycle: ``bioconv list`` (:func:`model_table`), the trainer's default sleep period
(:func:`default_sleep_every`), model cards and the Brain-Score metadata read their facts from here. The model
modules (:mod:`.bioresnet`, :mod:`.timm_cnns`) register one timm entrypoint per name of :data:`MODEL_SPECS`;
``tests/test_models.py`` checks that each builds what its spec says (input size, parameter count, sleep period,
layer types), so the stored parameter counts cannot go stale.

* :data:`PAPER_ARCHS`: the paper's ResNets (``BioResNet``): blocks per stage, widths, stem, default input and
  classes, pretrained tags, the model card's one-line description and the parameter counts.
* :data:`TIMM_FAMILIES`: the timm CNNs built by :func:`bioconv_timm.to_locally_connected`: timm's model name and
  arguments, the LC init, feature levels, pool types, the card's description and the parameter counts at 64x64.
* :data:`MODEL_SPECS`: every registered name -> :class:`ModelSpec` (architecture, layer types, sleep period).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

__all__ = ['HUB_ORG', 'PUBLISHED_TAGS', 'PAPER', 'GLOBAL_POOLS', 'PaperArch', 'PAPER_ARCHS', 'TimmFamily',
           'TIMM_FAMILIES', 'TIMM_ARCHS', 'TIMM_IMG_SIZE', 'ModelSpec', 'MODEL_SPECS', 'MODEL_NAMES', 'BIORESNET_NAMES',
           'model_spec', 'default_sleep_every', 'model_table']

HUB_ORG = 'bioconv-timm'  # every pretrained tag has its own Hub repo, HUB_ORG/<name>.<tag>

# 'name.tag' of the pretrained tags whose weights have been published on the Hub. Only these are listed by
# timm.list_pretrained() / list_models(pretrained=True); the others stay registered (creatable by name, listed
# by timm.list_models(include_tags=True)), and pretrained=True with them refuses to fall back to random weights.
# Read when the models register (on import) and on every pretrained build: add a tag here when its repo is uploaded.
PUBLISHED_TAGS: set = set()

# What every pretrained cfg says of where the models come from.
PAPER = dict(
    paper_name='Towards Biologically Plausible Convolutional Networks (Pogodin et al., NeurIPS 2021)',
    paper_ids='arXiv:2106.13031',
    origin_url='https://github.com/romanpogodin/towards-bio-plausible-conv',
    license="MIT (this project's code and weights)",
)

GLOBAL_POOLS = ('avg', 'max', 'avgmax', 'catavgmax', '')  # timm's pool types ('': none, for feature maps)
LayerType = str  # 'conv' or 'lc'
# A name's variant, the key of an architecture's parameter counts: 'conv', 'lc', or 'lc_convstem' (paper Table 13).
Variant = str


@dataclass(frozen=True)
class PaperArch:
    """One of the paper's ResNets (paper section 5 and appendix B): what ``BioResNet`` is built with."""
    layers: Tuple[int, ...]      # BasicBlocks per stage
    channels: Tuple[int, ...]    # width of each stage
    stem: str                    # 'cifar' (3x3/1, no max-pool) or 'imagenet' (7x7/2 + max-pool)
    img_size: int                # the default tag's input side
    num_classes: int             # the default tag's classes
    tags: Tuple[str, ...]        # pretrained tags, the default first
    description: str             # the model card's one line on the architecture
    num_params: Dict[Variant, int]  # parameters of each variant at the default tag (``bioconv list``)

    def model_args(self) -> Dict[str, Any]:
        """The ``BioResNet`` arguments of the architecture at its default input size (its layer types and sleep
        period come from the name)."""
        return dict(layers=self.layers, channels=self.channels, stem=self.stem, img_size=self.img_size)


PAPER_ARCHS: Dict[str, PaperArch] = {
    'resnet20': PaperArch(
        (3, 3, 3), (16, 32, 64), 'cifar', 32, 10, ('cifar10', 'digits'),
        'CIFAR ResNet20: 3x3 stem, 3 stages of 3 BasicBlocks with 16/32/64 channels',
        dict(conv=272_474, lc=40_814_762)),
    'resnet18_half': PaperArch(
        (2, 2, 2, 2), (32, 64, 128, 256), 'imagenet', 224, 1000, ('in1k',),
        'ResNet18 at half width: 7x7/2 stem + max-pool, 2-2-2-2 BasicBlocks, 32/64/128/256 channels',
        dict(conv=3_055_880, lc=483_155_624, lc_convstem=424_153_352)),
}

# The timm families' default input side: ImageNet downsampled to 64x64 (Tiny ImageNet's size); at 224 the LC
# weights of lc_resnet18 would be 1.81B parameters, which no single GPU trains with AdamW.
TIMM_IMG_SIZE = 64


@dataclass(frozen=True)
class TimmFamily:
    """A timm CNN registered as conv / LC / LC + sleep models: how it is built and what its card says.

    The LC init (``to_locally_connected``'s ``init``) draws every location's kernel afresh: Kaiming normal fan_out
    (``lc_init_std=None``, what timm's ResNets and MobileNets draw for their convs) or, for a family with its own
    init, a normal truncated to +-2 with ``lc_init_std``.
    """
    base: str                           # timm's model name
    feature_levels: int                 # len(feature_info): the levels features_only=True / out_indices choose from
    description: str                    # the model card's one line on the architecture
    num_params: Dict[Variant, int]      # parameters of each variant at the default cfg: 3x64x64, 1000 classes
    base_kwargs: Dict[str, Any] = field(default_factory=dict)
    lc_init_std: Optional[float] = None
    global_pools: Tuple[str, ...] = GLOBAL_POOLS  # the pool types timm's head of this family takes
    # timm's feature wrapper options for this family (mobilenetv3's stages sit inside `blocks`)
    feature_cfg: Dict[str, Any] = field(default_factory=dict)
    img_size: int = TIMM_IMG_SIZE
    num_classes: int = 1000
    tags: Tuple[str, ...] = ('in1k',)


TIMM_FAMILIES: Dict[str, TimmFamily] = {
    'resnet18': TimmFamily(
        'resnet18', 5, "timm's ResNet18: 7x7/2 stem + max-pool, 2-2-2-2 BasicBlocks, 64/128/256/512 channels",
        dict(conv=11_689_512, lc=148_568_424)),
    'convnext_atto': TimmFamily(
        'convnext_atto', 4, "timm's ConvNeXt-Atto: 4x4/4 patchify stem, 2-2-6-2 blocks of depthwise 7x7 + 1x1 MLP "
                            '(as convs: conv_mlp=True), 40/80/160/320 channels',
        dict(conv=3_695_520, lc=45_292_920), base_kwargs=dict(conv_mlp=True),
        lc_init_std=0.02,  # ConvNeXt draws every conv weight from a normal truncated to +-2, std 0.02
        global_pools=tuple(p for p in GLOBAL_POOLS if p != 'catavgmax'),  # its norm head keeps the pooled width
        feature_cfg=dict(flatten_sequential=True)),
    'mobilenetv3_small_050': TimmFamily(
        'mobilenetv3_small_050', 5, "timm's MobileNetV3-Small 0.5x: inverted residuals with depthwise 3x3/5x5 convs "
                                    'and squeeze-excite, 1x1 conv head',
        dict(conv=1_593_224, lc=3_312_296), feature_cfg=dict(flatten_sequential=True)),
}
TIMM_ARCHS: Tuple[str, ...] = tuple(TIMM_FAMILIES)

Arch = Union[PaperArch, TimmFamily]


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name stands for: the architecture, the layer type of the body and of the stem, and the
    sleep period (optimizer steps between sleeps; None: no sleep)."""
    arch: str                           # a key of PAPER_ARCHS (BioResNet) or of TIMM_FAMILIES
    layer_type: LayerType               # 'conv' or 'lc'
    stem_type: LayerType                # the first layer's type: Table 13's conv-stem variants differ here
    sleep_every: Optional[int] = None

    @property
    def is_bioresnet(self) -> bool:
        """True for the paper's ResNets (BioResNet); False for the converted timm CNNs (TIMM_ARCHS)."""
        return self.arch in PAPER_ARCHS

    @property
    def family(self) -> Arch:
        """The architecture's entry: a :class:`PaperArch` or a :class:`TimmFamily`."""
        return PAPER_ARCHS[self.arch] if self.is_bioresnet else TIMM_FAMILIES[self.arch]

    @property
    def description(self) -> str:
        """The model card's one line on the architecture."""
        return self.family.description

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """(C, H, W) of the default tag."""
        return 3, self.family.img_size, self.family.img_size

    @property
    def tags(self) -> Tuple[str, ...]:
        """The pretrained tags (published or not), the default first."""
        return self.family.tags

    def model_args(self) -> Dict[str, Any]:
        """The BioResNet arguments of this spec: its architecture's (at the default input size), the layer types
        and the sleep period."""
        if not self.is_bioresnet:
            raise ValueError(f'{self.arch} is a converted timm CNN (bioconv_timm.models.timm_cnns), not a BioResNet')
        return dict(PAPER_ARCHS[self.arch].model_args(), layer_type=self.layer_type, stem_type=self.stem_type,
                    sleep_every=self.sleep_every)

    @property
    def variant(self) -> Variant:
        """'conv', 'lc', or 'lc_convstem' (LC with a convolutional stem)."""
        if self.layer_type == 'conv':
            return 'conv'
        return 'lc' if self.stem_type == 'lc' else 'lc_convstem'

    def num_params(self) -> int:
        """The parameter count of the model its name builds (default tag), as stored: no model is built."""
        return self.family.num_params[self.variant]


def _specs() -> Dict[str, ModelSpec]:
    specs = {}

    def family(arch: str) -> None:
        specs[f'conv_{arch}'] = ModelSpec(arch, 'conv', 'conv')
        for n in (None, 1, 10, 100):
            specs[f'lc_{arch}' + (f'_ws{n}' if n else '')] = ModelSpec(arch, 'lc', 'lc', n)

    family('resnet20')
    family('resnet18_half')
    for n in (None, 1, 10, 100):  # paper Table 13: LC with a convolutional first layer
        specs['lc_resnet18_half_convstem' + (f'_ws{n}' if n else '')] = ModelSpec('resnet18_half', 'lc', 'conv', n)
    for arch in TIMM_ARCHS:
        family(arch)
    return specs


# Every registered name and what it stands for; the entrypoints of .bioresnet and .timm_cnns build exactly these.
MODEL_SPECS: Dict[str, ModelSpec] = _specs()
MODEL_NAMES: Tuple[str, ...] = tuple(MODEL_SPECS)
BIORESNET_NAMES: Tuple[str, ...] = tuple(n for n in MODEL_NAMES if MODEL_SPECS[n].is_bioresnet)


def model_spec(model_name: str) -> ModelSpec:
    """The spec of a registered name ('lc_resnet20_ws10', also with a pretrained tag: 'lc_resnet20_ws10.digits')."""
    name = model_name.split('.', 1)[0]
    if name not in MODEL_SPECS:
        raise ValueError(f'unknown bioconv model {model_name!r}; the registered ones are {", ".join(MODEL_SPECS)} '
                         '(`bioconv list`)')
    return MODEL_SPECS[name]


def default_sleep_every(model_name: str, model_kwargs: Optional[Mapping[str, Any]] = None) -> Optional[int]:
    """The sleep period ``timm.create_model(model_name, **model_kwargs)`` gives its model, without building it:
    ``model_kwargs['sleep_every']`` when given (None too), else the name's (None: no sleep)."""
    if model_kwargs and 'sleep_every' in model_kwargs:
        return model_kwargs['sleep_every']
    return model_spec(model_name).sleep_every


def model_table(pattern: str = '*') -> List[dict]:
    """One row per registered name matching ``pattern`` (fnmatch): name, input size, parameter count, sleep period,
    layer type, family. From the registry alone: no model is built."""
    rows = []
    for name in fnmatch.filter(MODEL_NAMES, pattern):
        spec = MODEL_SPECS[name]
        rows.append(dict(
            name=name,
            input_size='x'.join(str(s) for s in spec.input_size),
            params=spec.num_params(),
            sleep_every=spec.sleep_every,
            layer_type=spec.layer_type if spec.stem_type == spec.layer_type else f'{spec.layer_type} (conv stem)',
            family='paper ResNet' if spec.is_bioresnet else f'timm {spec.arch}',
        ))
    return rows
