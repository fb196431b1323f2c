"""Publishing (bioconv_timm.hub, `bioconv publish`) and loading published weights, all offline."""
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch

import bioconv_timm
from bioconv_timm import models as bio_models
from bioconv_timm.hub import CARD_SECTIONS, PublishError, publish

REPO = 'test-org/lc_resnet20_ws10.digits'
SHA = 'a' * 40
MODEL_CARDS = Path(__file__).resolve().parents[1] / 'model_cards'


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A tiny real training run of lc_resnet20_ws10 on the embedded digits (a few seconds)."""
    from bioconv_timm.train import TrainConfig, train
    out = tmp_path_factory.mktemp('run') / 'ws10'
    train(TrainConfig(model='lc_resnet20_ws10', dataset='digits', epochs=1, train_subset=32, eval_subset=32,
                      batch_size=16, progress=False, output_dir=str(out)))
    return out


@pytest.fixture(scope='module')
def published(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('pub') / 'folder'
    result = publish(run_dir, REPO, dry_run_dir=out)
    return result, out


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache in tmp_path (constants are read at import, so patch them too)."""
    import huggingface_hub.constants as hf_constants
    cache = tmp_path / 'hf' / 'hub'
    cache.mkdir(parents=True)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(cache))
    return cache


def _to_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay a published folder out as `<cache>/models--ORG--NAME/{refs/main, snapshots/<sha>/...}`."""
    repo_dir = cache / ('models--' + repo_id.replace('/', '--'))
    (repo_dir / 'refs').mkdir(parents=True)
    (repo_dir / 'refs' / 'main').write_text(SHA)
    snap = repo_dir / 'snapshots' / SHA
    snap.mkdir(parents=True)
    for name in ('model.safetensors', 'config.json', 'README.md'):
        shutil.copy(folder / name, snap / name)
    return snap


def _linked_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run folder whose big files are hard links (the checkpoints are hundreds of MB); edit only
    the small files of the copy (they are real copies)."""
    dest.mkdir(parents=True)
    for p in run_dir.iterdir():
        if p.is_file():
            if p.suffix in ('.pth', '.safetensors'):
                os.link(p, dest / p.name)
            else:
                shutil.copy(p, dest / p.name)
    return dest


def _published_model(run_dir):
    from safetensors.torch import load_file
    model = timm.create_model('lc_resnet20_ws10', num_classes=10, in_chans=1, img_size=24)
    model.load_state_dict(load_file(run_dir / 'model.safetensors'))
    return model.eval()


def _images(n=4, chans=1, seed=0):
    return torch.randn(n, chans, 24, 24, generator=torch.Generator().manual_seed(seed))


def test_dry_run_folder(published):
    result, out = published
    assert not result.uploaded
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors', 'test']
    assert result.files == ['README.md', 'config.json', 'model.safetensors', 'test/rand_tensors.safetensors']
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'lc_resnet20_ws10'
    assert cfg['model_args']['in_chans'] == 1 and cfg['model_args']['num_classes'] == 10
    assert tuple(cfg['model_args']['img_size']) == (24, 24)
    pcfg = cfg['pretrained_cfg']
    assert tuple(pcfg['input_size']) == (1, 24, 24)
    assert pcfg['mean'] == pytest.approx([0.1357]) and pcfg['std'] == pytest.approx([0.2931])
    assert pcfg['label_names'] == [str(d) for d in range(10)]
    card = (out / 'README.md').read_text()
    usage = card.split('## Usage')[1].split('```python\n')[1]
    assert usage.startswith('import bioconv_timm')
    assert f"timm.create_model('hf-hub:{REPO}', pretrained=True)" in usage
    assert 'library_name: timm' in card and 'license: mit' in card and 'locally-connected' in card
    assert 'no number for digits' in card and '85.1%' in card  # the paper's CIFAR10 ws(10) number, for context


def test_load_from_hf_cache(published, run_dir, hf_cache):
    _, out = published
    _to_cache(hf_cache, REPO, out)
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True).eval()
    assert model.in_chans == 1 and model.img_size == (24, 24) and model.sleep_every == 10
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), _published_model(run_dir)(x))


