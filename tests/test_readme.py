"""The README's Python examples run as written (docs must match the code)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / 'README.md'


def _python_blocks():
    return re.findall(r'```python\n(.*?)```', README.read_text(), flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch):
    block = _python_blocks()[0]
    assert 'import bioconv_timm' in block
    namespace = {}
    exec(compile(block, 'README quick start', 'exec'), namespace)
    assert namespace['n_layers'] == 21
    assert namespace['logits'].shape == (8, 10)
    assert tuple(namespace['lc'].weight.shape) == (16, 16, 32, 3, 3, 16)


def test_training_example_runs(tmp_path, monkeypatch):
    block = next(b for b in _python_blocks() if 'TrainConfig' in b)
    monkeypatch.chdir(tmp_path)
    # same call, at a test-sized budget
    block = block.replace("epochs=20, output_dir='runs/ws10'",
                          "epochs=1, output_dir='runs/ws10', train_subset=32, eval_subset=32, batch_size=16")
    assert 'train_subset=32' in block
    namespace = {}
    exec(compile(block, 'README training example', 'exec'), namespace)
    assert namespace['result'].sleeps == 1
    assert (tmp_path / 'runs' / 'ws10' / 'metrics.csv').exists()
