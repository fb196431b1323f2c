"""The statistics every results report uses: one tested place, so a report cannot disagree with its records.

Pure functions of plain numbers (accuracies in %, optimizer steps); no torch. Seeds are the replication unit:
a cell's runs differ only in ``seed``, and two cells' runs with the same seed share the data order, the
augmentations and (for LC-family models of one architecture) the initial weights, so differences between cells
are taken *per seed* (paired) where both cells have the seed.

* :func:`mean_sd` - mean and sample standard deviation (n - 1 in the denominator) of a cell's seeds.
* :func:`t_interval` - a Student-t confidence interval for a mean.
* :func:`paired_difference` - per-seed differences ``a[s] - b[s]`` with their mean, sd and t interval.
* :func:`welch_test` - Welch's unequal-variance t-test of two cells (unpaired): t, degrees of freedom, p.
* :func:`gap_fraction` - the fraction of the conv-LC gap a cell closes, ``(cell - LC) / (conv - LC)``, as the
  ratio of the means and per seed, with a t interval over the per-seed fractions.
* :func:`ordering_holds` - whether "a > b" may be stated as an ordering: the seed ranges do not overlap.
* :func:`crossing_step` - the first step from which one learning curve stays at or above another to the end.

The t distribution comes from SciPy (installed with scikit-learn, a dependency of this package).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['mean_sd', 't_quantile', 't_interval', 'Interval', 'PairedDifference', 'paired_difference',
           'WelchResult', 'welch_test', 'GapFraction', 'gap_fraction', 'ordering_holds', 'crossing_step',
           'format_mean_sd']

Seeds = Mapping[int, float]  # {seed: value}, e.g. {0: 90.6, 1: 90.64, 2: 90.35} (top-1 in %)


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample standard deviation) of ``values``; the sd is nan for fewer than two values."""
    if not values:
        raise ValueError('mean_sd of no values')
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float('nan'))


def format_mean_sd(values: Sequence[float], digits: int = 2) -> str:
    """'90.53 ± 0.16' (mean ± sample sd; the mean alone for one value)."""
    m, sd = mean_sd(values)
    return f'{m:.{digits}f}' + ('' if math.isnan(sd) else f' ± {sd:.{digits}f}')


def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (e.g. 0.975, 2 -> 4.303)."""
    from scipy.stats import t  # lazy: scipy.stats takes a while to import and few callers need it
    return float(t.ppf(probability, df))


@dataclass(frozen=True)
class Interval:
    """A mean with its sample sd over ``n`` values and a two-sided ``confidence`` t interval [lo, hi]."""
    mean: float
    sd: float
    n: int
    lo: float
    hi: float
    confidence: float

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean ± t_{(1+c)/2, n-1} * sd / sqrt(n); lo = hi = nan for fewer than two values."""
    if not 0 < confidence < 1:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    m, sd = mean_sd(values)
    n = len(values)
    if n < 2:
        return Interval(m, sd, n, float('nan'), float('nan'), confidence)
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return Interval(m, sd, n, m - half, m + half, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``a[s] - b[s]`` for every seed ``s`` both have (``per_seed``), and their mean, sd and t interval."""
    per_seed: Dict[int, float]
    interval: Interval

    @property
    def mean(self) -> float:
        return self.interval.mean

    @property
    def seeds(self) -> List[int]:
        return sorted(self.per_seed)

    def same_sign_in_every_seed(self) -> bool:
        values = list(self.per_seed.values())
        return all(v > 0 for v in values) or all(v < 0 for v in values)

    def paired_t_p(self) -> float:
        """Two-sided p of the paired t-test (mean difference 0); nan for fewer than two seeds or zero spread."""
        iv = self.interval
        if iv.n < 2 or not iv.sd > 0:
            return float('nan')
        from scipy.stats import t
        return float(2 * t.sf(abs(iv.mean) / (iv.sd / math.sqrt(iv.n)), iv.n - 1))


def _common_seeds(a: Seeds, b: Seeds) -> List[int]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f'no seed in common: {sorted(a)} vs {sorted(b)}')
    return seeds


def paired_difference(a: Seeds, b: Seeds, confidence: float = 0.95) -> PairedDifference:
    """Per-seed differences ``a[s] - b[s]`` over the seeds both have (a cell with 5 seeds against one with 3 is
    paired on the 3), with a t interval of their mean."""
    seeds = _common_seeds(a, b)
    diffs = {s: float(a[s]) - float(b[s]) for s in seeds}
    return PairedDifference(diffs, t_interval(list(diffs.values()), confidence))


@dataclass(frozen=True)
class WelchResult:
    """Welch's t statistic of mean(a) - mean(b), its Welch-Satterthwaite degrees of freedom and two-sided p."""
    t: float
    df: float
    p: float


def welch_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's unequal-variance t-test of two independent samples (two-sided).

    t = (mean_a - mean_b) / sqrt(va/na + vb/nb) and df = (va/na + vb/nb)^2 / ((va/na)^2/(na-1) + (vb/nb)^2/(nb-1)),
    with va, vb the sample variances. Needs at least two values in each sample and some spread.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f'welch_test needs >= 2 values per sample, got {len(a)} and {len(b)}')
    ma, sa = mean_sd(a)
    mb, sb = mean_sd(b)
    qa, qb = sa ** 2 / len(a), sb ** 2 / len(b)
    if qa + qb == 0:
        raise ValueError('welch_test: both samples have zero spread')
    t_stat = (ma - mb) / math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa ** 2 / (len(a) - 1) + qb ** 2 / (len(b) - 1))
    from scipy.stats import t
    return WelchResult(t_stat, df, float(2 * t.sf(abs(t_stat), df)))


