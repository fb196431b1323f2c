"""Paper Table 3: its columns, the public Brain-Score benchmark that stands in for each locally, the brain
regions, and the paper's own scores."""
from __future__ import annotations

from typing import Any, Dict, Tuple

__all__ = ['BENCHMARKS', 'REGIONS', 'TABLE_COLUMNS', 'PAPER_TABLE3']

# Table 3's columns and the public benchmark that stands in for each locally (brain-score.org used the private
# halves of the same data sets: FreemanZiemba2013 V1/V2, MajajHong2015 V4/IT, Rajalingham2018 behavior).
BENCHMARKS: Dict[str, str] = {
    'V1': 'FreemanZiemba2013public.V1-pls',
    'V2': 'FreemanZiemba2013public.V2-pls',
    'V4': 'MajajHong2015public.V4-pls',
    'IT': 'MajajHong2015public.IT-pls',
    'behavior': 'Rajalingham2018public-i2n',
}
REGIONS: Tuple[str, ...] = ('V1', 'V2', 'V4', 'IT')
TABLE_COLUMNS: Tuple[str, ...] = ('average', 'V1', 'V2', 'V4', 'IT', 'behavior')

# Paper Table 3 (brain-score.org, private data, at submission time): average, V1, V2, V4, IT, behavior.
PAPER_TABLE3: Dict[str, Dict[str, Any]] = {
    'conv_resnet18_half': dict(label='conv', scores=(.357, .493, .313, .459, .370, .148), link='brain-score.org/model/876'),
    'lc_resnet18_half': dict(label='LC', scores=(.349, .542, .291, .448, .354, .108), link='brain-score.org/model/877'),
    'lc_resnet18_half_ws1': dict(label='LC, ws 1', scores=(.396, .512, .339, .468, .406, .255),
                                 link='brain-score.org/model/880'),
    'lc_resnet18_half_ws10': dict(label='LC, ws 10', scores=(.385, .508, .322, .478, .399, .216),
                                  link='brain-score.org/model/878'),
    'lc_resnet18_half_ws100': dict(label='LC, ws 100', scores=(.351, .523, .293, .467, .370, .101),
                                   link='brain-score.org/model/879'),
}