def test_registered_tag_loads_from_cache(published, run_dir, hf_cache, monkeypatch):
    _, out = published
    name = 'lc_resnet20_ws10.digits'
    assert timm.models.get_pretrained_cfg('lc_resnet20_ws10').tag == 'cifar10'  # still the default tag
    with pytest.raises(RuntimeError, match='No pretrained weights are published'):
        timm.create_model(name, pretrained=True)
    _to_cache(hf_cache, f'bioconv-timm/{name}', out)
    monkeypatch.setattr(bio_models.registry, 'PUBLISHED_TAGS', {name})
    model = timm.create_model(name, pretrained=True).eval()
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), _published_model(run_dir)(x))


def test_local_file_overlay(run_dir):
    model = timm.create_model('lc_resnet20_ws10.digits', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(run_dir / 'model.safetensors'))).eval()
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), _published_model(run_dir)(x))


def test_card_metadata_is_written_by_huggingface_hub(run_dir, tmp_path, capsys):
    """The dry-run README.md is a Hub model card: huggingface_hub parses it, with the license, library, tags and
    a model-index holding the run's top-1 / top-5 on its dataset; a card without recorded accuracy has none."""
    from huggingface_hub import ModelCard

    from bioconv_timm.cli import main
    from bioconv_timm.paper import CITATION
    out = tmp_path / 'out'
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(out)]) == 0, capsys.readouterr().err
    card = ModelCard.load(out / 'README.md')
    data = card.data
    assert data.license == 'mit' and data.library_name == 'timm' and data.pipeline_tag == 'image-classification'
    assert data.tags == ['image-classification', 'timm', 'bioconv-timm', 'biologically-plausible',
                         'locally-connected', 'weight-sharing']
    assert data.datasets == ['digits'] and data.metrics == ['accuracy']
    final = json.loads((run_dir / 'result.json').read_text())['final']
    results = {r.metric_type: r for r in data.eval_results or ()}
    assert sorted(results) == ['accuracy', 'top_5_accuracy'], data.eval_results
    assert results['accuracy'].metric_value == round(final['top1'], 2)  # in %, to 2 decimals as the card's table
    assert results['top_5_accuracy'].metric_value == round(final['top5'], 2)
    assert f"| {results['accuracy'].metric_value:.2f}% |" in card.text
    for r in results.values():
        assert (r.task_type, r.dataset_type, r.dataset_split) == ('image-classification', 'digits', 'test')
        assert r.dataset_name.startswith('digits')
    assert data.model_name == REPO.split('/')[1]
    for section in CARD_SECTIONS:
        assert section in card.text
    assert CITATION.strip() in card.text and f"timm.create_model('hf-hub:{REPO}', pretrained=True)" in card.text
    assert card.text.lstrip().startswith(f'# {REPO}\n')
    # a bare weights file records no accuracy and no dataset: no model-index, the rest of the metadata stays
    bare = tmp_path / 'w.safetensors'
    shutil.copy(run_dir / 'model.safetensors', bare)
    publish(bare, 'test-org/ws10', model_name='lc_resnet20_ws10.digits', dry_run_dir=tmp_path / 'bare')
    card = ModelCard.load(tmp_path / 'bare' / 'README.md')
    assert card.data.eval_results is None and 'model-index' not in card.content
    assert card.data.license == 'mit' and card.data.library_name == 'timm' and 'locally-connected' in card.data.tags
    assert '| this checkpoint, ? test set | not recorded |' in card.text


