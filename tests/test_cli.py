import subprocess
import sys

from bioconv_timm.cli import main, model_table


def test_model_table_rows():
    rows = {r['name']: r for r in model_table()}
    assert rows['lc_resnet20_ws10']['sleep_every'] == 10
    assert rows['lc_resnet20']['sleep_every'] is None
    assert rows['lc_resnet20']['input_size'] == '3x32x32'
    assert rows['lc_resnet18_half_ws100']['input_size'] == '3x224x224'
    assert 40.4e6 < rows['lc_resnet20']['params'] < 41e6
    assert rows['lc_resnet18_half_convstem']['layer_type'] == 'lc (conv stem)'


def test_bioconv_list_prints_table(capsys):
    assert main(['list', '--filter', 'lc_resnet20*']) == 0
    out = capsys.readouterr().out
    assert 'lc_resnet20_ws100' in out and '40.81M' in out and 'conv_resnet20' not in out


def test_console_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, '-m', 'bioconv_timm.cli', 'list', '--filter', 'conv_*'],
                            capture_output=True, text=True, check=True)
    assert 'conv_resnet18_half' in result.stdout