@dataclass(frozen=True)
class GapFraction:
    """How much of the conv-LC gap a cell closes: 1 = up to conv, 0 = no better than LC, < 0 = below LC.

    ``fraction`` is (mean(cell) - mean(LC)) / (mean(conv) - mean(LC)), how the paper's means give theirs;
    ``per_seed`` the same ratio within each seed (all three cells' runs with that seed) and ``interval`` a t
    interval of the per-seed ratios (its centre, their mean, need not equal ``fraction``).
    """
    fraction: float
    per_seed: Dict[int, float]
    interval: Interval


def gap_fraction(cell: Seeds, conv: Seeds, lc: Seeds, confidence: float = 0.95) -> GapFraction:
    """The fraction of the conv-LC gap ``cell`` closes, over the seeds all three have (see :class:`GapFraction`).

    Raises ValueError when a gap (of the means or of a seed) is zero: the fraction is then undefined.
    """
    seeds = sorted(set(cell) & set(conv) & set(lc))
    if not seeds:
        raise ValueError(f'no seed in common: cell {sorted(cell)}, conv {sorted(conv)}, LC {sorted(lc)}')
    mean = {name: statistics.fmean(float(d[s]) for s in seeds) for name, d in (('cell', cell), ('conv', conv),
                                                                                  ('lc', lc))}
    if mean['conv'] == mean['lc']:
        raise ValueError('conv and LC have the same mean: no gap to close')
    per_seed = {}
    for s in seeds:
        gap = float(conv[s]) - float(lc[s])
        if gap == 0:
            raise ValueError(f'seed {s}: conv and LC are equal, its fraction is undefined')
        per_seed[s] = (float(cell[s]) - float(lc[s])) / gap
    fraction = (mean['cell'] - mean['lc']) / (mean['conv'] - mean['lc'])
    return GapFraction(fraction, per_seed, t_interval(list(per_seed.values()), confidence))


def ordering_holds(a: Seeds, b: Seeds) -> bool:
    """Whether "a > b" may be stated as an ordering: over the seeds both have, the two cells' ranges do not
    overlap (the worst seed of ``a`` is above the best of ``b``), so the difference is outside the seed-to-seed
    spread; that also puts ``a`` above ``b`` in every seed. Needs at least two shared seeds (one shows no spread)."""
    seeds = _common_seeds(a, b)
    if len(seeds) < 2:
        return False
    return min(float(a[s]) for s in seeds) > max(float(b[s]) for s in seeds)


def crossing_step(steps: Sequence[float], upper: Sequence[float], lower: Sequence[float]) -> Optional[float]:
    """The first step from which ``upper`` stays at or above ``lower`` until the end of the curves, or None.

    ``steps``, ``upper``, ``lower``: one value per evaluation (e.g. optimizer step and test top-1 after each
    epoch), equally long. A curve that dips below at its last evaluation never crosses (None); one that is at
    or above everywhere crosses at the first step.
    """
    if not len(steps) == len(upper) == len(lower):
        raise ValueError(f'curves of unequal length: {len(steps)} steps, {len(upper)} and {len(lower)} values')
    first: Optional[float] = None
    for step, u, v in zip(steps, upper, lower):  # one pass: the last run of at-or-above that reaches the end
        if u >= v:
            first = step if first is None else first
        else:
            first = None
    return first