def test_repo_id_checked_by_huggingface_hub_rules(run_dir, tmp_path, capsys):
    from bioconv_timm.cli import main
    for repo_id in ('test-org/bad name', 'test-org/a--b', 'test-org/' + 'x' * 97):
        out = tmp_path / 'out'
        with pytest.raises(PublishError, match='is not a valid Hub repo id'):
            publish(run_dir, repo_id, dry_run_dir=out)
        assert not out.exists()
    assert main(['publish', str(run_dir), '--repo-id', 'test-org/bad name', '--dry-run', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv publish: error: ') and err.count('\n') == 1, err
    assert "'test-org/bad name' is not" in err and 'Hub repo id' in err and not (tmp_path / 'o').exists()

class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(('create_repo', kwargs))
        return type('RepoUrl', (), {'repo_id': kwargs['repo_id']})()

    def upload_folder(self, **kwargs):
        root = Path(kwargs['folder_path'])
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob('*') if p.is_file())
        self.calls.append(('upload_folder', dict(kwargs, files=files)))
        return 'commit-info'


def test_upload_with_fake_api(run_dir):
    api = FakeApi()
    result = publish(run_dir, REPO, api=api)
    assert result.uploaded and result.commit == 'commit-info'
    assert [c[0] for c in api.calls] == ['create_repo', 'upload_folder']
    assert api.calls[0][1]['repo_id'] == REPO and api.calls[0][1]['exist_ok'] is True
    upload = api.calls[1][1]
    assert upload['repo_id'] == REPO
    assert upload['files'] == ['README.md', 'config.json', 'model.safetensors', 'test/rand_tensors.safetensors']
    assert sorted(upload['allow_patterns']) == upload['files']  # exactly what was written goes up
    assert not any(f.endswith(('.bin', '.pth')) for f in upload['files'])


def test_cli_dry_run(run_dir, tmp_path, capsys):
    from bioconv_timm.cli import main
    out = tmp_path / 'out'
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(out)]) == 0
    assert 'nothing uploaded' in capsys.readouterr().out
    assert (out / 'model.safetensors').is_file() and (out / 'README.md').is_file()
    # a bare safetensors file outside its run folder needs --model
    bare = tmp_path / 'w.safetensors'
    shutil.copy(run_dir / 'model.safetensors', bare)
    assert main(['publish', str(bare), '--repo-id', REPO, '--dry-run', str(tmp_path / 'o2')]) == 2
    assert '--model' in capsys.readouterr().err


@pytest.mark.parametrize('how', ['truncated', 'garbage'])
def test_corrupt_weights_clear_error(published, hf_cache, how):
    _, out = published
    snap = _to_cache(hf_cache, REPO, out)
    weights = snap / 'model.safetensors'
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2] if how == 'truncated' else b'\x08\x00\x00\x00\x00\x00\x00\x00garbage!')
    with pytest.raises(RuntimeError, match='truncated or corrupt'):
        timm.create_model(f'hf-hub:{REPO}', pretrained=True)


def test_corrupt_local_file_clear_error(run_dir, tmp_path):
    bad = tmp_path / 'model.safetensors'
    bad.write_bytes((run_dir / 'model.safetensors').read_bytes()[:1000])
    with pytest.raises(RuntimeError, match='truncated or corrupt'):
        timm.create_model('lc_resnet20_ws10.digits', pretrained=True, pretrained_cfg_overlay=dict(file=str(bad)))


def test_mismatched_weights_publish_error(run_dir, tmp_path):
    # weights of lc_resnet20_ws10 (1x24x24) published as a conv model, and as the same model at another size
    bare = tmp_path / 'w.safetensors'
    shutil.copy(run_dir / 'model.safetensors', bare)
    with pytest.raises(PublishError, match=r'conv_resnet20.*(missing|unexpected|shape)'):
        publish(bare, 'x/y', model_name='conv_resnet20', dry_run_dir=tmp_path / 'o')
    bad_run = _linked_run(run_dir, tmp_path / 'run')
    cfg = json.loads((bad_run / 'config.json').read_text())
    cfg['img_size'] = 32
    (bad_run / 'config.json').write_text(json.dumps(cfg))
    # the run's checkpoint recorded the size it trained at: config.json no longer describes that run
    with pytest.raises(PublishError, match=r'config.json and .*last.pth disagree on img_size: 32 in config.json, 24 '
                                           r'in last.pth'):
        publish(bad_run, 'x/y', dry_run_dir=tmp_path / 'o1')
    with pytest.raises(PublishError, match='pickled'):
        publish(bad_run / 'last.pth', 'x/y', dry_run_dir=tmp_path / 'o3')
    (bad_run / 'last.pth').unlink()  # nothing to cross-check: the weights themselves do not fit the size
    with pytest.raises(PublishError, match=r'shape mismatches: conv1.weight'):
        publish(bad_run, 'x/y', dry_run_dir=tmp_path / 'o2')
    assert not any((tmp_path / o).exists() for o in ('o1', 'o2', 'o3'))


