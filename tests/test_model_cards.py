"""Hub metadata that indexes (issue 26, part 4): the committed cards are what the code writes today, and their
model-index and datasets read back through huggingface_hub's own parser, with the Hub's dataset ids."""
import json
import shutil
from pathlib import Path

import pytest

from bioconv_timm.hub import HUB_DATASETS, render_run_card

MODEL_CARDS = Path(__file__).resolve().parents[1] / 'model_cards'
TAGS = ('conv_resnet20.digits', 'lc_resnet20.digits', 'lc_resnet20_ws1.digits', 'lc_resnet20_ws10.digits',
        'lc_resnet20_ws100.digits')


@pytest.mark.parametrize('tag', TAGS)
def test_committed_card_is_what_the_code_writes(tag):
    """Rebuilt from the run's recorded config.json and result.json (model_cards/records/<tag>/); regenerate with
    `python model_cards/regenerate.py` after changing the card."""
    expected = render_run_card(MODEL_CARDS / 'records' / tag, f'bioconv-timm/{tag}')
    assert (MODEL_CARDS / f'{tag}.md').read_text() == expected, f'model_cards/{tag}.md is stale'


@pytest.mark.parametrize('tag', TAGS)
def test_committed_card_parses_with_huggingface_hub(tag):
    from huggingface_hub import ModelCard, metadata_load
    path = MODEL_CARDS / f'{tag}.md'
    card = ModelCard.load(path)
    result = json.loads((MODEL_CARDS / 'records' / tag / 'result.json').read_text())['final']
    assert card.data.datasets == ['digits']  # the Hub has no dataset for scikit-learn's digits on our canvas
    results = {r.metric_type: r for r in card.data.eval_results}
    assert sorted(results) == ['accuracy', 'top_5_accuracy']
    assert results['accuracy'].metric_value == round(result['top1'], 2)
    assert results['top_5_accuracy'].metric_value == round(result['top5'], 2)
    for r in results.values():
        assert (r.task_type, r.dataset_type, r.dataset_split) == ('image-classification', 'digits', 'test')
    meta = metadata_load(path)
    assert meta['model-index'][0]['name'] == tag and meta['library_name'] == 'timm'


def test_dataset_table_covers_the_training_datasets():
    from bioconv_timm.train.data import DATASETS
    assert sorted(HUB_DATASETS) == sorted(DATASETS)


# the Hub's dataset ids and the split our 'test' evaluates on, as written on huggingface.co
HUB_IDS = {'fashion-mnist': ('zalando-datasets/fashion_mnist', 'test', 1, 28),
           'cifar10': ('uoft-cs/cifar10', 'test', 3, 32),
           'cifar100': ('uoft-cs/cifar100', 'test', 3, 32),
           'tinyimagenet': ('zh-plus/tiny-imagenet', 'valid', 3, 48),
           'imagenet': ('ILSVRC/imagenet-1k', 'validation', 3, 64)}  # ResNet20 at 224: over the size cap


@pytest.mark.parametrize('dataset', sorted(HUB_IDS))
@pytest.mark.parametrize('split', ['test', 'val'])
def test_card_metadata_names_the_hub_dataset(dataset, split, tmp_path):
    """A run on a dataset the Hub has: `datasets:` and the model-index name its Hub id, as huggingface_hub reads
    the card back."""
    from huggingface_hub import ModelCard
    hub_id, hub_split, chans, size = HUB_IDS[dataset]
    num_classes = {'cifar100': 100, 'tinyimagenet': 200, 'imagenet': 1000}.get(dataset, 10)
    run = tmp_path / 'run'
    shutil.copytree(MODEL_CARDS / 'records' / 'lc_resnet20_ws10.digits', run)
    config = json.loads((run / 'config.json').read_text())
    config.update(dataset=dataset, split=split, img_size=size, in_chans=chans, num_classes=num_classes,
                  mean=[0.5] * chans, std=[0.25] * chans, label_names=[f'c{i}' for i in range(num_classes)])
    (run / 'config.json').write_text(json.dumps(config))
    result = json.loads((run / 'result.json').read_text())
    result.update(dataset=dataset)
    (run / 'result.json').write_text(json.dumps(result))
    (tmp_path / 'README.md').write_text(render_run_card(run, 'test-org/lc_resnet20_ws10-x'))
    card = ModelCard.load(tmp_path / 'README.md')
    assert card.data.datasets == [hub_id]
    for r in card.data.eval_results:
        assert r.dataset_type == hub_id and r.dataset_name == HUB_DATASETS[dataset].name
        assert r.dataset_split == (hub_split if split == 'test' else 'train (held-out part)')
