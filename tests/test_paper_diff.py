"""The paper's printed Diff values (bioconv_timm.paper.reported_diff), quoted by the reports' "paper Diff" columns."""
import pytest

from bioconv_timm import paper


@pytest.mark.parametrize('pad', [0, 4])
def test_quoted_diffs_agree_with_the_means_up_to_rounding(pad):
    """Each quoted Diff is within 0.1 of the difference of the (rounded) means: a transcription slip would not be."""
    top1 = paper.reported_top1('cifar10', pad)
    diffs = paper.reported_diff('cifar10', pad)
    assert 'conv' not in diffs and set(diffs) <= set(top1)
    for label, diff in diffs.items():
        assert abs(diff - (top1[label] - top1['conv'])) <= 0.1 + 1e-9, label


def test_the_rounding_differences_issue_25_found():
    assert paper.TABLE1_DIFF['LC - ws(1)'] == -0.8  # 87.4 - 88.3 would say -0.9
    assert [paper.reported_diff('cifar10', 0)[k] for k in ('LC', 'LC - ws(10)', 'LC - ws(100)')] == [-16.8, -8.1, -8.6]
    assert paper.TABLE1_DIFF == paper.reported_diff()
    with pytest.raises(ValueError, match='padding 8'):
        paper.reported_diff('cifar10', 8)
