"""bioconv_timm.stats against values worked out by hand (the arithmetic is in the comments)."""
import math

import pytest

from bioconv_timm import stats

T_975_DF2 = 4.302653  # Student t, 97.5% quantile, 2 degrees of freedom (printed tables: 4.303)


def test_mean_sd_uses_the_sample_sd():
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, / (n - 1) = 5/3
    m, sd = stats.mean_sd([1, 2, 3, 4])
    assert m == 2.5 and sd == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    m1, sd1 = stats.mean_sd([7.0])
    assert m1 == 7.0 and math.isnan(sd1)
    with pytest.raises(ValueError):
        stats.mean_sd([])
    assert stats.format_mean_sd([90.6, 90.64, 90.35]) == '90.53 ± 0.16'
    assert stats.format_mean_sd([85.8]) == '85.80'


def test_t_quantile_and_interval():
    assert stats.t_quantile(0.975, 2) == pytest.approx(T_975_DF2, abs=1e-6)
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    # [1, 2, 3]: mean 2, sd 1, half width 4.302653 / sqrt(3) = 2.484138
    iv = stats.t_interval([1, 2, 3])
    assert (iv.mean, iv.sd, iv.n, iv.confidence) == (2, 1, 3, 0.95)
    assert iv.lo == pytest.approx(2 - 2.484138, abs=1e-6) and iv.hi == pytest.approx(2 + 2.484138, abs=1e-6)
    assert not iv.excludes_zero()
    assert stats.t_interval([10, 11, 12]).excludes_zero()
    one = stats.t_interval([5.0])
    assert one.mean == 5.0 and math.isnan(one.lo) and math.isnan(one.hi)
    with pytest.raises(ValueError):
        stats.t_interval([1, 2], confidence=1.0)


def test_paired_difference_pairs_by_seed():
    # seeds 0, 1, 2 in both (seed 7 only in a): differences 2, 3, 1 -> mean 2, sd 1
    d = stats.paired_difference({0: 3, 1: 5, 2: 4, 7: 9}, {2: 3, 0: 1, 1: 2})
    assert d.per_seed == {0: 2, 1: 3, 2: 1} and d.seeds == [0, 1, 2]
    assert (d.mean, d.interval.sd, d.interval.n) == (2, 1, 3)
    assert d.interval.lo == pytest.approx(2 - 2.484138, abs=1e-6)
    assert d.same_sign_in_every_seed()
    # paired t = 2 / (1 / sqrt 3) = 3.464102 on 2 df; for 2 df, p = 1 - |t| / sqrt(2 + t^2) = 1 - 3.464102 / 3.741657
    assert d.paired_t_p() == pytest.approx(1 - math.sqrt(12) / math.sqrt(14), abs=1e-9)
    mixed = stats.paired_difference({0: 3, 1: 1}, {0: 1, 1: 2})
    assert not mixed.same_sign_in_every_seed()
    with pytest.raises(ValueError, match='no seed in common'):
        stats.paired_difference({0: 1}, {1: 1})


def test_welch_test_by_hand():
    # a = [0, 2], b = [3, 5]: variances 2 and 2, q = 2/2 = 1 each; t = (1 - 4) / sqrt(2) = -2.121320;
    # df = (1 + 1)^2 / (1/1 + 1/1) = 2; for 2 df the two-sided p is 1 - |t| / sqrt(2 + t^2) = 0.167950
    r = stats.welch_test([0, 2], [3, 5])
    assert r.t == pytest.approx(-3 / math.sqrt(2), abs=1e-12) and r.df == pytest.approx(2, abs=1e-12)
    assert r.p == pytest.approx(1 - (3 / math.sqrt(2)) / math.sqrt(2 + 4.5), abs=1e-9)
    # unequal sizes and variances: a = [1, 2, 3] (var 1, q 1/3), b = [4, 5, 6, 7, 8] (var 2.5, q 0.5);
    # t = -4 / sqrt(5/6) = -4.381780; df = (5/6)^2 / ((1/3)^2 / 2 + 0.5^2 / 4) = 0.694444 / 0.118056 = 5.882353
    r = stats.welch_test([1, 2, 3], [4, 5, 6, 7, 8])
    assert r.t == pytest.approx(-4.381780, abs=1e-6) and r.df == pytest.approx(5.882353, abs=1e-6)
    assert 0.003 < r.p < 0.006  # t = 4.38 on ~5.9 df: between the tables' 0.005 (t 4.03 on 5) and 0.002 points
    with pytest.raises(ValueError):
        stats.welch_test([1], [2, 3])
    with pytest.raises(ValueError):
        stats.welch_test([1, 1], [2, 2])


def test_gap_fraction_ratio_of_means_and_per_seed():
    conv, lc, cell = {0: 10, 1: 12, 2: 11}, {0: 6, 1: 8, 2: 5}, {0: 8, 1: 11, 2: 5, 3: 99}
    g = stats.gap_fraction(cell, conv, lc)
    # means over seeds 0-2: conv 11, LC 19/3, cell 8 -> (8 - 19/3) / (11 - 19/3) = (5/3) / (14/3) = 5/14
    assert g.fraction == pytest.approx(5 / 14, abs=1e-12)
    # per seed: (8-6)/(10-6) = 0.5, (11-8)/(12-8) = 0.75, (5-5)/(11-5) = 0; mean 5/12, sd sqrt(0.291667 / 2)
    assert g.per_seed == pytest.approx({0: 0.5, 1: 0.75, 2: 0.0})
    assert g.interval.mean == pytest.approx(5 / 12)
    assert g.interval.sd == pytest.approx(math.sqrt(0.2916667 / 2), abs=1e-6)
    # the paper's ws(1) on CIFAR10 pad 4 (one number per cell): (87.4 - 80.9) / (88.3 - 80.9) = 6.5 / 7.4
    assert stats.gap_fraction({0: 87.4}, {0: 88.3}, {0: 80.9}).fraction == pytest.approx(6.5 / 7.4)
    with pytest.raises(ValueError, match='seed 1'):
        stats.gap_fraction({0: 1, 1: 1}, {0: 3, 1: 2}, {0: 1, 1: 2})
    with pytest.raises(ValueError, match='no seed in common'):
        stats.gap_fraction({0: 1}, {1: 2}, {1: 1})


def test_ordering_needs_every_seed_and_no_overlap():
    assert stats.ordering_holds({0: 3, 1: 4}, {0: 1, 1: 2})
    assert not stats.ordering_holds({0: 3, 1: 5}, {0: 1, 1: 4})    # above in both seeds, but 3 < 4: ranges overlap
    assert not stats.ordering_holds({0: 3, 1: 1.5}, {0: 1, 1: 2})  # below in seed 1
    assert not stats.ordering_holds({0: 3}, {0: 1})                # one seed shows no spread
    assert not stats.ordering_holds({0: 1, 1: 2}, {0: 3, 1: 4})    # the other way round


def test_crossing_step():
    steps = [1, 2, 3, 4, 5]
    # at or above: no, yes, no, yes, yes (equal at the end counts) -> from step 4
    assert stats.crossing_step(steps, [0, 2, 1, 3, 3], [1, 1, 2, 2, 3]) == 4
    assert stats.crossing_step(steps, [2, 2, 2, 2, 0], [1, 1, 1, 1, 1]) is None  # below at the last evaluation
    assert stats.crossing_step(steps, [5] * 5, [1] * 5) == 1
    with pytest.raises(ValueError, match='unequal'):
        stats.crossing_step(steps, [1, 2], [1, 2])