def test_adapt_in_chans_and_num_classes(run_dir):
    """1 -> 3 channels (repeat / 3) and back (sum), and a new classifier, on a pretrained LC stem."""
    file = dict(file=str(run_dir / 'model.safetensors'))
    ref = _published_model(run_dir)
    gray = _images()
    rgb = timm.create_model('lc_resnet20_ws10.digits', pretrained=True, in_chans=3, pretrained_cfg_overlay=file).eval()
    assert rgb.conv1.weight.shape[-1] == 3
    with torch.no_grad():
        torch.testing.assert_close(rgb(gray.repeat(1, 3, 1, 1)), ref(gray), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(rgb.conv1.weight * 3, ref.conv1.weight.repeat(1, 1, 1, 1, 1, 3))
    # 3 -> 1: summing the 3 (identical) channel weights gives the 1-channel model back
    folded = bio_models.adapt_pretrained_state_dict(rgb.state_dict(), ref)
    torch.testing.assert_close(folded['conv1.weight'], ref.conv1.weight)
    # a 3-channel source loaded as 1 channel: grayscale output = 3-channel output on the repeated image
    gray_model = timm.create_model('lc_resnet20_ws10', num_classes=10, in_chans=1, img_size=24)
    gray_model.load_state_dict(bio_models.adapt_pretrained_state_dict(rgb.state_dict(), gray_model))
    with torch.no_grad():
        torch.testing.assert_close(gray_model.eval()(gray), rgb(gray.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    # new head: the classifier is dropped (fresh), the body is loaded
    head = timm.create_model('lc_resnet20_ws10.digits', pretrained=True, num_classes=5, pretrained_cfg_overlay=file)
    assert head.fc.out_features == 5
    torch.testing.assert_close(head.conv1.weight, ref.conv1.weight)
    assert head.eval()(gray).shape == (4, 5)
    # LC weights are tied to their input size
    with pytest.raises(RuntimeError, match='tied to the input size'):
        timm.create_model('lc_resnet20_ws10.digits', pretrained=True, img_size=32, pretrained_cfg_overlay=file)


def test_hub_in_chans_change(published, run_dir, hf_cache):
    _, out = published
    _to_cache(hf_cache, REPO, out)
    model = timm.create_model(f'hf-hub:{REPO}', pretrained=True, in_chans=3, num_classes=3).eval()
    assert model.conv1.weight.shape[-1] == 3 and model.fc.out_features == 3
    assert model(_images(2, 3)).shape == (2, 3)


def _card_tags():
    return sorted(p.name[:-len('.md')] for p in MODEL_CARDS.glob('*.md'))


def test_model_cards_match_registered_tags():
    registered = set(timm.list_models('*resnet*', include_tags=True))
    tags = _card_tags()
    assert {f'{m}.digits' for m in ('conv_resnet20', 'lc_resnet20', 'lc_resnet20_ws1', 'lc_resnet20_ws10',
                                    'lc_resnet20_ws100')} <= set(tags)
    for tag in tags:
        assert tag in registered, f'model_cards/{tag}.md names no registered pretrained tag'
        card = (MODEL_CARDS / f'{tag}.md').read_text()
        for section in CARD_SECTIONS:
            assert section in card, f'model_cards/{tag}.md lacks {section!r}'
        front = card.split('---\n')[1]
        for line in ('library_name: timm', 'license: mit', '- image-classification', '- bioconv-timm', 'datasets:',
                     '- accuracy'):
            assert line in front, f'{tag}: front matter lacks {line!r}'
        usage = card.split('## Usage')[1].split('```python\n')[1]
        assert usage.startswith('import bioconv_timm')
        assert f"timm.create_model('hf-hub:bioconv-timm/{tag}', pretrained=True)" in usage
        assert '@inproceedings{pogodin2021towards' in card
        assert re.search(r'\| this checkpoint, \S+ test set \| \d+\.\d+% \|', card)
        # the tag's pretrained cfg agrees with the card's input line
        cfg = timm.models.get_pretrained_cfg(tag)
        c, h, w = cfg.input_size
        assert f'**Input:** {c} x {h} x {w}' in card
        assert tag not in bio_models.PUBLISHED_TAGS  # weights are not on the Hub yet


def test_every_tag_with_trained_weights_has_a_card():
    # .digits tags are the ones trained here and published (dry run); .cifar10 / .in1k need data and GPUs
    digits = [t for t in timm.list_models('*', include_tags=True) if t.endswith('.digits')]
    assert len(digits) == 5
    missing = [t for t in digits if not (MODEL_CARDS / f'{t}.md').exists()]
    assert not missing, f'no model card for {missing}'


# --- runs with model_kwargs, tagged --model names, dry-run folders, license, card epochs --------------

RESNET8 = dict(layers=(1, 1, 1), stem_stride=2)  # the Fashion-MNIST preset's ResNet-8 (bioconv_timm.train.compare)


@pytest.fixture(scope='module')
def resnet8_run_dir(tmp_path_factory):
    """A tiny real run of lc_resnet20 with the ResNet-8 model_kwargs on the embedded digits."""
    from bioconv_timm.train import TrainConfig, train
    out = tmp_path_factory.mktemp('run') / 'resnet8'
    train(TrainConfig(model='lc_resnet20', model_kwargs=dict(RESNET8), dataset='digits', epochs=1, train_subset=32,
                      eval_subset=32, batch_size=16, progress=False, output_dir=str(out)))
    return out


def test_publish_run_with_model_kwargs_loads_back_from_hub(resnet8_run_dir, tmp_path, hf_cache, capsys):
    from safetensors.torch import load_file

    from bioconv_timm.cli import main
    repo = 'test-org/lc_resnet20-resnet8.digits'
    out = tmp_path / 'out'
    assert main(['publish', str(resnet8_run_dir), '--repo-id', repo, '--dry-run', str(out)]) == 0, capsys.readouterr().err
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['model_args']['layers'] == [1, 1, 1] and cfg['model_args']['stem_stride'] == 2
    assert tuple(cfg['pretrained_cfg']['pool_size']) == (3, 3)  # 24 -> 12 (stem) -> 6 -> 3
    card = (out / 'README.md').read_text()
    assert '**Architecture:** `lc_resnet20` (ResNet-8, built as `lc_resnet20` with layers=(1, 1, 1), stem_stride=2: ' \
           '3x3/2 stem, 3 stages of 1-1-1 BasicBlocks with 16/32/64 channels)' in card
    assert '| model_kwargs | layers=(1, 1, 1), stem_stride=2 |' in card
    assert '85.1%' not in card and '80.9%' not in card  # the paper's ResNet20 numbers are not this network's context

    _to_cache(hf_cache, repo, out)
    model = timm.create_model(f'hf-hub:{repo}', pretrained=True).eval()
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [1, 1, 1]
    assert model.feature_info[0]['reduction'] == 2 and model.img_size == (24, 24) and model.in_chans == 1
    ref = timm.create_model('lc_resnet20', num_classes=10, in_chans=1, img_size=24, **RESNET8)
    ref.load_state_dict(load_file(resnet8_run_dir / 'model.safetensors'))
    x = _images()
    with torch.no_grad():
        assert torch.equal(model(x), ref.eval()(x))

    # a registered tag loads by name as the default ResNet20, which these weights do not fit
    capsys.readouterr()
    assert main(['publish', str(resnet8_run_dir), '--repo-id', 'bioconv-timm/lc_resnet20.digits',
                 '--dry-run', str(tmp_path / 'o2')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('bioconv publish: error: bioconv-timm/lc_resnet20.digits is the registered tag') \
        and 'model_kwargs layers=(1, 1, 1), stem_stride=2' in err and err.count('\n') == 1
    assert not (tmp_path / 'o2').exists()


def test_publish_tagged_model_name(run_dir, tmp_path, capsys):
    from bioconv_timm.cli import main
    bare = tmp_path / 'w.safetensors'
    shutil.copy(run_dir / 'model.safetensors', bare)
    out = tmp_path / 'out'
    # the tag gives a bare weights file its input size, channels and classes (1x24x24, 10)
    assert main(['publish', str(bare), '--repo-id', 'test-org/ws10', '--model', 'lc_resnet20_ws10.digits',
                 '--dry-run', str(out)]) == 0, capsys.readouterr().err
    cfg = json.loads((out / 'config.json').read_text())
    assert cfg['architecture'] == 'lc_resnet20_ws10'
    assert cfg['model_args']['in_chans'] == 1 and tuple(cfg['model_args']['img_size']) == (24, 24)
    assert '**Input:** 1 x 24 x 24' in (out / 'README.md').read_text()
    # a run folder takes the tagged name of its own model
    assert main(['publish', str(run_dir), '--repo-id', 'test-org/ws10', '--model', 'lc_resnet20_ws10.digits',
                 '--dry-run', str(tmp_path / 'out2')]) == 0
    # an unknown tag: one line naming the value and what to pass instead, no traceback
    capsys.readouterr()
    assert main(['publish', str(bare), '--repo-id', 'test-org/ws10', '--model', 'lc_resnet20_ws10.mnist',
                 '--dry-run', str(tmp_path / 'out3')]) == 2
    err = capsys.readouterr().err
    assert err == ("bioconv publish: error: --model lc_resnet20_ws10.mnist: lc_resnet20_ws10 has no pretrained tag "
                   "'mnist'; pass --model lc_resnet20_ws10 or one of lc_resnet20_ws10.cifar10, "
                   'lc_resnet20_ws10.digits (a tag sets the input size and classes)\n')


def test_dry_run_writes_only_into_an_empty_or_new_folder(run_dir, tmp_path, capsys, monkeypatch):
    from bioconv_timm.cli import main
    mine = {'pytorch_model.bin': b'my pickle', 'README.md': b'# my project\n', 'config.json': b'{"mine": 1}'}
    busy = tmp_path / 'busy'
    busy.mkdir()
    for name, data in mine.items():
        (busy / name).write_bytes(data)
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(busy)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err == (f'bioconv publish: error: {busy} is not empty (README.md, config.json, pytorch_model.bin): '
                            'pass an empty or new folder; publish writes model.safetensors, config.json, README.md, '
                            'test/rand_tensors.safetensors and never overwrites or deletes files.\n')
    assert {p.name: p.read_bytes() for p in busy.iterdir()} == mine
    # `--dry-run .` in a project folder leaves its README alone
    monkeypatch.chdir(busy)
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', '.']) == 2
    assert 'pass an empty or new folder' in capsys.readouterr().err
    assert (busy / 'README.md').read_bytes() == mine['README.md']
    # a file is no folder
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(busy / 'README.md')]) == 2
    assert 'is a file, not a folder' in capsys.readouterr().err
    # an empty folder: the report lists exactly the files written
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert main(['publish', str(run_dir), '--repo-id', REPO, '--dry-run', str(empty)]) == 0
    out = capsys.readouterr().out
    assert out.startswith('dry run: wrote README.md, config.json, model.safetensors, test/rand_tensors.safetensors '
                          'for ')
    assert sorted(p.name for p in empty.iterdir()) == ['README.md', 'config.json', 'model.safetensors', 'test']


_AUTHORS = re.compile(r"authors|towards-bio-plausible-conv|pogodin", re.I)


def _sentences_calling_authors_mit(text: str):
    """Sentences (or blank-line separated blocks) that name the MIT license and the authors' code together."""
    chunks = [s for block in re.split(r'\n\s*\n', text) for s in re.split(r'(?<=[.!?;])\s+', block)]
    return [c for c in chunks if re.search(r'\bMIT\b', c, re.I) and _AUTHORS.search(c)]


def test_no_text_calls_the_authors_code_mit(published):
    _, out = published
    card = (out / 'README.md').read_text()
    texts = {'rendered card': card, 'README.md': (MODEL_CARDS.parent / 'README.md').read_text()}
    texts.update({f'model_cards/{p.name}': p.read_text() for p in MODEL_CARDS.glob('*.md')})
    for where, text in texts.items():
        assert not _sentences_calling_authors_mit(text), (where, _sentences_calling_authors_mit(text))
    from bioconv_timm.hub import LICENSE_TEXT
    for where, text in texts.items():
        if where != 'README.md':  # every card states our license in its License section
            assert text.split('## License\n\n')[1].strip() == LICENSE_TEXT, where
    assert LICENSE_TEXT.startswith("MIT (this project's code and weights).")
    # pretrained cfgs carry origin_url = the authors' repo, so their license must say whose it is
    exported = json.loads((out / 'config.json').read_text())['pretrained_cfg']
    cfgs = {'exported config.json': exported}
    cfgs.update({tag: timm.models.get_pretrained_cfg(tag).to_dict()
                 for name in bio_models.MODEL_NAMES for tag in timm.list_models(name + '.*', include_tags=True)})
    assert len(cfgs) == len(bio_models.MODEL_NAMES) + 5 + 1  # a default tag each, 5 .digits tags, the export
    for where, cfg in cfgs.items():
        assert cfg['license'] == "MIT (this project's code and weights)", (where, cfg['license'])


def test_readme_and_digits_cards_agree_on_epochs():
    readme = (MODEL_CARDS.parent / 'README.md').read_text()
    match = re.search(r'model cards for the `\.digits` tags, from (\d+)-epoch demonstration runs', readme)
    assert match, 'the README no longer says how long the .digits card runs were'
    epochs = int(match.group(1))
    cards = sorted(MODEL_CARDS.glob('*.digits.md'))
    assert len(cards) == 5
    for path in cards:
        card = path.read_text()
        assert re.findall(r'^\| epochs \| (\d+) \|$', card, flags=re.M) == [str(epochs)], path.name
        assert f'trained on digits for {epochs} epochs.' in card and f'({epochs} epochs on digits)' in card, path.name
        # and the recorded steps are that many epochs of 1,437 training images (the last partial batch dropped)
        batch = int(re.search(r'^\| batch_size \| (\d+) \|$', card, flags=re.M).group(1))
        steps = int(re.search(r'^(\d+) optimizer steps', card, flags=re.M).group(1))
        assert steps == epochs * (1437 // batch), path.name


def test_timm_family_publishes_and_loads_from_the_hub_cache(hf_cache, tmp_path, monkeypatch):
    """A converted timm family (lc_mobilenetv3_small_050_ws10, default 3x64x64, 1000 classes): published from a
    bare weights file, then loaded by `hf-hub:` and by its registered tag from an offline Hub cache."""
    from safetensors.torch import save_file
    torch.manual_seed(0)
    trained = timm.create_model('lc_mobilenetv3_small_050_ws10').eval()
    weights = tmp_path / 'w.safetensors'
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    repo = 'test-org/lc_mobilenetv3_small_050_ws10.in1k'
    folder = tmp_path / 'pub'
    publish(weights, repo, model_name='lc_mobilenetv3_small_050_ws10', dry_run_dir=folder)
    assert "timm's MobileNetV3-Small 0.5x" in (folder / 'README.md').read_text()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained(x)
    _to_cache(hf_cache, repo, folder)
    loaded = timm.create_model(f'hf-hub:{repo}', pretrained=True).eval()
    assert loaded.sleep_every == 10 and loaded.img_size == (64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    name = 'lc_mobilenetv3_small_050_ws10.in1k'
    _to_cache(hf_cache, f'bioconv-timm/{name}', folder)
    monkeypatch.setattr(bio_models.registry, 'PUBLISHED_TAGS', {name})
    by_tag = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(by_tag(x), expected)
